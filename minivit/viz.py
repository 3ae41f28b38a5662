"""Figures with matplotlib: training curves, confusion matrices, patches, attention maps,
position-embedding similarity and the data flow of a ViT.

Every function takes host numpy arrays (or a model), returns the matplotlib ``Figure`` and, given
``path``, also saves it there with ``save_figure``. Figures are made without pyplot (no GUI backend
needed), so the functions work in scripts, tests and on servers alike.

One style serves every figure of minivit, the command line's and the tutorials' alike: ``STYLE``
(matplotlib settings), ``save_figure`` (PNG at ``DPI``), and two colour maps whose lightness grows
monotonically, so that a figure printed in grey keeps its order: ``CMAP`` for values of one sign
and ``SIGNED_CMAP``, on a range symmetric about 0 (``signed``), for values of either sign. Lines
differ in lightness and in dash as well as in hue. The functions here draw in the style; a
script draws its own figures in it with ``matplotlib.rcParams.update(STYLE)``.
"""

import functools
import io

import matplotlib
import numpy as np
from cycler import cycler
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle
from PIL import Image

DPI = 120  # legible on screen and on paper, small enough to commit
CMAP = "viridis"  # dark = low, light = high
SIGNED_CMAP = "cividis"  # dark = negative, light = positive, mid-grey = 0 (see ``signed``)
MARKERS = "os^vDPX*"  # one per line or point series, where colour alone would not survive grey
STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "figure.titlesize": 11,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8,
    "image.cmap": CMAP, "savefig.dpi": DPI, "savefig.bbox": "tight",
    "image.interpolation": "nearest",  # a heat map's cells and a small photo's pixels stay sharp squares
    # four lines of viridis' colours: dark to light, each with its own dash
    "axes.prop_cycle": cycler(color=["#440154", "#31688e", "#22a884", "#9bd93c"],
                              linestyle=["-", "--", "-.", ":"]),
}


def style():
    """A context in which matplotlib draws in ``STYLE``."""
    return matplotlib.rc_context(STYLE)


def _styled(plot):
    """``plot``, run in ``STYLE``: a figure looks the same whoever draws it."""
    @functools.wraps(plot)
    def styled(*args, **kwargs):
        with style():
            return plot(*args, **kwargs)
    return styled


def signed(values):
    """imshow's colour settings for ``values`` of either sign: ``SIGNED_CMAP`` on the range
    [-m, m], m = max |values|, so that 0 is the middle of the colour bar."""
    m = float(np.abs(values).max()) or 1.0
    return dict(cmap=SIGNED_CMAP, vmin=-m, vmax=m)


def save_figure(fig, path):
    """Write ``fig`` to ``path`` (a file name or a binary file) as a PNG of ``DPI`` dots per inch
    that records its dpi, cropped to what is drawn (labels outside the axes kept). Its colours
    are reduced to a 256-entry palette (an octree's, which keeps the steps of a colour bar fine):
    a third of the bytes or less, and no change to see."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    image = Image.open(buf).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    image.save(path, format="png", optimize=True, dpi=(DPI, DPI))


def _finish(fig, path, tight=True):
    if tight:
        fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def _epoch_lines(ax, epochs, curves, ylabel):
    """One line per curve (``curves``: name -> a value per epoch) against ``epochs``, labelled."""
    for (name, values), marker in zip(curves.items(), MARKERS, strict=False):
        ax.plot(epochs, values, label=name, marker=marker if len(epochs) < 30 else None)
    ax.set(xlabel="epoch", ylabel=ylabel)
    ax.grid(alpha=0.3)


def plot_accuracy(ax, epochs, curves, ylabel="accuracy (%)"):
    """Accuracy curves (``curves``: name -> fractions, one per epoch) on ``ax``, in percent, on the
    range of their last three quarters: the differences between them show, while the first
    epochs, climbing from chance, may start below the axis (the legend says so). Values that are
    not finite (a NaN of an epoch not validated) are left out of the range."""
    percent = {name: 100 * np.asarray(values, dtype=np.float64) for name, values in curves.items()}
    _epoch_lines(ax, epochs, percent, ylabel)
    every = np.concatenate([v for v in percent.values()] or [np.empty(0)])
    late = np.concatenate([v[len(v) // 4:] for v in percent.values()] or [np.empty(0)])  # last 3/4
    every, late = every[np.isfinite(every)], late[np.isfinite(late)]
    if late.size:
        pad = max(0.1 * np.ptp(late), 0.5)
        low = max(late.min() - pad, 0)
        ax.set_ylim(low, min(late.max() + pad, 100))
        if every.min() < low:  # said in the legend, which keeps clear of the curves
            ax.plot([], [], ls="none", label=f"(first epochs: below {low:.0f}%)")
    if percent:
        ax.legend()


@_styled
def plot_curves(history, path=None, loss_floor=0.0, title=None):
    """Loss and accuracy per epoch, training and validation, from ``history`` (a dict: column name
    -> sequence: "epoch", "train_loss", "val_loss", "train_acc" and "val_acc", the accuracies as
    fractions; a column that is absent is skipped). The accuracy is in percent (``plot_accuracy``).
    ``loss_floor`` > 0, the floor label smoothing sets under the training loss
    (``minivit.train.loss_floor``), is drawn as a dotted line: the training loss cannot go below
    it, and without mixup levels off there, not at 0."""
    fig = Figure(figsize=(10, 3.8))
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = np.asarray(history["epoch"])
    splits = {"train": "training", "val": "validation"}

    def columns(what):  # {"training": history["train_loss"], ...}, for the columns there are
        return {name: history[f"{s}_{what}"] for s, name in splits.items() if f"{s}_{what}" in history}

    _epoch_lines(loss_ax, epochs, columns("loss"), "loss (cross-entropy, nats)")
    if loss_floor > 0:
        loss_ax.axhline(loss_floor, color="black", ls=":", lw=1,
                        label=f"training-loss floor of label smoothing, {loss_floor:.3f}")
    loss_ax.set_title("loss")
    if loss_ax.get_legend_handles_labels()[0]:
        loss_ax.legend(loc="upper right")  # clear of the falling curves and of the floor
    plot_accuracy(acc_ax, epochs, columns("acc"))
    acc_ax.set_title("accuracy")
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def confusion_matrix(labels, predictions, num_classes):
    """C[i, j] = number of images of class i predicted as class j."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(predictions)), 1)
    return cm


