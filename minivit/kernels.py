"""The speed tricks, kept in one place: a fast float32 erf and spreading work over CPU threads.
What a whole process may be tuned for (OpenBLAS's idle threads, malloc) is minivit.process.

Layers call these through small, named functions; each layer still reads as its equation.

1. A fast float32 error function. NumPy has no erf, and scipy's float32 ``erf`` evaluates a
scalar series per element, about 40x the cost of ``np.tanh``; the exact GELU needs erf over every
hidden activation, so this matters for training speed. Here

    erf(x) ~= tanh(g(x)),   g(x) = x P(x^2),   deg P = 6,

with P fitted on [0, 4] (``fit_erf_coefficients``). g approximates artanh(erf x), an odd and
smooth function, and tanh does the rest: it is odd, saturates at +-1 like erf, and damps the
error of g by 1 - erf(x)^2 where erf approaches +-1. g is increasing on all of [0, inf) (no root
of g' there), so beyond the fit interval tanh(g) stays at 1 in float32, as erf does; +-0, +-inf
and nan map to +-0, +-1 and nan. The approximation itself is within 6e-8 of erf; evaluated in
float32 (Horner's rule with in-place ufuncs on chunks that stay in cache, then NumPy's SIMD tanh)
the max abs error against scipy's erf is 1.4e-7 over a dense grid. ``normal_cdf_f32`` is
Phi(x) = (1 + erf(x / sqrt 2)) / 2 from the same polynomial, the 1/sqrt(2) folded into its
coefficients. The float64 gradient checks use neither: float64 goes to the library functions.

2. Threads. NumPy runs elementwise work on one core, while BLAS runs matmuls on all of them.
``parallel(fn, *arrays)`` cuts the arrays into one slab per thread and runs ``fn`` on the slabs at
once (NumPy releases the interpreter lock inside its loops). ``matmul(a, b)`` multiplies stacks of
matrices the same way, each thread with single-threaded BLAS: a stack of many small products
(attention's B*h heads) otherwise pays a BLAS thread hand-off per product. OpenBLAS's idle
threads should not spin while this runs: ``minivit.process.tune_process`` (the command line,
the benchmarks and the tutorials call it) sets a short OPENBLAS_THREAD_TIMEOUT before NumPy
loads. ``add_rows`` and ``sum_rows`` are Linear's bias: the add spread over the threads, the sum
over rows as a BLAS matrix-vector product. The thread count is
MINIVIT_NUM_THREADS, else OPENBLAS_NUM_THREADS, else the CPUs this process may run on. On CuPy
all of this is the GPU's business: plain calls.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import backend

# P, lowest degree first: erf(x) ~= tanh(x P(x^2)). Reproduced by fit_erf_coefficients().
ERF_P = (
    1.1283797054256874, 0.10276548194185418, -0.00018438503806309357, -0.0006257181456583816,
    8.97119225463402e-05, -5.985555045889843e-06, 1.589504045271137e-07,
)
_ERF_P32 = tuple(np.float32(c) for c in ERF_P)
# Phi(x) = 1/2 + tanh((x / sqrt 2) P(x^2 / 2)) / 2: coefficient k gets 1 / (sqrt(2) 2^k)
_CDF_P32 = tuple(np.float32(c / (np.sqrt(2.0) * 2.0**k)) for k, c in enumerate(ERF_P))


def fit_erf_coefficients(degree=6, a=4.0, nodes=4000):
    """Fit P in erf(x) ~= tanh(x P(x^2)) on [0, a]; returns P's coefficients, lowest first.

    Target: G(x) = artanh(erf x) = (log1p(erf x) - log erfc x) / 2 (erfc keeps it accurate where
    erf is near 1). To first order tanh(x P) - erf x = (1 - erf(x)^2) (x P - G), so P minimises
    the largest weighted error (1 - erf^2) |x P(x^2) - G(x)| over Chebyshev nodes in [0, a]: a
    minimax problem linear in P, solved exactly as a linear program (variables P and the bound t;
    minimise t subject to -t <= weighted error <= t at every node).
    """
    from scipy.optimize import linprog
    from scipy.special import erf, erfc

    x = a * (1.0 - np.cos(np.linspace(0.0, np.pi, nodes))) / 2.0
    x = x[x > 0]
    e = erf(x)
    G = 0.5 * (np.log1p(e) - np.log(erfc(x)))
    w = 1e6 * (1.0 - e * e)  # x 1e6: keeps the optimum far above the solver's 1e-7 tolerances
    powers = np.arange(degree + 1)
    A = (w * x)[:, None] * (x * x / (a * a))[:, None] ** powers  # basis (x^2 / a^2)^k: well scaled
    ones = np.ones((len(x), 1))
    res = linprog(np.r_[np.zeros(degree + 1), 1.0],
                  A_ub=np.block([[A, -ones], [-A, -ones]]), b_ub=np.r_[w * G, -w * G],
                  bounds=[(None, None)] * (degree + 2), method="highs")
    if not res.success:
        raise RuntimeError(f"erf fit failed: {res.message}")
    return res.x[:-1] / (a * a) ** powers


def _tanh_of_odd_poly(x, out, coef, cdf):
    """out = tanh(x P(x^2)) for 1-D float32 x, P's float32 coefficients lowest first; with cdf,
    out = (1 + tanh(x P(x^2))) / 2. ``parallel`` calls it on chunks that stay in cache."""
    with np.errstate(over="ignore"):  # x^2 -> inf for huge |x|: the result tanh(+-inf) is right
        u = np.multiply(x, x)  # u = x^2
        np.multiply(u, coef[-1], out=out)  # Horner: P(u) = p0 + u (p1 + u (p2 + ...))
        for c in coef[-2:0:-1]:
            out += c
            out *= u
        out += coef[0]
        out *= x  # g = x P(u)
        np.tanh(out, out=out)
    if cdf:
        out += 1.0
        out *= 0.5


def _odd_poly_kernel(x, coef, cdf):
    out = np.empty(x.shape, dtype=np.float32)  # C order, so out.reshape(-1) is a view
    parallel(lambda xs, outs: _tanh_of_odd_poly(xs, outs, coef, cdf), x.reshape(-1), out.reshape(-1),
             chunked=True)
    return out


def erf_f32(x):
    """erf of a float32 array, as float32 (max abs error 1.4e-7, see the module docstring)."""
    if backend.is_cupy(x):
        import cupyx.scipy.special as sp  # CuPy's float32 erf is a fast GPU kernel already

        return sp.erf(x)
    return _odd_poly_kernel(x, _ERF_P32, cdf=False)


def normal_cdf_f32(x):
    """Phi(x) = (1 + erf(x / sqrt 2)) / 2 of a float32 array, as float32 (max abs error 1e-7)."""
    if backend.is_cupy(x):
        import cupyx.scipy.special as sp

        return sp.ndtr(x)
    return _odd_poly_kernel(x, _CDF_P32, cdf=True)


# ----------------------------------------------------------------------------- threads

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
    single-threaded BLAS on its share; anything else is a plain ``matmul``.
    """
    global _blas
    xp = backend.xp_of(a)
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


def add_rows(y, b):
    """y += b for y (M, n) and b (n,), in place, the rows spread over the threads."""
    parallel(lambda rows: backend.xp_of(rows).add(rows, b, out=rows), y)


def sum_rows(g):
    """g.sum(axis=0) of g (M, n), as a matrix-vector product: BLAS, on every thread."""
    if backend.is_cupy(g):
        return g.sum(axis=0)
    return np.ones(g.shape[0], dtype=g.dtype) @ g
