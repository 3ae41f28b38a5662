"""Activations: softmax (shared by attention and the losses) and GELU."""

import math

from .. import backend, kernels
from .module import Module


def softmax(x, axis=-1, out=None):
    """softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x), stable for any shift of x.

    ``out=x`` computes it in place (attention does, on its scores), saving an array as big as x.
    Rows are independent, so ``kernels.parallel`` hands them out to the CPU threads.
    """
    y = backend.xp_of(x).empty_like(x) if out is None else out

    def rows(x, y):
        xp = backend.xp_of(x)
        xp.subtract(x, x.max(axis=axis, keepdims=True), out=y)
        xp.exp(y, out=y)
        y *= 1.0 / y.sum(axis=axis, keepdims=True)

    kernels.parallel(rows, x, y, axis=_other_axis(x, axis))
    return y


def softmax_backward(y, dy, axis=-1, out=None):
    """Given y = softmax(x) and dy = dL/dy: dL/dx = y * (dy - sum(dy * y)).

    From dy_i/dx_j = y_i (delta_ij - y_j), the Jacobian-vector product collapses to one
    weighted sum per row, so the (N x N) Jacobian is never formed. ``out=dy`` works in place.
    """
    dx = backend.xp_of(dy).empty_like(dy) if out is None else out

    def rows(y, dy, dx):
        xp = backend.xp_of(dy)
        # <dy, y> per row, as a contraction: no temporary as big as dy
        dot = xp.einsum("...i,...i->...", xp.moveaxis(dy, axis, -1), xp.moveaxis(y, axis, -1))
        xp.subtract(dy, xp.expand_dims(dot, axis), out=dx)
        dx *= y

    kernels.parallel(rows, y, dy, dx, axis=_other_axis(y, axis))
    return dx


def _other_axis(x, axis):
    """An axis to cut x along for the threads: any but the one softmax normalises (1-D: none)."""
    return 1 if axis % max(x.ndim, 1) == 0 else 0


def log_softmax(x, axis=-1):
    """log softmax(x) = x - max x - log sum exp(x - max x)."""
    xp = backend.xp_of(x)
    z = x - x.max(axis=axis, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))


class Softmax(Module):
    """y = softmax(x) along ``axis``.

    Shapes: any -> same. Backward: dL/dx = y (dL/dy - <dL/dy, y>), see ``softmax_backward``.
    """

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        y = softmax(x, self.axis)
        self.save_for_backward(y)
        return y

    def backward(self, dout):
        (y,) = self.saved()
        return softmax_backward(y, dout, self.axis)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class GELU(Module):
    """GELU(x) = x Phi(x), Phi the standard normal CDF (Hendrycks & Gimpel, 2016).

    exact (default): Phi(x) = (1 + erf(x / sqrt 2)) / 2.
    approximate="tanh": Phi(x) ~= (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2.

    Shapes: any -> same.
    Backward (exact): d/dx [x Phi(x)] = Phi(x) + x phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi).
    Backward (tanh): with u = sqrt(2/pi)(x + 0.044715 x^3), t = tanh u,
    d/dx = (1 + t)/2 + x (1 - t^2)/2 * sqrt(2/pi)(1 + 3 * 0.044715 x^2).
    """

    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        xp = backend.xp_of(x)
        if self.approximate == "tanh":
            t = xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3))
            self.save_for_backward(x, t)
            return 0.5 * x * (1.0 + t)
        cdf = backend.normal_cdf(x)  # Phi(x) = (1 + erf(x / sqrt 2)) / 2
        self.save_for_backward(x, cdf)
        y = xp.empty_like(x)
        kernels.parallel(xp.multiply, x, cdf, y)  # y = x Phi(x), on every CPU thread
        return y

    def backward(self, dout):
        xp = backend.xp_of(dout)
        x, s = self.saved()
        if self.approximate == "tanh":
            du = _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)
            return dout * (0.5 * (1.0 + s) + 0.5 * x * (1.0 - s * s) * du)
        dx = xp.empty_like(x)

        def grad(x, cdf, dout, dx):  # on slabs of the arrays, one per CPU thread
            xp.multiply(x, x, out=dx)
            dx *= -0.5
            xp.exp(dx, out=dx)
            dx *= _INV_SQRT_2PI  # phi(x)
            dx *= x
            dx += cdf  # Phi(x) + x phi(x)
            dx *= dout

        kernels.parallel(grad, x, s, dout, dx, chunked=True)
        return dx

    def extra_repr(self):
        return f"approximate={self.approximate!r}"
