"""Linear's fast path: the bias add spread over the CPU threads (in place, no second (M, D_out)
array), and the bias gradient's sum over rows as a BLAS matrix-vector product, on every core.
``sum_rows`` also serves LayerNorm's fast backward."""

from .. import backend
from ..nn.linear import Linear
from . import register
from .threads import parallel


def add_rows(y, b):
    """y += b for y (M, n) and b (n,), in place, the rows spread over the threads."""
    parallel(lambda rows: backend.xp_of(rows).add(rows, b, out=rows), y)


def sum_rows(g):
    """g.sum(axis=0) of g (M, n), as a matrix-vector product: BLAS, on every thread."""
    if backend.is_cupy(g):
        return g.sum(axis=0)
    return backend.xp_of(g).ones(g.shape[0], dtype=g.dtype) @ g


def forward(layer, x):
    layer.check_input(x)
    x2 = x.reshape(-1, layer.in_features)  # (M, D_in)
    y = x2 @ layer.weight.data  # (M, D_out)
    if layer.bias is not None:
        add_rows(y, layer.bias.data)
    layer.save_for_backward(x2)
    return y.reshape(*x.shape[:-1], layer.out_features)


def backward(layer, dout):
    (x2,) = layer.saved()
    g = dout.reshape(-1, layer.out_features)  # (M, D_out)
    layer.weight.grad += x2.T @ g
    if layer.bias is not None:
        layer.bias.grad += sum_rows(g)
    return (g @ layer.weight.data.T).reshape(*dout.shape[:-1], layer.in_features)


register(Linear, forward, backward)
