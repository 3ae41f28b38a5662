"""Checks of settings, shared by the models and the command line, and of loaded arrays (``array``:
state dicts, optimizer state).

Each check returns the value (as a plain int, float or bool) or raises a ValueError that names the
setting, what it got and what it accepts, e.g. ``embed_dim must be an integer >= 1, got 0``.
Non-finite numbers (nan, inf) are never accepted.
"""

import math
import numbers

import numpy as np

from . import backend


def _interval(low, high, low_open, high_open):
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def _in_range(name, value, kind, low, high, low_open, high_open):
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(f"{name} must be {kind}{_interval(low, high, low_open, high_open)}, got {value!r}")


def integer(name, value, low=None, high=None):
    """An integer (not a bool, not a float) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer{_interval(low, high, False, False)}, got {value!r}")
    _in_range(name, int(value), "an integer", low, high, False, False)
    return int(value)


def number(name, value, low=None, high=None, low_open=False, high_open=False):
    """A finite real number in the interval from low to high (each end closed unless *_open)."""
    kind = "a finite number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be {kind}{_interval(low, high, low_open, high_open)}, got {value!r}")
    _in_range(name, float(value), kind, low, high, low_open, high_open)
    return float(value)


def probability(name, value):
    """A rate in [0, 1): dropout, drop-path, label smoothing (1 would drop or smooth everything)."""
    return number(name, value, 0.0, 1.0, high_open=True)


def flag(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def seed(name, value):
    """A random seed, as ``backend.rng`` takes it: an integer >= 0, a numpy.random.Generator (used as
    is) or None (fresh entropy, not reproducible)."""
    if value is None or isinstance(value, np.random.Generator):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(
            f"{name} must be an integer >= 0, a numpy.random.Generator or None, got {value!r:.60}"
        )
    return int(value)


def array(name, value, shape, dtype):
    """A host numpy array of ``dtype`` made from ``value`` (any array, NumPy, CuPy or nested
    lists): real numbers only (integers or floats; not bool, complex, strings or objects), exactly
    ``shape``, and every entry finite once converted to ``dtype``."""
    try:
        a = np.asarray(backend.to_numpy(value))
    except Exception as e:  # ragged lists, objects that refuse conversion
        raise ValueError(
            f"{name} must be an array of real numbers, got {type(value).__name__} ({e})"
        ) from None
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be an array of real numbers, got dtype {a.dtype}: {value!r:.60}")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(a.shape)}, expected {tuple(shape)}")
    with np.errstate(over="ignore", invalid="ignore"):
        a = a.astype(dtype, copy=False)
    bad = a.size - int(np.count_nonzero(np.isfinite(a)))
    if bad:
        raise ValueError(
            f"{name} has {bad} non-finite values (nan or inf) in {np.dtype(dtype)}, expected finite numbers"
        )
    return a
