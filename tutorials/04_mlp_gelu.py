# %% [markdown]
# # Chapter 4 — GELU and the MLP
#
# After attention has mixed information between tokens, each token is processed on its own by
# a two-layer perceptron, the same weights for every token:
#
# $$\mathrm{MLP}(\mathbf{z}) = \mathrm{GELU}(\mathbf{z}\mathbf{W}_1 + \mathbf{b}_1)\,\mathbf{W}_2
#   + \mathbf{b}_2,
#   \qquad \mathbf{W}_1 \in \mathbb{R}^{D \times D_{hidden}},\;
#   \mathbf{W}_2 \in \mathbb{R}^{D_{hidden} \times D},$$
#
# with $D_{hidden} = 4D$ in ViT. Its nonlinearity is the Gaussian error linear unit
# (Hendrycks & Gimpel, 2016):
#
# $$\mathrm{GELU}(x) = x\,\Phi(x), \qquad \Phi(x) = \tfrac{1}{2}\big(1 + \mathrm{erf}(x/\sqrt{2})\big),$$
#
# $\Phi$ being the standard normal CDF. Where ReLU keeps or drops $x$ by its sign, GELU keeps it
# with weight $\Phi(x)$: how likely a standard normal variable is to be below $x$. BERT and
# the first GPTs used a tanh approximation,
# $\Phi(x) \approx \tfrac{1}{2}\big(1 + \tanh(\sqrt{2/\pi}\,(x + 0.044715\,x^3))\big)$;
# ViT uses the exact form. `minivit.nn.GELU` has both (`approximate="none"` or `"tanh"`), and
# `minivit.nn.MLP` is the block's feed-forward network.

# %%
import numpy as np
from common import chapter_args, plt, save
from scipy.special import erf

from minivit.gradcheck import gradcheck
from minivit.kernels.erf import erf_f32
from minivit.nn import GELU, MLP

chapter_args({"04_gelu": "GELU against ReLU, their derivatives, and the error of the tanh approximation"})
rng = np.random.default_rng(0)

# %% [markdown]
# ## A gate that opens with probability $\Phi(x)$
#
# The name comes from this reading: multiply $x$ by a random gate $m \sim \mathrm{Bernoulli}(\Phi(x))$,
# open more often the larger $x$ is; the expected output is $x\,\Phi(x)$. A Monte Carlo check:

# %%
xs = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])
gates = rng.random((200_000, xs.size)) < 0.5 * (1 + erf(xs / np.sqrt(2)))  # m ~ Bernoulli(Phi(x))
print("x              ", xs)
print("mean of x * m  ", np.round((xs * gates).mean(axis=0), 3))
print("GELU(x)        ", np.round(GELU().forward(xs), 3))

# %% [markdown]
# ## Exact against tanh
#
# The derivative follows from the product rule, with $\Phi' = \phi$, the normal density:
#
# $$\frac{d}{dx}\,x\,\Phi(x) = \Phi(x) + x\,\phi(x), \qquad \phi(x) = e^{-x^2/2}/\sqrt{2\pi}.$$
#
# For the tanh form, with $u = \sqrt{2/\pi}(x + 0.044715x^3)$ and $t = \tanh u$:
# $\frac{d}{dx} = \tfrac{1}{2}(1 + t) + \tfrac{1}{2}x(1 - t^2)\sqrt{2/\pi}(1 + 3 \cdot 0.044715\,x^2)$.
# Unlike ReLU's, GELU's derivative is smooth, slightly negative for $x$ below about $-0.75$ and
# slightly above 1 for $x$ above about $0.75$. The curves come from the library: `forward` for
# the values, `backward` with an upstream gradient of ones for the derivatives.

# %%
x = np.linspace(-5, 5, 2001)
exact, approx = GELU("none"), GELU("tanh")
y_exact, y_tanh = exact.forward(x), approx.forward(x)
dy_exact, dy_tanh = exact.backward(np.ones_like(x)), approx.backward(np.ones_like(x))
print(f"max |GELU exact - tanh|             = {np.abs(y_exact - y_tanh).max():.2e}"
      f" at x = {x[np.argmax(np.abs(y_exact - y_tanh))]:+.2f}")
print(f"max |GELU' exact - GELU' tanh|      = {np.abs(dy_exact - dy_tanh).max():.2e}")
print(f"min GELU(x) = {y_exact.min():.4f} at x = {x[np.argmin(y_exact)]:+.4f}")

fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
axes[0].plot(x, np.maximum(x, 0), "k:", label="ReLU")
axes[0].plot(x, y_exact, label="GELU (erf)")
axes[0].plot(x, y_tanh, "--", label="GELU (tanh)")
axes[0].set_title("GELU(x) = x Phi(x)")
axes[0].set_ylabel("activation f(x)")
axes[1].plot(x, (x > 0).astype(float), "k:", label="ReLU")
axes[1].plot(x, dy_exact, label="GELU (erf)")
axes[1].plot(x, dy_tanh, "--", label="GELU (tanh)")
axes[1].set_title("derivative")
axes[1].set_ylabel("f'(x)")
axes[2].semilogy(x, np.abs(y_exact - y_tanh) + 1e-18, label="|value error|")
axes[2].semilogy(x, np.abs(dy_exact - dy_tanh) + 1e-18, label="|derivative error|")
axes[2].set_ylim(1e-10, 1e-2)
axes[2].set_title("tanh approximation: error")
axes[2].set_ylabel("|exact - tanh| (log scale)")
for ax in axes:
    ax.set_xlabel("x")
    ax.grid(alpha=0.3)
    ax.legend()
save(fig, "04_gelu")

# %% [markdown]
# The approximation is good to a few parts in $10^4$ — below float16's resolution but far above
# float32's, so weights trained with one form behave slightly differently with the other. When
# loading pretrained weights, use the form they were trained with.
#
# Training runs in float32, where the fast path of minivit's exact GELU (with kernels on, the
# default; see `minivit.kernels`) computes erf with an approximation of its own,
# erf(x) = tanh(x P(x^2)) with a fitted polynomial P (`minivit.kernels.erf.erf_f32`), instead of
# scipy's; the plain layer body and float64, which the gradient checks use, take scipy's erf. The
# float32 kernel's error, over the same range:

# %%
x32 = x.astype(np.float32)
err = np.abs(erf_f32(x32).astype(np.float64) - erf(x32.astype(np.float64))).max()
print(f"max |erf_f32 - erf| = {err:.1e}"
      f"  (float32 spacing at 1.0: {np.finfo(np.float32).eps:.1e})")

# %% [markdown]
# ## The MLP, one token at a time
#
# The MLP widens each token from $D$ to $4D$ features, applies GELU, and projects back. It never
# mixes tokens: applying it to a sequence equals applying it to every token alone. Parameters:
# $2 D D_{hidden} + D_{hidden} + D$, about $8D^2$ — two thirds of a ViT block's parameters
# (attention has $4D^2$).

# %%
D = 16
mlp = MLP(D, 4 * D, rng=0, dtype="float64")
z = rng.standard_normal((2, 5, D))  # (B, N, D)
hidden = mlp.fc1.forward(z)
print(f"z {z.shape} -> z W_1 + b_1 {hidden.shape} -> GELU -> W_2 -> {mlp.forward(z).shape}")
one_token = mlp.forward(z[1:2, 3:4])  # token 3 of image 1, alone
assert np.allclose(one_token[0, 0], mlp.forward(z)[1, 3])
print("MLP of one token alone == its row of the MLP of the whole sequence")
print(f"parameters for D = 768: {MLP(768, 3072, rng=0).num_parameters():,} = 2*768*3072 + 3072 + 768")

# %% [markdown]
# ## Backward and gradient check
#
# The MLP's backward is the chain rule through its three layers in reverse: `fc2` (a `Linear`,
# chapter 1), GELU (its derivative above, times the upstream gradient, entry by entry) and
# `fc1`. Float64, every entry, bar $10^{-7}$:

# %%
xg = rng.standard_normal((3, 7)) * 2.0
r_exact = gradcheck(GELU("none"), xg, max_entries=1000)
r_tanh = gradcheck(GELU("tanh"), xg, max_entries=1000)
r_mlp = gradcheck(MLP(6, 24, rng=1, dtype="float64"), rng.standard_normal((2, 4, 6)), max_entries=1000)
print(r_mlp)
worst = max(r_exact.worst, r_tanh.worst, r_mlp.worst)
print(f"GELU exact {r_exact.worst:.2e}, GELU tanh {r_tanh.worst:.2e}, MLP {r_mlp.worst:.2e}")
print(f"GELU and MLP gradient checks, worst relative error: {worst:.2e}")
assert worst < 1e-7
