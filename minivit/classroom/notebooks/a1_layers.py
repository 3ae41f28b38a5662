# %% [markdown]
# # Assignment 1: the basic layers, forward and backward
#
# Every Vision Transformer in minivit is built from four small layers: `Linear`, `LayerNorm`,
# `GELU` and the softmax. Here you write their forward passes and, more importantly, their
# backward passes by hand, the way minivit's own code does.
#
# Your code goes in this folder's `minivit/` package, between the markers
# `### BEGIN TASK <id>` and `### END TASK`, where a `raise NotImplementedError("Task <id>: ...")`
# stands now. Replace that line; do not move the markers (the grader finds your code by them).
# The lines around each task tell you the names the rest of the layer expects (for example,
# LayerNorm's forward must leave `x_hat`, `rstd` and `y`).
#
# After each task run its `check` cell: it tests shapes, properties every correct answer has,
# and for a backward task the **gradient check**: your backward against central differences of
# your forward, in float64. The grade (`python -m minivit assignment grade .`) also compares your
# results with the library's on inputs you do not see.
#
# | task | file | points |
# |---|---|---|
# | a1.linear.forward, a1.linear.backward | minivit/nn/linear.py | 2 + 3 |
# | a1.layernorm.forward, a1.normalize.backward, a1.layernorm.backward | minivit/nn/norm.py | 2 + 3 + 2 |
# | a1.gelu.forward, a1.gelu.backward | minivit/nn/activation.py | 1 + 2 |
# | a1.softmax.forward, a1.softmax.backward | minivit/nn/activation.py | 2 + 3 |

# %%
import matplotlib.pyplot as plt
import numpy as np

from minivit import nn
from minivit.classroom import check, start_notebook

start_notebook()  # in Jupyter: reload minivit's files when you edit them; minivit's figure style

# %% [markdown]
# ## 1. Linear: $\mathbf{y} = \mathbf{x} \mathbf{W} + \mathbf{b}$
#
# $\mathbf{x}$ has shape $(\ldots, D_\text{in})$: fold every leading axis into one, so the work
# is one matrix product $(M, D_\text{in}) @ (D_\text{in}, D_\text{out})$. The backward, with
# $\mathbf{g} = \partial L / \partial \mathbf{y}$ folded to $(M, D_\text{out})$:
#
# $$\frac{\partial L}{\partial \mathbf{W}} = \mathbf{x}^\top \mathbf{g}, \qquad
#   \frac{\partial L}{\partial \mathbf{b}} = \sum_\text{rows} \mathbf{g}, \qquad
#   \frac{\partial L}{\partial \mathbf{x}} = \mathbf{g} \mathbf{W}^\top.$$
#
# Parameter gradients **accumulate** (`+=`): a layer used twice adds both contributions.

# %%
check("a1.linear.forward")
check("a1.linear.backward")

# %% [markdown]
# ## 2. LayerNorm
#
# Per token, over its $D$ features: $\mu$ and the biased variance $\sigma^2$, then
# $\hat{\mathbf{x}} = (\mathbf{x} - \mu) / \sqrt{\sigma^2 + \epsilon}$ and
# $\mathbf{y} = \gamma \hat{\mathbf{x}} + \beta$.
#
# The backward is the classic trap: $\mu$ and $\sigma$ depend on $\mathbf{x}$ too. With
# $\mathbf{g} = \gamma \, \partial L / \partial \mathbf{y}$ and means over the $D$ features,
#
# $$\frac{\partial L}{\partial \mathbf{x}} = \frac{1}{\sigma}\Big(\mathbf{g} - \operatorname{mean}(\mathbf{g})
#   - \hat{\mathbf{x}} \operatorname{mean}(\mathbf{g} \hat{\mathbf{x}})\Big).$$
#
# Derive it before you write it: differentiate $\hat x_i$ with respect to $x_j$ through $\mu$
# and $\sigma$, then contract with $\mathbf{g}$. The bracket is the same for any normalisation
# whose statistics are taken over some axes (BatchNorm's are over the batch and the pixels), so
# it is one function, `normalize_backward(g, x_hat, axis)` (task a1.normalize.backward), which
# LayerNorm's backward calls after its $\partial L / \partial \gamma$, $\partial L / \partial \beta$
# and $\mathbf{g}$ (task a1.layernorm.backward).

# %%
check("a1.layernorm.forward")
check("a1.normalize.backward")
check("a1.layernorm.backward")

# %% [markdown]
# ## 3. GELU: $x \, \Phi(x)$
#
# $\Phi$ is the standard normal CDF (`backend.normal_cdf`), $\phi$ its density. By the product
# rule the derivative is $\Phi(x) + x \phi(x)$. Your GELU and its derivative, drawn:

# %%
check("a1.gelu.forward")
check("a1.gelu.backward")
x = np.linspace(-4, 4, 401)
gelu = nn.GELU()
y = gelu.forward(x)
dy = gelu.backward(np.ones_like(x))
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(x, y, label="GELU(x)")
ax.plot(x, dy, "--", label="d GELU / dx")
ax.plot(x, np.maximum(x, 0), ":", label="ReLU(x), for comparison")
ax.set(xlabel="x", ylabel="value", title="Your GELU and its derivative")
ax.legend()
plt.show()

# %% [markdown]
# ## 4. Softmax, and its backward without the Jacobian
#
# $\operatorname{softmax}(\mathbf{x})_i = e^{x_i - \max \mathbf{x}} / \sum_j e^{x_j - \max \mathbf{x}}$:
# subtracting the max changes nothing mathematically and keeps `exp` from overflowing.
# Its Jacobian is $\partial y_i / \partial x_j = y_i (\delta_{ij} - y_j)$, so the backward is
# one weighted sum per row, $\partial L / \partial \mathbf{x} = \mathbf{y} \odot (\mathbf{dy} -
# \langle \mathbf{dy}, \mathbf{y} \rangle)$, never the $N \times N$ matrix.

# %%
check("a1.softmax.forward")
check("a1.softmax.backward")
logits = np.array([2.0, 1.0, 0.1, -1.0])
fig, ax = plt.subplots(figsize=(6, 3))
for t in (0.5, 1.0, 2.0):
    ax.plot(nn.softmax(logits / t), "o-", label=f"temperature {t}")
ax.set(xlabel="class", ylabel="probability", title="Your softmax of the logits (2, 1, 0.1, -1)")
ax.legend()
plt.show()

# %% [markdown]
# ## Done?
#
# Run the public tests (`python -m pytest -q tests`), then hand in this folder. Your grade
# comes from `python -m minivit assignment grade <folder>`, task by task.
