"""The layer contract (DESIGN.md), run over every layer class: output shape, gradient check,
accumulation, zero_grad, backward-before-forward, a wrong dout rejected before any gradient is
touched, nonsense sizes rejected by the constructors; and the train/eval behaviour of the
regularisers."""

import importlib
import inspect
import pkgutil
import re

import numpy as np
import pytest
from conftest import CASES, as_tuple, case_ids, npy, randn, restore, rng_states, snapshot, wrong_douts

import minivit.models
from minivit import backend, nn
from minivit.gradcheck import gradcheck
from minivit.models.registry import _REGISTRY


def layer_classes():
    """Every Module subclass with a forward of its own defined in minivit.nn and minivit.models,
    but the registered model families and their base classes (tests/test_model_contract.py runs
    those)."""
    families = {cls for cls, _ in _REGISTRY.values()}
    found = set()
    for package in (minivit.nn, minivit.models):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            found |= {c for _, c in inspect.getmembers(module, inspect.isclass)
                      if issubclass(c, nn.Module) and c.__module__ == module.__name__
                      and c.forward is not nn.Module.forward
                      and not any(issubclass(f, c) for f in families)}
    return found


def test_table_covers_every_layer_class():
    classes = layer_classes()
    assert {nn.Linear, nn.LayerNorm, nn.Block} <= classes  # the discovery itself works
    built = {type(c.build(np.float64)) for c in CASES}
    assert classes <= built, f"no contract case for {classes - built}"


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_output_shape_and_dtype(case):
    module, inputs, kwargs = case.make()
    y = module.forward(*inputs, **kwargs)
    assert y.shape == case.out_shape
    assert y.dtype == np.float64


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_gradcheck(case):
    module, inputs, kwargs = case.make()
    result = gradcheck(module, *inputs, max_entries=10**6, **kwargs)
    assert result.worst < case.tol, f"\n{result}"
    # every input and every parameter was checked, each in full
    n_inputs = sum(1 for a in inputs if a.dtype.kind == "f")
    assert len(result.errors) == n_inputs + len(module.parameters())
    for (name, p) in module.named_parameters():
        assert result.counts[name] == p.size


