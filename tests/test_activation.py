"""softmax, log_softmax, Softmax and GELU (exact and tanh)."""

import numpy as np
import pytest
from conftest import npy, randn
from scipy.special import log_softmax as scipy_log_softmax
from scipy.special import ndtr

from minivit import nn


def test_softmax_matches_the_definition_on_any_axis():
    x = randn(np.random.default_rng(0), 3, 4, 5)
    e = np.exp(npy(x))
    for axis in (0, 1, -1):
        np.testing.assert_allclose(npy(nn.softmax(x, axis)), e / e.sum(axis, keepdims=True), rtol=1e-14)


def test_softmax_is_stable_for_huge_logits():
    x = np.array([[1e4, 1e4 - 1.0, -1e4], [-1e308, 0.0, 1e308]])
    y = nn.softmax(x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y[0], [1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1)), 0.0], rtol=1e-14)
    np.testing.assert_array_equal(y[1], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(nn.log_softmax(x)[0], scipy_log_softmax(x[0]), rtol=1e-14)


def test_softmax_does_not_change_its_input():
    x = randn(np.random.default_rng(0), 3, 4)
    x0 = npy(x).copy()
    nn.softmax(x)
    nn.log_softmax(x)
    np.testing.assert_array_equal(npy(x), x0)


def test_softmax_backward_is_the_jacobian_product():
    gen = np.random.default_rng(1)
    x, dy = npy(randn(gen, 6)), npy(randn(gen, 6))
    y = nn.softmax(x)
    jac = np.diag(y) - np.outer(y, y)  # dy_i / dx_j = y_i (delta_ij - y_j)
    np.testing.assert_allclose(nn.softmax_backward(y, dy), jac.T @ dy, rtol=1e-13, atol=1e-16)
    layer = nn.Softmax()
    layer.forward(x)
    np.testing.assert_allclose(layer.backward(dy), jac.T @ dy, rtol=1e-13, atol=1e-16)


def test_gelu_exact_is_x_times_the_normal_cdf():
    x = np.linspace(-8, 8, 3201)
    # absolute accuracy in the left tail: 1 + erf cancels there (as in the reference implementations)
    np.testing.assert_allclose(npy(nn.GELU().forward(x)), x * ndtr(x), rtol=1e-14, atol=1e-15)


def test_gelu_tanh_formula_and_closeness_to_exact():
    x = np.linspace(-8, 8, 3201)
    t = nn.GELU("tanh").forward(x)
    expected = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(t, expected, rtol=1e-14, atol=1e-300)
    assert np.abs(t - x * ndtr(x)).max() < 1e-3  # the approximation's known error is ~2e-4


def test_gelu_derivative_at_known_points():
    g = nn.GELU()
    g.forward(np.array([0.0, 10.0, -10.0]))
    np.testing.assert_allclose(g.backward(np.ones(3)), [0.5, 1.0, 0.0], atol=1e-15)


def test_gelu_float32_close_to_float64():
    x = np.random.default_rng(0).standard_normal(10_000) * 3
    g32, g64 = nn.GELU(), nn.GELU()
    y32 = g32.forward(x.astype(np.float32))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, g64.forward(x), rtol=0, atol=3e-6)
    d32 = g32.backward(np.ones(10_000, np.float32))
    assert d32.dtype == np.float32
    np.testing.assert_allclose(d32, g64.backward(np.ones(10_000)), rtol=0, atol=3e-6)


def test_gelu_bad_approximation_is_a_value_error():
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh', got 'erf'"):
        nn.GELU("erf")
