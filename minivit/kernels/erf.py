"""A fast float32 error function, for the exact GELU.

NumPy has no erf, and scipy's float32 ``erf`` evaluates a
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
"""


import numpy as np

from .. import backend
from .threads import parallel

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
