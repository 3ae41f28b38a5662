# %% [markdown]
# # Chapter 2 — Layer normalisation
#
# Every ViT block normalises each token before its attention and before its MLP, and the
# classifier reads a normalised class token: $\mathbf{y} = \mathrm{LN}(\mathbf{z}_L^0)$. Layer
# normalisation (Ba, Kiros & Hinton, 2016) works on one token $\mathbf{x} \in \mathbb{R}^D$ at a
# time, over its $D$ features:
#
# $$\mu = \frac{1}{D}\sum_{i=1}^{D} x_i, \qquad
#   \sigma^2 = \frac{1}{D}\sum_{i=1}^{D} (x_i - \mu)^2, \qquad
#   \hat{x}_i = \frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}}, \qquad
#   \mathrm{LN}(\mathbf{x})_i = \gamma_i \hat{x}_i + \beta_i .$$
#
# $\hat{\mathbf{x}}$ has mean 0 and variance 1 (up to $\epsilon$, $10^{-6}$ in ViT), whatever the
# token's own offset and scale were; the learned gain $\boldsymbol{\gamma}$ and bias
# $\boldsymbol{\beta}$ then give the next layer the scale it wants. Unlike batch normalisation
# nothing is shared between tokens or images, so training and inference compute the same thing.
# The class is `minivit.nn.LayerNorm`.

# %%
import numpy as np
from common import chapter_args, plt, save
from sklearn.datasets import load_sample_image

from minivit.gradcheck import gradcheck
from minivit.nn import LayerNorm, PatchEmbed

chapter_args({"02_layernorm_histograms": "per-token mean and spread before and after LN, and the feature "
                                          "histograms of two tokens"})

# %% [markdown]
# ## Tokens that need normalising
#
# The tokens of chapter 1 — the patch embeddings of a photograph — differ a lot from one
# another: a patch of sky is bright and flat, a patch of roof is dark and busy, so their
# embeddings have different means and spreads.

# %%
photo = load_sample_image("china.jpg")[100:324, 200:424]  # (224, 224, 3)
x_img = photo.transpose(2, 0, 1)[None].astype(np.float64) / 255.0  # (1, 3, 224, 224)
embed = PatchEmbed(img_size=224, patch_size=16, in_chans=3, embed_dim=768, rng=0, dtype="float64")
tokens = embed.forward(x_img)[0]  # (N', D) = (196, 768)

ln = LayerNorm(768, dtype="float64")
normed = ln.forward(tokens)  # (196, 768)
print(f"before: per-token mean in [{tokens.mean(1).min():+.3f}, {tokens.mean(1).max():+.3f}], "
      f"std in [{tokens.std(1).min():.3f}, {tokens.std(1).max():.3f}]")
print(f"after:  per-token mean in [{normed.mean(1).min():+.1e}, {normed.mean(1).max():+.1e}], "
      f"std in [{normed.std(1).min():.6f}, {normed.std(1).max():.6f}]")

# %%
sky, roof = 13, 14 * 9 + 2  # a patch of sky (top right) and one of roof
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), layout="constrained")
axes[0].scatter(tokens.mean(1), tokens.std(1), s=8, label="before LN")
axes[0].scatter(normed.mean(1), normed.std(1), s=8, marker="s", label="after LN")
axes[0].set_xlabel("mean of a token's 768 features")
axes[0].set_ylabel("std of a token's features")
axes[0].set_title("196 tokens: mean and spread")
axes[0].legend()
for ax, data, title in ((axes[1], tokens, "before LN"), (axes[2], normed, "after LN")):
    for n, name in ((sky, "sky patch"), (roof, "roof patch")):
        ax.hist(data[n], bins=40, alpha=0.6, label=name)
    ax.set_title(f"features of two tokens, {title}")
    ax.set_xlabel("feature value")
    ax.set_ylabel("features (of 768)")
    ax.legend()
save(fig, "02_layernorm_histograms")

# %% [markdown]
# LN removes exactly two things from a token: its offset and its scale. So it is blind to them:
# $\mathrm{LN}(\mathbf{x} + c) = \mathrm{LN}(\mathbf{x})$ exactly, and
# $\mathrm{LN}(a\mathbf{x}) = \mathrm{LN}(\mathbf{x})$ for $a > 0$ up to the $\epsilon$, which
# matters in proportion to $\epsilon / \sigma^2$ — noticeably here, where the flattest token's
# variance is only about $4 \cdot 10^{-3}$.

# %%
print(f"max |LN(x - 7) - LN(x)| = {np.abs(ln.forward(tokens - 7.0) - normed).max():.1e}")
print(f"max |LN(3x) - LN(x)|    = {np.abs(ln.forward(3.0 * tokens) - normed).max():.1e}"
      f"   (eps / smallest token variance = {ln.eps / tokens.var(1).min():.1e})")

