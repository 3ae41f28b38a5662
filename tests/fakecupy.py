"""A CuPy look-alike on the CPU, so that minivit's device path runs where there is no GPU.

``install(monkeypatch)`` makes this module ``cupy`` (and adds ``cupyx.scipy.special`` with erf
and ndtr) for one test, so ``backend.use("cupy")`` selects it. Its ``ndarray`` (whose type's
module is "cupy", so ``backend.is_cupy`` takes it for a CuPy array) keeps a NumPy array as if it
lived in GPU memory, and is as strict as CuPy where host and device meet:

* no implicit conversion: ``np.asarray(x)`` and ``np.array(x)`` raise CuPy's TypeError;
  ``x.get()`` (what ``backend.to_numpy`` calls) copies to the host, and ``float``, ``int`` and
  ``bool`` of a one-element array work, as on CuPy (they would synchronise);
* NumPy's ufuncs and functions given device arrays run on the device and return device arrays
  (CuPy's ``__array_ufunc__`` and ``__array_function__``); a NumPy array among their operands
  raises TypeError, as on CuPy; Python and NumPy scalars mix freely;
* ``cupy.<name>`` is NumPy's function of that name, run on device arrays (NumPy arrays refused),
  except ``asarray`` and ``array``, which take host data: the explicit host-to-device copy;
* reductions and scalar indexing return 0-d device arrays, not NumPy scalars.

Stricter than CuPy: a NumPy array as an index or as the value of an assignment (``x[i] = a``)
raises here, where CuPy copies it to the device silently (a hidden transfer these tests want to
see). Not mimicked: CuPy's own kernels and their rounding (all arithmetic here is NumPy's),
functions NumPy has and CuPy lacks (every NumPy name works here), streams, memory pools,
asynchrony, user kernels, and speed.
"""

import sys
import types

import numpy as np
import scipy.special
from numpy.lib.mixins import NDArrayOperatorsMixin

IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly.")


class ndarray(NDArrayOperatorsMixin):  # the mixin: every operator, as the ufunc it stands for
    """A device array: the NumPy array ``_a``, behind CuPy's rules (see the module docstring)."""

    __module__ = "cupy"  # what backend.is_cupy looks at

    def __init__(self, shape, dtype=float):
        self._a = np.empty(shape, dtype)

    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT)

    def get(self):
        """A copy on the host, as a NumPy array."""
        return self._a.copy()

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if getattr(np, ufunc.__name__, None) is not ufunc:  # CuPy serves NumPy's ufuncs only
            return NotImplemented
        return _on_device(getattr(ufunc, method))(*inputs, **kwargs)

    def __array_function__(self, func, _types, args, kwargs):
        return _on_device(func)(*args, **kwargs)

    def __getattr__(self, name):  # shape, dtype, T, reshape, sum, astype, ...: NumPy's, on the device
        if name.startswith("_"):  # never __array_interface__ and the like: they would bypass __array__
            raise AttributeError(name)
        value = getattr(self._a, name)
        return _on_device(value, self) if callable(value) else _to_device(value)

    def __getitem__(self, key):
        return _to_device(self._a[_to_host(key)])

    def __setitem__(self, key, value):
        self._a[_to_host(key)] = _to_host(value)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_to_device(row) for row in self._a)

    def __bool__(self):
        return bool(self._a)

    def __float__(self):
        return float(self._a.item())

    def __int__(self):
        return int(self._a.item())

    def __format__(self, spec):
        return format(self._a, spec)

    def __repr__(self):
        return repr(self._a)


def _wrap(a):
    x = ndarray.__new__(ndarray)
    x._a = a
    return x


def _to_host(tree, given=None):
    """Device arrays in ``tree`` (tuples, lists, dicts) replaced by their NumPy arrays, each noted
    in ``given``; a NumPy array there is a TypeError, as CuPy raises for one."""
    if isinstance(tree, ndarray):
        if given is not None:
            given[id(tree._a)] = tree
        return tree._a
    if isinstance(tree, np.ndarray):
        raise TypeError(f"Unsupported type {type(tree)}")
    if isinstance(tree, (tuple, list)):
        return type(tree)(_to_host(t, given) for t in tree)
    if isinstance(tree, dict):
        return {k: _to_host(v, given) for k, v in tree.items()}
    return tree


def _to_device(tree, given=None):
    """NumPy arrays and scalars in ``tree`` as device arrays; an array that was given (``out=``)
    comes back as the device array it came from."""
    if isinstance(tree, np.ndarray):
        same = given.get(id(tree)) if given else None
        return _wrap(tree) if same is None else same
    if isinstance(tree, np.generic):
        return _wrap(np.asarray(tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(_to_device(t, given) for t in tree)
    return tree


def _on_device(f, *owners):
    """``f`` run on device arrays: their NumPy arrays in, the results back as device arrays."""

    def call(*args, **kwargs):
        given = {id(o._a): o for o in owners}
        return _to_device(f(*_to_host(args, given), **_to_host(kwargs, given)), given)

    return call


# ----------------------------------------------------------------------------- the module


def __getattr__(name):
    """``cupy.<name>``: NumPy's function on device arrays; NumPy's types and constants as they are."""
    if name.startswith("_"):  # __path__, __file__, ...: this module's own, never NumPy's
        raise AttributeError(name)
    value = getattr(np, name)
    if isinstance(value, types.ModuleType):  # cupy.random, cupy.linalg: not mimicked
        raise AttributeError(f"the fake cupy has no submodule {name!r}")
    return _on_device(value) if callable(value) and not isinstance(value, type) else value


def asarray(a, dtype=None):
    """Host data copied to the device; a device array of that dtype is returned as it is."""
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    return _wrap(np.array(a, dtype=dtype))


def array(a, dtype=None):
    """A new device array, always a copy."""
    return _wrap(np.array(a._a if isinstance(a, ndarray) else a, dtype=dtype))


def asnumpy(a):
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


def get_array_module(*args):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else np


def _scatter_add(a, index, values):
    """cupyx.scatter_add: a[index] += values with repeats adding up; device arrays only."""
    if not all(isinstance(v, ndarray) for v in (a, index, values)):
        raise TypeError("Unsupported type: cupyx.scatter_add takes device arrays")
    np.add.at(a._a, index._a, values._a)


class _Device:
    def __init__(self, device=0):
        self.id = device

    def synchronize(self):
        pass  # nothing here runs asynchronously


cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1), Device=_Device)


def install(monkeypatch):
    """``import cupy`` and ``import cupyx.scipy.special`` give this fake until the test ends."""
    special = types.ModuleType("cupyx.scipy.special")
    special.erf, special.ndtr = _on_device(scipy.special.erf), _on_device(scipy.special.ndtr)
    cupyx_scipy = types.ModuleType("cupyx.scipy")
    cupyx_scipy.special = special
    cupyx = types.ModuleType("cupyx")
    cupyx.scipy = cupyx_scipy
    cupyx.scatter_add = _scatter_add
    cupy = sys.modules[__name__]
    for name, module in [("cupy", cupy), ("cupyx", cupyx), ("cupyx.scipy", cupyx_scipy),
                         ("cupyx.scipy.special", special)]:
        monkeypatch.setitem(sys.modules, name, module)
    return cupy
