# %% [markdown]
# # Assignment 4: Swin's windows
#
# Swin attends inside $M \times M$ windows of the token grid, so its cost grows linearly with
# the image, and shifts the windows by $s = M/2$ in every second block so that information
# crosses window borders. Here you write the index bookkeeping that makes that work; attention
# itself is given (assignment 2).
#
# | task | file | points |
# |---|---|---|
# | a4.window.partition, a4.window.reverse | minivit/nn/window.py | 2 + 2 |
# | a4.shift_mask | minivit/nn/window.py (`shift_window_mask`) | 4 |
# | a4.relative_index | minivit/nn/window.py (`relative_position_index`) | 2 |
# | a4.relative_bias.forward, .backward | minivit/nn/window.py (`RelativePositionBias`) | 2 + 3 |

# %%
import matplotlib.pyplot as plt
import numpy as np

from minivit.classroom import check, start_notebook
from minivit.nn import window

start_notebook()  # in Jupyter: reload minivit's files when you edit them; minivit's figure style

# %% [markdown]
# ## 1. Windows
#
# A grid $(B, H, W, C)$ becomes $B \cdot \frac{H}{M} \cdot \frac{W}{M}$ windows of $M^2$ tokens:
# windows in row-major order over the window grid, the tokens of each window row-major too.
# Reshape to $(B, H/M, M, W/M, M, C)$, bring the two window-grid axes together, flatten.
# `window_reverse` undoes it.

# %%
check("a4.window.partition")
check("a4.window.reverse")
grid = np.arange(8 * 8, dtype=float).reshape(1, 8, 8, 1)
windows = window.window_partition(grid, 4)  # (4, 16, 1)
fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
axes[0].imshow(grid[0, :, :, 0], cmap="viridis")
axes[0].set(title="an 8 x 8 grid, tokens numbered", xlabel="column", ylabel="row")
im = axes[1].imshow(windows[:, :, 0], cmap="viridis", aspect="auto")
axes[1].set(title="your 4 windows of 16 tokens", xlabel="token in window", ylabel="window")
fig.colorbar(im, ax=axes, label="token number")
plt.show()

# %% [markdown]
# ## 2. The shifted-window mask
#
# Rolling the grid by $-s$ brings tokens from the far edges into the last windows. They were
# not neighbours, so they must not attend to each other. Label the unshifted grid in $3 \times 3$
# regions (rows and columns cut at $-M$ and $-s$ from the end), cut the labels into windows as
# the tokens are cut, and set $-100$ (the reference's value; $e^{-100}$ is 0 in practice) where
# query and key labels differ, 0 where they agree.

# %%
check("a4.shift_mask")
mask = window.shift_window_mask(8, 8, 4, 2)  # (4, 16, 16)
fig, axes = plt.subplots(1, 4, figsize=(12, 3))
for n, ax in enumerate(axes):
    im = ax.imshow(mask[n], cmap="gray_r", vmin=-100, vmax=0)
    ax.set(title=f"window {n}", xlabel="key", ylabel="query")
fig.colorbar(im, ax=axes, label="mask value")
plt.show()

# %% [markdown]
# ## 3. The relative position bias
#
# Swin adds a learned bias $B_{(i - j)}$ to every score, one per relative offset of two tokens in
# a window: a table of $(2M-1)^2$ rows (offsets $-(M-1) \ldots M-1$ in each direction), one
# column per head. The index turns each pair $(i, j)$ into its table row:
# $(r_i - r_j + M - 1)(2M - 1) + (c_i - c_j + M - 1)$. The forward gathers; the backward
# scatter-adds, since every row of the table is used by many pairs.

# %%
check("a4.relative_index")
check("a4.relative_bias.forward")
check("a4.relative_bias.backward")
index = window.relative_position_index(4)
fig, ax = plt.subplots(figsize=(4.5, 4))
im = ax.imshow(index, cmap="viridis")
fig.colorbar(im, ax=ax, label="table row")
ax.set(title="your relative position index, M = 4", xlabel="key token j", ylabel="query token i")
plt.show()
