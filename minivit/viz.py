"""Figures with matplotlib: training curves, confusion matrices, patches, attention maps and
position-embedding similarity.

Every function takes host numpy arrays, returns the matplotlib ``Figure`` and, given ``path``,
also saves it there. Figures are made without pyplot (no GUI backend needed), so the functions
work in scripts, tests and on servers alike.
"""

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def _finish(fig, path, tight=True):
    if tight:
        fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")  # labels outside the axes are kept
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
    """(C, H, W) or (H, W) -> (H, W) or (H, W, 3) for imshow, in [0, 1]: an image already in that
    range is shown as it is, any other (a normalised one) is stretched to it."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3:
        img = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
    lo, hi = img.min(), img.max()
    if 0 <= lo and hi <= 1:
        return img
    return (img - lo) / (hi - lo) if hi > lo else img * 0


def plot_patches(image, patch_size, path=None, highlight=None):
    """The image with its P x P patch grid, and the same patches pulled apart in sequence order
    (row-major: patch (r, c) of a grid W/P wide is token r * W/P + c). ``image`` (C, H, W) or
    (H, W); ``highlight`` (r, c) outlines that patch in red."""
    img = _as_hwc(image)
    P = patch_size
    H, W = img.shape[:2]
    gh, gw = H // P, W // P
    cmap = "gray" if img.ndim == 2 else None
    fig = Figure(figsize=(9, 4.4))
    grid_ax, tokens_ax = fig.subplots(1, 2)
    grid_ax.imshow(img, cmap=cmap)
    for k in range(0, gh * P + 1, P):
        grid_ax.axhline(k - 0.5, color="white", lw=0.6)
    for k in range(0, gw * P + 1, P):
        grid_ax.axvline(k - 0.5, color="white", lw=0.6)
    if highlight is not None:
        r, c = highlight
        grid_ax.add_patch(Rectangle((c * P - 0.5, r * P - 0.5), P, P, fill=False, color="red", lw=2))
    grid_ax.set_title(f"{H} x {W} image, {gh} x {gw} grid of {P} x {P} patches")
    step = P + 3  # a patch and 3 pixels of white space: the patches pulled apart
    apart = np.ones((gh * step, gw * step) + img.shape[2:])
    for i in range(gh):
        for j in range(gw):
            apart[i * step:i * step + P, j * step:j * step + P] = img[i * P:(i + 1) * P, j * P:(j + 1) * P]
    tokens_ax.imshow(apart, cmap=cmap, vmin=0, vmax=1)
    tokens_ax.set_title(f"the same {gh * gw} patches, one token each")
    grid_ax.axis("off")
    tokens_ax.axis("off")
    return _finish(fig, path, tight=False)


def plot_attention(images, maps, grid_size, path=None, titles=None, row_labels=None, cmap="gray",
                   overlay=False, label="weight"):
    """Where attention goes, one row per image: the image, then each of its M maps on the
    grid_size x grid_size patch grid, stretched over the image (one square per patch). With
    ``overlay=False`` the image's contour at half its range is drawn on the map in cyan (for a
    digit: its strokes); with ``overlay=True`` the map is blended over the image (for a photo).
    Each map column has one colour scale, its range over the images, in the colour bar under it.

    ``images`` (B, C, H, W); ``maps`` (B, M, N'), N' = grid_size^2: weights on the patch tokens,
    e.g. what one head reads from each patch, or the attention rollout. ``titles``: one per
    column, the image column's first; ``row_labels``: one per image; ``cmap``: the images' colour
    map when they have one channel ("gray_r" for dark ink on white); ``label``: the colour bars'."""
    imgs = [_as_hwc(image) for image in images]
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3 or len(maps) != len(imgs) or maps.shape[2] != grid_size * grid_size:
        raise ValueError(f"maps must be (B={len(imgs)}, M, grid_size^2={grid_size ** 2}), "
                         f"got shape {maps.shape}")
    B, M = maps.shape[:2]
    titles = titles if titles is not None else ["image"] + [f"map {j + 1}" for j in range(M)]
    if len(titles) != M + 1:
        raise ValueError(f"titles must name the image column and the {M} maps, got {len(titles)}")
    height = 1.5 * B + 0.9  # inches: the rows, then 0.9 at the bottom for the colour bars
    fig = Figure(figsize=(1.5 * (M + 1), height))
    axes = fig.subplots(B, M + 1, squeeze=False)
    fig.subplots_adjust(bottom=0.9 / height, top=1 - 0.3 / height)
    lo, hi = maps.min(axis=(0, 2)), maps.max(axis=(0, 2))  # (M,) each column's colour scale
    shown = []
    for i, img in enumerate(imgs):
        H, W = img.shape[:2]
        img_cmap = cmap if img.ndim == 2 else None
        axes[i, 0].imshow(img, cmap=img_cmap)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], rotation=0, labelpad=22)
        outline = img if img.ndim == 2 else img.mean(axis=2)
        for j, a in enumerate(maps[i]):
            ax = axes[i, j + 1]
            if overlay:
                ax.imshow(img, cmap=img_cmap)
            shown.append(ax.imshow(a.reshape(grid_size, grid_size), cmap="inferno", interpolation="nearest",
                                   vmin=lo[j], vmax=hi[j], alpha=0.6 if overlay else None,
                                   extent=(-0.5, W - 0.5, H - 0.5, -0.5)))  # one square per patch
            if not overlay:
                ax.contour(outline, levels=[0.5], colors="cyan", linewidths=1)
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for ax, im in zip(axes[-1, 1:], shown[-M:], strict=True):  # under the last row's maps
        box = ax.get_position()
        bar = fig.colorbar(im, orientation="horizontal",
                           cax=fig.add_axes([box.x0, 0.55 / height, box.width, 0.08 / height]))
        bar.set_label(label, fontsize=7)
        bar.ax.tick_params(labelsize=6)
    return _finish(fig, path, tight=False)


