"""minivit: the Vision Transformer family from scratch, with hand-written backprop."""

import os

# OpenBLAS's idle worker threads spin for 2^n CPU clock ticks before they sleep (n = 28 by default,
# about 0.1 s), taking the cores from minivit's own threads (kernels.py) between matmuls. OpenBLAS
# accepts n in 4..30 (1-3 count as 4; 0 keeps 28); 4 to 20 all measured alike here, the default
# 12-25% slower per training step. Read once, when NumPy loads: import minivit before numpy.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from . import backend, nn  # noqa: E402
from .models import create_model, list_models  # noqa: E402

__version__ = "0.1.0"
__all__ = ["backend", "nn", "create_model", "list_models", "__version__"]
