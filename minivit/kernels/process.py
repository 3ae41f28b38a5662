"""Process tuning: settings that change the whole process, so nothing sets them on import.

``tune_process()`` opts in; the command line (``python -m minivit``), the benchmarks and the
tutorials call it first thing, before NumPy loads. This module imports nothing but the standard
library, so it can run first. What each setting does and buys (measured on the 2-core AMD EPYC VM,
float32; docs/benchmarks.md):

1. OpenBLAS's idle worker threads spin for 2^n CPU clock ticks before they sleep (n = 28 by
   default, about 0.1 s), taking the cores from minivit's own threads (minivit.kernels.threads) between
   matmuls. OPENBLAS_THREAD_TIMEOUT=4 makes them sleep almost at once: the default was 12-25%
   slower per training step. OpenBLAS reads it once, when NumPy loads: after that it is too late,
   and ``tune_process`` says so. A value the user set is kept.

2. Memory. A training step allocates and frees the same large arrays (activations, gradients)
   every time. glibc's malloc hands freed blocks over 128 KiB back to the kernel (its threshold
   rises with use, but the top of the heap is still trimmed), so the next step gets fresh pages
   and pays a page fault per 4 KiB: about 7,800 faults and 64 ms of kernel CPU time per ti224
   step on 2 cores. ``keep_freed_memory`` (glibc only) serves blocks up to 32 MiB from the heap and
   trims the heap only when over 1 GiB of it is free, so freed arrays are reused. Setting any
   MALLOC_* variable (or GLIBC_TUNABLES) leaves malloc as the user configured it.
"""

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers, from glibc's malloc.h


def keep_freed_memory(mmap_threshold=32 << 20, trim_threshold=1 << 30):
    """Make glibc's malloc keep freed blocks for reuse (2. above).

    Returns whether malloc was tuned: False off Linux, on a C library other than glibc, or where
    the user set malloc's options in the environment.
    """
    if not sys.platform.startswith("linux") or any(
            v.startswith("MALLOC_") or v == "GLIBC_TUNABLES" for v in os.environ):
        return False
    libc = ctypes.CDLL(None)  # the C library this process runs on
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: leave alone
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and \
        bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def tune_process():
    """Apply both settings; returns what took effect: {"openblas_thread_timeout": the value in
    force, or None where NumPy had loaded before it could be set, "malloc_keeps_freed_memory":
    bool}."""
    timeout = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    if timeout is None and "numpy" not in sys.modules:
        timeout = os.environ["OPENBLAS_THREAD_TIMEOUT"] = "4"
    return {"openblas_thread_timeout": timeout, "malloc_keeps_freed_memory": keep_freed_memory()}
