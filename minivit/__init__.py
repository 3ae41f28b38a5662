"""minivit: the Vision Transformer family from scratch, with hand-written backprop.

Importing minivit changes no process-wide setting (see minivit.kernels.process), and loads its parts on
first use, so that ``python -m minivit`` can tune the process before NumPy loads.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["backend", "nn", "create_model", "list_models", "__version__"]


def __getattr__(name):
    if name in ("backend", "nn"):
        return importlib.import_module(f".{name}", __name__)
    if name in ("create_model", "list_models"):
        return getattr(importlib.import_module(".models", __name__), name)
    raise AttributeError(f"module 'minivit' has no attribute {name!r}")
