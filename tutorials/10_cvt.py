# %% [markdown]
# # Chapter 10 — CvT: convolutions inside the transformer
#
# ViT cuts the image into patches that do not overlap and tells the model where each one sits
# with a learned position embedding. CvT (Wu et al., 2021) puts two convolutions into the
# transformer instead. Each of its three stages starts with a *convolutional token embedding*, a
# strided convolution whose windows overlap, followed by a LayerNorm over the channels:
#
# $$\mathbf{z}_i = \mathrm{LN}\big(\mathrm{Conv2d}(\mathbf{x}_{i-1})\big),$$
#
# and inside every block, q, k and v come from a *convolutional projection*: a depthwise
# $3 \times 3$ convolution and BatchNorm over the token grid, then the usual linear map,
#
# $$\mathbf{q} = \mathrm{Flatten}\big(\mathrm{BN}(\mathrm{DWConv}_{s=1}(\mathbf{z}))\big)W_q, \quad
#   \mathbf{k} = \mathrm{Flatten}\big(\mathrm{BN}(\mathrm{DWConv}_{s=2}(\mathbf{z}))\big)W_k, \quad
#   \mathbf{v} = \mathrm{Flatten}\big(\mathrm{BN}(\mathrm{DWConv}_{s=2}(\mathbf{z}))\big)W_v,$$
#
# with stride 2 for the keys and values. There is no position embedding at all. This chapter
# computes a convolution as im2col on a photograph, shows BatchNorm's two modes, measures what the
# strided keys save, and checks why CvT can do without position embeddings.
#
# In minivit: `Conv2d` (with `im2col`, `col2im`), `BatchNorm2d`, `ConvEmbed`, `ConvProjection`,
# `ConvAttention`, and the model `ConvolutionalVisionTransformer` (`cvt_13`, `cvt_21`,
# `cvt_digits`).

# %%
import numpy as np
from common import chapter_args, plt, save, time_forward_backward
from sklearn.datasets import load_sample_image

import minivit
from minivit import viz
from minivit.gradcheck import gradcheck
from minivit.nn import (
    BatchNorm2d,
    Block,
    Conv2d,
    ConvAttention,
    MultiHeadSelfAttention,
    PatchEmbed,
    col2im,
    im2col,
    to_grid,
    to_tokens,
)

args = chapter_args({
    "10_im2col": "a convolution's overlapping windows on a photograph, three of its feature maps, and how "
                 "many windows cover each pixel",
    "10_batchnorm": "BatchNorm's running statistics over training steps, and one image's output in two "
                    "batches",
    "10_projection_cost": "measured time of convolutional attention with stride-1 and stride-2 keys and "
                          "values",
    "10_positions": "what the convolutions know of position: shuffled tokens through a ViT and a CvT "
                    "block, and the embedding of a shifted image",
}, grids=dict(type=int, nargs="+", default=[14, 28, 56], metavar="G",
              help="token grids (G x G) to time attention on (default 14 28 56)"))
rng = np.random.default_rng(0)

# %% [markdown]
# ## A convolution is one matrix product: im2col
#
# A convolution with kernel $k$, stride $s$ and padding $p$ computes, for every output pixel
# $(i, j)$ and output channel $o$,
#
# $$y[o, i, j] = \sum_{c, u, v} W[o, c, u, v]\; x_{pad}[c,\, s i + u,\, s j + v] + b[o].$$
#
# `im2col` copies the $C k^2$ input values under the kernel at each output pixel into one column,
# $(B, C, H, W) \to (B, C, k, k, H', W')$; then the sum is the matrix product of the kernel,
# reshaped to $(O, C k^2)$, with those columns: `Conv2d.forward` is im2col and one (batched)
# matmul. Its backward is the matmul's backward, and `col2im` adds each column entry back to the
# pixel it came from (a pixel under several windows collects from all of them).
#
# CvT-13's first embedding has $k = 7$, $s = 4$, $p = 2$: windows of $7 \times 7$ pixels every 4
# pixels, so neighbouring windows share 3 pixels; ViT's patch embedding is the special case
# $k = s = P$, $p = 0$, where they share none. Below, three hand-set kernels (two edge detectors and
# a blur) run over the photograph of chapters 1 and 5 at CvT-13's settings.

