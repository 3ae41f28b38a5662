"""Run a checkpoint on image files: ``python -m minivit predict IMAGE ... --model PATH`` (top-k
labels; ``--explain OUT.png`` draws each image with its attention rollout) and ``python -m
minivit analyze IMAGE ... --model PATH --out DIR`` (the three figures of minivit.analysis).

PATH is a transformers folder (``minivit.from_pretrained``; preprocessing from its
``preprocessor_config.json``) or a minivit training checkpoint (``.npz``; preprocessing from the
dataset it was trained on).
"""

import os

import numpy as np

from . import backend, checkpoint, data, train, viz
from .analysis import attention_rollout, mean_attention_distance, pos_embed_similarity, require_vit
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


def _model_and_images(model_path, images):
    """(model, its preprocessed images (B, C, H, W), class names)."""
    missing = [p for p in images if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"no such image file: {', '.join(missing)}")
    model, preprocess, labels = load(model_path)
    x = np.stack([preprocess(p) for p in images])  # (B, C, H, W)
    if x.shape[1:] != (model.in_chans, model.img_size, model.img_size):
        raise ValueError(f"preprocessing gives images {x.shape[1:]}, the model reads "
                         f"{(model.in_chans, model.img_size, model.img_size)}")
    return model, x, labels


FIGURES = ("rollout.png", "attention_distance.png", "pos_embed_similarity.png")


def analyze(model_path, images, out):
    """Write the three analysis figures of a checkpoint on ``images`` into folder ``out``: the
    attention rollout of each image, the mean attention distance of every head (over the images)
    and the position embedding's similarity. Existing figures are never overwritten."""
    taken = [f for f in FIGURES if os.path.exists(os.path.join(out, f))]
    if taken:
        raise ValueError(f"--out {out} already holds {', '.join(taken)}; choose another folder")
    model, x, _ = _model_and_images(model_path, images)
    require_vit(model)  # before any folder is made
    os.makedirs(out, exist_ok=True)
    grid = model.patch_embed.grid_size
    paths = [os.path.join(out, f) for f in FIGURES]
    rows = [os.path.basename(img) for img in images]
    viz.plot_attention(x, attention_rollout(model, x).reshape(len(x), 1, -1), grid, path=paths[0],
                       titles=["image (preprocessed)", "attention rollout"], row_labels=rows)
    viz.plot_attention_distance(mean_attention_distance(model, x), model.patch_embed.patch_size, paths[1])
    viz.plot_pos_embed_similarity(pos_embed_similarity(model), grid, paths[2])
    return paths


def classify(model_path, images, top=5, explain=None):
    """[(image, [(label, probability)] * top)] for image files ``images``, best first; with
    ``explain`` a PNG path, also the figure of each image with its attention rollout."""
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"--top must be an integer >= 1, got {top!r}")
    if explain is not None and not explain.lower().endswith(".png"):
        raise ValueError(f"--explain {explain}: expected a .png file name")
    model, x, labels = _model_and_images(model_path, images)
    if explain is not None:
        require_vit(model)
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
