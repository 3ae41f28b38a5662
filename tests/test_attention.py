"""Scaled dot-product attention and multi-head self-attention."""

import numpy as np
import pytest
from conftest import npy, randn, randomize

from minivit import nn
from minivit.gradcheck import gradcheck


def _softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_sdpa_matches_the_formula():
    gen = np.random.default_rng(0)
    q, k, v = randn(gen, 2, 3, 4, 5), randn(gen, 2, 3, 6, 5), randn(gen, 2, 3, 6, 7)
    bias = randn(gen, 3, 4, 6)
    attn = nn.ScaledDotProductAttention()
    out = npy(attn.forward(q, k, v, bias))
    a = _softmax(npy(q) @ npy(k).swapaxes(-1, -2) / np.sqrt(5) + npy(bias))  # scale by sqrt(d), d = 5
    np.testing.assert_allclose(npy(attn.attn_probs), a, rtol=1e-13)
    np.testing.assert_allclose(out, a @ npy(v), rtol=1e-12, atol=1e-14)
    assert out.shape == (2, 3, 4, 7)


def test_mask_removes_keys_exactly():
    gen = np.random.default_rng(1)
    q, k, v = randn(gen, 1, 2, 3, 4), randn(gen, 1, 2, 5, 4), randn(gen, 1, 2, 5, 4)
    mask = np.array([True, False, True, True, False])  # broadcast over batch, heads, queries
    attn = nn.ScaledDotProductAttention()
    out = npy(attn.forward(q, k, v, mask=mask))
    assert np.all(npy(attn.attn_probs)[..., ~mask] == 0.0)
    np.testing.assert_allclose(npy(attn.attn_probs).sum(-1), 1.0, rtol=1e-14)
    # the masked keys and values have no influence at all
    k2, v2 = npy(k).copy(), npy(v).copy()
    k2[..., ~mask, :], v2[..., ~mask, :] = 1e3, -1e3
    np.testing.assert_allclose(npy(attn.forward(q, k2, v2, mask=mask)), out, rtol=1e-13)
    dq, dk, dv, dbias = attn.backward(randn(gen, 1, 2, 3, 4))
    assert dbias is None  # no bias given; the mask is not differentiated
    assert not np.any(npy(dk)[..., ~mask, :]) and not np.any(npy(dv)[..., ~mask, :])


def test_scale_replaces_one_over_sqrt_d():
    """CvT scales the scores by its full width, D^-1/2, not by d^-1/2 of one head."""
    gen = np.random.default_rng(3)
    q, k, v = randn(gen, 2, 3, 4, 5), randn(gen, 2, 3, 6, 5), randn(gen, 2, 3, 6, 5)
    attn = nn.ScaledDotProductAttention(scale=0.125)
    out = npy(attn.forward(q, k, v))
    a = _softmax(0.125 * npy(q) @ npy(k).swapaxes(-1, -2))
    np.testing.assert_allclose(npy(attn.attn_probs), a, rtol=1e-13)
    np.testing.assert_allclose(out, a @ npy(v), rtol=1e-12, atol=1e-14)
    result = gradcheck(nn.ScaledDotProductAttention(scale=0.125), q, k, v)
    assert result.worst < 1e-7, result
    msa = nn.MultiHeadSelfAttention(8, 2, scale=8 ** -0.5, dtype="float64", rng=0)
    assert msa.attn.scale == 8 ** -0.5
    with pytest.raises(ValueError, match="attention scale must be a finite number > 0"):
        nn.ScaledDotProductAttention(scale=0.0)


@pytest.mark.parametrize("bias_shape", [(2, 2, 3, 5), (2, 3, 5), (1, 2, 1, 5), (5,)])
def test_bias_gradient_has_the_bias_shape(bias_shape):
    gen = np.random.default_rng(2)
    q, k, v = randn(gen, 2, 2, 3, 4), randn(gen, 2, 2, 5, 4), randn(gen, 2, 2, 5, 4)
    bias = randn(gen, *bias_shape)
    attn = nn.ScaledDotProductAttention()
    attn.forward(q, k, v, bias)
    grads = attn.backward(randn(gen, 2, 2, 3, 4))
    assert len(grads) == 4 and grads[3].shape == bias_shape


