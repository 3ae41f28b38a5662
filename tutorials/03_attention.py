# %% [markdown]
# # Chapter 3 — Attention
#
# Attention is the only place where the tokens of a ViT talk to each other. Each token asks a
# question (its query $\mathbf{q}$), offers a key $\mathbf{k}$ to be matched against the
# questions of the others, and a value $\mathbf{v}$ to hand over. With the tokens stacked as
# rows, $\mathbf{q}, \mathbf{k}, \mathbf{v} \in \mathbb{R}^{N \times d}$:
#
# $$A = \mathrm{softmax}\!\left(\mathbf{q}\mathbf{k}^\top / \sqrt{d}\right) \in \mathbb{R}^{N \times N},
#   \qquad \mathrm{SA}(\mathbf{z}) = A\mathbf{v} \in \mathbb{R}^{N \times d},$$
#
# with the softmax taken along each row. Row $i$ of $A$ is a probability distribution over the
# tokens: how much token $i$ takes from each. Multi-head self-attention runs $h$ of these side by
# side on $d = D / h$ dimensions each and mixes their outputs:
#
# $$[\mathbf{q}, \mathbf{k}, \mathbf{v}] = \mathbf{z}\mathbf{U}_{qkv}, \qquad
#   \mathrm{MSA}(\mathbf{z}) = [\mathrm{SA}_1(\mathbf{z}); \ldots; \mathrm{SA}_h(\mathbf{z})]\,
#   \mathbf{U}_{msa}, \qquad \mathbf{U}_{qkv} \in \mathbb{R}^{D \times 3D},\;
#   \mathbf{U}_{msa} \in \mathbb{R}^{D \times D}.$$
#
# minivit has `softmax` / `softmax_backward` (and the `Softmax` layer), `ScaledDotProductAttention`
# (q, k, v from outside, optional additive bias and mask) and `MultiHeadSelfAttention` (the
# fused projection, the heads, the output projection).

# %%
import numpy as np
from common import chapter_args, plt, save
from matplotlib.colors import PowerNorm
from sklearn.datasets import load_sample_image

from minivit.gradcheck import gradcheck
from minivit.nn import (
    MultiHeadSelfAttention,
    Patchify,
    ScaledDotProductAttention,
    Softmax,
    softmax,
    softmax_backward,
)

chapter_args({
    "03_sqrt_d_scale": "score variance, largest probability and softmax Jacobian size against the head width "
                       "d, with and without the 1/sqrt(d) scale",
    "03_heads_on_photo": "four hand-made heads on the photograph: the attention of one query patch, and A v",
    "03_attention_matrices": "the 196 x 196 attention matrices of the four heads",
})
rng = np.random.default_rng(0)
np.set_printoptions(precision=3, suppress=True)

# %% [markdown]
# ## By hand, on four tokens
#
# Four tokens, $d = 3$. Entry $(i, j)$ of $\mathbf{q}\mathbf{k}^\top$ is the dot product of query
# $i$ with key $j$: large when they point the same way.

# %%
N, d = 4, 3
q, k, v = (rng.standard_normal((N, d)) for _ in range(3))
S = q @ k.T / np.sqrt(d)  # (N, N) scores
A = np.exp(S - S.max(axis=1, keepdims=True))
A /= A.sum(axis=1, keepdims=True)  # each row sums to one
by_hand = A @ v  # (N, d)
print("A =\n", A)

sdpa = ScaledDotProductAttention()
library = sdpa.forward(q[None, None], k[None, None], v[None, None])[0, 0]  # (B=1, h=1, N, d) in and out
print(f"max |A v by hand - ScaledDotProductAttention| = {np.abs(by_hand - library).max():.1e}")
assert np.allclose(by_hand, library)

# %% [markdown]
# ## Softmax and its backward
#
# $y_i = e^{x_i} / \sum_j e^{x_j}$. Adding a constant to every $x_j$ multiplies numerator and
# denominator by the same $e^c$, so minivit subtracts the row maximum first and never overflows.
# Its Jacobian is $\partial y_i / \partial x_j = y_i(\delta_{ij} - y_j)$, i.e.
# $J = \mathrm{diag}(\mathbf{y}) - \mathbf{y}\mathbf{y}^\top$. Multiplying by an upstream gradient
# $\mathbf{g}$ collapses to one weighted sum:
#
# $$\frac{\partial L}{\partial x_j} = \sum_i g_i\, y_i(\delta_{ij} - y_j)
#   = y_j\Big(g_j - \sum_i g_i y_i\Big),$$
#
# which is what `softmax_backward` computes — no $N \times N$ matrix per row.

