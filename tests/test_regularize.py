"""Dropout and DropPath details (train/eval behaviour is in the contract tests)."""

import numpy as np
import pytest
from conftest import npy, randn

from minivit import nn


@pytest.mark.parametrize("cls", [nn.Dropout, nn.DropPath])
@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_p_outside_0_1_is_a_value_error(cls, p):
    with pytest.raises(ValueError, match=rf"{cls.__name__} p must be in \[0, 1\), got {p}"):
        cls(p)


@pytest.mark.parametrize("cls", [nn.Dropout, nn.DropPath])
def test_p_zero_is_identity_in_training(cls):
    x = randn(np.random.default_rng(0), 3, 4)
    layer = cls(0.0)
    assert layer.training
    np.testing.assert_array_equal(npy(layer.forward(x)), npy(x))
    np.testing.assert_array_equal(npy(layer.backward(x)), npy(x))


@pytest.mark.parametrize("shape", [(5,), (5, 3), (5, 2, 3, 4)])
def test_drop_path_mask_has_one_draw_per_sample(shape):
    layer = nn.DropPath(0.5, rng=1)
    x = np.ones(shape)
    y = layer.forward(x)
    for b in range(shape[0]):
        assert len(np.unique(y[b])) == 1
    assert set(np.unique(y)) <= {0.0, 2.0}


def test_masks_keep_the_dtype():
    x = np.ones((4, 4), np.float32)
    for layer in (nn.Dropout(0.5, rng=0), nn.DropPath(0.5, rng=0)):
        assert layer.forward(x).dtype == np.float32 and layer.backward(x).dtype == np.float32


def test_the_backward_mask_is_the_forward_mask():
    gen = np.random.default_rng(0)
    x, g = randn(gen, 50, 6) + 3, randn(gen, 50, 6)
    layer = nn.Dropout(0.3, rng=2)
    y = npy(layer.forward(x))
    dx = npy(layer.backward(g))
    np.testing.assert_allclose(dx, np.where(y != 0, npy(g) / 0.7, 0.0), rtol=1e-15)
