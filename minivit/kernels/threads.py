"""Spreading work over the CPU threads.

NumPy runs elementwise work on one core, while BLAS runs matmuls on all of them.
``parallel(fn, *arrays)`` cuts the arrays into one slab per thread and runs ``fn`` on the slabs at
once (NumPy releases the interpreter lock inside its loops). ``matmul(a, b)`` multiplies stacks of
matrices the same way, each thread with single-threaded BLAS: a stack of many small products
(attention's B*h heads) otherwise pays a BLAS thread hand-off per product. OpenBLAS's idle
threads should not spin while this runs: ``minivit.kernels.tune_process`` (the command line,
the benchmarks and the tutorials call it) sets a short OPENBLAS_THREAD_TIMEOUT before NumPy
loads. The thread count is MINIVIT_NUM_THREADS, else OPENBLAS_NUM_THREADS, else the CPUs this
process may run on. On CuPy all of this is the GPU's business: plain calls.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import backend


def _threads_from_env():
    for var in ("MINIVIT_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        if os.environ.get(var, "").strip().isdigit():
            return max(1, int(os.environ[var]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


NUM_THREADS = _threads_from_env()  # read once, at import
_MIN_WORK = 1 << 17  # elements per thread at least: a hand-off to a thread costs ~10-50 us, as much as
# an elementwise pass over ~30k floats; below this, small models (vit_digits) ran slower on two threads
_CHUNK = 1 << 16  # elements per call of a chunked fn: a chunk's arrays stay in L2 cache
_pools = {}  # number of workers -> ThreadPoolExecutor, started on first use
_inside = threading.local()  # set while a slab runs: nested calls run serially, never deadlock
_blas = None  # threadpoolctl's controller of the BLAS library, found on first use


def _slabs(a, axis):
    """How many slabs to cut ``a`` into along ``axis`` (1: do not split)."""
    if backend.is_cupy(a) or a.ndim <= axis or getattr(_inside, "busy", False):
        return 1
    return max(1, min(NUM_THREADS, a.shape[axis], a.size // _MIN_WORK))


def parallel(fn, *arrays, axis=0, chunked=False):
    """Run ``fn(*slabs)``, the arrays cut along ``axis`` into one slab per thread, concurrently.

    The arrays share their length along ``axis``; ``fn`` must treat slabs independently (work
    elementwise or reduce along other axes) and write its results into one of the arrays.
    ``chunked``: each thread calls ``fn`` on its slab in chunks of about _CHUNK elements, one after
    another, so that a ``fn`` of many passes over large arrays (GELU's gradient: 7) reads each
    chunk from the core's cache after the first pass instead of from main memory. Small arrays,
    nested calls and CuPy arrays get one plain call ``fn(*arrays)``.
    """
    a0 = arrays[0]
    if backend.is_cupy(a0) or a0.ndim <= axis:
        fn(*arrays)
        return
    n, cut = a0.shape[axis], (slice(None),) * axis
    step = max(1, n * _CHUNK // max(a0.size, 1)) if chunked else max(n, 1)  # rows per call of fn

    def run(lo, hi):
        for s in range(lo, max(hi, lo + 1), step):  # an empty slab still gets one call
            fn(*(a[cut + (slice(s, min(s + step, hi)),)] for a in arrays))

    k = _slabs(a0, axis)
    if k == 1:
        run(0, n)
        return
    if k - 1 not in _pools:
        _pools[k - 1] = ThreadPoolExecutor(k - 1, thread_name_prefix="minivit")
    bounds = [n * i // k for i in range(k + 1)]

    def slab(i):
        _inside.busy = True
        try:
            run(bounds[i], bounds[i + 1])
        finally:
            _inside.busy = False

    futures = [_pools[k - 1].submit(slab, i) for i in range(1, k)]
    slab(0)  # the calling thread takes the first slab
    for f in futures:
        f.result()


def matmul(a, b, out=None):
    """a @ b for stacks of matrices (..., n, k) @ (..., k, m), ``out`` optional.

    On NumPy, stacks of the same leading length are split across the threads, each thread running
    single-threaded BLAS on its share; anything else is a plain ``matmul``. On CuPy, the GPU's
    batched matmul, and a given ``out`` (a strided view, in attention) is filled by a copy.
    """
    global _blas
    xp = backend.xp_of(a)
    if backend.is_cupy(a) and out is not None:
        out[...] = xp.matmul(a, b)
        return out
    if a.ndim < 3 or b.ndim != a.ndim or a.shape[0] != b.shape[0] or _slabs(a, 0) == 1:
        return xp.matmul(a, b, out=out)
    if out is None:
        lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        out = np.empty(lead + (a.shape[-2], b.shape[-1]), dtype=np.result_type(a, b))
    if _blas is None:
        from threadpoolctl import ThreadpoolController  # ships with scikit-learn

        _blas = ThreadpoolController()
    with _blas.limit(limits=1, user_api="blas"):
        parallel(lambda x, y, o: np.matmul(x, y, out=o), a, b, out)
    return out
