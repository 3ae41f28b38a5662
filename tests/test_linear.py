"""Linear: y = x W + b with W of shape (D_in, D_out)."""

import numpy as np
import pytest
from conftest import npy, randn, randomize

from minivit import nn


def test_forward_is_x_w_plus_b_over_any_leading_axes():
    gen = np.random.default_rng(0)
    lin = randomize(nn.Linear(5, 3, dtype="float64"), gen)
    assert lin.weight.shape == (5, 3) and lin.bias.shape == (3,)
    x = randn(gen, 2, 4, 6, 5)
    W, b = npy(lin.weight.data), npy(lin.bias.data)
    expected = np.einsum("abci,io->abco", npy(x), W) + b
    np.testing.assert_allclose(npy(lin.forward(x)), expected, rtol=1e-13, atol=1e-14)
    assert lin.forward(x[0, 0, 0]).shape == (3,)  # a single vector


def test_backward_formulas():
    gen = np.random.default_rng(1)
    lin = randomize(nn.Linear(4, 3, dtype="float64"), gen)
    x, g = randn(gen, 2, 5, 4), randn(gen, 2, 5, 3)
    lin.forward(x)
    dx = npy(lin.backward(g))
    X, G, W = npy(x).reshape(-1, 4), npy(g).reshape(-1, 3), npy(lin.weight.data)
    np.testing.assert_allclose(dx, (G @ W.T).reshape(2, 5, 4), rtol=1e-13)
    np.testing.assert_allclose(npy(lin.weight.grad), X.T @ G, rtol=1e-13)
    np.testing.assert_allclose(npy(lin.bias.grad), G.sum(0), rtol=1e-13)


def test_forward_leaves_its_input_alone():
    gen = np.random.default_rng(2)
    lin = randomize(nn.Linear(4, 4, dtype="float64"), gen)
    x = randn(gen, 3, 4)
    x0 = npy(x).copy()
    lin.forward(x)
    lin.backward(randn(gen, 3, 4))
    np.testing.assert_array_equal(npy(x), x0)


def test_init_truncated_normal_and_zero_bias():
    lin = nn.Linear(300, 400, std=0.05, rng=0)
    w = npy(lin.weight.data)
    assert w.dtype == np.float32 and np.abs(w).max() <= 0.1 + 1e-7
    assert abs(w.std() / (0.05 * 0.8796) - 1) < 0.01 and not npy(lin.bias.data).any()
    np.testing.assert_array_equal(w, npy(nn.Linear(300, 400, std=0.05, rng=0).weight.data))


def test_init_fan_in_uniform_weight_and_bias():
    """PyTorch's default: W, b ~ U(+-1/sqrt(D_in)); reset_parameters redraws in place."""
    lin = nn.Linear(100, 400, init="fan_in", rng=0)
    w, b = npy(lin.weight.data).copy(), npy(lin.bias.data).copy()
    assert np.abs(w).max() <= 0.1 and np.abs(b).max() <= 0.1
    assert abs(w.std() / (0.1 / np.sqrt(3)) - 1) < 0.01 and abs(b.std() / (0.1 / np.sqrt(3)) - 1) < 0.1
    before = lin.weight.data
    lin.reset_parameters("trunc_normal", std=0.02, rng=1)
    assert lin.weight.data is before and not np.array_equal(npy(lin.weight.data), w)  # in place
    assert np.abs(npy(lin.weight.data)).max() <= 0.04 and not npy(lin.bias.data).any()
    with pytest.raises(ValueError, match="init must be one of"):
        nn.Linear(3, 2, init="xavier")


def test_float32_in_float32_out():
    lin = nn.Linear(3, 2)
    y = lin.forward(np.ones((4, 3), np.float32))
    assert y.dtype == np.float32 and lin.backward(np.ones((4, 2), np.float32)).dtype == np.float32


def test_wrong_width_is_a_value_error():
    with pytest.raises(ValueError, match=r"Linear expected input \(\.\.\., 8\), got shape \(2, 5\)"):
        nn.Linear(8, 3).forward(np.zeros((2, 5), np.float32))
