# %% [markdown]
# # Assignment 3: the Vision Transformer
#
# With assignments 1 and 2 given (their code is in your package), you build the parts that make
# a transformer a *Vision* Transformer, then train it on real images.
#
# | task | file | points |
# |---|---|---|
# | a3.patchify.forward, a3.patchify.backward | minivit/nn/embed.py (`Patchify`) | 2 + 2 |
# | a3.class_token.forward, a3.class_token.backward | minivit/nn/embed.py (`ClassToken`) | 1 + 2 |
# | a3.position.backward | minivit/nn/embed.py (`PositionEmbedding`) | 1 |
# | a3.block.forward, a3.block.backward | minivit/nn/block.py (`Block`) | 2 + 4 |
# | a3.train: your ViT reaches 85% on the digits test split in 30 epochs | (all of the above) | 4 |
#
# Your code goes between the `### BEGIN TASK <id>` and `### END TASK` markers. The last task
# has no code of its own: the grader trains `vit_digits` built from *your* layers.

# %%
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

from minivit import nn
from minivit.classroom import check, start_notebook

start_notebook()  # in Jupyter: reload minivit's files when you edit them; minivit's figure style

# %% [markdown]
# ## 1. Patches
#
# An image $(B, C, H, W)$ becomes $N' = HW/P^2$ patches of $P \times P$ pixels, each flattened
# to $C P^2$ numbers in $(c, i, j)$ order, patches in row-major order over the grid. With that
# order, $\mathbf{x}_p \mathbf{E}$ is exactly a stride-$P$ convolution. Only reshapes and one
# transpose: the backward moves every entry back where it came from.

# %%
check("a3.patchify.forward")
check("a3.patchify.backward")
digits = load_digits()
image = digits.images[0][None, None] / 16.0  # (1, 1, 8, 8)
patches = nn.Patchify(2).forward(image)  # (1, 16, 4)
fig, axes = plt.subplots(1, 2, figsize=(7, 3))
axes[0].imshow(image[0, 0], cmap="gray_r")
axes[0].set(title=f"digit {digits.target[0]}, 8x8 pixels", xticks=[], yticks=[])
axes[1].imshow(patches[0], cmap="gray_r", aspect="auto")
axes[1].set(title="your 16 patches as rows of 2x2 = 4 pixels", xlabel="pixel in patch", ylabel="patch")
plt.show()

# %% [markdown]
# ## 2. The class token and the position embedding
#
# The class token is a learned vector put in front of the sequence, $[\mathbf{x}_\text{class};
# \mathbf{z}]$; the head reads its final state. Every image shares it, so its gradient is the
# **sum** over the batch. The position embedding $\mathbf{E}_\text{pos}$ is added to every image,
# $\mathbf{z}_0 = \mathbf{z} + \mathbf{E}_\text{pos}$: its gradient is the sum over the batch too.

# %%
check("a3.class_token.forward")
check("a3.class_token.backward")
check("a3.position.backward")

# %% [markdown]
# ## 3. The pre-norm block
#
# $$\mathbf{z}'_\ell = \mathrm{MSA}(\mathrm{LN}(\mathbf{z}_{\ell-1})) + \mathbf{z}_{\ell-1},
#   \qquad \mathbf{z}_\ell = \mathrm{MLP}(\mathrm{LN}(\mathbf{z}'_\ell)) + \mathbf{z}'_\ell.$$
#
# Each branch may be dropped per sample (`DropPath`, identity at rate 0). Backward: a residual
# $y = x + f(x)$ sends $\partial L / \partial y$ on twice, straight through and through $f$.
# Go through the MLP branch first, then the attention branch. Attention's backward returns
# `(dz, dbias)`; the block needs `dz`.

# %%
check("a3.block.forward")
check("a3.block.backward")

# %% [markdown]
# ## 4. Train it
#
# `vit_digits` (a ViT of 134,986 parameters for the 8x8 digits) built from your layers, trained
# as the grader trains it: 30 epochs, AdamW, warmup 3, float32. About half a minute on a laptop.

# %%
from minivit import train as training  # noqa: E402

config = dict(training.DEFAULTS, epochs=30, warmup=3)
run = os.path.join(tempfile.mkdtemp(), "vit_digits")
history, test = training.train(training.check_config(config), run, quiet=True)
print(f"test accuracy of the chosen epoch: {test['test_acc']:.1%}")
fig, ax = plt.subplots(figsize=(6, 3.5))
column = {name: [row[i] for row in history] for i, name in enumerate(training.COLUMNS)}
ax.plot(column["epoch"], 100 * np.array(column["train_acc"]), label="training")
ax.plot(column["epoch"], 100 * np.array(column["val_acc"]), label="validation")
ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Your ViT learning the digits")
ax.legend()
plt.show()
