"""Figures with matplotlib: training curves, confusion matrices, patches, attention maps and
position-embedding similarity.

Every function takes host numpy arrays, returns the matplotlib ``Figure`` and, given ``path``,
also saves it there. Figures are made without pyplot (no GUI backend needed), so the functions
work in scripts, tests and on servers alike.
"""

import numpy as np
from matplotlib.figure import Figure


def _finish(fig, path):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_curves(history, path=None, x="epoch",
                panels=(("train_loss", "val_loss"), ("train_acc", "val_acc"))):
    """Line plots of ``history`` (a dict: column name -> sequence of values) against column ``x``,
    one panel per tuple of column names in ``panels`` (columns that are absent are skipped)."""
    fig = Figure(figsize=(5 * len(panels), 3.6))
    xs = np.asarray(history[x])
    for i, names in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for name in names:
            if name in history:
                ax.plot(xs, np.asarray(history[name]), label=name.replace("_", " "),
                        marker="." if len(xs) < 30 else None)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        ax.legend()
    return _finish(fig, path)


def confusion_matrix(labels, predictions, num_classes):
    """C[i, j] = number of images of class i predicted as class j."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(predictions)), 1)
    return cm


def plot_confusion(cm, path=None, class_names=None, title=None):
    """The confusion matrix as an image, true class down, predicted class across, counts written in."""
    cm = np.asarray(cm)
    k = len(cm)
    names = class_names if class_names is not None else [str(i) for i in range(k)]
    fig = Figure(figsize=(1.2 + 0.45 * k, 1.0 + 0.45 * k))
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                dark = cm[i, j] > cm.max() / 2
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
    ax.set_xticks(range(k), names)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def _as_hwc(image):
    """(C, H, W) or (H, W) -> (H, W) or (H, W, 3) for imshow, scaled to [0, 1]."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3:
        img = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
    lo, hi = img.min(), img.max()
    return (img - lo) / (hi - lo) if hi > lo else img * 0


def plot_patches(image, patch_size, path=None):
    """The image with its P x P patch grid, and the patches x_p in sequence order (row-major)."""
    img = _as_hwc(image)
    H, W = img.shape[:2]
    gh, gw = H // patch_size, W // patch_size
    cmap = "gray" if img.ndim == 2 else None
    fig = Figure(figsize=(9, 4))
    ax = fig.add_subplot(1, 2, 1)
    ax.imshow(img, cmap=cmap)
    for k in range(1, gh):
        ax.axhline(k * patch_size - 0.5, color="red", lw=1)
    for k in range(1, gw):
        ax.axvline(k * patch_size - 0.5, color="red", lw=1)
    ax.set_title(f"{H}x{W} image, {gh * gw} patches of {patch_size}x{patch_size}")
    ax.axis("off")
    sub = fig.add_gridspec(gh, gw, left=0.55, right=0.98, wspace=0.1, hspace=0.3)
    for i in range(gh):
        for j in range(gw):
            a = fig.add_subplot(sub[i, j])
            a.imshow(img[i * patch_size:(i + 1) * patch_size, j * patch_size:(j + 1) * patch_size],
                     cmap=cmap, vmin=0, vmax=1)
            a.set_title(str(i * gw + j), fontsize=7)
            a.axis("off")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_attention(image, attn, grid_size, path=None, titles=None):
    """Attention over the patches drawn on the image: ``attn`` (N',) or (heads, N') weights on
    the N' = grid_size^2 patch tokens, e.g. the class token's row of the attention matrix."""
    img = _as_hwc(image)
    attn = np.atleast_2d(np.asarray(attn, dtype=np.float64))
    if attn.shape[1] != grid_size * grid_size:
        raise ValueError(f"attn must have grid_size^2 = {grid_size ** 2} entries per row, "
                         f"got shape {attn.shape}")
    n = len(attn) + 1
    fig = Figure(figsize=(2.6 * n, 2.8))
    ax = fig.add_subplot(1, n, 1)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
    ax.set_title("image")
    ax.axis("off")
    H, W = img.shape[:2]
    for h, a in enumerate(attn):
        ax = fig.add_subplot(1, n, h + 2)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax.imshow(a.reshape(grid_size, grid_size), cmap="inferno", alpha=0.6,
                  extent=(-0.5, W - 0.5, H - 0.5, -0.5), interpolation="nearest")
        ax.set_title(titles[h] if titles else f"head {h}")
        ax.axis("off")
    return _finish(fig, path)


def plot_pos_embed_similarity(pos_embed, grid_size, path=None):
    """Cosine similarity of each patch's position embedding with every other (ViT's Figure 7):
    tile (i, j) shows how similar position (i, j) is to all positions of the grid.
    ``pos_embed`` (N', D) holds the patch positions only (drop class/distillation tokens first)."""
    e = np.asarray(pos_embed, dtype=np.float64)
    if e.shape[0] != grid_size * grid_size:
        raise ValueError(f"pos_embed must be (grid_size^2 = {grid_size ** 2}, D), got shape {e.shape}")
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T  # (N', N')
    fig = Figure(figsize=(1.0 * grid_size + 1, 1.0 * grid_size))
    grid = fig.add_gridspec(grid_size, grid_size, wspace=0.05, hspace=0.05, right=0.85)
    for p in range(grid_size * grid_size):
        ax = fig.add_subplot(grid[p // grid_size, p % grid_size])
        im = ax.imshow(sim[p].reshape(grid_size, grid_size), cmap="viridis", vmin=-1, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, cax=fig.add_axes([0.88, 0.15, 0.03, 0.7]), label="cosine similarity")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