# %%
photo = load_sample_image("china.jpg")[100:324, 200:424]  # (224, 224, 3), chapter 5's crop
x = (photo / 255.0).transpose(2, 0, 1)[None]  # (1, 3, 224, 224)
k, s, p = 7, 4, 2
conv = Conv2d(3, 3, k, stride=s, padding=p, dtype="float64")
sobel = np.outer([1, 4, 6, 4, 1], [-1, -2, 0, 2, 1]) / 48.0  # a 5x5 Sobel, centred in the 7x7 kernel
kernels = np.zeros((3, 7, 7))
kernels[0, 1:6, 1:6], kernels[1, 1:6, 1:6], kernels[2] = sobel, sobel.T, 1.0 / 49
conv.weight.data[...] = kernels[:, None] / 3.0  # every output channel reads the three colours alike
conv.bias.data[...] = 0.0
y = conv.forward(x)  # (1, 3, 56, 56)
cols = im2col(x, k, s, p)  # (1, 3, 7, 7, 56, 56)
print(f"image {x.shape} -> im2col {cols.shape} -> as a matrix {cols.reshape(1, 3 * k * k, -1).shape}; "
      f"conv output {y.shape}")
i, j = 20, 31  # one output pixel, summed by hand over its window
window = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))[0, :, s * i:s * i + k, s * j:s * j + k]  # (3, 7, 7)
by_hand = [(conv.weight.data[o] * window).sum() for o in range(3)]
print(f"y[:, {i}, {j}] = {np.round(y[0, :, i, j], 6)}, by hand over its 7x7 window {np.round(by_hand, 6)}")
assert np.allclose(y[0, :, i, j], by_hand)
ones = col2im(np.ones_like(cols), x.shape, s, p)[0, 0]  # how many windows cover each pixel
print(f"windows covering a pixel (col2im of ones): {int(ones.min())} to {int(ones.max())}; "
      f"ViT's 16x16 patches: exactly 1")

# %% [markdown]
# ViT's patch embedding is this convolution with $k = s = P$: minivit's `PatchEmbed` (patchify,
# then $\mathbf{x}_p\mathbf{E}$) and a `Conv2d` holding the same numbers agree to rounding, forward
# and backward (`tests/test_cvt.py` checks it too).

# %%
embed = PatchEmbed(img_size=224, patch_size=16, in_chans=3, embed_dim=8, rng=0, dtype="float64")
same = Conv2d(3, 8, 16, stride=16, dtype="float64")
same.weight.data[...] = embed.proj.weight.data.T.reshape(8, 3, 16, 16)  # E (C P P, D) -> W (D, C, P, P)
same.bias.data[...] = embed.proj.bias.data
diff = np.abs(to_tokens(same.forward(x)) - embed.forward(x)).max()
print(f"PatchEmbed(P=16) against Conv2d(k=16, s=16): max |difference| = {diff:.1e}")
assert diff < 1e-12

# %%
fig, axes = plt.subplots(1, 5, figsize=(17, 3.8), layout="constrained")
axes[0].imshow(photo)
for n, (wi, wj) in enumerate([(10, 10), (10, 11), (11, 10), (11, 11)]):  # four neighbouring windows
    top, left = s * wi - p, s * wj - p
    axes[0].add_patch(plt.Rectangle((left - 0.5, top - 0.5), k, k, fill=False, lw=1.2,
                                    color=["yellow", "cyan", "magenta", "white"][n],
                                    ls=["-", "--", ":", "-."][n]))  # apart in grey too
