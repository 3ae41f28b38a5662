"""Patchify, PatchEmbed, ClassToken, PositionEmbedding: from an image to the token sequence z_0."""

import math

import numpy as np
import pytest
from conftest import npy, randn, randomize

from minivit import nn


def test_patchify_order_row_major_patches_channel_major_pixels():
    x = np.arange(2 * 2 * 4 * 6, dtype=np.float64).reshape(2, 2, 4, 6)  # (B, C, H, W)
    xp = nn.Patchify(2).forward(x)
    assert xp.shape == (2, 6, 8)  # 2x3 grid of patches, each 2 channels x 2 x 2
    # patch 4 is grid row 1, column 1: rows 2-3, columns 2-3 of each channel, channel 0 first
    np.testing.assert_array_equal(xp[1, 4], np.concatenate([x[1, c, 2:4, 2:4].ravel() for c in range(2)]))


def _conv_stride_p(x, kernel, bias, P):
    """A stride-P, kernel-P convolution written as a sum over the kernel window."""
    B, C, H, W = x.shape
    win = x.reshape(B, C, H // P, P, W // P, P)
    y = np.einsum("bcgihj,dcij->bdgh", win, kernel) + bias[None, :, None, None]  # (B, D, H/P, W/P)
    return y.reshape(B, -1, (H // P) * (W // P)).transpose(0, 2, 1)  # (B, N', D)


def test_patch_embed_is_a_stride_p_convolution():
    gen = np.random.default_rng(0)
    pe = nn.PatchEmbed(img_size=6, patch_size=3, in_chans=2, embed_dim=5, rng=gen, dtype="float64")
    x = randn(gen, 3, 2, 6, 6)
    W = npy(pe.proj.weight.data)  # (C*P*P, D)
    kernel = W.T.reshape(5, 2, 3, 3)  # (D, C, P, P)
    expected = _conv_stride_p(npy(x), kernel, npy(pe.proj.bias.data), 3)
    np.testing.assert_allclose(npy(pe.forward(x)), expected, rtol=1e-12, atol=1e-14)
    assert (pe.num_patches, pe.grid_size) == (4, 2)


def test_patch_embed_init_is_the_convolution_default():
    pe = nn.PatchEmbed(img_size=32, patch_size=4, in_chans=3, embed_dim=64, rng=0)
    bound = 1 / math.sqrt(3 * 4 * 4)
    w, b = npy(pe.proj.weight.data), npy(pe.proj.bias.data)
    assert w.shape == (48, 64) and np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert abs(w.std() / (bound / math.sqrt(3)) - 1) < 0.05  # the std of U(-a, a) is a / sqrt(3)


@pytest.mark.parametrize("make,shape,message", [
    (lambda: nn.Patchify(4), (2, 3, 8), r"expected an image batch \(B, C, H, W\), got shape \(2, 3, 8\)"),
    (lambda: nn.Patchify(4), (1, 3, 8, 10), "image size 8x10 is not divisible by the patch size 4"),
    (lambda: nn.PatchEmbed(8, 4, 3, 6), (3, 8, 8), r"expected an image batch \(B, C, H, W\)"),
    (lambda: nn.PatchEmbed(8, 4, 3, 6), (1, 1, 8, 8), "expected 3 input channels, got 1"),
    (lambda: nn.PatchEmbed(8, 4, 3, 6), (1, 3, 12, 12), "expected 8x8 images, got 12x12"),
    (lambda: nn.ClassToken(6), (2, 6), r"ClassToken expected tokens \(B, N, 6\), got \(2, 6\)"),
    (lambda: nn.ClassToken(6), (2, 4, 5), r"ClassToken expected tokens \(B, N, 6\), got \(2, 4, 5\)"),
    (lambda: nn.PositionEmbedding(5, 6), (2, 4, 6), r"expected tokens \(B, 5, 6\), got \(2, 4, 6\)"),
    (lambda: nn.SinCosPositionEmbedding(2, 8), (2, 5, 8), r"expected tokens \(B, 4, 8\), got \(2, 5, 8\)"),
])
def test_bad_input_is_a_value_error(make, shape, message):
    with pytest.raises(ValueError, match=message):
        make().forward(np.zeros(shape, np.float32))


def test_patch_embed_size_must_divide():
    with pytest.raises(ValueError, match="img_size 30 is not divisible by patch_size 4"):
        nn.PatchEmbed(img_size=30, patch_size=4)


@pytest.mark.parametrize("k", [1, 2])
def test_class_token_prepends_shared_tokens(k):
    gen = np.random.default_rng(0)
    tok = randomize(nn.ClassToken(4, k, dtype="float64"), gen)
    z = randn(gen, 3, 5, 4)
    y = npy(tok.forward(z))
    assert y.shape == (3, 5 + k, 4)
    np.testing.assert_array_equal(y[:, k:], npy(z))
    for b in range(3):
        np.testing.assert_array_equal(y[b, :k], npy(tok.weight.data)[0])
    g = randn(gen, 3, 5 + k, 4)
    dz = tok.backward(g)
    np.testing.assert_array_equal(npy(dz), npy(g)[:, k:])
    np.testing.assert_allclose(npy(tok.weight.grad), npy(g)[:, :k].sum(0, keepdims=True), rtol=1e-15)


def test_class_token_init_zero_and_distillation_token_random():
    w = npy(nn.ClassToken(64, 2, rng=0).weight.data)
    assert w.shape == (1, 2, 64) and not w[0, 0].any()
    assert np.abs(w[0, 1]).max() <= 0.04 and 0.005 < w[0, 1].std() < 0.03


def test_position_embedding_adds_and_sums_over_batch():
    gen = np.random.default_rng(0)
    pos = nn.PositionEmbedding(5, 3, rng=gen, dtype="float64")
    assert pos.weight.shape == (1, 5, 3) and np.abs(npy(pos.weight.data)).max() <= 0.04
    z, g = randn(gen, 4, 5, 3), randn(gen, 4, 5, 3)
    np.testing.assert_array_equal(npy(pos.forward(z)), npy(z) + npy(pos.weight.data))
    np.testing.assert_array_equal(npy(pos.backward(g)), npy(g))
    np.testing.assert_allclose(npy(pos.weight.grad), npy(g).sum(0, keepdims=True), rtol=1e-15)


def test_sincos_position_embedding_is_a_fixed_table_of_row_and_column():
    """E_pos[(r, c)] = [sin(c w), cos(c w), sin(r w), cos(r w)], w_k = 10000^(-k / (D/4)); prefix rows 0."""
    D, g, k = 8, 3, 2
    pos = nn.SinCosPositionEmbedding(g, D, num_prefix_tokens=k, dtype="float64")
    table = npy(pos.table)
    assert table.shape == (1, k + g * g, D) and pos.parameters() == []
    assert not table[0, :k].any()
    w = np.array([1.0, 0.01])  # 10000^(-0/2), 10000^(-1/2)
    for r in range(g):
        for c in range(g):
            expected = np.r_[np.sin(c * w), np.cos(c * w), np.sin(r * w), np.cos(r * w)]
            np.testing.assert_allclose(table[0, k + r * g + c], expected, rtol=0, atol=1e-15)
    gen = np.random.default_rng(0)
    z, dout = randn(gen, 2, k + g * g, D), randn(gen, 2, k + g * g, D)
    np.testing.assert_array_equal(npy(pos.forward(z)), npy(z) + table)
    np.testing.assert_array_equal(npy(pos.backward(dout)), npy(dout))
    assert npy(nn.SinCosPositionEmbedding(g, D).table).dtype == np.float32  # the default dtype
    with pytest.raises(ValueError, match="divisible by 4, got 6"):
        nn.SinCosPositionEmbedding(g, 6)
