"""Swin's pieces against their definitions: windows and their reverse, the cyclic shift, the
shifted-window mask, the relative position index and bias (its backward a scatter-add), and patch
merging in the reference's order. Their gradient checks are in the contract test."""

import numpy as np
import pytest
from conftest import npy, randn, randomize

from minivit import nn


def test_window_partition_cuts_row_major_windows_and_reverses():
    x = np.arange(2 * 4 * 6 * 3.0).reshape(2, 4, 6, 3)
    w = npy(nn.WindowPartition(2).forward(x))
    assert w.shape == (12, 4, 3)
    np.testing.assert_array_equal(w[4], x[0, 2:4, 2:4].reshape(4, 3))  # image 0, window row 1, column 1
    np.testing.assert_array_equal(w[6 + 2], x[1, 0:2, 4:6].reshape(4, 3))
    np.testing.assert_array_equal(nn.window_reverse(w, 2, x.shape), x)
    with pytest.raises(ValueError, match=r"H and W multiples of 4"):
        nn.WindowPartition(4).forward(x)


def test_cyclic_shift_moves_the_grid_and_back():
    x = randn(np.random.default_rng(0), 1, 4, 4, 2)
    y = npy(nn.CyclicShift(1).forward(x))
    np.testing.assert_array_equal(y[0, 0, 0], npy(x)[0, 1, 1])  # y[i, j] = x[i + s, j + s]
    np.testing.assert_array_equal(y[0, 3, 3], npy(x)[0, 0, 0])  # mod H, W
    np.testing.assert_array_equal(npy(nn.CyclicShift(-1).forward(y)), npy(x))


def test_shift_window_mask_separates_the_regions():
    H = W = 8
    M, s = 4, 2
    mask = nn.shift_window_mask(H, W, M, s)
    assert mask.shape == (4, 16, 16) and set(np.unique(mask)) <= {0.0, -100.0}
    assert not mask[0].any()  # the top-left window holds one region only
    np.testing.assert_array_equal(mask, mask.transpose(0, 2, 1))
    # the bottom-right window holds four regions of 2 x 2 tokens: token (0, 0) sees its own 4 only
    assert (mask[3][0] == 0).sum() == 4 and np.all(np.diagonal(mask, axis1=1, axis2=2) == 0)


def test_relative_position_index_counts_each_offset_once():
    M = 3
    idx = nn.relative_position_index(M)
    assert idx.shape == (9, 9) and idx.min() == 0 and idx.max() == (2 * M - 1) ** 2 - 1
    assert len(np.unique(idx)) == (2 * M - 1) ** 2
    r, c = np.divmod(np.arange(9), 3)
    for i in range(9):
        for j in range(9):
            assert idx[i, j] == (r[i] - r[j] + 2) * 5 + (c[i] - c[j] + 2)
    assert np.all(np.diag(idx) == idx[0, 0])  # offset (0, 0) on the diagonal


def test_relative_position_bias_gathers_and_scatters_back():
    gen = np.random.default_rng(1)
    rpb = randomize(nn.RelativePositionBias(2, 3, dtype="float64"), gen)
    B = npy(rpb.forward())
    table, idx = npy(rpb.table.data), nn.relative_position_index(2)
    np.testing.assert_array_equal(B, table[idx].transpose(2, 0, 1))
    g = gen.standard_normal(B.shape)
    rpb.zero_grad()
    assert rpb.backward(g) is None  # no input: the gradient goes into the table only
    expected = np.zeros_like(table)
    for i in range(4):
        for j in range(4):
            expected[idx[i, j]] += g[:, i, j]
    np.testing.assert_allclose(npy(rpb.table.grad), expected, rtol=1e-14)
    assert "index" not in rpb.state_dict()  # a non-persistent buffer, rebuilt from M


def test_patch_merging_concatenates_neighbours_in_the_reference_order():
    x = randn(np.random.default_rng(2), 1, 4, 4, 2)
    pm = nn.PatchMerging(2, dtype="float64")
    pm.norm.weight.data[...] = 1.0
    pm.norm.bias.data[...] = 0.0
    W = npy(pm.reduction.weight.data)
    X = npy(x)
    merged = np.concatenate([X[:, 0::2, 0::2], X[:, 1::2, 0::2], X[:, 0::2, 1::2], X[:, 1::2, 1::2]], axis=-1)
    ln = (merged - merged.mean(-1, keepdims=True)) / np.sqrt(merged.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(npy(pm.forward(x)), ln @ W, rtol=1e-12, atol=1e-12)
    assert pm.reduction.bias is None and pm.num_parameters() == 2 * 8 + 8 * 4
