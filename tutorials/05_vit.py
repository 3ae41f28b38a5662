# %% [markdown]
# # Chapter 5 — The Vision Transformer, assembled
#
# Chapters 1–4 built the parts. The ViT of Dosovitskiy et al. (2021) puts them together in four
# equations:
#
# $$\begin{aligned}
# \mathbf{z}_0 &= [\mathbf{x}_{class};\, \mathbf{x}_p^1\mathbf{E};\, \mathbf{x}_p^2\mathbf{E};\, \ldots;\,
#   \mathbf{x}_p^{N'}\mathbf{E}] + \mathbf{E}_{pos},
#   & \mathbf{E} &\in \mathbb{R}^{(P^2 C) \times D},\; \mathbf{E}_{pos} \in \mathbb{R}^{(N'+1) \times D} \\
# \mathbf{z}'_\ell &= \mathrm{MSA}(\mathrm{LN}(\mathbf{z}_{\ell-1})) + \mathbf{z}_{\ell-1},
#   & \ell &= 1 \ldots L \\
# \mathbf{z}_\ell &= \mathrm{MLP}(\mathrm{LN}(\mathbf{z}'_\ell)) + \mathbf{z}'_\ell,
#   & \ell &= 1 \ldots L \\
# \mathbf{y} &= \mathrm{LN}(\mathbf{z}_L^0)
# \end{aligned}$$
#
# and a linear classifier on $\mathbf{y}$. The new pieces are the *class token*
# $\mathbf{x}_{class}$ (`ClassToken`), a learned vector that belongs to no patch and whose final
# state $\mathbf{z}_L^0$ represents the image, and the learned *position embedding*
# $\mathbf{E}_{pos}$ (`PositionEmbedding`). Each pair of residual equations is a `Block`; the
# whole is `VisionTransformer`, built by name with `minivit.create_model`.

# %%
import time

import numpy as np
from common import chapter_args, plt, save
from sklearn.datasets import load_sample_image

import minivit
from minivit import viz
from minivit.gradcheck import gradcheck

chapter_args({
    "05_vit_dataflow": "ViT-B/16's data flow: every stage and the shape it hands on, the block drawn out",
    "05_vit_parameters": "where the parameters of ViT-B/16 live",
})
rng = np.random.default_rng(0)

# %% [markdown]
# ## ViT-B/16, stage by stage
#
# ViT-Base: $D = 768$, $L = 12$ blocks of $h = 12$ heads, MLP width $4D$, patches of $16 \times 16$
# on $224 \times 224$ images, so $N' = 196$ patches and $N = 197$ tokens. We run the photograph of
# chapter 1 through its parts one at a time — the model's own submodules, in float32 as in
# training — print each shape, and check the result against `model.forward`. (The weights are
# the random initialisation, so the 1000 logits mean nothing yet.)

# %%
t0 = time.perf_counter()
model = minivit.create_model("vit_base_patch16_224")
print(f"built {model.model_name} in {time.perf_counter() - t0:.1f} s")
photo = load_sample_image("china.jpg")[100:324, 200:424]  # (224, 224, 3)
x = (photo.transpose(2, 0, 1)[None] / 255.0).astype(np.float32)  # (1, 3, 224, 224)

print(f"x                         {x.shape}   image (B, C, H, W)")
z = model.patch_embed.forward(x)
print(f"x_p E                     {z.shape}   patch embeddings (B, N', D)")
z = model.cls_token.forward(z)
print(f"[x_class; x_p E]          {z.shape}   class token prepended (B, N, D)")
z = model.pos_embed.forward(z)
print(f"+ E_pos  = z_0            {z.shape}")
for blk in model.blocks:
    z = blk.forward(z)
print(f"z_L after {len(model.blocks)} blocks       {z.shape}")
y = model.norm.forward(model.pool.forward(z))
print(f"y = LN(z_L^0)             {y.shape}   the class token's final state (B, D)")
logits = model.head.forward(y)
print(f"logits = y W_head + b     {logits.shape}")
assert np.allclose(logits, model.forward(x), atol=1e-5)
print("stage by stage == model.forward")

# %% [markdown]
# The same path as a diagram, with the inside of a block drawn out: its two residual branches,
# the queries, keys and values of its $h$ heads, and the MLP's hidden width. Every size in it is
# read from the model (`minivit.viz.plot_vit_dataflow`), so it draws any ViT that `create_model`
# builds.

# %%
save(viz.plot_vit_dataflow(model), "05_vit_dataflow")

# %% [markdown]
# ## One block, in its own equations
#
# Inside a `Block`, the two residual lines: the attention branch reads the normalised tokens and
# adds its result to the stream, then the MLP branch does the same. Because the stream itself
# is never normalised, the gradient reaches early blocks along the identity paths undiminished.

# %%
blk = model.blocks[0]
z0 = model.pos_embed.forward(model.cls_token.forward(model.patch_embed.forward(x)))
z_prime = blk.attn.forward(blk.norm1.forward(z0)) + z0  # z'_1
z1 = blk.mlp.forward(blk.norm2.forward(z_prime)) + z_prime  # z_1
assert np.allclose(z1, blk.forward(z0), atol=1e-5)
print("z_1 from the two equations == Block.forward")

# %% [markdown]
# ## Why a position embedding
#
# Nothing in a block knows where a token came from: LN and the MLP act on each token alone, and
# attention treats its keys as a set. Permute the tokens going in and the same permutation comes
# out — the blocks are *permutation-equivariant*, so without $\mathbf{E}_{pos}$ a ViT would see an
# image and its shuffled patches alike. Adding $\mathbf{E}_{pos}$ before the blocks ties each
# token to its slot. Checked on a small float64 ViT:

