"""Property tests (Hypothesis): invariants that hold for every shape, scale and head count."""

import numpy as np
from conftest import npy, randn, randomize
from hypothesis import given, settings
from hypothesis import strategies as st

from minivit import nn
from minivit.gradcheck import gradcheck

SETTINGS = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**32 - 1)
dims = st.integers(1, 7)


@SETTINGS
@given(seed=seeds, shape=st.lists(dims, min_size=1, max_size=4), scale=st.floats(0.01, 30.0),
       shift=st.floats(-1e3, 1e3))
def test_softmax_rows_sum_to_one_and_ignore_a_constant(seed, shape, scale, shift):
    gen = np.random.default_rng(seed)
    x = randn(gen, *shape, scale=scale)
    y = npy(nn.softmax(x))
    assert np.all(y >= 0)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-13)
    # adding a constant to each row (a different one per row) leaves the softmax unchanged
    c = shift * np.random.default_rng(seed + 1).random(shape[:-1] + [1])
    np.testing.assert_allclose(npy(nn.softmax(x + c)), y, rtol=1e-10, atol=1e-300)
    # log_softmax agrees with log(softmax) where it is representable
    np.testing.assert_allclose(npy(nn.log_softmax(x)), np.log(y), rtol=1e-9, atol=1e-12)


@SETTINGS
@given(seed=seeds, lead=st.lists(dims, min_size=1, max_size=3), dim=st.integers(2, 64),
       scale=st.floats(1e-2, 1e3), shift=st.floats(-1e3, 1e3))
def test_layer_norm_output_has_zero_mean_and_unit_variance(seed, lead, dim, scale, shift):
    gen = np.random.default_rng(seed)
    x = randn(gen, *lead, dim, scale=scale) + shift
    ln = nn.LayerNorm(dim, eps=1e-6, dtype="float64")  # gamma = 1, beta = 0
    y = npy(ln.forward(x))
    xn = npy(x)
    var_x = xn.var(axis=-1)
    # rounding: a shift large against the spread costs digits (condition number max|x| / std)
    cond = 1 + np.abs(xn).max(axis=-1) / np.sqrt(var_x)
    assert np.all(np.abs(y.mean(axis=-1)) <= 1e-14 * cond)
    # unit variance up to eps: var(y) = var(x) / (var(x) + eps) exactly in real arithmetic
    assert np.all(np.abs(y.var(axis=-1) / (var_x / (var_x + 1e-6)) - 1) <= 1e-13 * cond)


@SETTINGS
@given(seed=seeds, batch=st.integers(1, 3), tokens=st.integers(2, 7), heads=st.integers(1, 4),
       head_dim=st.integers(1, 5), qkv_bias=st.booleans())
def test_attention_is_permutation_equivariant(seed, batch, tokens, heads, head_dim, qkv_bias):
    """Without a position embedding, reordering the tokens reorders the output the same way."""
    gen = np.random.default_rng(seed)
    dim = heads * head_dim
    msa = randomize(nn.MultiHeadSelfAttention(dim, heads, qkv_bias=qkv_bias, rng=gen, dtype="float64"), gen)
    blk = randomize(nn.Block(dim, heads, mlp_ratio=2.0, rng=gen, dtype="float64"), gen)
    z = randn(gen, batch, tokens, dim)
    perm = gen.permutation(tokens)
    for layer in (msa, blk):
        y = npy(layer.forward(z))
        y_perm = npy(layer.forward(z[:, perm]))
        np.testing.assert_allclose(y_perm, y[:, perm], rtol=1e-12, atol=1e-12)
    a = npy(msa.attn_probs)  # the attention map permutes along both token axes
    msa.forward(z)
    np.testing.assert_allclose(a, npy(msa.attn_probs)[:, :, perm][:, :, :, perm], rtol=1e-12, atol=1e-15)


@SETTINGS
@given(seed=seeds, batch=st.integers(1, 3), chans=st.integers(1, 4), grid_h=st.integers(1, 4),
       grid_w=st.integers(1, 4), patch=st.integers(1, 5))
def test_patchify_backward_of_its_output_is_the_image(seed, batch, chans, grid_h, grid_w, patch):
    gen = np.random.default_rng(seed)
    x = randn(gen, batch, chans, grid_h * patch, grid_w * patch)
    p = nn.Patchify(patch)
    xp = p.forward(x)
    assert xp.shape == (batch, grid_h * grid_w, chans * patch * patch)
    np.testing.assert_array_equal(npy(p.backward(xp)), npy(x))
    # and patch (r, c) holds exactly the pixels of image block (r, c), channel by channel
    r, c = gen.integers(grid_h), gen.integers(grid_w)
    block = npy(x)[:, :, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch]
    np.testing.assert_array_equal(npy(xp)[:, r * grid_w + c], block.reshape(batch, -1))


@settings(max_examples=10, deadline=None)
@given(seed=seeds, batch=st.integers(1, 2), tokens=st.integers(1, 4), heads=st.integers(1, 3),
       head_dim=st.integers(1, 3), with_bias=st.booleans())
def test_attention_gradcheck_any_shape(seed, batch, tokens, heads, head_dim, with_bias):
    gen = np.random.default_rng(seed)
    dim = heads * head_dim
    msa = randomize(nn.MultiHeadSelfAttention(dim, heads, rng=gen, dtype="float64"), gen)
    inputs = [randn(gen, batch, tokens, dim)]
    if with_bias:
        inputs.append(randn(gen, heads, tokens, tokens))
    result = gradcheck(msa, *inputs, max_entries=10**6)
    assert result.worst < 1e-7, f"\n{result}"
