"""The figures show what their docstrings say: read back from the matplotlib artists they draw.
And they can be read: titled, labelled, every heat map with its colour bar, colours that keep
their order in grey, saved at a resolution that shows it."""

import io
import warnings

import matplotlib
import numpy as np
import pytest
from matplotlib.patches import Rectangle
from PIL import Image

from minivit import create_model, viz
from minivit.nn import Patchify


def lightness(colours):
    """Relative luminance of RGB(A) colours in [0, 1]: what a grey-scale print keeps of them."""
    return np.asarray(colours)[..., :3] @ [0.2126, 0.7152, 0.0722]


def heat_maps(fig):
    """The images of values in ``fig``, not pictures: 2-D arrays drawn through a colour map that is
    not grey."""
    return [im for ax in fig.axes for im in ax.images
            if im.get_array().ndim == 2 and im.get_cmap().name not in ("gray", "gray_r")]


def assert_readable_heat_maps(fig):
    """Every heat map is read off a colour bar of its own colour map and range, and that colour map's
    lightness is monotonic, so the order of the values survives a grey-scale print."""
    bars = [m.colorbar for ax in fig.axes for m in [*ax.images, *ax.collections] if m.colorbar is not None]
    maps = heat_maps(fig)
    assert maps
    for im in maps:
        scale = im.get_cmap().name, im.get_clim()
        assert any((bar.mappable.get_cmap().name, bar.mappable.get_clim()) == scale for bar in bars), \
            f"a {scale[0]} heat map without its colour bar"
        steps = np.diff(lightness(im.get_cmap()(np.linspace(0, 1, 256))))
        assert np.all(steps > 0) or np.all(steps < 0), f"{im.get_cmap().name} is not monotonic in grey"


def test_style_lines_differ_in_grey_and_in_dash():
    cycle = viz.STYLE["axes.prop_cycle"].by_key()
    grey = lightness([matplotlib.colors.to_rgb(c) for c in cycle["color"]])
    assert np.all(np.diff(grey) > 0.1)  # dark to light, apart
    assert len(set(cycle["linestyle"])) == len(cycle["color"])


def test_save_figure_writes_a_png_that_records_at_least_120_dpi(tmp_path):
    fig = viz.plot_attention_distance(np.arange(6.0).reshape(2, 3))
    buf = io.BytesIO()
    viz.save_figure(fig, buf)
    viz.save_figure(fig, tmp_path / "distance.png")
    assert buf.getvalue() == (tmp_path / "distance.png").read_bytes()
    image = Image.open(buf)
    assert image.format == "PNG" and [round(d) for d in image.info["dpi"]] == [viz.DPI] * 2 and viz.DPI >= 120
    assert image.size[0] > 0.8 * fig.get_size_inches()[0] * viz.DPI  # drawn at that resolution


def test_confusion_matrix_counts_true_down_predicted_across():
    cm = viz.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    fig = viz.plot_confusion(cm)
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["1", "1", "1", "1", "2"]  # no zeros
    ax = fig.axes[0]
    assert ax.get_title() and ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert_readable_heat_maps(fig)


def test_plot_curves_skips_absent_columns():
    history = {"epoch": [1, 2, 3], "train_loss": [3, 2, 1], "val_loss": [3, 2, 2], "train_acc": [0, 1, 1]}
    fig = viz.plot_curves(history)
    assert [len(ax.lines) for ax in fig.axes] == [2, 1]
    assert fig.axes[1].lines[0].get_ydata().tolist() == [0, 100, 100]  # in percent


@pytest.mark.parametrize("history", [
    {"epoch": [1, 2], "train_loss": [2.0, 1.0]},  # no accuracy at all
    {"epoch": [1, 2, 3], "train_loss": [2, 1, 1], "train_acc": [0.2, 0.5, np.nan], "val_acc": [np.nan] * 3},
    {"epoch": [], "train_loss": [], "train_acc": []},  # before the first epoch ends
    {"epoch": [1], "train_acc": [0.5]},
], ids=["no-accuracy", "nan", "empty", "one-epoch"])
def test_plot_curves_draws_any_history_without_a_warning(history):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = viz.plot_curves(history)
    low, high = fig.axes[1].get_ylim()
    assert np.isfinite([low, high]).all() and low < high


