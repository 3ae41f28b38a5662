"""Speed, in one place, behind one switch.

minivit's layers (``minivit.nn``) are written as their equations: plain array code a student could
write. The fast versions of some of them live here, one module per concern:

* ``threads``: elementwise work and stacks of small matmuls spread over the CPU threads;
* ``erf``: a fast float32 error function, for the exact GELU;
* ``layernorm``, ``gelu``, ``linear``, ``attention``, ``conv``: each layer's fast forward and
  backward (threaded, fused, in place, with layouts chosen for the next step; the depthwise
  convolution's as its loops, compiled by Numba), registered for its class;
* ``process``: process-wide tuning (OpenBLAS's idle threads, malloc), applied only when asked,
  by ``tune_process()``.

The switch: kernels are on unless the environment says ``MINIVIT_KERNELS=0``; ``use(False)``
turns them off at run time (``use`` returns the previous setting). With kernels on, a layer whose
class has a fast path registered here runs it instead of its own body (instances of that very
class: a subclass may override forward or backward, so it runs its own) (``Module`` dispatches, see
``minivit.nn.module``); with kernels off, every layer runs its plain body. A forward and its
backward always run the same way, even if the switch changes between them. tests/test_kernels.py
proves, for every registered fast path, that both ways compute the same, forward and backward.

This file imports only the standard library, so that ``tune_process`` can run before NumPy loads.
"""

import importlib
import os
import pkgutil
from collections import namedtuple

from .process import tune_process

__all__ = ["FastPath", "enabled", "fast_path", "fast_paths", "register", "tune_process", "use"]

FastPath = namedtuple("FastPath", "forward backward")  # functions (layer, ...) standing in for the
# layer's own methods; None where the layer's own method serves

_OFF = ("0", "off", "false", "no")
_state = {"on": os.environ.get("MINIVIT_KERNELS", "1").strip().lower() not in _OFF, "loaded": False}
_registry = {}  # layer class -> FastPath


def enabled():
    """Whether the fast paths run (True unless MINIVIT_KERNELS=0 or ``use(False)``)."""
    return _state["on"]


def use(on):
    """Turn the fast paths on or off for this process; returns the previous setting."""
    if not isinstance(on, bool):
        raise TypeError(f"kernels.use expects True or False, got {on!r}")
    previous, _state["on"] = _state["on"], on
    return previous


def register(cls, forward=None, backward=None):
    """Register the fast ``forward(layer, *args)`` and ``backward(layer, dout)`` of layer ``cls``."""
    _registry[cls] = FastPath(forward, backward)


def _load():
    """Import every kernel module once, so that each registers its fast paths."""
    if not _state["loaded"]:
        _state["loaded"] = True
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")


def fast_path(cls):
    """The FastPath registered for layer class ``cls`` when kernels are on, else None."""
    if not _state["on"]:
        return None
    _load()
    return _registry.get(cls)


def fast_paths():
    """Every registered fast path: {layer class: FastPath}."""
    _load()
    return dict(_registry)
