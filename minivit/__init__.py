"""minivit: the Vision Transformer family from scratch, with hand-written backprop."""

import os

# OpenBLAS worker threads otherwise spin-wait between matmuls and starve the elementwise work
# that runs in between; a short timeout (in 2^n cycles units) must be set before NumPy loads.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")

from . import backend, nn  # noqa: E402
from .models import create_model, list_models  # noqa: E402

__version__ = "0.1.0"
__all__ = ["backend", "nn", "create_model", "list_models", "__version__"]