# %%
x = rng.standard_normal(5)
y = softmax(x)
g = rng.standard_normal(5)
J = np.diag(y) - np.outer(y, y)
print(f"softmax(x + 1000) == softmax(x): {np.allclose(softmax(x + 1000.0), y)}")
print(f"max |g J - softmax_backward| = {np.abs(g @ J - softmax_backward(y, g)).max():.1e}")
assert np.allclose(g @ J, softmax_backward(y, g))

# %% [markdown]
# ## Why divide by $\sqrt{d}$
#
# Say the entries of $\mathbf{q}$ and $\mathbf{k}$ are independent with mean 0 and variance 1
# (LayerNorm keeps tokens near that scale). Then $\mathbf{q}\cdot\mathbf{k} = \sum_{i=1}^{d} q_i k_i$
# is a sum of $d$ terms of variance 1: its variance is $d$, its spread $\sqrt{d}$. Wide heads
# would feed the softmax scores spread over tens of units; the softmax then puts almost all
# the weight on one token, and its Jacobian $\mathrm{diag}(\mathbf{y}) - \mathbf{y}\mathbf{y}^\top$
# is almost zero — gradients stop flowing. Dividing by $\sqrt{d}$ brings the variance back to 1
# for every head width. Measured, for rows of 16 keys:

# %%
widths = [4, 16, 64, 256, 1024]
rows = []
for dw in widths:
    qs, ks = rng.standard_normal((2, 2000, 16, dw))  # 2000 rows of 16 (query, key) pairs
    dots = (qs * ks).sum(-1)  # (2000, 16) dot products
    stats = []
    for scores in (dots, dots / np.sqrt(dw)):
        p = softmax(scores)
        jac = np.sqrt(((p[:, :, None] * (np.eye(16) - p[:, None, :])) ** 2).sum((1, 2)))  # |J|_F per row
        stats += [scores.var(), p.max(axis=1).mean(), jac.mean()]
    rows.append(stats)
    print(f"d = {dw:5d}: var(q.k) = {stats[0]:7.1f}  var(q.k/sqrt d) = {stats[3]:.2f}   "
          f"mean max prob {stats[1]:.2f} -> {stats[4]:.2f}   mean |J| {stats[2]:.3f} -> {stats[5]:.3f}")