@_styled
def plot_confusion(cm, path=None, class_names=None, title="confusion matrix"):
    """The confusion matrix as an image, true class down, predicted class across, counts written in
    (a light-to-dark map: the diagonal, where the counts are, is dark and its numbers white)."""
    cm = np.asarray(cm)
    k = len(cm)
    names = class_names if class_names is not None else [str(i) for i in range(k)]
    fig = Figure(figsize=(1.2 + 0.45 * k, 1.0 + 0.45 * k))
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, label="images")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                dark = cm[i, j] > cm.max() / 2
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
    ax.set_xticks(range(k), names)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
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


@_styled
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


@_styled
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


@_styled
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
        im = ax.imshow(sim[p].reshape(grid_size, grid_size), cmap=SIGNED_CMAP, vmin=-1, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, cax=fig.add_axes([0.88, 0.15, 0.03, 0.7]), label="cosine similarity")
    fig.suptitle("position-embedding similarity", x=0.45)
    fig.supxlabel("input patch column", x=0.45)
    fig.supylabel("input patch row")
    return _finish(fig, path, tight=False)


@_styled
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
        ax.scatter(np.arange(1, depth + 1), dist[:, h], s=18, marker=MARKERS[h % len(MARKERS)],
                   label=f"head {h + 1}")
    ax.set_xlabel("block (network depth)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_xticks(np.arange(1, depth + 1))
    title = "how far each head looks"
    ax.set_title(title + (f" ({patch_size} px patches)" if patch_size else ""))
    if heads <= 8:
        ax.legend(fontsize=7, ncol=2)
    return _finish(fig, path)


def _column(ax, x, width, stages, top, shaded=None):
    """A column of a data-flow diagram: one box per stage (its name above the shape it hands on),
    from y = ``top`` down to 0 at ``x``, each joined to the next by an arrow; box ``shaded`` in grey.
    Returns the boxes' centres."""
    ys = np.linspace(top, 0, len(stages))
    for i, ((text, shape), y) in enumerate(zip(stages, ys, strict=True)):
        ax.add_patch(FancyBboxPatch((x - width / 2, y - 0.34), width, 0.68, boxstyle="round,pad=0.02",
                                    facecolor="0.88" if i == shaded else "white", edgecolor="black", lw=0.8))
        ax.text(x, y + 0.13, text, ha="center", va="center")
        ax.text(x, y - 0.17, shape, ha="center", va="center", family="monospace", fontsize=8)
        if i:
            _arrow(ax, (x, ys[i - 1] - 0.34), (x, y + 0.34))
    return ys


def _arrow(ax, start, end):
    ax.annotate("", end, start, arrowprops=dict(arrowstyle="-|>", color="black", lw=0.8, shrinkA=0,
                                                shrinkB=0))


@_styled
def plot_vit_dataflow(model, path=None):
    """The path of a batch of B images through ``model``, a ``VisionTransformer``: one box per stage
    with the shape of the array it hands on, and the block, repeated L times, drawn out beside it
    with its two residual branches. Every size comes from the model: its image, patch and token
    counts, width D, depth L, heads h, MLP width and classes K; its pooling (class token, mean of
    the patch tokens, or DeiT's two heads on the class and distillation tokens)."""
    pe, blk = model.patch_embed, model.blocks[0]
    C, S, P, D, K = pe.in_chans, pe.img_size, pe.patch_size, model.embed_dim, model.num_classes
    n, k = pe.num_patches, model.num_prefix_tokens
    N, L, h, hidden = n + k, len(model.blocks), blk.attn.num_heads, blk.mlp.fc1.out_features
    tokens = f"(B, {N}, {D})"
    stages = [(r"image $\mathbf{x}$", f"(B, {C}, {S}, {S})"),
              (rf"cut into {P} × {P} patches: $\mathbf{{x}}_p$", f"(B, {n}, {P * P * C})"),
              (r"patch embedding $\mathbf{x}_p\mathbf{E}$", f"(B, {n}, {D})")]
    if k:
        stages.append((r"prepend $\mathbf{x}_{class}$" + r", $\mathbf{x}_{dist}$" * (k == 2), tokens))
    learned = "learned" if model.pos_embed.parameters() else "fixed sin-cos"
    if model.pool is None:  # DeiT's distilled model: a head on each of its first two tokens
        tail = [(r"class, distillation tokens $\mathbf{z}_L^0, \mathbf{z}_L^1$", f"(B, 2, {D})"),
                ("LayerNorm", f"(B, 2, {D})"), ("two heads, averaged: logits", f"(B, {K})")]
    else:
        cls = model.pool.pool == "cls"
        pooled = r"class token $\mathbf{z}_L^0$" if cls else f"mean of the {n} patch tokens"
        tail = [(pooled, f"(B, {D})"), (r"LayerNorm: $\mathbf{y}$", f"(B, {D})"),
                (r"head $\mathbf{y}W + b$: logits", f"(B, {K})")]
    block = len(stages) + 1  # the index of the block's box, drawn out on the right
    stages += [(rf"$+\ \mathbf{{E}}_{{pos}}$ ({learned}): $\mathbf{{z}}_0$", tokens),
               (rf"{L} × block: $\mathbf{{z}}_L$", tokens)] + tail
    inside = [("LayerNorm", tokens),
              (f"attention: {h} heads of d = {D // h}", f"q, k, v (B, {h}, {N}, {D // h})"),
              (r"softmax$(qk^\top/\sqrt{d})\,v$, heads merged", f"A (B, {h}, {N}, {N}) → {tokens}"),
              (r"$+$ residual: $\mathbf{z}'_\ell$", tokens), ("LayerNorm", tokens),
              (f"MLP {D} → {hidden} → {D} (GELU)", f"hidden (B, {N}, {hidden})"),
              (r"$+$ residual: $\mathbf{z}_\ell$", tokens)]
    rows = max(len(stages), len(inside))
    fig = Figure(figsize=(9.5, 0.62 * rows + 1.0))
    ax = fig.add_subplot()
    ax.set(xlim=(-0.1, 9.9), ylim=(-0.6, rows - 0.05))
    ax.axis("off")
    ax.set_title(f"{getattr(model, 'model_name', 'ViT')}: shapes for a batch of B images "
                 f"(N' = {n} patches, N = {N} tokens, D = {D})")
    # the model's column centred at x = 2.2 (4.2 wide), the block's at x = 7.2 (3.9 wide) in a dashed
    # frame from x = 5.05, its residual branches along x = 9.5; boxes are 0.68 high, one per row
    block_y = _column(ax, 2.2, 4.2, stages, rows - 1, shaded=block)[block]
    top, bottom = rows - 0.15, -0.5
    ax.add_patch(Rectangle((5.05, bottom), 4.75, top - bottom, facecolor="0.88", edgecolor="black", lw=0.8,
                           ls="--"))
    for corner, end in ((0.34, top), (-0.34, bottom)):
        ax.plot([4.3, 5.05], [block_y + corner, end], color="black", lw=0.6, ls="--")
    ax.text(7.1, rows - 0.42, r"$\mathbf{z}_{\ell-1}$", ha="right", va="center")
    _arrow(ax, (7.2, rows - 0.25), (7.2, rows - 1 + 0.34))
    ys = _column(ax, 7.2, 3.9, inside, rows - 1)
    for y0, plus in ((rows - 0.42, 3), ((ys[3] + ys[4]) / 2, 6)):  # around attention, around the MLP
        ax.plot([7.2, 9.5, 9.5], [y0, y0, ys[plus]], color="black", lw=0.8, ls="-")
        _arrow(ax, (9.5, ys[plus]), (9.15, ys[plus]))
    return _finish(fig, path, tight=False)
