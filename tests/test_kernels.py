"""The fast float32 kernels: erf and the normal CDF against scipy, and the fit behind them."""


import numpy as np
import pytest
import scipy.special

from minivit import backend, kernels


def _grid():
    """Dense over [-10, 10] (erf is +-1 in float32 beyond |x| = 3.9), denser near 0, and the
    extremes of float32 (x^2 overflows there)."""
    big = np.finfo(np.float32).max
    x = np.concatenate([np.linspace(-10.0, 10.0, 2_000_001), np.linspace(-1e-3, 1e-3, 20_001),
                        [1e-30, -1e-30, 1e-40, -1e-40, 1e19, -1e19, big, -big]])
    return x.astype(np.float32)


def test_erf_f32_within_2e_7_of_scipy():
    x = _grid()
    y = kernels.erf_f32(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    err = np.abs(y.astype(np.float64) - scipy.special.erf(x.astype(np.float64)))
    assert err.max() < 2e-7, f"worst {err.max():.2e} at x = {x[err.argmax()]!r}"


def test_erf_f32_every_float_where_the_error_peaks():
    # the float32 evaluation error is largest where erf bends towards 1: check every float there
    lo, hi = np.float32(0.5).view(np.int32), np.float32(2.0).view(np.int32)
    x = np.arange(lo, hi, 7, dtype=np.int32).view(np.float32)  # every 7th float: 2.4M values
    err = np.abs(kernels.erf_f32(x) - scipy.special.erf(x.astype(np.float64)))
    assert err.max() < 2e-7, f"worst {err.max():.2e} at x = {x[err.argmax()]!r}"


def test_erf_f32_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype=np.float32)
    y = kernels.erf_f32(x)
    np.testing.assert_array_equal(y[:4], [0.0, -0.0, 1.0, -1.0])
    assert np.signbit(y[1]) and not np.signbit(y[0])  # erf(-0) = -0
    assert np.isnan(y[4])


def test_erf_f32_is_odd_exactly_and_monotone():
    x = np.linspace(0.0, 6.0, 600_001, dtype=np.float32)
    y = kernels.erf_f32(x)
    np.testing.assert_array_equal(kernels.erf_f32(-x), -y)
    assert np.all(np.diff(y) >= 0) and y.max() <= 1.0


def test_normal_cdf_f32_within_1e_7_of_scipy():
    x = _grid()
    y = kernels.normal_cdf_f32(x)
    assert y.dtype == np.float32
    err = np.abs(y.astype(np.float64) - scipy.special.ndtr(x.astype(np.float64)))
    assert err.max() < 1e-7, f"worst {err.max():.2e} at x = {x[err.argmax()]!r}"
    np.testing.assert_array_equal(kernels.normal_cdf_f32(np.array([-np.inf, 0.0, np.inf], np.float32)),
                                  [0.0, 0.5, 1.0])


@pytest.mark.parametrize("fn", [kernels.erf_f32, kernels.normal_cdf_f32])
@pytest.mark.parametrize("layout", ["transposed", "strided", "0-d", "empty", "blocks"])
def test_kernels_take_any_layout(fn, layout):
    gen = np.random.default_rng(0)
    x = (3 * gen.standard_normal((60, 50))).astype(np.float32)
    x = {"transposed": x.T, "strided": x[:, ::3], "0-d": x[0, 0, ...], "empty": x[:0],
         "blocks": (3 * gen.standard_normal(2 * kernels._CHUNK + 5)).astype(np.float32)}[layout]
    ref = {kernels.erf_f32: scipy.special.erf, kernels.normal_cdf_f32: scipy.special.ndtr}[fn]
    y = fn(x)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, ref(x.astype(np.float64)), rtol=0, atol=2e-7)


def test_backend_routes_float32_to_the_kernels_and_float64_to_scipy():
    x = np.linspace(-5, 5, 1001)
    np.testing.assert_array_equal(backend.erf(x), scipy.special.erf(x))
    np.testing.assert_array_equal(backend.normal_cdf(x), scipy.special.ndtr(x))
    x32 = x.astype(np.float32)
    np.testing.assert_array_equal(backend.erf(x32), kernels.erf_f32(x32))
    np.testing.assert_array_equal(backend.normal_cdf(x32), kernels.normal_cdf_f32(x32))


def test_fit_reproduces_the_stored_coefficients():
    p = kernels.fit_erf_coefficients()
    # a linear program solved to its solver's tolerances: the same optimum to ~1e-7 relative
    np.testing.assert_allclose(p, kernels.ERF_P, rtol=1e-5)
    # and the fitted function is within 6e-8 of erf (float64 evaluation: the approximation alone)
    x = np.linspace(0.0, 6.0, 600_001)
    approx = np.tanh(x * np.polynomial.polynomial.polyval(x * x, p))
    assert np.abs(approx - scipy.special.erf(x)).max() < 6e-8


def test_g_is_increasing_so_the_tail_is_safe():
    # g(x) = x P(x^2) grows on [0, inf): g'(x) = P(u) + 2 u P'(u) (u = x^2) has no root u > 0.
    # Beyond the fit interval tanh(g) therefore stays above tanh(g(4)), which rounds to 1.
    P = np.polynomial.Polynomial(kernels.ERF_P)
    u = np.polynomial.Polynomial([0.0, 1.0])
    roots = (P + 2 * u * P.deriv()).roots()
    assert not any(abs(r.imag) < 1e-12 and r.real > 0 for r in roots)
    assert np.float32(np.tanh(4.0 * P(16.0))) == 1.0