def plot_pos_embed_similarity(sim, grid_size, path=None):
    """Cosine similarity of each patch's position embedding with every other (ViT's Figure 7):
    tile (i, j) shows how similar position (i, j) is to all positions of the grid.
    ``sim`` (N', N'), N' = grid_size^2: ``minivit.analysis.pos_embed_similarity(model)``."""
    sim = np.asarray(sim, dtype=np.float64)
    if sim.shape != (grid_size * grid_size,) * 2:
        raise ValueError(f"sim must be (grid_size^2, grid_size^2) = ({grid_size ** 2}, {grid_size ** 2}), "
                         f"got shape {sim.shape}")
    fig = Figure(figsize=(1.0 * grid_size + 1, 1.0 * grid_size))
    grid = fig.add_gridspec(grid_size, grid_size, wspace=0.05, hspace=0.05, right=0.85)
    for p in range(grid_size * grid_size):
        ax = fig.add_subplot(grid[p // grid_size, p % grid_size])
        im = ax.imshow(sim[p].reshape(grid_size, grid_size), cmap="viridis", vmin=-1, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, cax=fig.add_axes([0.88, 0.15, 0.03, 0.7]), label="cosine similarity")
    fig.suptitle("position-embedding similarity", x=0.45)
    fig.supxlabel("input patch column", x=0.45)
    fig.supylabel("input patch row")
    return _finish(fig, path, tight=False)


def plot_attention_distance(dist, patch_size=None, path=None):
    """Mean attention distance of every head, per block (ViT's Figure 7, right): ``dist``
    (depth, heads) in pixels, ``minivit.analysis.mean_attention_distance(model, x)``."""
    dist = np.asarray(dist, dtype=np.float64)
    if dist.ndim != 2:
        raise ValueError(f"dist must be (depth, heads), got shape {dist.shape}")
    depth, heads = dist.shape
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    for h in range(heads):
        ax.scatter(np.arange(1, depth + 1), dist[:, h], s=18, label=f"head {h + 1}")
    ax.set_xlabel("block (network depth)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_xticks(np.arange(1, depth + 1))
    title = "how far each head looks"
    ax.set_title(title + (f" ({patch_size} px patches)" if patch_size else ""))
    if heads <= 8:
        ax.legend(fontsize=7, ncol=2)
    return _finish(fig, path)
