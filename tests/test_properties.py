"""Property tests (Hypothesis): invariants that hold for every shape, scale and head count; and
errors that are all-or-nothing for any bad state dict or configuration."""

import inspect
import math
import string

import numpy as np
import pytest
from conftest import npy, randn, randomize, snapshot, tiny_vit
from hypothesis import given, settings
from hypothesis import strategies as st

from minivit import create_model, nn
from minivit.gradcheck import gradcheck
from minivit.models import VisionTransformer, model_config

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


# ----------------------------------------------------------------------------- all-or-nothing errors

GOOD_CHANGES = ("float32", "int", "list")  # other forms of the same numbers: accepted
BAD_CHANGES = ("shape", "nan", "inf", "-inf", "str", "object", "none", "complex", "bool", "ragged")
NAMES = list(tiny_vit().state_dict())


def _change(kind, w, gen):
    """Entry ``w`` (a float64 array) in the form ``kind``."""
    def poke(value):
        v = w.copy()
        v.flat[gen.integers(w.size)] = value
        return v

    return {
        "float32": lambda: w.astype(np.float32), "int": lambda: np.round(w * 10).astype(np.int64),
        "list": lambda: w.tolist(), "shape": lambda: np.zeros(w.shape + (1,)),
        "nan": lambda: poke(np.nan), "inf": lambda: poke(np.inf), "-inf": lambda: poke(-np.inf),
        "str": lambda: w.astype(str), "object": lambda: w.astype(object), "none": lambda: None,
        "complex": lambda: w + 1j, "bool": lambda: w > 0, "ragged": lambda: [[1.0], [1.0, 2.0]],
    }[kind]()


@settings(max_examples=40, deadline=None)
@given(seed=seeds, kinds=st.lists(st.sampled_from(GOOD_CHANGES + BAD_CHANGES), max_size=6),
       missing=st.integers(0, 2),
       extra=st.lists(st.text(string.ascii_lowercase + "._", min_size=1, max_size=12), max_size=2))
def test_load_state_dict_loads_a_good_state_dict_and_rejects_a_bad_one_without_a_trace(seed, kinds, missing,
                                                                                         extra):
    gen = np.random.default_rng(seed)
    m, source = tiny_vit(), tiny_vit(seed=1).state_dict()
    before = snapshot(m)
    sd = dict(source)
    names = [str(n) for n in gen.permutation(NAMES)]  # a random subset of the entries changes
    for name, kind in zip(names, kinds, strict=False):
        sd[name] = _change(kind, sd[name], gen)
    for name in names[len(kinds):len(kinds) + missing]:
        del sd[name]
    added = {k for k in extra if k not in source}
    sd.update({k: np.zeros(3) for k in added})
    bad = [n for n, kind in zip(names, kinds, strict=False) if kind in BAD_CHANGES]
    if not (bad or missing or added):  # nothing wrong: it loads
        m.load_state_dict(sd)
        for name, p in m.named_parameters():
            np.testing.assert_allclose(npy(p.data), np.asarray(sd[name], dtype=np.float64), rtol=1e-7)
        return
    with pytest.raises(ValueError) as e:
        m.load_state_dict(sd)
    assert snapshot(m) == before
    if missing or added:
        assert "missing keys" in str(e.value)
    else:
        assert any(repr(n) in str(e.value) for n in bad), str(e.value)


def _other_than(*options):
    return st.text(max_size=8).filter(lambda v: v not in options) | st.none() | st.integers()


