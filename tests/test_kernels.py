"""The kernels: every fast path computes what the plain layer body computes, forward and backward;
the switch; the fast float32 erf and normal CDF against scipy, and the fit behind them; the
threads."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.special
from conftest import CASES, as_tuple, npy, randn, restore, rng_states

from minivit import kernels, nn
from minivit.kernels import erf, threads

# ----------------------------------------------------------------------------- fast = plain

def _fast_classes(module):
    return {type(m) for _, m in module.named_modules()} & set(kernels.fast_paths())


FAST_CASES = [c for c in CASES if _fast_classes(c.build(np.float64))]
FLOAT32_MODEL = {"CvT", "CvT-mean-drop-fanin"}  # float32 is checked against float64 for these (below)
# the scale-relative error: float64 to ~1e-12, float32 to ~1e-5 (the fast float32 erf
# differs from scipy's by 1.4e-7 absolute, and float32 sums in another order round otherwise)
BARS = {np.float64: 1e-12, np.float32: 1e-5}


def _forward_backward(case, dtype, on):
    """Output, input gradients and parameter gradients of one case, kernels on or off."""
    previous = kernels.use(on)
    try:
        module, inputs, kwargs = case.make(dtype=dtype)
        restore(rng_states(module))
        y = module.forward(*inputs, **kwargs)
        ran_fast = {type(m) for _, m in module.named_modules() if m.__dict__.get("_fast")}
        upstream = randn(np.random.default_rng(1), *y.shape, dtype=dtype)
        grads = as_tuple(module.backward(upstream))
        return [npy(y)] + [npy(g) for g in grads] + [npy(p.grad) for p in module.parameters()], ran_fast
    finally:
        kernels.use(previous)


def test_every_fast_path_has_a_case():
    covered = set().union(*(_fast_classes(c.build(np.float64)) for c in FAST_CASES))
    assert set(kernels.fast_paths()) == covered


@pytest.fixture(params=[False, True], ids=["one-thread-sizes", "threaded"])
def maybe_threaded(request, monkeypatch):
    """As the arrays come (small: one slab), and forced into slabs on three threads."""
    if request.param:
        monkeypatch.setattr(threads, "NUM_THREADS", 3)
        monkeypatch.setattr(threads, "_MIN_WORK", 8)


@pytest.mark.parametrize("case,dtype", [pytest.param(c, d, id=f"{c.id}-{d.__name__}") for c in FAST_CASES
                                        for d in (np.float64, np.float32)
                                        if not (d is np.float32 and c.id in FLOAT32_MODEL)])
def test_fast_path_computes_what_the_plain_body_computes(case, dtype, maybe_threaded):
    fast, ran_fast = _forward_backward(case, dtype, on=True)
    plain, ran_plain = _forward_backward(case, dtype, on=False)
    assert ran_fast == _fast_classes(case.build(np.float64)) and not ran_plain
    assert len(fast) == len(plain)
    largest = max(np.abs(b).max(initial=0.0) for b in plain)
    for i, (a, b) in enumerate(zip(fast, plain, strict=True)):
        assert a.shape == b.shape and a.dtype == b.dtype == dtype, i
        err = _difference(a, b, largest, dtype)
        assert err < BARS[dtype], f"array {i} (0: output, then gradients): {err:.2e}"


@pytest.mark.parametrize("case", [c for c in FAST_CASES if c.id in FLOAT32_MODEL], ids=lambda c: c.id)
def test_whole_cvt_in_float32_is_as_exact_as_its_plain_body(case, maybe_threaded):
    """A whole CvT in float32 rounds by about the bar on its own (its BatchNorms divide by statistics
    of a few values each), so fast and plain, each that far from the exact values, can differ by
    twice as much: there, both are measured against the plain body in float64, and the fast path
    must be as exact as the plain one (at most 1.5 times its error, or the bar)."""
    fast = _forward_backward(case, np.float32, on=True)[0]
    plain = _forward_backward(case, np.float32, on=False)[0]
    exact = _forward_backward(case, np.float64, on=False)[0]
    largest = max(np.abs(b).max(initial=0.0) for b in exact)
    for i, (a, b, c) in enumerate(zip(fast, plain, exact, strict=True)):
        err, plain_err = _difference(a, c, largest, np.float32), _difference(b, c, largest, np.float32)
        assert err < max(BARS[np.float32], 1.5 * plain_err), f"array {i}: {err:.2e} (plain {plain_err:.2e})"


def _difference(a, b, largest, dtype):
    """max |a - b| relative to b's own scale, but never below a thousandth of the case's largest value:
    a model's small gradients are sums of its large terms, rounded as those are."""
    scale = max(np.abs(b).max(initial=0.0), 1e-3 * largest, 1e-30)
    if np.abs(b).max(initial=0.0) < BARS[dtype] * largest:  # zero but for rounding, both ways: CvT's key
        scale = largest  # biases, whose shift of a score row the softmax ignores
    return float(np.abs(a.astype(np.float64) - b).max(initial=0.0) / scale)


