# %% [markdown]
# # Chapter 1 — From an image to a sequence: patch embedding
#
# A transformer reads a sequence of vectors. The Vision Transformer (Dosovitskiy et al., 2021,
# "An Image is Worth 16x16 Words") turns an image $\mathbf{x} \in \mathbb{R}^{H \times W \times C}$
# into one by cutting it into square patches of $P \times P$ pixels, flattening each patch into
# a vector of $P^2 C$ numbers, and mapping every such vector to $D$ numbers with one shared,
# learned matrix $\mathbf{E}$:
#
# $$\mathbf{x}_p \in \mathbb{R}^{N' \times (P^2 C)}, \qquad N' = HW / P^2, \qquad
#   \mathbf{x}_p \mathbf{E} \in \mathbb{R}^{N' \times D}, \qquad
#   \mathbf{E} \in \mathbb{R}^{(P^2 C) \times D}.$$
#
# (The paper writes $N$ for the number of patches; minivit keeps $N$ for the length of the
# whole sequence, patches plus the class token, and calls the patch count $N'$.)
#
# In minivit, cutting is `minivit.nn.Patchify` and the projection is `minivit.nn.PatchEmbed`
# (Patchify followed by a `Linear` layer whose weight is $\mathbf{E}$). This chapter does it on
# a real photograph, checks it against a convolution written another way, and checks the
# hand-written backward with a numerical gradient check.

# %%
import numpy as np
import scipy.signal
from common import chapter_args, plt, save
from sklearn.datasets import load_sample_image

from minivit import viz
from minivit.gradcheck import gradcheck
from minivit.nn import PatchEmbed, Patchify

chapter_args({
    "01_patch_grid": "the photograph with its grid of 16 x 16 patches, and the 196 patches pulled apart",
    "01_patch_sequence": "the patch sequence x_p as a 196 x 768 matrix of pixel values",
    "01_embedding_channels": "four channels of x_p E + b on the 14 x 14 patch grid",
})

# %% [markdown]
# ## A real photograph, in the layout minivit uses
#
# scikit-learn ships two photographs. We take a $224 \times 224$ crop of one — the resolution
# ViT-B/16 was trained at — and put it in minivit's layout: a batch of images of shape
# $(B, C, H, W)$ with values in $[0, 1]$.

# %%
photo = load_sample_image("china.jpg")  # (427, 640, 3) uint8
crop = photo[100:324, 200:424]  # (224, 224, 3)
x = crop.transpose(2, 0, 1)[None].astype(np.float64) / 255.0  # (1, 3, 224, 224)
B, C, H, W = x.shape
P = 16
print(f"image x: {x.shape}  (B, C, H, W)")

# %% [markdown]
# ## Cutting into patches: $\mathbf{x} \to \mathbf{x}_p$
#
# With $P = 16$ the $224 \times 224$ image is a $14 \times 14$ grid of patches, so
# $N' = 224 \cdot 224 / 16^2 = 196$. Each patch holds $P^2 C = 16 \cdot 16 \cdot 3 = 768$ numbers.
# Patchify reads the grid row by row (patch $r$, $c$ is row $14r + c$ of $\mathbf{x}_p$) and
# flattens each patch channel first, then rows, then columns.

# %%
patchify = Patchify(P)
x_p = patchify.forward(x)  # (B, N', P*P*C)
print(f"patches x_p: {x_p.shape}  (B, N', P^2 C)")

# the same patch, cut by hand: grid row 5, column 9
r, c = 5, 9
by_hand = x[0, :, r * P:(r + 1) * P, c * P:(c + 1) * P].reshape(-1)  # (C*P*P,) in (c, i, j) order
assert np.array_equal(x_p[0, 14 * r + c], by_hand)
print(f"patch ({r}, {c}) is row {14 * r + c} of x_p: identical to slicing it out by hand")

# %%
save(viz.plot_patches(x[0], P, highlight=(r, c)), "01_patch_grid")  # in red: the patch cut above

# %% [markdown]
# Flattened, the image is a $196 \times 768$ matrix: one row per patch, one column per
# (channel, row, column) inside a patch. Its three bands are the red, green and blue pixels of
# each patch.

# %%
fig, ax = plt.subplots(figsize=(8, 2.8), layout="constrained")
im = ax.imshow(x_p[0], aspect="auto", cmap="gray", vmin=0, vmax=1)
fig.colorbar(im, ax=ax, fraction=0.03, label="pixel value")
ax.set_xlabel("P^2 C = 768 entries of a flattened patch (R | G | B)")
ax.set_ylabel("patch n (N' = 196)")
ax.set_title("x_p: the image as a sequence of flattened patches")
save(fig, "01_patch_sequence")