def _forward_backward(module, inputs, kwargs, upstream, states):
    restore(states)  # the same dropout masks on each pass
    module.forward(*inputs, **kwargs)
    return [npy(g).copy() for g in as_tuple(module.backward(upstream))]


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_backward_accumulates_and_zero_grad_clears(case):
    module, inputs, kwargs = case.make()
    gen = np.random.default_rng(1)
    states = rng_states(module)
    restore(states)
    upstream = randn(gen, *module.forward(*inputs, **kwargs).shape)
    module.zero_grad()
    first = _forward_backward(module, inputs, kwargs, upstream, states)
    once = {n: npy(p.grad).copy() for n, p in module.named_parameters()}
    second = _forward_backward(module, inputs, kwargs, upstream, states)
    for a, b in zip(first, second, strict=True):  # input gradients are returned, not accumulated
        np.testing.assert_array_equal(a, b)
    for n, p in module.named_parameters():
        np.testing.assert_allclose(npy(p.grad), 2 * once[n], rtol=1e-13, atol=1e-15, err_msg=n)
        if n.startswith(case.no_grad):  # no path from it to the output
            assert not np.any(once[n]), f"{n} got a gradient"
        else:
            assert np.abs(once[n]).max() > 0, f"{n} got no gradient"
    module.zero_grad()
    for n, p in module.named_parameters():
        assert not np.any(npy(p.grad)), n
        assert p.grad.shape == p.data.shape and p.grad.dtype == p.data.dtype


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_backward_before_forward_raises(case):
    module, inputs, kwargs = case.make()
    dout = randn(np.random.default_rng(1), *case.out_shape)
    with pytest.raises(RuntimeError, match="before forward"):
        module.backward(dout)
    module.forward(*inputs, **kwargs)
    module.backward(dout)
    with pytest.raises(RuntimeError, match="before forward"):  # one backward per forward
        module.backward(dout)


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_wrong_dout_is_rejected_before_any_gradient_is_touched(case):
    module, inputs, kwargs = case.make()
    gen = np.random.default_rng(1)
    for p in module.parameters():  # nonzero gradients, so that any change shows
        p.grad[...] = backend.asarray(gen.standard_normal(p.shape), dtype=p.dtype)
    states = rng_states(module)
    out = module.forward(*inputs, **kwargs)
    before = snapshot(module)
    for dout in wrong_douts(out):
        with pytest.raises(ValueError, match=rf"^{type(module).__name__}\.backward expected dout to be a "
                                             rf"floating-point array of shape {re.escape(str(out.shape))} "
                                             r"\(what forward returned\), got "):
            module.backward(dout)
        assert snapshot(module) == before, f"a rejected dout changed a parameter: {dout!r:.60}"
    # the saved state was not consumed: a right dout (any float dtype) works as after a fresh forward
    upstream = randn(gen, *out.shape)
    first = [npy(g).copy() for g in as_tuple(module.backward(upstream.astype(np.float32)))]
    again = _forward_backward(module, inputs, kwargs, upstream.astype(np.float32), states)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make,message", [
    (lambda: nn.Linear(0, 3), "Linear in_features must be an integer >= 1, got 0"),
    (lambda: nn.Linear(3, 2.0), "Linear out_features must be an integer >= 1, got 2.0"),
    (lambda: nn.LayerNorm(0), "LayerNorm dim must be an integer >= 1, got 0"),
    (lambda: nn.LayerNorm(4, eps=-1e-6), "LayerNorm eps must be a finite number >= 0, got -1e-06"),
    (lambda: nn.MultiHeadSelfAttention(8, 0), "attention num_heads must be an integer >= 1, got 0"),
    (lambda: nn.MultiHeadSelfAttention(0, 2), "attention dim must be an integer >= 1, got 0"),
    (lambda: nn.MLP(8, 0), "Linear out_features must be an integer >= 1, got 0"),
    (lambda: nn.Patchify(0), "patch_size must be an integer >= 1, got 0"),
    (lambda: nn.PatchEmbed(8, 0), "patch_size must be an integer >= 1, got 0"),
    (lambda: nn.PatchEmbed(8, 2, in_chans=-1), "in_chans must be an integer >= 1, got -1"),
    (lambda: nn.ClassToken(4, 0), "ClassToken num_tokens must be an integer >= 1, got 0"),
    (lambda: nn.PositionEmbedding(0, 4), "PositionEmbedding num_tokens must be an integer >= 1, got 0"),
    (lambda: nn.SinCosPositionEmbedding(0, 8), "SinCosPositionEmbedding grid_size must be an integer >= 1"),
    (lambda: nn.Block(8, 2, mlp_ratio=0.0), "Linear out_features must be an integer >= 1, got 0"),
])
def test_constructors_reject_nonsense_sizes(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


# ----------------------------------------------------------------------------- regularisers

@pytest.mark.parametrize("cls", [nn.Dropout, nn.DropPath])
def test_regulariser_is_identity_in_eval(cls):
    layer = cls(0.5, rng=0).eval()
    x = randn(np.random.default_rng(0), 4, 3, 5)
    np.testing.assert_array_equal(npy(layer.forward(x)), npy(x))
    np.testing.assert_array_equal(npy(layer.backward(x)), npy(x))


def test_dropout_train_keep_rate_and_scaling():
    p = 0.3
    layer = nn.Dropout(p, rng=0)
    x = randn(np.random.default_rng(0), 200, 500) + 5.0  # no zeros in x
    y, xn = npy(layer.forward(x)), npy(x)
    kept = y != 0
    assert abs(kept.mean() - (1 - p)) < 0.005  # 100k draws: std of the rate ~0.0014
    np.testing.assert_allclose(y[kept], xn[kept] / (1 - p), rtol=1e-15)
    g = npy(layer.backward(np.ones_like(xn) if isinstance(x, np.ndarray) else x * 0 + 1))
    np.testing.assert_array_equal(g, kept / (1 - p))  # the same mask, the same scale
    # unbiased: E[y] = x
    assert abs(y.mean() / xn.mean() - 1) < 0.01


def test_droppath_train_drops_whole_samples():
    p = 0.4
    layer = nn.DropPath(p, rng=0)
    x = randn(np.random.default_rng(0), 4000, 3, 5) + 5.0
    y, xn = npy(layer.forward(x)), npy(x)
    kept = (y != 0).reshape(len(y), -1)
    assert np.all(kept == kept[:, :1]), "drop-path must keep or drop a sample as a whole"
    np.testing.assert_allclose(y[kept[:, 0]], xn[kept[:, 0]] / (1 - p), rtol=1e-15)
    assert abs(kept[:, 0].mean() - (1 - p)) < 0.03  # 4000 samples: std ~0.008


def test_regularisers_draw_new_masks_each_forward_and_replay_from_seed():
    x = randn(np.random.default_rng(0), 8, 6)
    a = nn.Dropout(0.5, rng=11)
    m1, m2 = npy(a.forward(x)) != 0, npy(a.forward(x)) != 0
    assert not np.array_equal(m1, m2)
    b = nn.Dropout(0.5, rng=11)
    np.testing.assert_array_equal(npy(b.forward(x)) != 0, m1)


def test_train_eval_switch_reaches_nested_layers():
    blk = nn.Block(8, 2, drop=0.5, drop_path=0.5, rng=0)
    blk.eval()
    assert all(not m.training for _, m in blk.named_modules())
    x = randn(np.random.default_rng(0), 2, 5, 8)
    np.testing.assert_array_equal(npy(blk.forward(x)), npy(blk.forward(x)))  # deterministic
    blk.train()
    assert all(m.training for _, m in blk.named_modules())
    assert not np.array_equal(npy(blk.forward(x)), npy(blk.forward(x)))
