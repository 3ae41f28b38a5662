"""The backend shim: array module, dtype policy, erf, RNG; and the layers under CuPy (GPU only)."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.special
from conftest import CASES, case_ids, npy, tiny_vit

from minivit import backend
from minivit.gradcheck import gradcheck

HAS_CUPY = importlib.util.find_spec("cupy") is not None
ENV_BACKEND = os.environ.get("MINIVIT_BACKEND", "").strip().lower()


@pytest.mark.skipif(ENV_BACKEND not in ("", "numpy"), reason="MINIVIT_BACKEND selects another backend")
def test_numpy_is_the_default():
    assert backend.name() == "numpy" and backend.xp() is np
    assert isinstance(backend.zeros((2,)), np.ndarray)


def test_unknown_backend_is_a_value_error():
    before = backend.name()
    with pytest.raises(ValueError, match=r"unknown backend 'bogus'; expected one of \('numpy', 'cupy'\)"):
        backend.use("bogus")
    assert backend.name() == before


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed here; the missing-CuPy error cannot be shown")
def test_cupy_without_cupy_is_a_clear_runtime_error():
    with pytest.raises(RuntimeError, match="CuPy is not installed"):
        backend.use("cupy")
    assert backend.name() == "numpy" and backend.xp() is np  # a failed switch changes nothing


def _import_minivit_with(value):
    env = dict(os.environ, MINIVIT_BACKEND=value)
    code = "import minivit; print(minivit.backend.name())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_environment_variable_selects_the_backend():
    ok = _import_minivit_with(" NumPy ")
    assert ok.returncode == 0 and ok.stdout.strip() == "numpy", ok.stderr
    bad = _import_minivit_with("bogus")
    assert bad.returncode != 0 and "unknown backend 'bogus'" in bad.stderr


def test_xp_of_and_to_numpy_on_host_arrays():
    x = np.arange(3.0)
    assert backend.xp_of(x) is np and backend.xp_of([1, 2]) is np and backend.xp_of(1.5) is np
    assert backend.to_numpy(x) is x
    assert isinstance(backend.to_numpy([1, 2]), np.ndarray)
    assert not backend.is_cupy(x)


def test_seeded_generator_reproduces():
    a, b, c = backend.rng(7), backend.rng(7), backend.rng(8)
    assert isinstance(a, np.random.Generator)
    x, y, z = a.standard_normal(10), b.standard_normal(10), c.standard_normal(10)
    np.testing.assert_array_equal(x, y)
    assert not np.array_equal(x, z)
    assert backend.rng(a) is a  # a generator is passed through, so layers can share one stream


def test_trunc_normal_uniform_and_constant_arrays():
    t = npy(backend.trunc_normal(backend.rng(0), (200_000,), 0.5, dtype="float64"))
    assert t.dtype == np.float64 and np.abs(t).max() <= 1.0 and np.abs(t).max() > 0.99
    assert abs(t.mean()) < 5e-3 and abs(t.std() / (0.5 * 0.8796) - 1) < 0.01  # std of N(0,1) cut at +-2
    np.testing.assert_array_equal(t, npy(backend.trunc_normal(backend.rng(0), (200_000,), 0.5, "float64")))
    u = npy(backend.uniform(backend.rng(0), (1000,), -2.0, 3.0))
    assert u.dtype == np.float32 and u.min() >= -2 and u.max() <= 3
    assert npy(backend.zeros((2, 3), "float64")).dtype == np.float64 and not npy(backend.zeros((2,))).any()
    np.testing.assert_array_equal(npy(backend.ones((2,))), [1, 1])


def test_default_dtype_is_float32_and_settable():
    assert backend.default_dtype() == np.float32
    assert backend.resolve_dtype(None) == np.float32 and backend.resolve_dtype("float64") == np.float64
    backend.set_default_dtype(np.float64)
    try:
        assert backend.zeros((1,)).dtype == np.float64 and backend.resolve_dtype(None) == np.float64
    finally:
        backend.set_default_dtype("float32")
    assert backend.zeros((1,)).dtype == np.float32
    with pytest.raises(ValueError, match="float32 or float64, got float16"):
        backend.set_default_dtype("float16")
    with pytest.raises(ValueError, match="float32 or float64, got int64"):
        backend.resolve_dtype("int64")


def test_models_honour_dtype():
    assert all(p.dtype == np.float64 for p in tiny_vit(dtype="float64").parameters())
    assert all(p.dtype == np.float32 for p in tiny_vit(dtype=None).parameters())


# ----------------------------------------------------------------------------- erf

def _grid(dtype=np.float64):
    """A dense grid over [-6, 6] (erf is +-1 to float precision beyond) and the extremes."""
    big = np.finfo(dtype).max
    x = np.linspace(-6.0, 6.0, 1_200_001)
    special = [0.0, -0.0, 1e-30, -1e-30, 10.0, -10.0, big, -big, np.inf, -np.inf]
    return np.concatenate([x, special]).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_erf_and_normal_cdf_are_the_librarys_in_the_inputs_dtype(dtype):
    # the plain path: exact library functions (the fast float32 erf is minivit.kernels.erf's)
    x = _grid(dtype)
    for fn, ref in [(backend.erf, scipy.special.erf), (backend.normal_cdf, scipy.special.ndtr)]:
        y = fn(x)
        assert y.dtype == dtype and y.shape == x.shape
        np.testing.assert_array_equal(y, ref(x))


# ----------------------------------------------------------------------------- CuPy on a GPU

@pytest.fixture
def cupy_backend():
    """Select CuPy for one test, where CuPy imports and a GPU exists; numpy again afterwards."""
    if not HAS_CUPY:
        pytest.skip("CuPy is not installed")
    before = backend.name()
    try:
        backend.use("cupy")
    except RuntimeError as e:
        pytest.skip(str(e))
    yield backend.xp()
    backend.use(before)


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_gpu_layers_match_numpy_and_pass_gradcheck(cupy_backend, case):
    module, inputs, kwargs = case.make()
    assert all(backend.is_cupy(p.data) for p in module.parameters())
    assert all(backend.is_cupy(a) for a in inputs)
    y = module.forward(*inputs, **kwargs)
    assert backend.is_cupy(y) and y.shape == case.out_shape
    result = gradcheck(module, *inputs, max_entries=16, **kwargs)
    assert result.worst < case.tol, f"\n{result}"
    backend.use("numpy")  # the same case on the host gives the same output
    module_np, inputs_np, kwargs_np = case.make()
    y_np = module_np.forward(*inputs_np, **kwargs_np)
    backend.use("cupy")
    np.testing.assert_allclose(npy(y), y_np, rtol=1e-10, atol=1e-12)


@pytest.mark.gpu
def test_gpu_array_helpers_and_erf(cupy_backend):
    cp = cupy_backend
    x = backend.asarray(np.linspace(-5, 5, 10001), dtype="float32")
    assert backend.is_cupy(x) and backend.xp_of(x) is cp and isinstance(backend.to_numpy(x), np.ndarray)
    err = np.abs(npy(backend.erf(x)) - scipy.special.erf(npy(x).astype(np.float64)))
    assert err.max() < 2e-7


@pytest.mark.gpu
def test_gpu_float32_model_matches_numpy(cupy_backend):
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4))
    y_gpu = npy(tiny_vit(dtype="float32").forward(x))
    backend.use("numpy")
    y_cpu = tiny_vit(dtype="float32").forward(x)
    backend.use("cupy")
    np.testing.assert_allclose(y_gpu, y_cpu, rtol=1e-4, atol=1e-5)