axes[0].set_xlim(26, 58)
axes[0].set_ylim(58, 26)
axes[0].set_title(f"four neighbouring {k}x{k} windows,\nstride {s}: they overlap", fontsize=10)
axes[0].set_xlabel("pixel column")
axes[0].set_ylabel("pixel row")
for n, name in enumerate(["vertical edges", "horizontal edges", "blur (mean)"]):
    im = axes[n + 1].imshow(y[0, n], **(viz.signed(y[0, n]) if n < 2 else dict(cmap="gray")))  # edges: +-
    axes[n + 1].set_title(f"output channel {n}: {name}\n(56 x 56 tokens)", fontsize=10)
    fig.colorbar(im, ax=axes[n + 1], fraction=0.046)
im = axes[4].imshow(ones[:20, :20], cmap="viridis", vmin=0, vmax=4)
for (r, c), n_cover in np.ndenumerate(ones[:20, :20]):
    axes[4].text(c, r, str(int(n_cover)), ha="center", va="center", fontsize=6, color="white")
fig.colorbar(im, ax=axes[4], fraction=0.046, label="windows over the pixel")
axes[4].set_title("col2im of ones: how many windows\ncover each pixel (top-left 20x20)", fontsize=10)
for ax in axes[1:]:
    ax.set_xticks([])
    ax.set_yticks([])
save(fig, "10_im2col")

# %% [markdown]
# `Conv2d`'s backward, for the dense embedding and for the depthwise projections, is checked
# against central differences here (and against torch autograd in `tests/test_torch_compare.py`).

# %%
worst = 0.0
for layer, shape in [(Conv2d(3, 4, 3, stride=2, padding=1, dtype="float64"), (2, 3, 7, 7)),
                     (Conv2d(4, 4, 3, stride=2, padding=1, groups=4, bias=False, dtype="float64"),
                      (2, 4, 6, 6)),
                     (BatchNorm2d(4, dtype="float64"), (3, 4, 5, 5))]:
    for _, param in layer.named_parameters():
        param.data[...] = rng.standard_normal(param.shape)
    worst = max(worst, gradcheck(layer, rng.standard_normal(shape), max_entries=1000).worst)
print(f"Conv2d (dense and depthwise) and BatchNorm2d gradient checks, worst relative error: {worst:.2e}")

# %% [markdown]
# ## BatchNorm: batch statistics in training, running ones in eval
#
# The convolutional projections normalise with BatchNorm, not LayerNorm: per channel, over the
# batch and the whole grid,
#
# $$\mathrm{BN}(x) = \gamma\,\frac{x - \mu_{\mathcal{B}}}{\sqrt{\sigma^2_{\mathcal{B}} + \epsilon}} + \beta,$$
#
# with $\mu_{\mathcal{B}}, \sigma^2_{\mathcal{B}}$ the mean and variance of the channel over the
# $n = B H W$ values of the batch. In training mode each output depends on the rest of the batch,
# and the layer keeps running estimates, $\hat\mu \leftarrow 0.9\,\hat\mu + 0.1\,\mu_{\mathcal{B}}$ and
# $\hat\sigma^2 \leftarrow 0.9\,\hat\sigma^2 + 0.1\,\sigma^2_{\mathcal{B}}\, n/(n-1)$ (PyTorch's momentum
# and unbiased variance). In eval mode the running estimates replace the batch's, so an image's
# output no longer depends on its neighbours in the batch. Its backward in training mode has
# LayerNorm's three terms (chapter 2), over $(B, H, W)$ instead of over the features; in eval mode
# the statistics are constants and it is a per-channel scale.
#
# Below: batches of 8 images of the photo's features (mean 3, standard deviation 2 by
# construction), 60 training steps.