def test_switch_use_returns_the_previous_setting_and_checks_its_argument():
    before = kernels.enabled()
    assert kernels.use(False) is before and kernels.enabled() is False
    assert kernels.fast_path(nn.LayerNorm) is None
    assert kernels.use(True) is False and kernels.fast_path(nn.LayerNorm) is not None
    kernels.use(before)
    with pytest.raises(TypeError, match="kernels.use expects True or False, got 0"):
        kernels.use(0)


@pytest.mark.parametrize("value,on", [("0", False), ("off", False), ("1", True), ("", True)])
def test_environment_variable_sets_the_switch(value, on):
    code = "import minivit.kernels as k; print(k.enabled())"
    env = {**os.environ, "MINIVIT_KERNELS": value}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(on)


@pytest.mark.parametrize("first", [True, False])
def test_backward_runs_the_way_its_forward_ran_when_the_switch_flips_between(first):
    case = next(c for c in CASES if c.id == "MHSA")
    reference, _ = _forward_backward(case, np.float64, on=first)
    previous = kernels.use(first)
    try:
        module, inputs, kwargs = case.make()
        y = module.forward(*inputs, **kwargs)
        kernels.use(not first)
        grads = as_tuple(module.backward(randn(np.random.default_rng(1), *y.shape)))
    finally:
        kernels.use(previous)
    got = [npy(y)] + [npy(g) for g in grads] + [npy(p.grad) for p in module.parameters()]
    for a, b in zip(got, reference, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_subclass_that_overrides_backward_runs_its_own():
    class Doubled(nn.Linear):
        def backward(self, dout):
            return 2.0 * super().backward(dout)

    layer = Doubled(3, 2, dtype="float64", rng=0)
    x = np.ones((4, 3))
    layer.forward(x)
    assert layer.__dict__["_fast"] is None  # the fast path is Linear's, for Linear itself
    g = np.ones((4, 2))
    np.testing.assert_allclose(layer.backward(g), 2.0 * g @ layer.weight.data.T, rtol=1e-15)


def test_depthwise_convolution_without_numba_warns_once_and_runs_the_plain_body(monkeypatch):
    from minivit.kernels import conv

    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now raises ImportError
    monkeypatch.setattr(conv, "_compiled", {})
    layer = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, dtype="float64", rng=0)
    x = randn(np.random.default_rng(0), 2, 4, 6, 6)
    with pytest.warns(UserWarning, match="Numba could not be imported"):
        y = layer.forward(x)
    assert conv._compiled == {"loops": None}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer.forward(x)  # no second warning
    previous = kernels.use(False)
    try:
        np.testing.assert_array_equal(y, layer.forward(x))
    finally:
        kernels.use(previous)


# ----------------------------------------------------------------------------- erf

def _grid():
    """Dense over [-10, 10] (erf is +-1 in float32 beyond |x| = 3.9), denser near 0, and the
    extremes of float32 (x^2 overflows there)."""
    big = np.finfo(np.float32).max
    x = np.concatenate([np.linspace(-10.0, 10.0, 2_000_001), np.linspace(-1e-3, 1e-3, 20_001),
                        [1e-30, -1e-30, 1e-40, -1e-40, 1e19, -1e19, big, -big]])
    return x.astype(np.float32)


