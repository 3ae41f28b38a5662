"""LayerNorm over the last axis."""

import numpy as np
import pytest
from conftest import npy, randn, randomize

from minivit import nn


def test_forward_matches_the_formula():
    gen = np.random.default_rng(0)
    ln = randomize(nn.LayerNorm(7, eps=1e-5, dtype="float64"), gen)
    x = randn(gen, 2, 3, 7, scale=4) + 2
    xn = npy(x)
    mu, var = xn.mean(-1, keepdims=True), xn.var(-1, keepdims=True)
    expected = (xn - mu) / np.sqrt(var + 1e-5) * npy(ln.weight.data) + npy(ln.bias.data)
    np.testing.assert_allclose(npy(ln.forward(x)), expected, rtol=1e-12, atol=1e-13)


def test_eps_keeps_a_constant_token_finite():
    ln = randomize(nn.LayerNorm(4, dtype="float64"), np.random.default_rng(0))
    y = npy(ln.forward(np.full((2, 4), 3.0)))
    np.testing.assert_array_equal(y, np.broadcast_to(npy(ln.bias.data), (2, 4)))
    dx = npy(ln.backward(np.ones((2, 4))))
    assert np.all(np.isfinite(dx))


def test_default_eps_is_vits():
    assert nn.LayerNorm(8).eps == 1e-6
    ln = nn.LayerNorm(8)
    assert npy(ln.weight.data).tolist() == [1.0] * 8 and not npy(ln.bias.data).any()


def test_input_gradient_is_blind_to_shift_and_scale():
    """LN(x + c) = LN(x) and LN(a x) ~ LN(x): dL/dx has zero sum along the feature axis, and (for
    eps = 0) is orthogonal to x - mean(x)."""
    gen = np.random.default_rng(1)
    ln = randomize(nn.LayerNorm(6, eps=0.0, dtype="float64"), gen)
    x = randn(gen, 5, 6)
    ln.forward(x)
    dx = npy(ln.backward(randn(gen, 5, 6)))
    np.testing.assert_allclose(dx.sum(-1), 0.0, atol=1e-13)
    xc = npy(x) - npy(x).mean(-1, keepdims=True)
    np.testing.assert_allclose((dx * xc).sum(-1), 0.0, atol=1e-13)


def test_float32_in_float32_out():
    ln = nn.LayerNorm(4)
    y = ln.forward(np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))
    assert y.dtype == np.float32 and ln.backward(np.ones((3, 4), np.float32)).dtype == np.float32


def test_wrong_width_is_a_value_error():
    with pytest.raises(ValueError, match=r"LayerNorm expected input \(\.\.\., 8\), got \(2, 3, 7\)"):
        nn.LayerNorm(8).forward(np.zeros((2, 3, 7)))