# %%
bn = BatchNorm2d(3, dtype="float64")
feature = 3.0 + 2.0 * rng.standard_normal((64, 3, 14, 14))  # a pool of 64 feature maps
means, variances = [], []
for _ in range(60):
    batch = feature[rng.choice(64, 8, replace=False)]
    bn.train().forward(batch)
    means.append(bn.running_mean.copy())
    variances.append(bn.running_var.copy())
means, variances = np.array(means), np.array(variances)
one = feature[:1]
alone = bn.train().forward(np.concatenate([one, feature[1:2]]))[0]  # the same image, two batches
with_others = bn.train().forward(np.concatenate([one, feature[2:8]]))[0]
eval_a = bn.eval().forward(np.concatenate([one, feature[1:2]]))[0]
eval_b = bn.eval().forward(np.concatenate([one, feature[2:8]]))[0]
print(f"running mean after 60 steps {np.round(means[-1], 3)}, variance {np.round(variances[-1], 3)} "
      f"(the features' 3 and 4); 1 - 0.9^60 = {1 - 0.9 ** 60:.4f} of the way from the start (0, 1)")
print(f"training mode, one image in two batches: outputs differ by up to "
      f"{np.abs(alone - with_others).max():.3f}")
print(f"eval mode, the same two batches: outputs differ by {np.abs(eval_a - eval_b).max():.1e}")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
steps = np.arange(1, 61)
axes[0].plot(steps, means[:, 0], label="running mean (channel 0)")
axes[0].plot(steps, variances[:, 0], label="running variance (channel 0)")
axes[0].plot(steps, 3 * (1 - 0.9 ** steps), "k:", lw=1, label="$3(1 - 0.9^t)$: momentum 0.1 from 0")
axes[0].axhline(3.0, color="grey", lw=0.5)
axes[0].axhline(4.0, color="grey", lw=0.5)
axes[0].set_xlabel("training step t")
axes[0].set_ylabel("estimate")
axes[0].set_title("running statistics follow the batches")
axes[0].legend(fontsize=8)
axes[1].hist(alone.ravel(), bins=40, alpha=0.6, label="train mode, batch of 2")
axes[1].hist(with_others.ravel(), bins=40, alpha=0.6, label="train mode, batch of 7")
axes[1].hist(eval_a.ravel(), bins=40, histtype="step", color="black", label="eval mode, either batch")
axes[1].set_xlabel("BN output of one image")
axes[1].set_ylabel("values (count)")
axes[1].set_title("one image: its output depends on its batch in training only")
axes[1].legend(fontsize=8)
save(fig, "10_batchnorm")

# %% [markdown]
# ## The convolutional projection, and why the keys are strided
#
# In `ConvAttention`, the token grid goes through three depthwise $3 \times 3$ convolutions with
# BatchNorm (`ConvProjection`), one each for q, k and v, before the linear maps $W_q, W_k, W_v$.
# The depthwise convolution mixes each token with its eight neighbours, channel by channel, so q,
# k and v carry local context. The keys' and values' convolutions have stride 2: a quarter of the
# tokens. Attention's cost is $2 N N_{kv} D$ multiply-adds for $\mathbf{q}\mathbf{k}^\top$ and
# $A\mathbf{v}$, so it falls by 4; the queries keep the full grid, so the output still has one
# token per input token. (The scores are scaled by $D^{-1/2}$, the full width, as the reference
# implementation does, not by the head width.)
#
# Measured: one `ConvAttention` with stride-1 keys, one with stride-2 keys, and a plain
# `MultiHeadSelfAttention` for reference, forward and backward, $D = 64$, one head (CvT-13's stage 1),
# float32, 4 images, the median of up to five runs.

# %%
D, heads = 64, 1