def test_erf_f32_within_2e_7_of_scipy():
    x = _grid()
    y = erf.erf_f32(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    err = np.abs(y.astype(np.float64) - scipy.special.erf(x.astype(np.float64)))
    assert err.max() < 2e-7, f"worst {err.max():.2e} at x = {x[err.argmax()]!r}"


def test_erf_f32_every_float_where_the_error_peaks():
    # the float32 evaluation error is largest where erf bends towards 1: check every float there
    lo, hi = np.float32(0.5).view(np.int32), np.float32(2.0).view(np.int32)
    x = np.arange(lo, hi, 7, dtype=np.int32).view(np.float32)  # every 7th float: 2.4M values
    err = np.abs(erf.erf_f32(x) - scipy.special.erf(x.astype(np.float64)))
    assert err.max() < 2e-7, f"worst {err.max():.2e} at x = {x[err.argmax()]!r}"


def test_erf_f32_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype=np.float32)
    y = erf.erf_f32(x)
    np.testing.assert_array_equal(y[:4], [0.0, -0.0, 1.0, -1.0])
    assert np.signbit(y[1]) and not np.signbit(y[0])  # erf(-0) = -0
    assert np.isnan(y[4])


def test_erf_f32_is_odd_exactly_and_monotone():
    x = np.linspace(0.0, 6.0, 600_001, dtype=np.float32)
    y = erf.erf_f32(x)
    np.testing.assert_array_equal(erf.erf_f32(-x), -y)
    assert np.all(np.diff(y) >= 0) and y.max() <= 1.0


def test_normal_cdf_f32_within_1e_7_of_scipy():
    x = _grid()
    y = erf.normal_cdf_f32(x)
    assert y.dtype == np.float32
    err = np.abs(y.astype(np.float64) - scipy.special.ndtr(x.astype(np.float64)))
    assert err.max() < 1e-7, f"worst {err.max():.2e} at x = {x[err.argmax()]!r}"
    np.testing.assert_array_equal(erf.normal_cdf_f32(np.array([-np.inf, 0.0, np.inf], np.float32)),
                                  [0.0, 0.5, 1.0])


@pytest.mark.parametrize("fn", [erf.erf_f32, erf.normal_cdf_f32])
@pytest.mark.parametrize("layout", ["transposed", "strided", "0-d", "empty", "blocks"])
def test_kernels_take_any_layout(fn, layout):
    gen = np.random.default_rng(0)
    x = (3 * gen.standard_normal((60, 50))).astype(np.float32)
    x = {"transposed": x.T, "strided": x[:, ::3], "0-d": x[0, 0, ...], "empty": x[:0],
         "blocks": (3 * gen.standard_normal(2 * threads._CHUNK + 5)).astype(np.float32)}[layout]
    ref = {erf.erf_f32: scipy.special.erf, erf.normal_cdf_f32: scipy.special.ndtr}[fn]
    y = fn(x)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, ref(x.astype(np.float64)), rtol=0, atol=2e-7)


def test_fit_reproduces_the_stored_coefficients():
    p = erf.fit_erf_coefficients()
    # a linear program solved to its solver's tolerances: the same optimum to ~1e-7 relative
    np.testing.assert_allclose(p, erf.ERF_P, rtol=1e-5)
    # and the fitted function is within 6e-8 of erf (float64 evaluation: the approximation alone)
    x = np.linspace(0.0, 6.0, 600_001)
    approx = np.tanh(x * np.polynomial.polynomial.polyval(x * x, p))
    assert np.abs(approx - scipy.special.erf(x)).max() < 6e-8


def test_g_is_increasing_so_the_tail_is_safe():
    # g(x) = x P(x^2) grows on [0, inf): g'(x) = P(u) + 2 u P'(u) (u = x^2) has no root u > 0.
    # Beyond the fit interval tanh(g) therefore stays above tanh(g(4)), which rounds to 1.
    P = np.polynomial.Polynomial(erf.ERF_P)
    u = np.polynomial.Polynomial([0.0, 1.0])
    roots = (P + 2 * u * P.deriv()).roots()
    assert not any(abs(r.imag) < 1e-12 and r.real > 0 for r in roots)
    assert np.float32(np.tanh(4.0 * P(16.0))) == 1.0


# ----------------------------------------------------------------------------- threads

@pytest.fixture
def threaded(monkeypatch):
    """Force the threaded paths even on small arrays and on a one-CPU machine."""
    monkeypatch.setattr(threads, "NUM_THREADS", 3)
    monkeypatch.setattr(threads, "_MIN_WORK", 8)


