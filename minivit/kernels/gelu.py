"""GELU's fast path (exact GELU): Phi from the fast float32 erf (``minivit.kernels.erf``), and
both passes spread over the CPU threads; the backward's seven elementwise passes are fused over
cache-sized chunks, writing into one output array. The tanh approximation runs the plain body.
"""

import math

from .. import backend
from ..nn.activation import GELU
from . import register
from .erf import normal_cdf_f32
from .threads import parallel

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_plain_forward, _plain_backward = GELU.forward.__wrapped__, GELU.backward.__wrapped__


def forward(layer, x):
    if layer.approximate == "tanh":
        return _plain_forward(layer, x)
    xp = backend.xp_of(x)
    cdf = normal_cdf_f32(x) if x.dtype == "float32" else backend.normal_cdf(x)  # Phi(x)
    layer.save_for_backward(x, cdf)
    y = xp.empty_like(x)
    parallel(xp.multiply, x, cdf, y)  # y = x Phi(x)
    return y


def backward(layer, dout):
    if layer.approximate == "tanh":
        return _plain_backward(layer, dout)
    xp = backend.xp_of(dout)
    x, cdf = layer.saved()
    dx = xp.empty_like(x)

    def grad(x, cdf, dout, dx):  # one chunk of each array
        xp.multiply(x, x, out=dx)
        dx *= -0.5
        xp.exp(dx, out=dx)
        dx *= _INV_SQRT_2PI  # phi(x)
        dx *= x
        dx += cdf  # Phi(x) + x phi(x)
        dx *= dout

    parallel(grad, x, cdf, dout, dx, chunked=True)
    return dx


register(GELU, forward, backward)
