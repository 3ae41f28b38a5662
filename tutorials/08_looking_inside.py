# %% [markdown]
# # Chapter 8 — Looking inside a ViT
#
# A trained ViT is a stack of attention matrices. This chapter loads a model, checks it against a
# reference implementation, and reads three things out of it: where the class token's
# information comes from (attention *rollout*), how far each head looks (mean attention
# *distance*), and what the position embedding learned (the *similarity* of its rows).
#
# By default the chapter trains its own model on the embedded digits in under a minute:
# `vit_digits_cls`, the reference ViT's design at digits size (a class token and a learned
# $\mathbf{E}_{pos}$). With `--pretrained DIR` it reads a real checkpoint instead, a folder
# written by transformers' `save_pretrained` (for example `google/vit-base-patch16-224`,
# downloaded once with `huggingface-cli download google/vit-base-patch16-224 --local-dir DIR`),
# and looks at two photographs that ship with scikit-learn.

# %%
import os
import tempfile

import numpy as np
from common import chapter_args, save
from PIL import Image
from sklearn.datasets import load_sample_image

import minivit
from minivit import checkpoint, data, train, viz
from minivit.preprocess import Preprocessor

args = chapter_args({
    "08_rollout": "the images and the attention rollout of their class token",
    "08_attention_distance": "the mean attention distance of every head, per block",
    "08_pos_embed_similarity": "cosine similarity of the learned position embeddings",
}, pretrained=dict(metavar="DIR", help="a transformers folder to look inside (default: train "
                                        "vit_digits_cls)"))

# %% [markdown]
# ## A model, and the images it will look at
#
# Without `--pretrained`: 30 epochs of the training recipe of `python -m minivit train`
# (`minivit.train.train`), the model chosen on validation, eight test digits.

# %%
if args.pretrained:
    model = minivit.from_pretrained(args.pretrained)
    preprocess = Preprocessor.from_folder(args.pretrained)
    photos = []
    for name in ("china.jpg", "flower.jpg"):  # scikit-learn's two sample photographs
        path = os.path.join(tempfile.mkdtemp(), name)
        Image.fromarray(load_sample_image(name)).save(path)
        photos.append(path)
    x = np.stack([preprocess(p) for p in photos])
    names = [os.path.basename(p) for p in photos]
else:
    run = tempfile.mkdtemp()
    train.train({"model": "vit_digits_cls", "epochs": 30}, run, quiet=True, log=lambda *a: None)
    model = train.model_from_checkpoint(checkpoint.load(os.path.join(run, "best.npz"))).eval()
    ds = data.load_dataset("digits")
    x, y = next(data.batches(ds, "test", 8))
    model.labels = data.class_names("digits", 10)
    names = [f"a {label}" for label in y]
probs = minivit.nn.softmax(model.forward(x).astype(np.float64))
for name, p in zip(names, probs, strict=True):
    print(f"{name}: {model.labels[p.argmax()]} ({p.max():.0%})")

# %% [markdown]
# ## The same numbers as the reference
#
# `minivit.save_pretrained` writes the model in transformers' format, and
# `minivit.from_pretrained` reads that format back: an explicit map from each of minivit's
# parameters to the checkpoint's keys, transposing the Linear weights (stored $(out, in)$ there,
# $W$ of shape $(in, out)$ here), reshaping the patch convolution into $\mathbf{E}$ and fusing
# query, key and value into one $U_{qkv}$. Where transformers is installed, its own ViT runs on the
# same weights: the logits must agree to float32 precision.

# %%
folder = os.path.join(tempfile.mkdtemp(), "model")
minivit.save_pretrained(model, folder)
try:
    import torch
    from transformers import AutoModelForImageClassification
except ImportError:
    print("transformers is not installed: pip install torch transformers to compare")
else:
    ref = AutoModelForImageClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        theirs = ref(torch.from_numpy(np.asarray(x, dtype=np.float32))).logits.numpy()
    ours = model.forward(x)
    err = np.abs(ours - theirs).max() / np.abs(theirs).max()
    print(f"max |minivit - transformers| / max |logit| = {err:.1e}")

# %% [markdown]
# ## Attention rollout
#
# Each block mixes the tokens with its attention matrix $A_l$, and the residual connection adds
# the token itself. Rollout (Abnar & Zuidema, 2020) follows the information through all blocks:
# average the heads, $\bar A_l = \frac{1}{h}\sum_h A_{l,h}$; add the residual and renormalise the
# rows, $A'_l = \mathrm{rownorm}(\tfrac12 \bar A_l + \tfrac12 I)$; multiply,
# $R = A'_L \cdots A'_1$. Row 0 of $R$ says how much of the class token's final state came from
# each patch.

# %%
rollout = minivit.attention_rollout(model, x)  # (B, grid, grid)
grid = model.patch_embed.grid_size
fig = viz.plot_attention(x, rollout.reshape(len(x), 1, -1), grid, titles=["image", "rollout"],
                         row_labels=names, cmap="gray")
save(fig, "08_rollout")

# %% [markdown]
# ## How far each head looks
#
# The mean attention distance of head $h$ in block $l$ (the ViT paper's Figure 7): the distance
# in pixels between a query patch and the patches it attends to, weighted by the attention and
# averaged over queries and images,
# $\frac{1}{N'} \sum_i \sum_j A_{l,h}[i, j]\, \lVert p_i - p_j \rVert$. In the paper's large
# models some heads look far already in the first blocks, while others stay local, like a
# convolution's kernel; deeper blocks look far.

# %%
dist = minivit.mean_attention_distance(model, x)  # (depth, heads)
save(viz.plot_attention_distance(dist, model.patch_embed.patch_size), "08_attention_distance")
for l, row in enumerate(dist, 1):
    print(f"block {l}: " + ", ".join(f"{d:.1f}" for d in row) + " pixels")

# %% [markdown]
# ## What the position embedding learned
#
# Nothing told the model that patch 5 is next to patch 6: $\mathbf{E}_{pos}$ starts random. The
# cosine similarity of its rows shows what training made of it: tile $(i, j)$ compares position
# $(i, j)$ with every other. A learned table ends up most similar to its neighbours, with rows
# and columns showing through, the pattern of the paper's Figure 7.

# %%
sim = minivit.pos_embed_similarity(model)
save(viz.plot_pos_embed_similarity(sim, grid), "08_pos_embed_similarity")
r, c = np.divmod(np.arange(grid * grid), grid)
near = (np.abs(r[:, None] - r[None]) + np.abs(c[:, None] - c[None])) == 1
far = (np.abs(r[:, None] - r[None]) + np.abs(c[:, None] - c[None])) >= grid
print(f"mean similarity of grid neighbours {sim[near].mean():+.2f}, of positions {grid} or more apart "
      f"{sim[far].mean():+.2f}")
