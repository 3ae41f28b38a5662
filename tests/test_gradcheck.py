"""The gradient checker itself: it must pass right backwards, catch wrong ones, and leave no trace."""

import numpy as np
import pytest
from conftest import npy, randn, randomize

from minivit import nn
from minivit.gradcheck import GradcheckResult, assert_gradcheck, gradcheck


class LinearNoTranspose(nn.Linear):
    """dL/dx = g W instead of g W^T: a dropped transpose (square W, so the shapes still fit)."""

    def backward(self, dout):
        (x2,) = self.saved()
        self.weight.grad += x2.T @ dout
        self.bias.grad += dout.sum(axis=0)
        return dout @ self.weight.data


class LinearHalfWeightGrad(nn.Linear):
    """dL/dW off by a factor 1/2."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.weight.grad *= 0.5
        return dx


class LayerNormNoMeanTerms(nn.LayerNorm):
    """The naive backward g / sigma that forgets mu and sigma depend on x."""

    def backward(self, dout):
        x_hat, rstd = self.saved()
        self.weight.grad += (dout * x_hat).sum(axis=0)
        self.bias.grad += dout.sum(axis=0)
        return dout * self.weight.data * rstd


def _linear(cls, seed=0):
    gen = np.random.default_rng(seed)
    return randomize(cls(5, 5, dtype="float64"), gen), randn(gen, 4, 5)


def test_right_backward_passes():
    m, x = _linear(nn.Linear)
    result = assert_gradcheck(m, x)
    assert isinstance(result, GradcheckResult)
    assert set(result.errors) == {"input[0]", "weight", "bias"}
    assert result.worst < 1e-9


def test_catches_a_dropped_transpose():
    m, x = _linear(LinearNoTranspose)
    result = gradcheck(m, x)
    assert result.errors["input[0]"] > 0.1  # the wrong tensor is named
    assert result.errors["weight"] < 1e-9 and result.errors["bias"] < 1e-9
    with pytest.raises(AssertionError, match=r"gradient check failed \(bar 1e-07\)(.|\n)*input\[0\]"):
        assert_gradcheck(m, x)


def test_catches_a_wrong_factor():
    m, x = _linear(LinearHalfWeightGrad)
    result = gradcheck(m, x)
    assert result.errors["weight"] == pytest.approx(0.5, rel=1e-6)
    assert result.errors["input[0]"] < 1e-9
    with pytest.raises(AssertionError, match="weight"):
        assert_gradcheck(m, x)


def test_catches_a_subtle_layer_norm_mistake():
    gen = np.random.default_rng(0)
    m = randomize(LayerNormNoMeanTerms(6, dtype="float64"), gen)
    result = gradcheck(m, randn(gen, 3, 6))
    assert result.errors["input[0]"] > 0.05
    assert result.errors["weight"] < 1e-9


def test_restores_every_perturbed_entry():
    gen = np.random.default_rng(0)
    m = randomize(nn.MultiHeadSelfAttention(8, 2, dtype="float64"), gen)
    x, bias = randn(gen, 2, 4, 8), randn(gen, 2, 4, 4)
    x0, bias0 = npy(x).copy(), npy(bias).copy()
    params0 = {n: npy(p.data).copy() for n, p in m.named_parameters()}
    y0 = npy(m.forward(x, bias)).copy()
    m.backward(randn(gen, 2, 4, 8))
    gradcheck(m, x, bias, max_entries=10**6)
    np.testing.assert_array_equal(npy(x), x0)
    np.testing.assert_array_equal(npy(bias), bias0)
    for n, p in m.named_parameters():
        np.testing.assert_array_equal(npy(p.data), params0[n], err_msg=n)
    # the module is left as after a normal forward at the unperturbed point: backward works
    probs = npy(m.attn_probs).copy()
    assert m.backward(randn(gen, 2, 4, 8))[0].shape == (2, 4, 8)
    np.testing.assert_array_equal(npy(m.forward(x, bias)), y0)
    np.testing.assert_array_equal(npy(m.attn_probs), probs)


def test_rejects_float32_inputs_and_parameters():
    m = nn.Linear(3, 2, dtype="float64")
    with pytest.raises(ValueError, match=r"needs float64 inputs; input\[0\] is float32"):
        gradcheck(m, np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="needs float64 parameters; weight is float32"):
        gradcheck(nn.Linear(3, 2, dtype="float32"), np.zeros((2, 3)))


def test_rejects_a_non_contiguous_input():
    x = randn(np.random.default_rng(0), 3, 4).T  # perturbing a reshaped copy would change nothing
    with pytest.raises(ValueError, match="contiguous"):
        gradcheck(nn.Linear(3, 2, dtype="float64"), x)


def test_samples_large_tensors_reproducibly():
    m, x = _linear(nn.Linear)
    a = gradcheck(m, x, max_entries=7, seed=3)
    b = gradcheck(m, x, max_entries=7, seed=3)
    assert a.counts == {"input[0]": 7, "weight": 7, "bias": 5}
    assert a.errors == b.errors
    text = str(a)
    assert "weight" in text and "(7 entries)" in text and "worst" in text


def test_wrt_and_params_select_what_is_checked():
    gen = np.random.default_rng(0)
    q, k, v = randn(gen, 1, 2, 3, 4), randn(gen, 1, 2, 3, 4), randn(gen, 1, 2, 3, 4)
    result = gradcheck(nn.ScaledDotProductAttention(), q, k, v, wrt=[0, 1, 2])
    assert set(result.errors) == {"input[0]", "input[1]", "input[2]"} and result.worst < 1e-7
    m, x = _linear(nn.Linear)
    assert set(gradcheck(m, x, params=False).errors) == {"input[0]"}


def test_replays_dropout_masks():
    gen = np.random.default_rng(0)
    m = randomize(nn.MLP(4, 8, drop=0.5, rng=1, dtype="float64"), gen)
    assert_gradcheck(m, randn(gen, 3, 4))  # fresh masks at every call would fail this


def test_works_on_a_loss_object():
    from minivit.losses import CrossEntropyLoss

    logits = randn(np.random.default_rng(0), 3, 4)
    result = assert_gradcheck(CrossEntropyLoss(0.1), logits, np.array([1, 0, 3]))
    assert list(result.errors) == ["input[0]"]


class ConvAttentionKeyBiasGetsAGradient(nn.ConvAttention):
    """Gives the key bias a gradient it does not have: the softmax ignores a shift shared by a row."""

    def backward(self, dout):
        dz = super().backward(dout)
        self.proj_k.bias.grad += 1e-3
        return dz


def test_a_gradient_that_is_zero_is_checked_against_zero():
    """CvT's key bias b_k adds q_i b_k to every score of row i: its true gradient is 0, and the
    numeric one is rounding noise, so a relative error would mean nothing. The check then asks the
    analytic gradient to be as small as central differences resolve, and catches one that is not."""
    gen = np.random.default_rng(0)
    right = randomize(nn.ConvAttention(6, 2, 3, dtype="float64"), gen)
    z = randn(gen, 2, 9, 6)
    result = gradcheck(right, z, max_entries=1000)
    assert result.worst < 1e-7, f"\n{result}"
    assert np.abs(npy(right.proj_k.bias.grad)).max() < 1e-12  # zero but for rounding
    wrong = randomize(ConvAttentionKeyBiasGetsAGradient(6, 2, 3, dtype="float64"), np.random.default_rng(0))
    result = gradcheck(wrong, z, max_entries=1000)
    assert result.errors["proj_k.bias"] > 1e-5 and result.errors["proj_k.weight"] < 1e-7