def test_parallel_covers_every_slab_once(threaded):
    x = np.zeros((10, 7))
    seen = []

    def fn(a):
        seen.append(a.shape[0])
        a += 1.0

    threads.parallel(fn, x)
    assert sorted(seen) == [3, 3, 4] and np.all(x == 1.0)
    y, widths = np.arange(400.0).reshape(4, 100), []

    def double(a):
        widths.append(a.shape[1])
        a *= 2.0

    threads.parallel(double, y, axis=1)  # along another axis
    assert sorted(widths) == [33, 33, 34]
    np.testing.assert_array_equal(y, 2.0 * np.arange(400.0).reshape(4, 100))


def test_parallel_chunked_covers_every_row_once_in_small_calls(threaded, monkeypatch):
    monkeypatch.setattr(threads, "_CHUNK", 14)  # 2 rows of 7 per call
    x, calls = np.zeros((10, 7)), []

    def fn(a, b):
        calls.append(a.shape[0])
        b += a + 1.0

    y = np.zeros_like(x)
    threads.parallel(fn, x, y, chunked=True)
    assert max(calls) == 2 and sum(calls) == 10 and np.all(y == 1.0)
    calls.clear()
    threads.parallel(fn, x[:0], y[:0], chunked=True)  # empty: one call, as unchunked
    assert calls == [0]


def test_parallel_nested_calls_run_serially_and_errors_propagate(threaded):
    x = np.zeros((6, 50))

    def outer(a):
        threads.parallel(lambda b: b.__iadd__(1.0), a)  # nested: no deadlock
    threads.parallel(outer, x)
    assert np.all(x == 1.0)

    def bad(a):
        raise ValueError("boom")
    with pytest.raises(ValueError, match="boom"):
        threads.parallel(bad, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_matches_numpy_with_and_without_out(threaded, dtype):
    gen = np.random.default_rng(0)
    a = gen.standard_normal((5, 3, 7, 4)).astype(dtype)
    b = gen.standard_normal((5, 3, 6, 4)).astype(dtype).swapaxes(-1, -2)  # a transposed view
    ref = np.matmul(a, b)
    got = threads.matmul(a, b)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, ref, rtol=1e-5 if dtype == np.float32 else 1e-12)
    out = np.empty((5, 7, 3, 6), dtype).swapaxes(1, 2)  # a strided out, as attention passes
    assert threads.matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, ref, rtol=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(threads.matmul(a[0], b[0]), ref[0], rtol=1e-5)  # 3-D
    np.testing.assert_allclose(threads.matmul(a, b[:1]), np.matmul(a, b[:1]), rtol=1e-5)  # broadcast


# ----------------------------------------------------------------------------- float32 throughout

@pytest.mark.parametrize("on", [True, False], ids=["kernels-on", "kernels-off"])
def test_float32_stays_float32_through_every_layer(monkeypatch, request, on):
    """A silent float64 upcast anywhere would halve the speed: every forward output and every
    backward gradient of every layer of a float32 ViT (dropout and drop-path on) is float32,
    with kernels on and off."""
    import inspect

    from minivit import nn
    from minivit.losses import CrossEntropyLoss
    from minivit.models import VisionTransformer

    seen = []

    def watch(cls, name):
        method = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            out = method(self, *args, **kwargs)
            for o in as_tuple(out):
                seen.append((cls.__name__, name, o.dtype))
            return out

        monkeypatch.setattr(cls, name, wrapper)

    for _, cls in inspect.getmembers(nn, inspect.isclass):
        if issubclass(cls, nn.Module) and "forward" in vars(cls):
            watch(cls, "forward")
            watch(cls, "backward")
    previous = kernels.use(on)
    request.addfinalizer(lambda: kernels.use(previous))
    model = VisionTransformer(img_size=16, patch_size=4, num_classes=5, embed_dim=24, depth=2, num_heads=3,
                              drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.1)
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16))  # float64 in: cast once, at the door
    loss = CrossEntropyLoss(label_smoothing=0.1)
    loss.forward(model.forward(x), np.array([0, 1, 2, 3]))
    dx = model.backward(loss.backward())
    assert dx.dtype == np.float32
    assert {c for c, _, _ in seen} >= {"Linear", "LayerNorm", "GELU", "ScaledDotProductAttention", "Block"}
    assert all(dt == np.float32 for _, _, dt in seen), [s for s in seen if s[2] != np.float32]
    assert all(p.grad.dtype == np.float32 for p in model.parameters())