def test_sum_to_shape_inverts_broadcasting():
    g = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(nn.sum_to_shape(g, (3, 1)), g.sum(axis=(0, 2))[:, None])
    np.testing.assert_array_equal(nn.sum_to_shape(g, (1, 3, 4)), g.sum(0, keepdims=True))
    assert nn.sum_to_shape(g, (2, 3, 4)) is g


def _mhsa_by_hand(msa, z):
    """Per-head loop: head j uses columns j*d:(j+1)*d of each of the q, k, v thirds of U_qkv."""
    Z, W, b = npy(z), npy(msa.qkv.weight.data), npy(msa.qkv.bias.data)
    D, h = msa.dim, msa.num_heads
    d = D // h
    qkv = Z @ W + b
    heads = []
    for j in range(h):
        q, k, v = (qkv[..., i * D + j * d:i * D + (j + 1) * d] for i in range(3))
        heads.append(_softmax(q @ k.swapaxes(-1, -2) / np.sqrt(d)) @ v)
    return np.concatenate(heads, -1) @ npy(msa.proj.weight.data) + npy(msa.proj.bias.data)


@pytest.mark.parametrize("heads", [1, 2, 3, 6])
def test_mhsa_matches_a_per_head_loop(heads):
    gen = np.random.default_rng(3)
    msa = randomize(nn.MultiHeadSelfAttention(6, heads, dtype="float64"), gen)
    z = randn(gen, 2, 4, 6)
    np.testing.assert_allclose(npy(msa.forward(z)), _mhsa_by_hand(msa, z), rtol=1e-12, atol=1e-13)
    assert msa.head_dim == 6 // heads and msa.qkv.weight.shape == (6, 18)
    a = npy(msa.attn_probs)
    assert a.shape == (2, heads, 4, 4)
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-14)


def test_mhsa_with_bias_returns_its_gradient():
    gen = np.random.default_rng(4)
    msa = randomize(nn.MultiHeadSelfAttention(8, 2, dtype="float64"), gen)
    z, bias = randn(gen, 3, 5, 8), randn(gen, 2, 5, 5)
    msa.forward(z, bias)
    dz, dbias = msa.backward(randn(gen, 3, 5, 8))
    assert dz.shape == (3, 5, 8) and dbias.shape == (2, 5, 5)
    msa.forward(z)
    dz, dbias = msa.backward(randn(gen, 3, 5, 8))  # the same tuple without a bias: dbias None
    assert dz.shape == (3, 5, 8) and dbias is None


def test_any_number_of_tokens():
    msa = nn.MultiHeadSelfAttention(8, 2, dtype="float64")
    for n in (1, 2, 17):  # class and distillation tokens just add to N
        assert msa.forward(np.ones((2, n, 8))).shape == (2, n, 8)


def test_attention_dropout_keeps_the_undropped_probabilities():
    gen = np.random.default_rng(5)
    msa = randomize(nn.MultiHeadSelfAttention(8, 2, attn_drop=0.5, rng=1, dtype="float64"), gen)
    z = randn(gen, 2, 6, 8)
    y_train = npy(msa.forward(z))
    np.testing.assert_allclose(npy(msa.attn_probs).sum(-1), 1.0, rtol=1e-14)
    msa.eval()
    y_eval = npy(msa.forward(z))
    assert not np.allclose(y_train, y_eval)


@pytest.mark.parametrize("shape", [(2, 5, 6), (5, 8)])
def test_bad_input_is_a_value_error(shape):
    got = str(shape).replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ValueError, match=rf"attention expected tokens \(B, N, 8\), got {got}"):
        nn.MultiHeadSelfAttention(8, 2).forward(np.zeros(shape, np.float32))


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match="embed dim 10 is not divisible by num_heads 4"):
        nn.MultiHeadSelfAttention(10, 4)