# %% [markdown]
# ## Projecting with $\mathbf{E}$
#
# `PatchEmbed` applies Patchify and then a `Linear` layer: $\mathbf{z} = \mathbf{x}_p \mathbf{E} +
# \mathbf{b}$. The same $\mathbf{E}$ serves every patch, so the embedding of a patch does not
# depend on where it sits; where it sits is added later by the position embedding
# (chapter 5). We use ViT-Base's width, $D = 768$. `proj.weight` is $\mathbf{E}$, of shape
# $(P^2 C, D)$.

# %%
embed = PatchEmbed(img_size=224, patch_size=P, in_chans=3, embed_dim=768, rng=0, dtype="float64")
z = embed.forward(x)  # (B, N', D)
E, b = embed.proj.weight.data, embed.proj.bias.data
print(f"E: {E.shape}  b: {b.shape}  ->  tokens z: {z.shape}  (B, N', D)")
assert np.allclose(z, x_p @ E + b)

# %% [markdown]
# ## Patch embedding is a convolution with stride $P$
#
# Write the kernel of output channel $d$ as $K_d = \mathbf{E}_{:, d}$ reshaped to $(C, P, P)$. A
# convolution (in deep learning, a cross-correlation: the kernel slides without flipping)
# computes at every position $(u, v)$ of the image
# $\sum_{c, i, j} x_{c, u+i, v+j} K_{d, c, i, j}$. With stride $P$ it visits only
# $(u, v) = (rP, cP)$: exactly the dot product of patch $(r, c)$ with column $d$ of $\mathbf{E}$.
#
# We check that against `scipy.signal.correlate`, which knows nothing about patches: it slides
# the kernel over every position (there are $209 \times 209$ of them) and we keep every 16th
# row and column. Doing all 768 channels this way takes seconds, which is itself the point of
# patchify-then-matmul; we check the first 32 channels.

# %%
kernels = E.T.reshape(768, C, P, P)  # (D, C, P, P): the convolution's weight layout
for d in range(32):
    full = scipy.signal.correlate(x[0], kernels[d], mode="valid")[0]  # (209, 209), every position
    conv = full[::P, ::P] + b[d]  # (14, 14): stride P
    assert np.allclose(conv.reshape(-1), z[0, :, d])
print("channels 0..31 of x_p E + b equal a stride-16 convolution (scipy.signal.correlate)")

# %%
fig, axes = plt.subplots(1, 4, figsize=(11, 2.8), layout="constrained")
for d, ax in enumerate(axes):
    channel = z[0, :, d].reshape(14, 14)
    fig.colorbar(ax.imshow(channel, **viz.signed(channel)), ax=ax, fraction=0.046)  # symmetric about 0
    ax.set_title(f"channel d = {d}")
    ax.axis("off")
fig.suptitle("x_p E + b, channels 0-3, shown on the 14 x 14 patch grid (random E)")
save(fig, "01_embedding_channels")

# %% [markdown]
# ## Backward
#
# $\mathbf{z} = \mathbf{x}_p \mathbf{E} + \mathbf{b}$ is linear, so with
# $\mathbf{G} = \partial L / \partial \mathbf{z}$:
# $\partial L / \partial \mathbf{E} = \mathbf{x}_p^\top \mathbf{G}$,
# $\partial L / \partial \mathbf{b} = \sum_n \mathbf{G}_n$ and
# $\partial L / \partial \mathbf{x}_p = \mathbf{G} \mathbf{E}^\top$.
# Patchify only moves numbers, each exactly once, so its backward moves the gradient back:
# applied to the patches it returns the image, bit for bit.

# %%
assert np.array_equal(patchify.backward(x_p), x)
print("Patchify.backward(Patchify.forward(x)) == x exactly")

# %% [markdown]
# ## Gradient check
#
# `minivit.gradcheck.gradcheck` perturbs each input entry and each parameter entry by
# $\pm\epsilon$ and compares $(L(w + \epsilon) - L(w - \epsilon)) / 2\epsilon$ with what
# `backward` returned, in float64. We use a small embedding (two $8 \times 8$ RGB images,
# $P = 4$, $D = 6$) so that every entry is checked. A correct backward gives a relative error
# around $10^{-10}$; the bar for one layer is $10^{-7}$.

# %%
small = PatchEmbed(img_size=8, patch_size=4, in_chans=3, embed_dim=6, rng=1, dtype="float64")
xs = np.random.default_rng(2).standard_normal((2, 3, 8, 8))
result = gradcheck(small, xs, max_entries=1000)
print(result)
print(f"PatchEmbed gradient check, worst relative error: {result.worst:.2e}")
assert result.worst < 1e-7
