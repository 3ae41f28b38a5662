"""LayerNorm's fast path: the same equations as ``minivit.nn.LayerNorm``, run on slabs of tokens,
one slab per CPU thread, each pass writing into arrays allocated once, row sums as contractions.

The plain body makes about ten passes over (M, D) arrays, each with a temporary, on one core;
here each thread makes its passes over a slab that fits its cache, and ``einsum``'s row sums do
not materialise the products they sum.
"""

from .. import backend
from ..nn.norm import LayerNorm
from . import register
from .linear import sum_rows
from .threads import parallel


def forward(layer, x):
    layer.check_input(x)
    xp, d = backend.xp_of(x), layer.dim
    x_hat, y = xp.empty(x.shape, dtype=x.dtype), xp.empty(x.shape, dtype=x.dtype)  # C order
    rstd = xp.empty(x.shape[:-1] + (1,), dtype=x.dtype)  # 1 / sigma: (..., 1)

    def tokens(x, x_hat, rstd, y):  # a slab of tokens (rows)
        mu = xp.einsum("td->t", x) / d
        xp.subtract(x, mu[:, None], out=x_hat)
        var = xp.einsum("td,td->t", x_hat, x_hat) / d
        xp.divide(1.0, xp.sqrt(var + layer.eps), out=rstd[:, 0])
        x_hat *= rstd
        xp.multiply(x_hat, layer.weight.data, out=y)
        y += layer.bias.data

    # tokens as rows: (M, D), (M, D), (M, 1), (M, D)
    parallel(tokens, x.reshape(-1, d), x_hat.reshape(-1, d), rstd.reshape(-1, 1), y.reshape(-1, d))
    layer.save_for_backward(x_hat, rstd)
    return y


def backward(layer, dout):
    x_hat, rstd = layer.saved()
    xp, d, gamma = backend.xp_of(dout), layer.dim, layer.weight.data
    dout2, x_hat2 = dout.reshape(-1, d), x_hat.reshape(-1, d)  # (M, D)
    dx = xp.empty(dout2.shape, dtype=dout.dtype)
    p = xp.empty(dout2.shape, dtype=dout.dtype)  # dL/dy * x_hat, summed for dL/dgamma

    def tokens(dout, x_hat, rstd, dx, p):  # g = gamma * dL/dy, so mean(g) = (dL/dy . gamma) / D
        xp.multiply(dout, x_hat, out=p)
        mean_g = xp.einsum("td,d->t", dout, gamma) / d
        mean_g_x_hat = xp.einsum("td,d->t", p, gamma) / d
        xp.multiply(dout, gamma, out=dx)  # g
        dx -= mean_g[:, None]
        dx -= x_hat * mean_g_x_hat[:, None]
        dx *= rstd

    parallel(tokens, dout2, x_hat2, rstd.reshape(-1, 1), dx, p)
    layer.weight.grad += sum_rows(p)
    layer.bias.grad += sum_rows(dout2)
    return dx.reshape(dout.shape)


register(LayerNorm, forward, backward)
