# %% [markdown]
# # Chapter 9 — Swin: attention in shifted windows
#
# ViT's attention compares every token with every other: its cost grows with the square of the
# number of tokens, so ViT cuts images into coarse $16 \times 16$ patches. The Swin Transformer
# (Liu et al., 2021) keeps fine $4 \times 4$ patches and lets each token attend only inside its
# $M \times M$ *window* of the token grid ($M = 7$). Two consecutive blocks use two ways of cutting
# the grid into windows, the second shifted by $\lfloor M/2 \rfloor$, so that information crosses
# the window borders (the paper's Eq. 3):
#
# $$\begin{aligned}
# \hat{\mathbf{z}}^{l} &= \text{W-MSA}(\mathrm{LN}(\mathbf{z}^{l-1})) + \mathbf{z}^{l-1}, &
# \mathbf{z}^{l} &= \mathrm{MLP}(\mathrm{LN}(\hat{\mathbf{z}}^{l})) + \hat{\mathbf{z}}^{l}, \\
# \hat{\mathbf{z}}^{l+1} &= \text{SW-MSA}(\mathrm{LN}(\mathbf{z}^{l})) + \mathbf{z}^{l}, &
# \mathbf{z}^{l+1} &= \mathrm{MLP}(\mathrm{LN}(\hat{\mathbf{z}}^{l+1})) + \hat{\mathbf{z}}^{l+1}.
# \end{aligned}$$
#
# Inside a window, attention is chapter 3's with one more term, a learned bias $B$ that depends on
# where two tokens sit relative to each other (Eq. 4):
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{SoftMax}\!\left(QK^\top/\sqrt{d} + B\right)V,
#   \qquad Q, K, V \in \mathbb{R}^{M^2 \times d},\; B \in \mathbb{R}^{M^2 \times M^2}.$$
#
# Between stages, *patch merging* halves the grid and doubles the width, so Swin builds a pyramid
# of feature maps as a CNN does. This chapter draws each piece on a photograph or a small grid,
# checks it against a direct computation, and measures what the windows save.
#
# In minivit: `WindowPartition` / `window_partition`, `CyclicShift` / `cyclic_shift`,
# `shift_window_mask`, `relative_position_index`, `RelativePositionBias`, `WindowAttention`,
# `PatchMerging` (all in `minivit.nn.window`), `SwinBlock`, and the model, `SwinTransformer`.

# %%
import numpy as np
from common import chapter_args, plt, save, time_forward_backward
from sklearn.datasets import load_sample_image

import minivit
from minivit import viz
from minivit.nn import (
    MultiHeadSelfAttention,
    PatchMerging,
    RelativePositionBias,
    WindowAttention,
    WindowPartition,
    cyclic_shift,
    relative_position_index,
    shift_window_mask,
    window_partition,
)

args = chapter_args({
    "09_windows": "W-MSA's windows on a photograph, the shifted windows, and the rolled grid that "
                  "computes them",
    "09_shift_mask": "the regions of the rolled grid and the mask of each kind of window",
    "09_relative_position_bias": "the relative position index, the table of one head, and the bias it "
                                 "gathers into",
    "09_patch_merging": "patch merging's four neighbours as four half-resolution images",
    "09_cost": "measured time and counted multiply-adds of window and global attention as the grid grows",
}, grids=dict(type=int, nargs="+", default=[14, 28, 56, 112], metavar="G",
              help="token grids (G x G) to time attention on (default 14 28 56 112; global attention on "
                   "112 x 112 takes about 4 GB and several seconds)"))
rng = np.random.default_rng(0)

# %% [markdown]
# ## Windows on a photograph
#
# The $224 \times 224$ crop of chapters 1 and 5, cut as swin_tiny cuts it: $4 \times 4$ patches,
# a $56 \times 56$ grid of tokens, and $7 \times 7$ windows of tokens, $8 \times 8 = 64$ windows of
# $28 \times 28$ pixels. W-MSA runs attention in each window separately: $64$ sequences of
# $M^2 = 49$ tokens instead of one sequence of $3136$.
#
# `window_partition` is a reshape and a transpose, $(B, H, W, C) \to (B \cdot \frac{H}{M}
# \frac{W}{M}, M^2, C)$, windows in row-major order and the tokens of each window row-major. Here
# the tokens are the patches' raw pixels ($C = 4 \cdot 4 \cdot 3 = 48$), so each window can be
# drawn back as a picture.