# %%
small = minivit.create_model("vit_digits", dtype="float64", depth=2)
tokens = rng.standard_normal((1, 16, 64))  # 16 patch tokens of width 64
perm = rng.permutation(16)


def encode(z):
    for b in small.blocks:
        z = b.forward(z)
    return z


eq = np.abs(encode(tokens[:, perm]) - encode(tokens)[:, perm]).max()
pos = small.pos_embed.table  # (1, 16, 64): vit_digits' fixed sin-cos E_pos (any E_pos would do)
eq_pos = np.abs(encode(tokens[:, perm] + pos) - encode(tokens + pos)[:, perm]).max()
print(f"without E_pos: max |blocks(z[perm]) - blocks(z)[perm]| = {eq:.1e}   (equivariant)")
print(f"with E_pos:    max |blocks(z[perm] + E_pos) - blocks(z + E_pos)[perm]| = {eq_pos:.1e}")
assert eq < 1e-12 < eq_pos

# %% [markdown]
# ## Parameter counts against the paper
#
# Counting by hand: the patch embedding has $P^2 C D + D$; the class token $D$; the position
# embedding $(N'+1)D$; each block $12D^2 + 13D$ (the attention's $\mathbf{U}_{qkv}$ and
# $\mathbf{U}_{msa}$ with biases, $4D^2 + 4D$; the MLP, $8D^2 + 5D$; two LNs, $4D$); the final LN
# $2D$; the head $DK + K$ for $K$ classes. Below, the count of the models `create_model` builds,
# that formula, and Table 1 of the paper, which lists ViT-Base at 86M and ViT-Large at 307M
# (Ti and S come from DeiT, Touvron et al., 2021: 5M and 22M). ViT-L/16 takes 1.2 GB in float32
# and about 10 s to build.

# %%
def formula(D, L, P=16, C=3, n_patches=196, K=1000):
    return P * P * C * D + D + D + (n_patches + 1) * D + L * (12 * D * D + 13 * D) + 2 * D + D * K + K


paper = {"tiny": "5M", "small": "22M", "base": "86M", "large": "307M"}
counts = {}
for size in ("tiny", "small", "base", "large"):
    name = f"vit_{size}_patch16_224"
    m = model if size == "base" else minivit.create_model(name)
    counts[size] = m.num_parameters()
    cfg = minivit.models.model_config(name)
    assert counts[size] == formula(cfg["embed_dim"], cfg["depth"])
    print(f"{name:24s} D={cfg['embed_dim']:4d} L={cfg['depth']:2d} h={cfg['num_heads']:2d}  "
          f"counted {counts[size]:>11,}  = formula   paper {paper[size]}")
    del m

# %% [markdown]
# ViT-B/16 agrees with the paper's 86M. ViT-L/16 comes to 304.3M against the 307M printed in
# the table: the count equals the reference implementations' for this configuration (224 px,
# 1000 classes), so the 1% gap is in how the paper counted, which it does not spell out.
#
# Where the parameters of ViT-B/16 live:

# %%
groups = {"patch embedding E": 0, "class token + E_pos": 0, "attention (U_qkv, U_msa)": 0,
          "MLP (W_1, W_2)": 0, "LayerNorms": 0, "head": 0}
for name, p in model.named_parameters():
    key = ("patch embedding E" if name.startswith("patch_embed") else
           "class token + E_pos" if name.startswith(("cls_token", "pos_embed")) else
           "attention (U_qkv, U_msa)" if ".attn." in name else
           "MLP (W_1, W_2)" if ".mlp." in name else
           "head" if name.startswith("head") else "LayerNorms")
    groups[key] += p.size
assert sum(groups.values()) == counts["base"]
fig, ax = plt.subplots(figsize=(7, 2.6), layout="constrained")
ax.barh(list(groups), [v / 1e6 for v in groups.values()])
for i, v in enumerate(groups.values()):
    ax.text(v / 1e6 + 0.5, i, f"{v / 1e6:.2f}M", va="center")
ax.invert_yaxis()
ax.set_xlim(0, 70)
ax.set_xlabel("parameters (millions)")
ax.set_title(f"ViT-B/16: {counts['base']:,} parameters")
save(fig, "05_vit_parameters")
del model

# %% [markdown]
# ## The whole model's gradient check
#
# `VisionTransformer.backward` runs every stage's backward in reverse: the head, the final LN,
# the pooling (the gradient goes to the class token's slot only), the blocks from last to first
# (each residual passes its gradient both through its branch and around it), the position
# embedding, the class token and the patch embedding, down to the image. The check: a small ViT
# with a class token, in float64, every parameter tensor sampled (32 entries each) and the
# image's gradient too. The bar for a whole model is $10^{-5}$ — many layers of rounding add up —
# and a correct backward lands far below it.

# %%
vit = minivit.create_model("vit_digits", dtype="float64", depth=2, pool="cls", class_token=True,
                           pos_embed="learn", seed=1)  # a learned E_pos, so its gradient is checked too
images = rng.standard_normal((2, 1, 8, 8))
t0 = time.perf_counter()
result = gradcheck(vit, images, max_entries=32)
print(f"{len(result.errors)} tensors checked in {time.perf_counter() - t0:.1f} s; the five worst:")
for name, err in sorted(result.errors.items(), key=lambda kv: -kv[1])[:5]:
    print(f"  {name:28s} {err:.2e}")
print(f"ViT gradient check, worst relative error: {result.worst:.2e}")
assert result.worst < 1e-5