# %% [markdown]
# ## The backward, step by step
#
# Let $\mathbf{g} = \boldsymbol{\gamma} \odot \partial L / \partial \mathrm{LN}(\mathbf{x})$,
# the gradient that reaches $\hat{\mathbf{x}}$, and $r = (\sigma^2 + \epsilon)^{-1/2}$, so
# $\hat{x}_i = (x_i - \mu) r$. The parameters are easy:
# $\partial L / \partial \gamma_i = \sum_{\text{tokens}} \frac{\partial L}{\partial y_i}\hat{x}_i$ and
# $\partial L / \partial \beta_i = \sum_{\text{tokens}} \frac{\partial L}{\partial y_i}$.
#
# The input reaches $\hat{x}_i$ along three paths: directly, through $\mu$ and through $r$.
#
# 1. $\partial \mu / \partial x_j = 1/D$.
# 2. $\partial \sigma^2 / \partial x_j = \frac{2}{D}(x_j - \mu)$ (the path through $\mu$ adds
#    $-\frac{2}{D}\sum_i (x_i - \mu) / D = 0$).
# 3. $\partial r / \partial x_j = -\tfrac{1}{2}(\sigma^2 + \epsilon)^{-3/2} \cdot \frac{2}{D}(x_j - \mu)
#    = -r^2 \hat{x}_j / D$.
# 4. So $\partial \hat{x}_i / \partial x_j = r(\delta_{ij} - 1/D) + (x_i - \mu)\,\partial r/\partial x_j
#    = r\,(\delta_{ij} - 1/D - \hat{x}_i \hat{x}_j / D)$.
# 5. Contract with $\mathbf{g}$:
#
# $$\frac{\partial L}{\partial x_j} = r\Big(g_j - \frac{1}{D}\sum_i g_i
#   - \hat{x}_j \frac{1}{D}\sum_i g_i \hat{x}_i\Big).$$
#
# The $D \times D$ Jacobian is never formed: two means per token suffice. We follow the steps
# literally for a few tokens — the chain through $\sigma^2$ and $\mu$ as a computational graph,
# and the Jacobian of step 4 as a matrix — and compare both with `LayerNorm.backward`.

# %%
rng = np.random.default_rng(0)
D = 8
x = rng.standard_normal((3, D)) * 2.0 + 1.0  # 3 tokens
dy = rng.standard_normal((3, D))
layer = LayerNorm(D, dtype="float64")
layer.weight.data[...] = rng.uniform(0.5, 1.5, D)  # a gamma that is not all ones
layer.forward(x)
dx_library = layer.backward(dy)

# the computational graph, one node at a time
eps = layer.eps
mu = x.mean(axis=1, keepdims=True)
var = ((x - mu) ** 2).mean(axis=1, keepdims=True)
r = (var + eps) ** -0.5
x_hat = (x - mu) * r
g = dy * layer.weight.data  # dL/dx_hat
d_var = (g * (x - mu)).sum(axis=1, keepdims=True) * -0.5 * (var + eps) ** -1.5
d_mu = -(g * r).sum(axis=1, keepdims=True) + d_var * (-2.0 / D) * (x - mu).sum(axis=1, keepdims=True)
dx_graph = g * r + d_var * 2.0 * (x - mu) / D + d_mu / D

# the Jacobian of step 4, as a matrix per token
dx_jacobian = np.stack([
    g[t] @ (r[t] * (np.eye(D) - 1.0 / D - np.outer(x_hat[t], x_hat[t]) / D)) for t in range(3)
])
print(f"graph    vs LayerNorm.backward: {np.abs(dx_graph - dx_library).max():.1e}")
print(f"Jacobian vs LayerNorm.backward: {np.abs(dx_jacobian - dx_library).max():.1e}")
assert np.allclose(dx_graph, dx_library) and np.allclose(dx_jacobian, dx_library)

# %% [markdown]
# The invariance seen above shows in the gradient too: moving the token along $\mathbf{1}$
# (a shift) changes nothing, and moving it along $\hat{\mathbf{x}}$ (a scale) changes nothing
# but the $\epsilon$ term, so the input gradient has no component along $\mathbf{1}$ and, up to
# $\epsilon / \sigma^2$, none along $\hat{\mathbf{x}}$.

# %%
print(f"sum_j dL/dx_j per token:          {np.abs(dx_library.sum(axis=1)).max():.1e}")
print(f"sum_j x_hat_j dL/dx_j per token:  {np.abs((x_hat * dx_library).sum(axis=1)).max():.1e}")

# %% [markdown]
# ## Gradient check
#
# Every entry of the input, $\boldsymbol{\gamma}$ and $\boldsymbol{\beta}$, perturbed in float64
# (bar $10^{-7}$):

# %%
check = LayerNorm(16, dtype="float64")
check.weight.data[...] = rng.uniform(0.5, 1.5, 16)
check.bias.data[...] = rng.standard_normal(16)
xs = rng.standard_normal((2, 5, 16)) * 3.0 + 2.0
result = gradcheck(check, xs, max_entries=1000)
print(result)
print(f"LayerNorm gradient check, worst relative error: {result.worst:.2e}")
assert result.worst < 1e-7