_not_int = st.floats() | st.text(max_size=3) | st.booleans() | st.none()
_not_positive_int = st.integers(max_value=0) | _not_int
_not_rate = st.floats().filter(lambda v: not 0 <= v < 1) | st.text(max_size=3) | st.none()
_not_flag = st.integers() | st.floats() | st.text(max_size=3) | st.none()
_SETTINGS = set(inspect.signature(VisionTransformer).parameters)
# vit_digits has img_size 8, patch_size 2, embed_dim 64, num_heads 4, sincos, mean pooling, no class token
BAD = {
    "img_size": _not_positive_int | st.integers(1, 999).filter(lambda n: n % 2),
    "patch_size": _not_positive_int | st.integers(3, 99).filter(lambda n: 8 % n),
    "in_chans": _not_positive_int, "num_classes": _not_positive_int, "depth": _not_positive_int,
    "embed_dim": _not_positive_int | st.integers(1, 999).filter(lambda n: n % 4),
    "num_heads": _not_positive_int | st.integers(1, 999).filter(lambda n: 64 % n),
    "mlp_ratio": (st.floats(max_value=0.0) | st.floats(0.0, 1 / 64, exclude_max=True)
                  | st.sampled_from([math.nan, math.inf]) | st.text(max_size=3) | st.booleans() | st.none()),
    "drop_rate": _not_rate, "attn_drop_rate": _not_rate, "drop_path_rate": _not_rate,
    "qkv_bias": _not_flag, "class_token": _not_flag,
    "pool": _other_than("mean"),  # "cls" too: vit_digits has no class token
    "approximate": _other_than("none", "tanh"), "weight_init": _other_than("trunc_normal", "fan_in"),
    "pos_embed": _other_than("learn", "sincos"),
    "dtype": st.sampled_from(["float16", "f2", "int64", "i4", "bool", "complex64", "floaty", 5, True, 1.5]),
    "seed": st.integers(max_value=-1) | st.floats() | st.text(max_size=3) | st.booleans(),
}


@settings(max_examples=60, deadline=None)
@given(data=st.data(), name=st.sampled_from(sorted(BAD)))
def test_create_model_rejects_any_bad_setting_by_name(data, name):
    value = data.draw(BAD[name], label=name)
    with pytest.raises(ValueError, match=f"^bad configuration for 'vit_digits': .*{name}"):
        create_model("vit_digits", **{name: value})


@settings(max_examples=20, deadline=None)
@given(name=st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)
       .filter(lambda n: n not in _SETTINGS))
def test_create_model_rejects_an_unknown_setting_by_name(name):
    with pytest.raises(ValueError, match=rf"unknown settings \['{name}'\]"):
        create_model("vit_digits", **{name: 1})


@settings(max_examples=20, deadline=None)
@given(sizes=st.sampled_from([(4, 1), (4, 2), (4, 4), (6, 2), (6, 3), (8, 2), (8, 8)]),
       in_chans=st.integers(1, 3), num_classes=st.integers(1, 5), num_heads=st.sampled_from([1, 2, 4]),
       width=st.integers(1, 2), depth=st.integers(1, 2), mlp_ratio=st.floats(0.25, 4.0),
       rates=st.tuples(*[st.floats(0.0, 1.0, exclude_max=True)] * 3), qkv_bias=st.booleans(),
       tokens=st.sampled_from([(True, "cls"), (True, "mean"), (False, "mean")]),
       approximate=st.sampled_from(["none", "tanh"]), weight_init=st.sampled_from(["trunc_normal", "fan_in"]),
       pos_embed=st.sampled_from(["learn", "sincos"]), dtype=st.sampled_from([None, "float32", np.float64]),
       seed=st.none() | st.integers(0, 2**32))
def test_create_model_builds_any_good_configuration(sizes, in_chans, num_classes, num_heads, width, depth,
                                                    mlp_ratio, rates, qkv_bias, tokens, approximate,
                                                    weight_init, pos_embed, dtype, seed):
    (img_size, patch_size), (class_token, pool) = sizes, tokens
    config = dict(img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                  embed_dim=4 * num_heads * width, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                  drop_rate=rates[0], attn_drop_rate=rates[1], drop_path_rate=rates[2], qkv_bias=qkv_bias,
                  class_token=class_token, pool=pool, approximate=approximate, weight_init=weight_init,
                  pos_embed=pos_embed, dtype=dtype, seed=seed)
    m = create_model("vit_digits", **config).eval()
    assert m.config == {**model_config("vit_digits"), **config}
    assert m.forward(np.zeros((2, in_chans, img_size, img_size))).shape == (2, num_classes)