rows = []
for g in sorted(set(args.grids)):
    n = g * g
    xt = rng.standard_normal((4, n, D)).astype(np.float32)
    t_full, _ = time_forward_backward(ConvAttention(D, heads, g, stride_kv=1, rng=0, dtype="float32"), xt)
    t_strided, _ = time_forward_backward(ConvAttention(D, heads, g, stride_kv=2, rng=0, dtype="float32"), xt)
    t_msa, _ = time_forward_backward(MultiHeadSelfAttention(D, heads, rng=0, dtype="float32"), xt)
    n_kv = ((g - 1) // 2 + 1) ** 2
    rows.append((n, t_full, t_strided, t_msa))
    print(f"{g:3d} x {g:<3d} = {n:5d} tokens, {n_kv:4d} strided keys: stride-1 keys {t_full * 1e3:7.1f} ms, "
          f"stride-2 keys {t_strided * 1e3:7.1f} ms ({t_full / t_strided:.1f}x faster), "
          f"plain MSA {t_msa * 1e3:7.1f} ms")
rows = np.array(rows)

fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
ax.plot(rows[:, 0], rows[:, 1] * 1e3, "o-", label="ConvAttention, stride-1 keys and values")
ax.plot(rows[:, 0], rows[:, 2] * 1e3, "s-.", label="ConvAttention, stride-2 (CvT)")
ax.plot(rows[:, 0], rows[:, 3] * 1e3, "^--", label="MultiHeadSelfAttention (no convolutions)")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xticks(rows[:, 0], [f"{int(n)}\n({int(np.sqrt(n))}$^2$)" for n in rows[:, 0]])
ax.minorticks_off()
ax.set_xlabel("tokens N")
ax.set_ylabel("forward + backward time (ms)")
ax.set_title(f"measured: D = {D}, {heads} head, float32, 4 images")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
save(fig, "10_projection_cost")

# %% [markdown]
# ## What CvT gives up, and why it can: position embeddings
#
# Attention by itself does not know where a token is: permute the tokens going into a transformer
# block and its outputs come out permuted the same way. ViT adds $\mathbf{E}_{pos}$ so that position
# is part of each token. CvT adds nothing, because its convolutions already see where things are:
# each projection mixes a token with its grid neighbours, so shuffling the tokens changes what the
# block computes, and the zero padding at the border marks the edges of the image. The authors
# found that the position embedding "can be safely removed" from CvT. Below, the same tokens, and
# the same tokens shuffled, through a ViT block and through a CvT block.

# %%
g = 8
z = rng.standard_normal((1, g * g, 16))
perm = rng.permutation(g * g)
vit_block = Block(16, 2, mlp_ratio=2.0, rng=0, dtype="float64")
cvt_block = Block(16, 2, mlp_ratio=2.0, eps=1e-5, rng=0, dtype="float64",
                  attn=ConvAttention(16, 2, g, rng=1, dtype="float64")).eval()
for block in (vit_block, cvt_block):  # weights as a trained model's are (the init's 0.02 barely mixes)
    for _, param in block.named_parameters():
        param.data[...] = 0.3 * rng.standard_normal(param.shape) + (param.data.ndim == 1) * (param.data == 1)
vit_moved = np.abs(vit_block.forward(z[:, perm]) - vit_block.forward(z)[:, perm]).max()
cvt_moved = np.abs(cvt_block.forward(z[:, perm]) - cvt_block.forward(z)[:, perm]).max()
print(f"ViT block: block(shuffled) - shuffled(block) = {vit_moved:.1e} "
      f"(permutation-equivariant: blind to position)")
print(f"CvT block: block(shuffled) - shuffled(block) = {cvt_moved:.2f}, outputs of size "
      f"{np.abs(cvt_block.forward(z)).max():.2f} (its convolutions see the neighbours)")
assert vit_moved < 1e-12 < cvt_moved

# %% [markdown]
# And a convolution is translation-equivariant: shift the image by one stride and the token map
# shifts by one token (away from the border, where the padding shows). CvT-13's embedding, random
# weights, on the photo shifted 4 pixels to the left:

# %%
cvt13 = minivit.create_model("cvt_13", dtype="float64", seed=0).eval()
embed13 = cvt13.stages[0].patch_embed
shifted = np.roll(x, -s, axis=3)  # 4 pixels left (the last 4 columns wrap around)
a = to_grid(embed13.forward(x), 56, 56)
b = to_grid(embed13.forward(shifted), 56, 56)
interior = np.abs(b[..., 2:-3, 1:-3] - a[..., 2:-3, 2:-2]).max()
border = np.abs(b[..., :, -1] - a[..., :, -1]).max()
print(f"ConvEmbed(shifted image) - shifted(ConvEmbed(image)) away from the border: {interior:.1e}; "
      f"at the wrapped edge: {border:.2f}")
assert interior < 1e-12

fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
fig.get_layout_engine().set(wspace=0.06)  # room between the colour bar's label and the next panel's
shuffled_vit = vit_block.forward(z[:, perm])[0]
axes[0].imshow(np.abs(shuffled_vit - vit_block.forward(z)[0, perm]), cmap="viridis", aspect="auto", vmin=0,
               vmax=max(cvt_moved, 1e-3))
axes[0].set_title("ViT block: |block(shuffled) - shuffled(block)|\nzero: it cannot tell")
im = axes[1].imshow(np.abs(cvt_block.forward(z[:, perm])[0] - cvt_block.forward(z)[0, perm]), cmap="viridis",
                    aspect="auto", vmin=0, vmax=cvt_moved)
axes[1].set_title("CvT block: the same difference\nthe convolutions see each token's neighbours")
fig.colorbar(im, ax=axes[1], fraction=0.046, label="|difference|, both panels")  # one scale
for ax in axes[:2]:
    ax.set_xlabel("feature")
    ax.set_ylabel("token")
im = axes[2].imshow(np.abs(b[0] - np.roll(a[0], -1, axis=2)).max(axis=0), cmap="magma", vmin=0)
fig.colorbar(im, ax=axes[2], fraction=0.046, label="max |difference| over channels")
axes[2].set_title("CvT-13's embedding: shift the image by 4 px,\nthe tokens shift by 1 (but at the edges)")
axes[2].set_xlabel("token column")
axes[2].set_ylabel("token row")
save(fig, "10_positions")

# %% [markdown]
# ## CvT-13, stage by stage, and training one
#
# CvT-13: widths 64, 192, 384, with 1, 2 and 10 blocks of 1, 3 and 6 heads; 19,997,480 parameters,
# as transformers counts them (BatchNorm's running statistics are buffers, not parameters). The
# class token joins in the last stage, and its final state, after a LayerNorm, feeds the head.

# %%
print(f"cvt_13: {cvt13.num_parameters():,} parameters")
grid = x
for n, stage in enumerate(cvt13.stages, 1):
    tokens = stage.forward(grid)
    conv = stage.patch_embed.proj
    print(f"stage {n}: {grid.shape} -> Conv2d(k={conv.kernel_size}, s={conv.stride}, p={conv.padding}) -> "
          f"{stage.out_resolution}x{stage.out_resolution} grid -> tokens {tokens.shape} "
          f"({len(stage.blocks)} blocks, keys on {(stage.out_resolution - 1) // 2 + 1}x"
          f"{(stage.out_resolution - 1) // 2 + 1})")
    grid = to_grid(tokens, stage.out_resolution, stage.out_resolution) if n < 3 else None

# %% [markdown]
# `cvt_digits` is a CvT at the size of the embedded $8 \times 8$ digits: a stride-1 embedding to an
# $8 \times 8$ grid, then $4 \times 4$ and $2 \times 2$ with the class token; widths 16, 32, 64. It
# trains with chapter 6's recipe:
#
# ```bash
# python -m minivit train --model cvt_digits --out runs/cvt_digits
# ```
#
# `minivit.from_pretrained` reads transformers' `CvtForImageClassification` folders (BatchNorm's
# running statistics included) and `minivit.save_pretrained` writes them, with the same logits.