# %%
photo = load_sample_image("china.jpg")[100:324, 200:424]  # (224, 224, 3), chapter 5's crop
P, M = 4, 7
G = 224 // P  # 56 tokens a side
s = M // 2  # the shift of SW-MSA: 3 tokens, 12 pixels
tokens = photo.reshape(G, P, G, P, 3).transpose(0, 2, 1, 3, 4).reshape(1, G, G, P * P * 3)  # (1, 56, 56, 48)


def to_image(grid):
    """(1, 56, 56, 48) tokens of raw pixels -> the (224, 224, 3) picture."""
    return grid.reshape(G, G, P, P, 3).transpose(0, 2, 1, 3, 4).reshape(G * P, G * P, 3)


windows = WindowPartition(M).forward(tokens)  # (64, 49, 48)
print(f"tokens {tokens.shape} -> windows {windows.shape}")
k = 2 * (G // M) + 3  # window row 2, column 3
same = np.array_equal(windows[k].reshape(M, M, P, P, 3).transpose(0, 2, 1, 3, 4).reshape(28, 28, 3),
                      photo[2 * 28:3 * 28, 3 * 28:4 * 28])
print(f"window {k} holds pixels rows 56-83, columns 84-111 of the photo: {same}")
assert same

# %% [markdown]
# ## The shifted windows, and the cyclic shift that computes them
#
# SW-MSA moves the window borders by $s = \lfloor M/2 \rfloor = 3$ tokens. Cut naively, the
# shifted partition has $9 \times 9 = 81$ windows, many of them smaller than $M \times M$ at the
# edges. The paper's trick: roll the whole grid by $-s$ rows and $-s$ columns,
# $y_{i,j} = x_{(i+s) \bmod H,\,(j+s) \bmod W}$ (`cyclic_shift`), and cut the rolled grid into the
# regular 64 windows. The interior windows of the rolled grid are exactly the interior shifted
# windows; the last row and column of windows are stitched together from pieces of opposite
# edges (red: one window made of the photo's four corners; cyan: one made of the right and left
# edge). The grid is rolled back by $+s$ after the attention.

# %%
ids = np.arange((G // M) ** 2).reshape(G // M, G // M).repeat(M, 0).repeat(M, 1)  # window of each token
ids_rolled = ids[None, :, :, None]  # the regular windows, on the rolled grid
ids_shifted = cyclic_shift(ids_rolled, -s)  # the same windows, where their tokens came from
rolled = cyclic_shift(tokens, s)  # (1, 56, 56, 48): what WindowAttention does before partitioning
red, cyan = (G // M) ** 2 - 1, G // M - 1  # the last window, the last window of the first row


def tint(ax, window_ids):
    """Colour the tokens of windows ``red`` and ``cyan`` on a (1, 56, 56, 1) map of window ids (a
    dark tint and a light one: they differ in grey too)."""
    layer = np.zeros((G, G, 4))
    layer[window_ids[0, :, :, 0] == red] = (0.8, 0, 0, 0.55)
    layer[window_ids[0, :, :, 0] == cyan] = (0, 1, 1, 0.55)
    ax.imshow(layer.repeat(P, 0).repeat(P, 1), interpolation="nearest")


fig, axes = plt.subplots(1, 3, figsize=(12.5, 4.7), layout="constrained")
axes[0].imshow(photo)
for b in range(0, 225, M * P):
    axes[0].axhline(b - 0.5, color="white", lw=1.2)
    axes[0].axvline(b - 0.5, color="white", lw=1.2)
for b in range(3 * 28, 4 * 28 + 1, P):  # the 7 x 7 patches of one window, in a thinner line
    axes[0].plot([b - 0.5, b - 0.5], [55.5, 83.5], color="yellow", lw=0.5, ls="-")
for b in range(2 * 28, 3 * 28 + 1, P):
    axes[0].plot([83.5, 111.5], [b - 0.5, b - 0.5], color="yellow", lw=0.5, ls="-")
axes[0].set_title(f"W-MSA: {(G // M) ** 2} windows of {M} x {M} patches\n(one window's patches in yellow)",
                  fontsize=10)
axes[1].imshow(photo)
tint(axes[1], ids_shifted)
for b in range(s * P, 224, M * P):
    axes[1].axhline(b - 0.5, color="white", lw=1.2)
    axes[1].axvline(b - 0.5, color="white", lw=1.2)
axes[1].set_title(f"SW-MSA: borders moved by s = {s} patches ({s * P} px)\n"
                  "red, cyan: two windows that wrap around", fontsize=10)
axes[2].imshow(to_image(rolled))
tint(axes[2], ids_rolled)
for b in range(0, 225, M * P):
    axes[2].axhline(b - 0.5, color="white", lw=1.2)
    axes[2].axvline(b - 0.5, color="white", lw=1.2)
axes[2].set_title(f"what the code does: roll by -{s} patches,\nthen the regular windows", fontsize=10)
for ax in axes:
    ax.set_xlim(-0.5, 223.5)
    ax.set_ylim(223.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
save(fig, "09_windows")
n_pieces = len(np.unique(ids_shifted))
print(f"rolled grid: {window_partition(rolled, M).shape[0]} windows, the same {n_pieces} as the regular grid")

# %% [markdown]
# ## The mask: pieces of different edges must not see each other
#
# A window in the last row or column of the rolled grid holds tokens that were far apart in the
# image (the red window: the four corners). They must attend only within their own piece. The
# rolled grid is labelled in $3 \times 3$ regions, cut at $M$ and at $s$ tokens from the bottom and
# right edges; a query and a key from different regions get $-100$ added to their score, the
# reference implementation's fill, and $e^{-100} \approx 4 \times 10^{-44}$ is zero next to the
# other weights of the row. Interior windows need no mask; the last column's windows have two
# pieces side by side, the last row's two stacked, the corner window four.
#
# The four kinds are visible on a small grid: $8 \times 8$ tokens, $M = 4$, $s = 2$, four windows
# of 16 tokens.

# %%
H = W = 8
Ms, ss = 4, 2
mask = shift_window_mask(H, W, Ms, ss)  # (nW, M*M, M*M), 0 or -100
band = np.zeros(H, dtype=int)
band[H - Ms:H - ss], band[H - ss:] = 1, 2  # 0: interior, 1: the bottom strip of M - s, 2: the last s rows
region = 3 * band[:, None] + band[None, :]  # (8, 8) region of each token of the rolled grid
lab = window_partition(region[None, :, :, None], Ms)[..., 0]  # (4, 16) each window's tokens' regions
print(f"mask {mask.shape}, values {sorted(np.unique(mask))}; 0 exactly where two tokens share a region: "
      f"{np.array_equal(mask == 0, lab[:, :, None] == lab[:, None, :])}")
print("regions in each window:", [len(np.unique(r)) for r in lab])

fig, axes = plt.subplots(1, 5, figsize=(17, 3.8), layout="constrained")
axes[0].imshow(region, cmap="viridis", vmin=0, vmax=8)  # the region's number is written in each token
for i in range(H):
    for j in range(W):
        axes[0].text(j, i, str(region[i, j]), ha="center", va="center", fontsize=7,
                     color="white" if region[i, j] < 5 else "black")
for b in (Ms - 0.5,):
    axes[0].axhline(b, color="black", lw=2.5)
    axes[0].axvline(b, color="black", lw=2.5)
axes[0].set_title(f"rolled {H} x {W} grid: regions,\nwindows of {Ms} x {Ms}")
axes[0].set_xticks([])
axes[0].set_yticks([])
names = ["interior", "last column", "last row", "corner"]
for w in range(4):
    im = axes[w + 1].imshow(mask[w], cmap="viridis", vmin=-100, vmax=0, interpolation="nearest")
    axes[w + 1].set_title(f"window {w} ({names[w]})")
    axes[w + 1].set_xlabel("key token j")
fig.colorbar(im, ax=axes[1:], fraction=0.02, ticks=[-100, 0], label="added to the score")
axes[1].set_ylabel("query token i")
save(fig, "09_shift_mask")

# %% [markdown]
# Does roll-mask-attend-roll back compute attention inside the shifted windows? Below, one
# `WindowAttention` with a shift, in float64, against a direct computation in the *unrolled*
# grid: one global attention over all 64 tokens, where token $i$ may attend to token $j$ only if
# both lie in the same shifted window and the same piece of it, with the bias looked up by
# their true offset. No roll there, no $-100$.

# %%
Cs, hs = 8, 2
wa = WindowAttention(Cs, hs, H, Ms, shift=ss, rng=0, dtype="float64")
wa.relative_position_bias.table.data[...] = rng.standard_normal(wa.relative_position_bias.table.data.shape)
z = rng.standard_normal((1, H * W, Cs))
y = wa.forward(z)  # (1, 64, 8)
probs = wa.attn_probs  # (1, nW, h, 16, 16)
across = np.broadcast_to(mask[None, :, None] < 0, probs.shape)  # query and key from different regions
print(f"largest attention weight between two regions: {probs[across].max():.1e}")

r, c = np.divmod(np.arange(H * W), W)  # each token's row and column in the image's grid
rr, cc = (r - ss) % H, (c - ss) % W  # where the roll puts it
group = ((rr // Ms) * (W // Ms) + cc // Ms) * 9 + 3 * band[rr] + band[cc]  # (window, region)
allowed = group[:, None] == group[None, :]  # (64, 64)
dr, dc = r[:, None] - r[None], c[:, None] - c[None]  # true offsets
index = np.where(allowed, (dr + Ms - 1) * (2 * Ms - 1) + (dc + Ms - 1), 0)
bias = wa.relative_position_bias.table.data[index].transpose(2, 0, 1)  # (h, 64, 64)
direct = wa.msa.forward(z, bias[None], allowed[None, None])  # the same weights, global attention
print(f"max |SW-MSA - attention within the shifted windows, computed directly| = "
      f"{np.abs(y - direct).max():.1e}")
assert np.allclose(y, direct, atol=1e-12)

# %% [markdown]
# ## The relative position bias
#
# Two tokens of an $M \times M$ window are at most $M - 1$ rows and $M - 1$ columns apart: their
# offset $(\Delta r, \Delta c)$ takes $(2M - 1)^2$ values. Swin learns one number per offset and
# head, a table $\hat{B} \in \mathbb{R}^{(2M-1)^2 \times h}$, and gathers it into
# $B[i, j] = \hat{B}[(\Delta r + M - 1)(2M - 1) + (\Delta c + M - 1)]$ with
# $\Delta r = r_i - r_j$, $\Delta c = c_i - c_j$ (`relative_position_index` computes the index
# once; `RelativePositionBias.forward()` gathers $(h, M^2, M^2)$). The backward adds each entry
# of $\partial L / \partial B$ into the table entry it came from, a scatter-add. Since $B$ depends
# only on offsets, moving both tokens by one row or one column leaves it unchanged, and the
# pattern repeats in blocks: block $(r_i, r_j)$ of $B$ depends only on $r_i - r_j$.

# %%
index7 = relative_position_index(M)  # (49, 49)
rpb = RelativePositionBias(M, 3, rng=0, dtype="float64")
B = rpb.forward()  # (3, 49, 49), as initialised: truncated normal, std 0.02
print(f"table {rpb.table.data.shape}, index {index7.shape} with values {index7.min()}..{index7.max()}, "
      f"bias {B.shape}")
r7, c7 = np.divmod(np.arange(M * M), M)
edge_c, edge_r = (c7 < M - 1)[:, None] & (c7 < M - 1)[None], (r7 < M - 1)[:, None] & (r7 < M - 1)[None]
i, j = np.nonzero(edge_c)
moved_c = np.abs(B[:, i, j] - B[:, i + 1, j + 1]).max()  # both tokens one column right
i, j = np.nonzero(edge_r)
moved_r = np.abs(B[:, i, j] - B[:, i + M, j + M]).max()  # both tokens one row down
offsets = {(a, b) for a, b in zip((r7[:, None] - r7[None]).ravel(), (c7[:, None] - c7[None]).ravel(),
                                  strict=True)}
print(f"{M ** 4} token pairs, {len(offsets)} distinct offsets = (2M-1)^2 = {(2 * M - 1) ** 2}; "
      f"{len(np.unique(B[0]))} distinct values in B[head 0]")
print(f"max |B[i, j] - B[i + 1 column, j + 1 column]| = {moved_c:.1e}, "
      f"max |B[i, j] - B[i + 1 row, j + 1 row]| = {moved_r:.1e}")
assert moved_c == moved_r == 0 and len(np.unique(B[0])) == len(offsets)

fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), layout="constrained")
im = axes[0].imshow(index7, cmap="viridis", interpolation="nearest")
fig.colorbar(im, ax=axes[0], fraction=0.046, label="index into the table")
axes[0].set_title(f"relative_position_index({M})")
im = axes[1].imshow(rpb.table.data[:, 0].reshape(2 * M - 1, 2 * M - 1), **viz.signed(rpb.table.data[:, 0]),
                    interpolation="nearest", extent=(-M + 0.5, M - 0.5, M - 0.5, -M + 0.5))
fig.colorbar(im, ax=axes[1], fraction=0.046, label="bias")
axes[1].set_title(f"the table of head 0, {2 * M - 1} x {2 * M - 1} offsets")
axes[1].set_xlabel("column offset $c_i - c_j$")
axes[1].set_ylabel("row offset $r_i - r_j$")
im = axes[2].imshow(B[0], **viz.signed(rpb.table.data[:, 0]), interpolation="nearest")  # the table's scale
fig.colorbar(im, ax=axes[2], fraction=0.046, label="bias")
axes[2].set_title(f"B of head 0 ({M * M} x {M * M}), gathered")
for ax in (axes[0], axes[2]):
    ax.set_xlabel("key token j")
    ax.set_ylabel("query token i")
save(fig, "09_relative_position_bias")

# %% [markdown]
# ## Patch merging
#
# Between stages, each $2 \times 2$ group of neighbouring tokens becomes one token: their four
# vectors concatenated, $H \times W \times C \to \frac{H}{2} \times \frac{W}{2} \times 4C$, then
# $\mathrm{LN}(4C)$ and a linear map without bias to $2C$. The order of the four matters for
# loading real checkpoints; the reference's is `x[0::2, 0::2]`, `x[1::2, 0::2]`, `x[0::2, 1::2]`,
# `x[1::2, 1::2]`: top-left, *bottom*-left, top-right, bottom-right. On a $4 \times 4$ grid of one
# channel holding each token's number:

# %%
grid4 = np.arange(16.0).reshape(1, 4, 4, 1)
parts = [grid4[:, 0::2, 0::2], grid4[:, 1::2, 0::2], grid4[:, 0::2, 1::2], grid4[:, 1::2, 1::2]]
merged = np.concatenate(parts, axis=-1)  # (1, 2, 2, 4)
print("tokens:\n", grid4[0, :, :, 0].astype(int))
print("merged token (0, 0) holds", merged[0, 0, 0].astype(int),
      "; token (0, 1) holds", merged[0, 0, 1].astype(int))

pm = PatchMerging(8, rng=0, dtype="float64")
xg = rng.standard_normal((2, 6, 6, 8))
ours = pm.forward(xg)  # (2, 3, 3, 16)
xm = np.concatenate([xg[:, 0::2, 0::2], xg[:, 1::2, 0::2], xg[:, 0::2, 1::2], xg[:, 1::2, 1::2]], axis=-1)
by_hand = pm.reduction.forward(pm.norm.forward(xm))
print(f"{xg.shape} -> {xm.shape} -> {ours.shape}; "
      f"max |PatchMerging - by hand| = {np.abs(ours - by_hand).max():.1e}")
assert np.allclose(ours, by_hand)

# %% [markdown]
# On the photo's $56 \times 56$ grid, the four channel blocks of the merged tokens are four
# half-resolution copies of the image, each offset by one patch:

# %%
fig, axes = plt.subplots(1, 5, figsize=(15, 3.4), layout="constrained")
zoom = photo[96:128, 96:128]  # 8 x 8 patches
axes[0].imshow(zoom)
for b in range(0, 33, P):
    axes[0].axhline(b - 0.5, color="white", lw=0.5 + (b % 8 == 0))
    axes[0].axvline(b - 0.5, color="white", lw=0.5 + (b % 8 == 0))
for pi in range(8):
    for pj in range(8):
        axes[0].text(pj * P + 1.5, pi * P + 1.5, str((pi % 2) + 2 * (pj % 2)), ha="center", va="center",
                     fontsize=7, color="yellow")
axes[0].set_title("8 x 8 patches: which block\neach neighbour goes to")
for n, name in enumerate(["x[0::2, 0::2]", "x[1::2, 0::2]", "x[0::2, 1::2]", "x[1::2, 1::2]"]):
    part = [tokens[:, 0::2, 0::2], tokens[:, 1::2, 0::2], tokens[:, 0::2, 1::2], tokens[:, 1::2, 1::2]][n]
    axes[n + 1].imshow(part.reshape(G // 2, G // 2, P, P, 3).transpose(0, 2, 1, 3, 4).reshape(112, 112, 3))
    axes[n + 1].set_title(f"block {n}: {name}\nchannels {n * 48}..{n * 48 + 47}")
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
save(fig, "09_patch_merging")

# %% [markdown]
# ## swin_tiny, stage by stage
#
# Swin-T: $C = 96$, $2, 2, 6, 2$ blocks, $3, 6, 12, 24$ heads. Each stage after the first starts
# with patch merging, so the grid goes $56 \to 28 \to 14 \to 7$ and the width
# $96 \to 192 \to 384 \to 768$, the strides 4, 8, 16 and 32 of a CNN's feature pyramid. Blocks
# alternate shift 0 and $s = 3$, except in stage 4: a $7 \times 7$ grid is a single window, so
# attention there is global and there is nothing to shift. The shapes below come from the model,
# with its random initial weights, run on the photo.

# %%
model = minivit.create_model("swin_tiny_patch4_window7_224").eval()
n_params = sum(p.data.size for p in model.parameters())
print(f"swin_tiny_patch4_window7_224: {n_params:,} parameters")
mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])  # ImageNet's
x = ((photo / 255.0 - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)  # (1, 3, 224, 224)
z = model.patch_embed.forward(x)
print(f"patch embedding: {x.shape} -> {z.shape}, a {model.patch_embed.grid_size} x "
      f"{model.patch_embed.grid_size} grid")
for n, stage in enumerate(model.layers, 1):
    merge = "patch merging, then " if "downsample" in stage._modules else ""
    z_in, z = z, stage.forward(z)
    attn = [blk.attn for blk in stage.blocks]
    print(f"stage {n}: {z_in.shape} -> {merge}{len(attn)} blocks -> {z.shape}: grid "
          f"{stage.out_resolution} x {stage.out_resolution}, C = {stage.dim}, "
          f"{attn[0].msa.num_heads} heads, (window, shift) {[(a.window_size, a.shift) for a in attn]}")
logits = model.forward(x)
print(f"mean over the {z.shape[1]} tokens, LN, head: logits {logits.shape}")

# %% [markdown]
# ## What windows save, counted and measured
#
# For a grid of $h \times w$ tokens of width $C$, the paper counts the multiply-adds of global
# and of window attention (Eq. 1 and 2):
#
# $$\Omega(\text{MSA}) = 4hwC^2 + 2(hw)^2C, \qquad \Omega(\text{W-MSA}) = 4hwC^2 + 2M^2hwC.$$
#
# $4hwC^2$ are the projections to $q, k, v$ and back, the same in both. The second term is
# $\mathbf{q}\mathbf{k}^\top$ and $A\mathbf{v}$: quadratic in $hw$ for global attention, linear for
# windows, where each token meets only $M^2$ others. So the global term overtakes the projections
# once $hw > 2C$ tokens, and from there doubling the side of the image costs global attention
# $16\times$ but window attention $4\times$.
#
# Measured: one `WindowAttention` (W-MSA, swin_tiny's stage 1 settings: $C = 96$, $3$ heads,
# $M = 7$) against one `MultiHeadSelfAttention` on the same tokens, a forward and a backward,
# float32, one image, the median of up to five runs. On log-log axes a cost $\propto N^k$ is a
# straight line of slope $k$: look for slope 1 for the windows, and for global attention a slope
# that climbs towards 2 as the grid grows. On the smallest grid (four windows) the two are close:
# there the projections dominate, and the windows pay for their rolls and copies.

# %%
Ct, ht = 96, 3


def omega_msa(n, C):
    return 4 * n * C**2 + 2 * n**2 * C


def omega_wmsa(n, C, M):
    return 4 * n * C**2 + 2 * M**2 * n * C


print(f"the attention term of global MSA overtakes the projections at hw = 2C = {2 * Ct} tokens")
rows = []
for g in sorted(set(args.grids)):
    if g % M:
        print(f"skipping {g}: not a multiple of M = {M}")
        continue
    n = g * g
    xt = rng.standard_normal((1, n, Ct)).astype(np.float32)
    t_win, k_win = time_forward_backward(WindowAttention(Ct, ht, g, M, rng=0, dtype="float32"), xt)
    t_glob, k_glob = time_forward_backward(MultiHeadSelfAttention(Ct, ht, rng=0, dtype="float32"), xt)
    rows.append((n, t_win, t_glob))
    print(f"{g:3d} x {g:<3d} = {n:5d} tokens: W-MSA {t_win * 1e3:8.1f} ms ({k_win} runs), "
          f"MSA {t_glob * 1e3:8.1f} ms ({k_glob} runs), MSA / W-MSA {t_glob / t_win:5.1f}x measured, "
          f"{omega_msa(n, Ct) / omega_wmsa(n, Ct, M):5.1f}x counted "
          f"(Omega {omega_wmsa(n, Ct, M) / 1e9:.2f} vs {omega_msa(n, Ct) / 1e9:.2f} G multiply-adds)")
rows = np.array(rows)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
ns = np.geomspace(rows[0, 0], rows[-1, 0], 50)
axes[0].plot(rows[:, 0], rows[:, 1] * 1e3, "o-", label=f"W-MSA (WindowAttention, M = {M})")
axes[0].plot(rows[:, 0], rows[:, 2] * 1e3, "s--", label="MSA (MultiHeadSelfAttention)")
axes[0].set_ylabel("forward + backward time (ms)")
axes[0].set_title(f"measured: C = {Ct}, {ht} heads, float32, one image")
axes[1].plot(ns, omega_wmsa(ns, Ct, M) / 1e9, label="$\\Omega$(W-MSA) $= 4hwC^2 + 2M^2hwC$")
axes[1].plot(ns, omega_msa(ns, Ct) / 1e9, label="$\\Omega$(MSA) $= 4hwC^2 + 2(hw)^2C$")
axes[1].set_ylabel("forward multiply-adds (G)")
axes[1].set_title("counted: the paper's Eq. 1 and 2")
for ax in axes:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens N = hw")
    ax.set_xticks(rows[:, 0], [f"{int(n)}\n({int(np.sqrt(n))}$^2$)" for n in rows[:, 0]])
    ax.minorticks_off()
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
save(fig, "09_cost")
slope = np.diff(np.log(rows[:, 1:]), axis=0) / np.diff(np.log(rows[:, :1]), axis=0)
for (n0, n1), (sw, sg) in zip(zip(rows[:-1, 0], rows[1:, 0], strict=True), slope, strict=True):
    print(f"slope from {int(n0)} to {int(n1)} tokens: W-MSA {sw:.2f}, MSA {sg:.2f}")

# %% [markdown]
# ## Training one
#
# `swin_digits` is a Swin at the size of the embedded $8 \times 8$ digits: $2 \times 2$ patches, a
# $4 \times 4$ grid, windows of $2 \times 2$ shifted by one, one patch merging to a $2 \times 2$
# grid that a single window covers. It trains with the same recipe as the ViTs of chapter 6:
#
# ```bash
# python -m minivit train --model swin_digits --out runs/swin_digits
# ```
#
# `minivit.from_pretrained` reads Swin checkpoints of transformers and timm, and
# `minivit.save_pretrained` writes one back, as chapter 8 did for ViT.
