"""The figures show what their docstrings say: read back from the matplotlib artists they draw."""

import numpy as np
import pytest
from matplotlib.patches import Rectangle

from minivit import viz
from minivit.nn import Patchify


def test_confusion_matrix_counts_true_down_predicted_across():
    cm = viz.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    fig = viz.plot_confusion(cm)
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["1", "1", "1", "1", "2"]  # no zeros


def test_plot_curves_skips_absent_columns():
    history = {"epoch": [1, 2, 3], "train_loss": [3, 2, 1], "val_loss": [3, 2, 2], "train_acc": [0, 1, 1]}
    fig = viz.plot_curves(history)
    assert [len(ax.lines) for ax in fig.axes] == [2, 1]
    assert fig.axes[1].lines[0].get_ydata().tolist() == [0, 1, 1]


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
    with pytest.raises(ValueError, match="grid_size"):
        viz.plot_pos_embed_similarity(u @ u.T, grid_size=4)


def test_attention_distance_plots_every_head_of_every_block():
    dist = np.arange(12.0).reshape(4, 3)
    fig = viz.plot_attention_distance(dist, patch_size=2)
    ax = fig.axes[0]
    assert len(ax.collections) == 3 and "pixels" in ax.get_ylabel()
    np.testing.assert_array_equal(ax.collections[1].get_offsets(), np.c_[np.arange(1, 5), dist[:, 1]])
    with pytest.raises(ValueError, match="depth, heads"):
        viz.plot_attention_distance(np.zeros(3))