rows = np.array(rows)

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
for col, ax, title, ylabel in ((0, axes[0], "variance of the scores", "var (log scale)"),
                               (1, axes[1], "largest attention probability", "mean of max_j A_ij"),
                               (2, axes[2], "size of the softmax Jacobian", "mean |J|_F")):
    ax.plot(widths, rows[:, col], "o-", label="q.k")
    ax.plot(widths, rows[:, col + 3], "s--", label="q.k / sqrt(d)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("head width d")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
axes[0].set_yscale("log", base=2)
save(fig, "03_sqrt_d_scale")

# %% [markdown]
# ## Splitting and merging heads
#
# `MultiHeadSelfAttention` computes $\mathbf{z}\mathbf{U}_{qkv}$ as one matmul, $(N, D) \to (N, 3D)$,
# and reshapes: columns $[0, D)$ are the queries, $[D, 2D)$ the keys, $[2D, 3D)$ the values, and
# within each, head $j$ owns columns $jd \ldots (j+1)d - 1$. The reshape to $(B, h, N, d)$ lets one
# batched matmul serve every head; merging transposes back and concatenates the heads,
# $[\mathrm{SA}_1; \ldots; \mathrm{SA}_h]$, before $\mathbf{U}_{msa}$. Below, the same layer's
# weights used one head at a time in a plain loop.

# %%
D, h, N = 8, 2, 5
msa = MultiHeadSelfAttention(D, num_heads=h, rng=1, dtype="float64")
msa.qkv.weight.data[...] = rng.standard_normal((D, 3 * D)) / np.sqrt(D)  # O(1) scores, not near-uniform
z = rng.standard_normal((1, N, D))
batched = msa.forward(z)  # (1, N, D)

U_qkv, b_qkv = msa.qkv.weight.data, msa.qkv.bias.data  # (D, 3D), (3D,)
U_msa, b_msa = msa.proj.weight.data, msa.proj.bias.data  # (D, D), (D,)
hd = D // h
heads = []
for j in range(h):
    cols = [slice(part * D + j * hd, part * D + (j + 1) * hd) for part in range(3)]  # q, k, v of head j
    q_j, k_j, v_j = (z[0] @ U_qkv[:, c] + b_qkv[c] for c in cols)  # (N, d) each
    A_j = softmax(q_j @ k_j.T / np.sqrt(hd))  # (N, N)
    assert np.allclose(A_j, msa.attn_probs[0, j])
    heads.append(A_j @ v_j)
looped = np.concatenate(heads, axis=1) @ U_msa + b_msa  # [SA_1; SA_2] U_msa: (N, D)
print(f"max |loop over heads - MultiHeadSelfAttention| = {np.abs(looped - batched[0]).max():.1e}")
assert np.allclose(looped, batched[0])

# %% [markdown]
# ## Masks and an additive bias
#
# Two optional inputs let later models steer attention without touching the layer:
#
# * an additive bias $B$ on the scores, $A = \mathrm{softmax}(\mathbf{q}\mathbf{k}^\top/\sqrt{d} + B)$
#   (Swin's relative position bias): $B_{ij} > 0$ pulls token $i$ towards token $j$;
# * a boolean mask (True = may attend): masked scores become $-\infty$, so their probabilities are
#   exactly 0 and the rest of the row renormalises (Swin's shifted windows).
#
# A bias of $-\infty$ is a mask; a large negative one is nearly a mask. The gradient of the bias
# is the gradient of the scores, $\partial L / \partial B = \partial L / \partial S$, summed over
# whatever axes $B$ was broadcast along.

# %%
qh, kh, vh = (rng.standard_normal((1, 1, 4, 3)) for _ in range(3))
mask = np.tril(np.ones((4, 4), dtype=bool))  # token i sees tokens 0..i
sdpa.forward(qh, kh, vh, mask=mask)
A_masked = sdpa.attn_probs[0, 0]  # the probabilities of the last forward
print("masked A (lower triangle):\n", A_masked)
bias = np.where(mask, 0.0, -1e4)
sdpa.forward(qh, kh, vh, bias=bias)
gap = np.abs(sdpa.attn_probs[0, 0] - A_masked).max()
print(f"bias -1e4 instead of the mask: max |difference| = {gap:.1e}")
assert np.allclose(A_masked.sum(axis=1), 1.0) and np.all(A_masked[~mask] == 0.0)

# %% [markdown]
# ## Gradient checks
#
# The attention with a bias and a mask (gradients for $\mathbf{q}$, $\mathbf{k}$, $\mathbf{v}$ and
# the bias; the mask is not differentiable), and the whole multi-head layer with its two
# projections and a bias shared over the batch. Float64, bar $10^{-7}$.

# %%
shape = (2, 2, 5, 4)  # (B, h, N, d)
qc, kc, vc = (rng.standard_normal(shape) for _ in range(3))
bias_c = rng.standard_normal((1, 2, 5, 5))  # one bias per head, broadcast over the batch
mask_c = rng.random((1, 1, 5, 5)) > 0.3
mask_c[..., 0] = True  # every query may attend to at least one key
r1 = gradcheck(ScaledDotProductAttention(), qc, kc, vc, bias_c, mask_c, max_entries=1000)
print(r1)
r2 = gradcheck(Softmax(), rng.standard_normal((3, 7)), max_entries=1000)
msa_c = MultiHeadSelfAttention(8, num_heads=2, rng=3, dtype="float64")
r3 = gradcheck(msa_c, rng.standard_normal((2, 5, 8)), rng.standard_normal((1, 2, 5, 5)), max_entries=1000)
print(r3)
worst = max(r1.worst, r2.worst, r3.worst)
print(f"ScaledDotProductAttention {r1.worst:.2e}, Softmax {r2.worst:.2e}, "
      f"MultiHeadSelfAttention {r3.worst:.2e}")
print(f"attention gradient checks, worst relative error: {worst:.2e}")
assert worst < 1e-7

# %% [markdown]
# ## What heads look at: four hand-made heads on a photograph
#
# Trained heads are the subject of chapter 6. Here we build four heads whose queries and keys
# we choose, so that what each one attends to is known in advance, and let
# `ScaledDotProductAttention` run them all in one call on the 196 patches of the photograph of
# chapter 1. The values are the patches' pixels, so $A\mathbf{v}$ is again a picture: each
# patch replaced by the mixture of patches its head attends to.
#
# 1. *colour*: attend to patches of the same colour, anywhere. With $\mathbf{c}_i$ the mean colour
#    of patch $i$ (standardised), queries $\mathbf{q}_i = [\mathbf{c}_i, 1]$ and keys
#    $\mathbf{k}_j = [\mathbf{c}_j, -\lVert\mathbf{c}_j\rVert^2/2]$ give
#    $\mathbf{q}_i\cdot\mathbf{k}_j$
#    $= -\lVert\mathbf{c}_i - \mathbf{c}_j\rVert^2/2 + \lVert\mathbf{c}_i\rVert^2/2$,
#    a similarity plus a constant per row, which the softmax ignores (times a sharpness $\tau$);
# 2. *locality*: $\mathbf{q} = \mathbf{k} = 0$ and a bias $B_{ij} = -\lVert p_i - p_j\rVert^2 / 2$
#    over grid positions $p$ — attend to the neighbours, whatever they show;
# 3. *colour + locality*: both — nearby patches of similar colour;
# 4. *colour, same row*: colour with a mask that allows only the patch's own grid row.

# %%
photo = load_sample_image("china.jpg")[100:324, 200:424]  # (224, 224, 3)
img = photo.transpose(2, 0, 1)[None].astype(np.float64) / 255.0  # (1, 3, 224, 224)
x_p = Patchify(16).forward(img)[0]  # (196, 768): the values
colour = x_p.reshape(196, 3, 256).mean(axis=2)  # (196, 3) mean R, G, B per patch
colour = (colour - colour.mean(0)) / colour.std(0)
tau = 8.0  # sharpness
q_col = np.concatenate([colour, np.ones((196, 1))], axis=1) * tau * np.sqrt(4)  # cancels the 1/sqrt(d)
k_col = np.concatenate([colour, -0.5 * (colour**2).sum(1, keepdims=True)], axis=1)  # (196, 4)
zero = np.zeros_like(q_col)
q4 = np.stack([q_col, zero, q_col, q_col])[None]  # (1, h=4, N=196, d=4)
k4 = np.stack([k_col, zero, k_col, k_col])[None]
grid = np.stack(np.divmod(np.arange(196), 14), axis=1)  # (196, 2) grid row and column
dist2 = ((grid[:, None, :] - grid[None, :, :]) ** 2).sum(-1)  # (196, 196)
bias4 = np.zeros((1, 4, 196, 196))
bias4[0, 1] = bias4[0, 2] = -dist2 / 2.0
mask4 = np.ones((1, 4, 196, 196), dtype=bool)
mask4[0, 3] = grid[:, None, 0] == grid[None, :, 0]  # same grid row
v4 = np.broadcast_to(x_p, (1, 4, 196, 768))
mixed = sdpa.forward(q4, k4, v4, bias=bias4, mask=mask4)  # (1, 4, 196, 768)
A4 = sdpa.attn_probs[0]  # (4, 196, 196)
names = ["colour", "locality", "colour + locality", "colour, same row"]

# %%
query = 14 * 6 + 3  # a patch on the roof, grid row 6, column 3
fig, axes = plt.subplots(2, 5, figsize=(12.5, 5), layout="constrained")
axes[0, 0].imshow(photo)
axes[0, 0].add_patch(plt.Rectangle((3 * 16 - 0.5, 6 * 16 - 0.5), 16, 16, fill=False, color="red", lw=2))
axes[0, 0].set_title("query patch (red)")
axes[1, 0].imshow(photo)
axes[1, 0].set_title("input: the patches x_p")
for j in range(4):
    im = axes[0, j + 1].imshow(A4[j, query].reshape(14, 14), cmap="magma", vmin=0)
    fig.colorbar(im, ax=axes[0, j + 1], fraction=0.046, label="attention weight")
    axes[0, j + 1].set_title(f"A, {names[j]}")
    out_img = mixed[0, j].reshape(14, 14, 3, 16, 16).transpose(0, 3, 1, 4, 2).reshape(224, 224, 3)
    axes[1, j + 1].imshow(np.clip(out_img, 0, 1))
    axes[1, j + 1].set_title(f"A v, {names[j]}")
for ax in axes.ravel():
    ax.axis("off")
save(fig, "03_heads_on_photo")

fig, axes = plt.subplots(1, 4, figsize=(14, 3.8), layout="constrained")
for j, ax in enumerate(axes):
    im = ax.imshow(A4[j], cmap="magma", norm=PowerNorm(0.5, vmin=0, vmax=1))  # the small ones stay visible
    ax.set_title(f"head {j + 1}: {names[j]}")
    ax.set_xlabel("key patch j")
axes[0].set_ylabel("query patch i")
fig.colorbar(im, ax=axes, fraction=0.02, label="attention probability A_ij")
fig.suptitle("attention probabilities A (196 x 196) per head, on a square-root colour scale")
save(fig, "03_attention_matrices")