def test_plot_curves_labels_its_axes_and_zooms_on_the_accuracy_that_differs():
    train_acc = [0.1, 0.6, 0.9, 0.95, 0.97, 0.98, 0.99, 0.99]
    val_acc = [0.1, 0.5, 0.85, 0.9, 0.93, 0.94, 0.95, 0.95]
    history = {"epoch": np.arange(1, 9), "train_loss": np.linspace(2.3, 0.6, 8),
               "val_loss": np.linspace(2.3, 0.3, 8), "train_acc": train_acc, "val_acc": val_acc}
    fig = viz.plot_curves(history, title="vit_digits on digits")
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_xlabel() == acc_ax.get_xlabel() == "epoch"
    assert "cross-entropy" in loss_ax.get_ylabel() and acc_ax.get_ylabel() == "accuracy (%)"
    assert loss_ax.get_title() and acc_ax.get_title() and fig.get_suptitle() == "vit_digits on digits"
    assert [line.get_label() for line in acc_ax.lines][:2] == ["training", "validation"]
    np.testing.assert_allclose(acc_ax.lines[1].get_ydata(), 100 * np.array(val_acc))
    low, high = acc_ax.get_ylim()
    late = 100 * np.array(train_acc[2:] + val_acc[2:])  # the last three quarters of the run
    assert 80 < low <= late.min() and late.max() <= high <= 100  # the 4-point gap fills the panel
    assert "below" in acc_ax.get_legend().get_texts()[-1].get_text()  # the first epochs are off the bottom
    assert not [line for line in loss_ax.lines if "floor" in line.get_label()]


def test_plot_curves_draws_the_floor_label_smoothing_sets():
    history = {"epoch": [1, 2, 3], "train_loss": [2.0, 1.0, 0.6], "train_acc": [0.3, 0.8, 0.9]}
    fig = viz.plot_curves(history, loss_floor=0.5004)
    (floor,) = [line for line in fig.axes[0].lines if "floor" in line.get_label()]
    assert list(floor.get_ydata()) == [0.5004, 0.5004] and "0.500" in floor.get_label()
    assert floor.get_label() in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_plot_patches_pulls_the_patches_apart_in_token_order(tmp_path):
    image = np.random.default_rng(0).random((3, 8, 12))  # a 2 x 3 grid of 4 x 4 patches
    fig = viz.plot_patches(image, 4, path=tmp_path / "patches.png", highlight=(1, 2))
    grid_ax, tokens_ax = fig.axes
    apart = tokens_ax.images[0].get_array()  # (2 * 7, 3 * 7, 3): patches with 3 px between them
    assert apart.shape == (14, 21, 3)
    tokens = Patchify(4).forward(image[None])[0]  # (6, 48) in (c, i, j) order
    for n, token in enumerate(tokens):
        i, j = divmod(n, 3)
        shown = apart[7 * i:7 * i + 4, 7 * j:7 * j + 4]  # (4, 4, 3)
        assert np.allclose(shown.transpose(2, 0, 1).reshape(-1), token)
    assert np.all(apart[4:7] == 1) and np.all(apart[:, 4:7] == 1)  # the gaps are white
    assert len(grid_ax.lines) == 3 + 4  # every patch border, across and down
    (box,) = [p for p in grid_ax.patches if isinstance(p, Rectangle)]
    assert box.get_xy() == (2 * 4 - 0.5, 1 * 4 - 0.5) and box.get_width() == 4
    assert (tmp_path / "patches.png").read_bytes()[:4] == b"\x89PNG"
    assert not viz.plot_patches(image, 4).axes[0].patches


