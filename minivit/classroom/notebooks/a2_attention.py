# %% [markdown]
# # Assignment 2: attention
#
# Scaled dot-product attention, with the two extras Swin needs (an additive bias and a mask),
# then multi-head self-attention around it. Assignment 1's layers are given (its code is in
# your package); the softmax and its backward are `nn.softmax` and `nn.softmax_backward`.
#
# Your code goes between the `### BEGIN TASK <id>` and `### END TASK` markers in
# `minivit/nn/attention.py`. Run each `check` cell when you are done with a task.
#
# | task | what | points |
# |---|---|---|
# | a2.attention.forward | $A = \operatorname{softmax}(s\, q k^\top + \text{bias})$, masked | 3 |
# | a2.attention.backward | $dq, dk, dv$ and $d\text{bias}$ | 4 |
# | a2.heads.forward | split $[q, k, v]$ into heads, attend, merge | 2 |
# | a2.heads.backward | the same, backwards | 3 |

# %%
import matplotlib.pyplot as plt
import numpy as np

from minivit import nn
from minivit.classroom import check, start_notebook

start_notebook()  # in Jupyter: reload minivit's files when you edit them; minivit's figure style

# %% [markdown]
# ## 1. Scaled dot-product attention
#
# For queries $q$ $(B, h, N, d)$ and keys and values $k, v$ $(B, h, M, d)$:
#
# $$S = s\, q k^\top + \text{bias}, \qquad A = \operatorname{softmax}(S), \qquad \text{out} = A v,
#   \qquad s = d^{-1/2}.$$
#
# Where the mask is False the score becomes $-\infty$, so its probability is exactly 0. Why
# $d^{-1/2}$: the dot product of two random $d$-dimensional vectors has variance $d$; without
# the scale the softmax saturates and its gradient vanishes.

# %%
check("a2.attention.forward")
gen = np.random.default_rng(0)
q, k, v = (gen.standard_normal((1, 1, 6, 8)) for _ in range(3))
mask = np.tril(np.ones((6, 6), dtype=bool))  # causal: each query sees itself and the keys before
attn = nn.ScaledDotProductAttention()
attn.forward(q, k, v, mask=mask)
fig, ax = plt.subplots(figsize=(4, 3.5))
im = ax.imshow(attn.attn_probs[0, 0], cmap="viridis", vmin=0)
fig.colorbar(im, ax=ax, label="probability")
ax.set(xlabel="key", ylabel="query", title="Your attention under a causal mask")
plt.show()

# %% [markdown]
# ## 2. Its backward
#
# With $g = \partial L / \partial\,\text{out}$: $dv = A^\top g$ and $dA = g v^\top$; through the
# softmax, $dS = A \odot (dA - \operatorname{rowsum}(dA \odot A))$ (`nn.softmax_backward`);
# then $dq = s\, dS\, k$, $dk = s\, dS^\top q$, and $d\text{bias}$ is $dS$ summed over the axes
# the bias was broadcast along (`sum_to_shape` does that). Dropout on $A$ is given: go through
# `self.attn_drop.backward`.

# %%
check("a2.attention.backward")

# %% [markdown]
# ## 3. Multi-head self-attention
#
# One Linear makes $[q, k, v] = z U_{qkv}$, shape $(B, N, 3D)$: its columns are $q$, then $k$,
# then $v$, each $D$ wide, and each of those is $h$ heads of $d = D / h$. So reshape to
# $(B, N, 3, h, d)$ and move the axes to $(3, B, h, N, d)$. After attention, merge the heads
# back: $(B, h, N, d) \to (B, N, h, d) \to (B, N, D)$, then the output projection.
# The backward runs the same steps in reverse and stacks $dq, dk, dv$ in qkv's output layout.

# %%
check("a2.heads.forward")
check("a2.heads.backward")

# %% [markdown]
# ## Done?
#
# Run the public tests (`python -m pytest -q tests`), then hand in this folder.
