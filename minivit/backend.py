"""The backend shim: where arrays live and how they are made.

minivit's layers never import numpy or cupy directly. They ask this module:

* ``xp_of(x)`` -- the array module (numpy or cupy) that owns the array ``x``, so one layer body
  runs on both (CuPy's ``get_array_module`` idiom);
* ``xp()`` -- the array module currently selected, for creating new arrays;
* ``erf(x)`` and ``normal_cdf(x)`` -- the error function and the normal CDF, which neither
  array module has;
* ``scatter_add(a, index, values)`` -- the backward of a gather, which the two modules spell
  differently;
* ``rng(seed)`` -- a seeded ``numpy.random.Generator``. All randomness (initialisation, dropout,
  augmentation) is drawn on the host from such a generator and then moved to the device, so a
  seed gives the same numbers on NumPy and on CuPy, and a generator's state can be saved as text.

NumPy is the default. ``MINIVIT_BACKEND=cupy`` in the environment, or ``use("cupy")``, selects
CuPy; nothing imports CuPy unless asked. The default dtype is float32 (training); gradient checks
ask for float64.
"""

import os

import numpy as np

_BACKENDS = ("numpy", "cupy")
_state = {"name": "numpy", "xp": np, "dtype": np.dtype(np.float32)}


def _import_cupy():
    try:
        import cupy
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            "backend 'cupy' was asked for but CuPy is not installed; "
            "install the cupy wheel matching your CUDA (e.g. pip install cupy-cuda12x)"
        ) from e
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # pragma: no cover - depends on the machine
        raise RuntimeError(f"backend 'cupy' was asked for but no CUDA GPU is usable: {e}") from e
    if n < 1:  # pragma: no cover - depends on the machine
        raise RuntimeError("backend 'cupy' was asked for but no CUDA GPU was found")
    return cupy


def use(name):
    """Select the array module for new arrays: ``"numpy"`` or ``"cupy"``."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {_BACKENDS}")
    _state["xp"] = np if name == "numpy" else _import_cupy()
    _state["name"] = name


def name():
    """The selected backend's name, ``"numpy"`` or ``"cupy"``."""
    return _state["name"]


def xp():
    """The selected array module (numpy or cupy)."""
    return _state["xp"]


def xp_of(x):
    """The array module that owns ``x``: cupy for a cupy array, numpy for anything else."""
    if type(x).__module__.startswith("cupy"):
        return _state["xp"] if _state["name"] == "cupy" else _import_cupy()
    return np


def is_cupy(x):
    return type(x).__module__.startswith("cupy")


# ----------------------------------------------------------------------------- dtype policy

def set_default_dtype(dtype):
    """Set the dtype new parameters and data get: float32 (default) or float64."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"default dtype must be float32 or float64, got {dtype}")
    _state["dtype"] = dtype


def default_dtype():
    return _state["dtype"]


def resolve_dtype(dtype=None):
    """``dtype`` as a numpy dtype, or the default dtype when it is None."""
    if dtype is None:
        return _state["dtype"]
    try:
        parsed = np.dtype(dtype)
    except (TypeError, ValueError):  # not a dtype at all: 5, True, "floaty"
        parsed = None
    if parsed not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {repr(dtype) if parsed is None else parsed}")
    return parsed


# ----------------------------------------------------------------------------- moving arrays

def asarray(x, dtype=None):
    """``x`` as an array of the selected backend (copied to the GPU under cupy)."""
    return _state["xp"].asarray(x, dtype=dtype)


def to_numpy(x):
    """``x`` as a numpy array on the host (a no-op for numpy arrays)."""
    if is_cupy(x):
        return x.get()
    return np.asarray(x)


# ----------------------------------------------------------------------------- randomness

def rng(seed=None):
    """A seeded ``numpy.random.Generator`` (PCG64). Pass the same seed, get the same numbers."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def trunc_normal(gen, shape, std, dtype=None):
    """Normal(0, std) truncated to [-2 std, 2 std] (the ViT initialiser), on the device."""
    out = gen.standard_normal(size=shape)
    bad = np.abs(out) > 2.0
    while bad.any():  # redraw the tails, which keeps the truncated-normal distribution exact
        out[bad] = gen.standard_normal(size=int(bad.sum()))
        bad = np.abs(out) > 2.0
    return asarray(out * std, dtype=resolve_dtype(dtype))


def uniform(gen, shape, low, high, dtype=None):
    return asarray(gen.uniform(low, high, size=shape), dtype=resolve_dtype(dtype))


def zeros(shape, dtype=None):
    return _state["xp"].zeros(shape, dtype=resolve_dtype(dtype))


def ones(shape, dtype=None):
    return _state["xp"].ones(shape, dtype=resolve_dtype(dtype))


# ----------------------------------------------------------------------------- scatter-add

def scatter_add(a, index, values):
    """a[index[i]] += values[i] for every i, repeated indices adding up (a gather's backward):
    ``np.add.at`` on NumPy, ``cupyx.scatter_add`` on CuPy; in place."""
    if is_cupy(a):
        import cupyx

        cupyx.scatter_add(a, index, values)
    else:
        np.add.at(a, index, values)


# ----------------------------------------------------------------------------- special functions

def erf(x):
    """The error function of ``x``, elementwise, in ``x``'s dtype, on ``x``'s device (scipy or
    cupyx; ``minivit.kernels.erf`` has a faster float32 one)."""
    return _special(x).erf(x)


def normal_cdf(x):
    """Phi(x) = (1 + erf(x / sqrt 2)) / 2, the standard normal CDF, in ``x``'s dtype and device
    (the library's ``ndtr``)."""
    return _special(x).ndtr(x)


def _special(x):
    if is_cupy(x):
        import cupyx.scipy.special as sp
    else:
        import scipy.special as sp
    return sp


_env = os.environ.get("MINIVIT_BACKEND", "").strip().lower()
if _env:
    use(_env)