def test_plot_attention_draws_each_map_on_the_patch_grid():
    rng = np.random.default_rng(1)
    images, maps = rng.random((2, 1, 8, 8)), rng.random((2, 3, 16))
    fig = viz.plot_attention(images, maps, grid_size=4, row_labels=["a", "b"], label="share")
    axes, bars = np.array(fig.axes[:8]).reshape(2, 4), fig.axes[8:]
    assert [ax.get_title() for ax in axes[0]] == ["image", "map 1", "map 2", "map 3"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["a", "b"]
    for i in range(2):
        for j in range(3):
            (shown,) = axes[i, j + 1].images
            assert np.array_equal(shown.get_array(), maps[i, j].reshape(4, 4))
            assert shown.get_extent() == [-0.5, 7.5, 7.5, -0.5]  # one square per 2 x 2 pixel patch
            assert shown.get_clim() == (maps[:, j].min(), maps[:, j].max())  # one scale per column
            assert len(axes[i, j + 1].collections) == 1  # the image's contour
    assert len(bars) == 3 and all(bar.get_xlabel() == "share" for bar in bars)  # a colour bar per map
    assert_readable_heat_maps(fig)  # and every row's map is read off its column's
    assert np.array_equal(axes[1, 0].images[0].get_array(), images[1, 0])  # in [0, 1]: as it is
    stretched = viz.plot_attention(4 * images - 1, maps, grid_size=4).axes[0].images[0].get_array()
    lo, hi = images[0].min(), images[0].max()
    assert np.allclose(stretched, (images[0, 0] - lo) / (hi - lo))  # normalised: stretched to [0, 1]


def test_plot_attention_overlay_blends_the_map_over_the_image(tmp_path):
    rng = np.random.default_rng(4)
    images, maps = rng.random((1, 3, 8, 8)), rng.random((1, 1, 16))
    fig = viz.plot_attention(images, maps, grid_size=4, overlay=True, path=tmp_path / "rollout.png")
    photo, heat = fig.axes[1].images
    assert np.array_equal(photo.get_array(), images[0].transpose(1, 2, 0))
    assert np.array_equal(heat.get_array(), maps[0, 0].reshape(4, 4)) and heat.get_alpha() == 0.6
    assert not fig.axes[1].collections  # no contour on a photo
    assert (tmp_path / "rollout.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("shape", [(2, 3, 9), (1, 3, 16), (2, 16)])
def test_plot_attention_rejects_maps_that_do_not_fit(shape):
    with pytest.raises(ValueError, match="maps must be"):
        viz.plot_attention(np.zeros((2, 1, 8, 8)), np.zeros(shape), grid_size=4)


def test_plot_attention_wants_a_title_per_column():
    with pytest.raises(ValueError, match="titles"):
        viz.plot_attention(np.zeros((1, 1, 8, 8)), np.zeros((1, 2, 16)), grid_size=4, titles=["a", "b"])


def test_pos_embed_similarity_tiles_are_rows_of_the_similarity():
    e = np.random.default_rng(2).standard_normal((9, 5))
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    fig = viz.plot_pos_embed_similarity(u @ u.T, grid_size=3)
    assert fig.get_suptitle() and fig.get_supxlabel() == "input patch column"
    assert fig.get_supylabel() == "input patch row" and fig.axes[9].get_ylabel() == "cosine similarity"
    for p in range(9):
        assert np.allclose(fig.axes[p].images[0].get_array(), (u @ u[p]).reshape(3, 3))
    assert_readable_heat_maps(fig)
    assert fig.axes[0].images[0].get_clim() == (-1, 1)  # signed: 0 is the middle of the colour bar
    with pytest.raises(ValueError, match="grid_size"):
        viz.plot_pos_embed_similarity(u @ u.T, grid_size=4)


def test_attention_distance_plots_every_head_of_every_block():
    dist = np.arange(12.0).reshape(4, 3)
    fig = viz.plot_attention_distance(dist, patch_size=2)
    ax = fig.axes[0]
    assert len(ax.collections) == 3 and "pixels" in ax.get_ylabel() and ax.get_title()
    assert len({c.get_paths()[0].vertices.tobytes() for c in ax.collections}) == 3  # a marker per head
    np.testing.assert_array_equal(ax.collections[1].get_offsets(), np.c_[np.arange(1, 5), dist[:, 1]])
    with pytest.raises(ValueError, match="depth, heads"):
        viz.plot_attention_distance(np.zeros(3))


def test_signed_values_get_a_range_symmetric_about_zero():
    settings = viz.signed(np.array([[-0.5, 2.0], [0.0, 1.0]]))
    assert settings == dict(cmap=viz.SIGNED_CMAP, vmin=-2.0, vmax=2.0)
    assert viz.signed(np.zeros(3))["vmax"] > 0  # all zero: still a range


def test_vit_dataflow_shapes_come_from_the_model():
    model = create_model("vit_digits", img_size=12, patch_size=3, in_chans=2, embed_dim=24, depth=3,
                         num_heads=2, mlp_ratio=3.0, num_classes=7, class_token=True, pool="cls",
                         pos_embed="learn")
    fig = viz.plot_vit_dataflow(model)
    text = "\n".join(t.get_text() for t in fig.axes[0].texts)
    # 16 patches of 3 x 3 x 2 = 18 numbers, 17 tokens of D = 24, 2 heads of d = 12, MLP width 72, 7 classes
    for shape in ["(B, 2, 12, 12)", "(B, 16, 18)", "(B, 16, 24)", "(B, 17, 24)", "q, k, v (B, 2, 17, 12)",
                  "A (B, 2, 17, 17)", "hidden (B, 17, 72)", "(B, 24)", "(B, 7)"]:
        assert shape in text, shape
    assert "3 × block" in text and "learned" in text and "class token" in text and fig.axes[0].get_title()
    mean = viz.plot_vit_dataflow(create_model("vit_digits"))  # no class token: no such stage, mean pooling
    text = "\n".join(t.get_text() for t in mean.axes[0].texts)
    assert "(B, 17," not in text and "x}_{class}" not in text and "mean of the 16 patch tokens" in text
    assert "fixed sin-cos" in text and "(B, 16, 64)" in text and "(B, 10)" in text
    distilled = create_model("deit_tiny_distilled_patch16_224", img_size=32, patch_size=16, embed_dim=12,
                             depth=1, num_heads=2, num_classes=5)  # DeiT: two tokens, two heads
    text = "\n".join(t.get_text() for t in viz.plot_vit_dataflow(distilled).axes[0].texts)
    assert r"\mathbf{x}_{dist}" in text and "(B, 6, 12)" in text  # 4 patches, 2 tokens
    assert "(B, 2, 12)" in text and "two heads" in text