# ----------------------------------------------------------------------------- threads

@pytest.fixture
def threaded(monkeypatch):
    """Force the threaded paths even on small arrays and on a one-CPU machine."""
    monkeypatch.setattr(kernels, "NUM_THREADS", 3)
    monkeypatch.setattr(kernels, "_MIN_WORK", 8)


def test_parallel_covers_every_slab_once(threaded):
    x = np.zeros((10, 7))
    seen = []

    def fn(a):
        seen.append(a.shape[0])
        a += 1.0

    kernels.parallel(fn, x)
    assert sorted(seen) == [3, 3, 4] and np.all(x == 1.0)
    y, widths = np.arange(400.0).reshape(4, 100), []

    def double(a):
        widths.append(a.shape[1])
        a *= 2.0

    kernels.parallel(double, y, axis=1)  # along another axis
    assert sorted(widths) == [33, 33, 34]
    np.testing.assert_array_equal(y, 2.0 * np.arange(400.0).reshape(4, 100))


def test_parallel_chunked_covers_every_row_once_in_small_calls(threaded, monkeypatch):
    monkeypatch.setattr(kernels, "_CHUNK", 14)  # 2 rows of 7 per call
    x, calls = np.zeros((10, 7)), []

    def fn(a, b):
        calls.append(a.shape[0])
        b += a + 1.0

    y = np.zeros_like(x)
    kernels.parallel(fn, x, y, chunked=True)
    assert max(calls) == 2 and sum(calls) == 10 and np.all(y == 1.0)
    calls.clear()
    kernels.parallel(fn, x[:0], y[:0], chunked=True)  # empty: one call, as unchunked
    assert calls == [0]


def test_parallel_nested_calls_run_serially_and_errors_propagate(threaded):
    x = np.zeros((6, 50))

    def outer(a):
        kernels.parallel(lambda b: b.__iadd__(1.0), a)  # nested: no deadlock
    kernels.parallel(outer, x)
    assert np.all(x == 1.0)

    def bad(a):
        raise ValueError("boom")
    with pytest.raises(ValueError, match="boom"):
        kernels.parallel(bad, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_matches_numpy_with_and_without_out(threaded, dtype):
    gen = np.random.default_rng(0)
    a = gen.standard_normal((5, 3, 7, 4)).astype(dtype)
    b = gen.standard_normal((5, 3, 6, 4)).astype(dtype).swapaxes(-1, -2)  # a transposed view
    ref = np.matmul(a, b)
    got = kernels.matmul(a, b)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, ref, rtol=1e-5 if dtype == np.float32 else 1e-12)
    out = np.empty((5, 7, 3, 6), dtype).swapaxes(1, 2)  # a strided out, as attention passes
    assert kernels.matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, ref, rtol=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(kernels.matmul(a[0], b[0]), ref[0], rtol=1e-5)  # 3-D
    np.testing.assert_allclose(kernels.matmul(a, b[:1]), np.matmul(a, b[:1]), rtol=1e-5)  # broadcast


def test_threaded_layers_compute_the_same_as_one_thread(threaded):
    """softmax, its backward, LayerNorm and the GELU backward, cut into slabs, against formulas."""
    from minivit import nn

    gen = np.random.default_rng(1)
    s, dy = gen.standard_normal((2, 3, 9, 9)), gen.standard_normal((2, 3, 9, 9))
    e = np.exp(s - s.max(-1, keepdims=True))
    a = e / e.sum(-1, keepdims=True)
    for axis in (-1, 0):
        ea = np.exp(s - s.max(axis, keepdims=True))
        np.testing.assert_allclose(nn.softmax(s, axis=axis), ea / ea.sum(axis, keepdims=True), rtol=1e-13)
    np.testing.assert_allclose(nn.softmax_backward(a, dy), a * (dy - (dy * a).sum(-1, keepdims=True)),
                               rtol=1e-12, atol=1e-15)
    x = gen.standard_normal((4, 5, 6))
    ln = nn.LayerNorm(6, dtype="float64")
    y = ln.forward(x)
    xh = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(y, xh, rtol=1e-12, atol=1e-14)
    g = nn.GELU()
    g.forward(x)
    dout = gen.standard_normal(x.shape)
    phi = np.exp(-x * x / 2) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(g.backward(dout), dout * (scipy.special.ndtr(x) + x * phi), rtol=1e-12)
    assert ln.backward(dout).shape == x.shape  # runs threaded; its values are gradchecked elsewhere


# ----------------------------------------------------------------------------- float32 throughout

def test_float32_stays_float32_through_every_layer(monkeypatch):
    """A silent float64 upcast anywhere would halve the speed: every forward output and every
    backward gradient of every layer of a float32 ViT (dropout and drop-path on) is float32."""
    import inspect

    from minivit import nn
    from minivit.losses import CrossEntropyLoss
    from minivit.models import VisionTransformer

    seen = []

    def watch(cls, name):
        method = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            out = method(self, *args, **kwargs)
            for o in out if isinstance(out, tuple) else (out,):
                seen.append((cls.__name__, name, o.dtype))
            return out

        monkeypatch.setattr(cls, name, wrapper)

    for _, cls in inspect.getmembers(nn, inspect.isclass):
        if issubclass(cls, nn.Module) and "forward" in vars(cls):
            watch(cls, "forward")
            watch(cls, "backward")
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
