"""Activations: softmax (shared by attention and the losses) and GELU."""

import math

from .. import backend
from .module import Module


def softmax(x, axis=-1):
    """softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x), stable for any shift of x."""
    ### BEGIN SOLUTION a1.softmax.forward
    e = backend.xp_of(x).exp(x - x.max(axis=axis, keepdims=True))
    y = e / e.sum(axis=axis, keepdims=True)
    ### END SOLUTION
    return y


def softmax_backward(y, dy, axis=-1):
    """Given y = softmax(x) and dy = dL/dy: dL/dx = y * (dy - sum(dy * y)).

    From dy_i/dx_j = y_i (delta_ij - y_j), the Jacobian-vector product collapses to one
    weighted sum per row, so the (N x N) Jacobian is never formed.
    """
    ### BEGIN SOLUTION a1.softmax.backward
    dx = y * (dy - (dy * y).sum(axis=axis, keepdims=True))
    ### END SOLUTION
    return dx


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
        ### BEGIN SOLUTION a1.gelu.forward
        cdf = backend.normal_cdf(x)  # Phi(x) = (1 + erf(x / sqrt 2)) / 2
        y = x * cdf
        ### END SOLUTION
        self.save_for_backward(x, cdf)
        return y

    def backward(self, dout):
        xp = backend.xp_of(dout)
        x, s = self.saved()
        if self.approximate == "tanh":
            du = _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)
            return dout * (0.5 * (1.0 + s) + 0.5 * x * (1.0 - s * s) * du)
        ### BEGIN SOLUTION a1.gelu.backward
        phi = xp.exp(-0.5 * x * x) * _INV_SQRT_2PI
        dx = dout * (s + x * phi)  # Phi(x) + x phi(x)
        ### END SOLUTION
        return dx

    def extra_repr(self):
        return f"approximate={self.approximate!r}"
