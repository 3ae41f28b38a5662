"""BatchNorm2d's fast path: the same equations as ``minivit.nn.BatchNorm2d``, on the channels-last
(B H W, C) matrix of the input, its per-channel sums as BLAS products and its passes over slabs of
rows on every CPU thread.

CvT's BatchNorms normalise the outputs of the depthwise convolutions, which the convolution's fast
path leaves channels last (``minivit.kernels.conv``): viewed as (B H W, C), the statistics are sums
over rows (``sum_rows``: one matrix-vector product each), and the outputs stay channels last, so
that the tokens made from them are views. The plain body reduces a (B, C, H, W) view over three
axes and makes about ten passes with temporaries, on one core.
"""

from .. import backend
from ..nn.norm import BatchNorm2d
from . import register
from .linear import sum_rows
from .threads import parallel


def _rows(x):
    """x (B, C, H, W) as the (B H W, C) matrix of its pixels, channels last: a view when x's memory
    is laid out so (a view of tokens), a copy otherwise."""
    xp = backend.xp_of(x)
    return xp.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(-1, x.shape[1])


def _grid(rows, shape):
    """The inverse of _rows: (B H W, C) -> (B, C, H, W), a view."""
    B, C, H, W = shape
    return rows.reshape(B, H, W, C).transpose(0, 3, 1, 2)


def forward(layer, x):
    if x.ndim != 4 or x.shape[1] != layer.num_features or backend.is_cupy(x):
        return BatchNorm2d.forward.__wrapped__(layer, x)  # its error message, or the GPU's own kernels
    xp = backend.xp_of(x)
    x2 = _rows(x)  # (n, C)
    n, C = x2.shape
    if layer.training:
        if n < 2:
            return BatchNorm2d.forward.__wrapped__(layer, x)  # the plain body says why not
        mu = sum_rows(x2) / n
    else:
        mu = layer.running_mean
    x_hat = xp.empty_like(x2)
    parallel(lambda rows, out: xp.subtract(rows, mu, out=out), x2, x_hat)
    if layer.training:
        var = xp.einsum("nc,nc->c", x_hat, x_hat) / n  # biased
        m, dtype = layer.momentum, layer.running_mean.dtype
        layer.running_mean = ((1 - m) * layer.running_mean + m * mu).astype(dtype)
        layer.running_var = ((1 - m) * layer.running_var + m * var * (n / (n - 1))).astype(dtype)
    else:
        var = layer.running_var
    rstd = 1.0 / xp.sqrt(var + layer.eps)  # (C,)
    y = xp.empty_like(x2)

    def rows(x_hat, y):
        x_hat *= rstd
        xp.multiply(x_hat, layer.weight.data, out=y)
        y += layer.bias.data

    parallel(rows, x_hat, y)
    layer.save_for_backward(x_hat, rstd, layer.training)
    return _grid(y, x.shape)


def backward(layer, dout):
    if backend.is_cupy(dout):
        return BatchNorm2d.backward.__wrapped__(layer, dout)
    x_hat, rstd, batch_statistics = layer.saved()
    xp = backend.xp_of(dout)
    g2 = _rows(dout).astype(x_hat.dtype, copy=False)  # (n, C)
    n = g2.shape[0]
    p = xp.empty_like(x_hat)  # dL/dy * x_hat
    parallel(lambda g, h, out: xp.multiply(g, h, out=out), g2, x_hat, p)
    sum_g, sum_p = sum_rows(g2), sum_rows(p)
    layer.weight.grad += sum_p
    layer.bias.grad += sum_g
    scale = layer.weight.data * rstd  # gamma / sigma
    dx = xp.empty_like(x_hat)
    if batch_statistics:  # (g - mean(g) - x_hat mean(g x_hat)) / sigma, g = gamma dL/dy
        mean_g, mean_p = sum_g / n, sum_p / n

        def rows(g, x_hat, dx):
            xp.multiply(x_hat, mean_p, out=dx)
            xp.subtract(g, dx, out=dx)
            dx -= mean_g
            dx *= scale

    else:  # the statistics are constants
        def rows(g, x_hat, dx):
            xp.multiply(g, scale, out=dx)

    parallel(rows, g2, x_hat, dx)
    return _grid(dx, dout.shape)


register(BatchNorm2d, forward, backward)
