"""Classify image files with a checkpoint: ``python -m minivit predict IMAGE ... --model PATH``.

PATH is a transformers folder (``minivit.from_pretrained``; preprocessing from its
``preprocessor_config.json``) or a minivit training checkpoint (``.npz``; preprocessing from the
dataset it was trained on). ``--explain OUT.png`` draws each image with its attention rollout.
"""

import os

import numpy as np

from . import backend, checkpoint, data, train, viz
from .analysis import attention_rollout
from .nn import softmax
from .preprocess import Preprocessor
from .pretrained import from_pretrained


def load(path):
    """(model in eval mode, Preprocessor, class names) of a checkpoint ``path``."""
    if os.path.isdir(path):
        model = from_pretrained(path)
        labels = model.labels
        return model, Preprocessor.from_folder(path), labels
    if str(path).endswith(".npz"):
        ckpt = checkpoint.load(path)
        cfg = {**train.DEFAULTS, **ckpt["config"]}
        model = train.model_from_checkpoint(ckpt).eval()
        ds = data.load_dataset(cfg["dataset"], cfg["data_dir"], cfg["val_fraction"])
        return model, Preprocessor.for_dataset(ds, model.img_size), data.class_names(ds.name, ds.num_classes)
    raise ValueError(f"--model {path}: expected a transformers folder (config.json + model.safetensors) "
                     "or a minivit checkpoint (.npz)")


def classify(model_path, images, top=5, explain=None):
    """[(image, [(label, probability)] * top)] for image files ``images``, best first; with
    ``explain`` a PNG path, also the figure of each image with its attention rollout."""
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"--top must be an integer >= 1, got {top!r}")
    if explain is not None and not explain.lower().endswith(".png"):
        raise ValueError(f"--explain {explain}: expected a .png file name")
    missing = [p for p in images if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"no such image file: {', '.join(missing)}")
    model, preprocess, labels = load(model_path)
    x = np.stack([preprocess(p) for p in images])  # (B, C, H, W)
    if x.shape[1:] != (model.in_chans, model.img_size, model.img_size):
        raise ValueError(f"preprocessing gives images {x.shape[1:]}, the model reads "
                         f"{(model.in_chans, model.img_size, model.img_size)}")
    p = softmax(backend.to_numpy(model.forward(x)).astype(np.float64))  # (B, classes)
    best = np.argsort(-p, axis=1, kind="stable")[:, :min(top, p.shape[1])]
    names = labels or [str(i) for i in range(p.shape[1])]
    results = [(img, [(names[c], float(p[b, c])) for c in best[b]]) for b, img in enumerate(images)]
    if explain is not None:
        rollout = attention_rollout(model, x)  # (B, gh, gw)
        rows = [f"{os.path.basename(img)}\n{top_k[0][0]} {top_k[0][1]:.0%}" for img, top_k in results]
        viz.plot_attention(x, rollout.reshape(len(x), 1, -1), model.patch_embed.grid_size, path=explain,
                           titles=["image (preprocessed)", "attention rollout"], row_labels=rows)
    return results


def format_results(results):
    lines = []
    for img, top_k in results:
        lines.append(img)
        lines += [f"  {prob:7.2%}  {label}" for label, prob in top_k]
    return "\n".join(lines)
