"""minivit: the Vision Transformer family from scratch, with hand-written backprop.

Importing minivit changes no process-wide setting (see minivit.kernels.process), and loads its
parts on first use, so that ``python -m minivit`` can tune the process before NumPy loads.
"""

import importlib

__version__ = "0.1.0"
_NAMES = {  # public name -> the module that defines it, loaded on first use
    "create_model": "models", "list_models": "models",
    "from_pretrained": "pretrained", "save_pretrained": "pretrained",
    "attention_rollout": "analysis", "mean_attention_distance": "analysis",
    "pos_embed_similarity": "analysis",
}
__all__ = ["backend", "nn", *_NAMES, "__version__"]


def __getattr__(name):
    if name in ("backend", "nn"):
        return importlib.import_module(f".{name}", __name__)
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'minivit' has no attribute {name!r}")
