"""Softmax and its backward for attention's fast path: rows spread over the CPU threads, written
in place (``out=x``: the scores become the probabilities without a second (B, h, N, M) array)."""

from .. import backend
from .threads import parallel


def _other_axis(x, axis):
    """An axis to cut x along for the threads: any but the one softmax normalises (1-D: none)."""
    return 1 if axis % max(x.ndim, 1) == 0 else 0


def softmax(x, axis=-1, out=None):
    """``minivit.nn.softmax``, threaded, into ``out`` (may be ``x``)."""
    y = backend.xp_of(x).empty_like(x) if out is None else out

    def rows(x, y):
        xp = backend.xp_of(x)
        xp.subtract(x, x.max(axis=axis, keepdims=True), out=y)
        xp.exp(y, out=y)
        y *= 1.0 / y.sum(axis=axis, keepdims=True)

    parallel(rows, x, y, axis=_other_axis(x, axis))
    return y


def softmax_backward(y, dy, axis=-1, out=None):
    """``minivit.nn.softmax_backward``, threaded, into ``out`` (may be ``dy``)."""
    dx = backend.xp_of(dy).empty_like(dy) if out is None else out

    def rows(y, dy, dx):
        xp = backend.xp_of(dy)
        # <dy, y> per row, as a contraction: no temporary as big as dy
        dot = xp.einsum("...i,...i->...", xp.moveaxis(dy, axis, -1), xp.moveaxis(y, axis, -1))
        xp.subtract(dy, xp.expand_dims(dot, axis), out=dx)
        dx *= y

    parallel(rows, y, dy, dx, axis=_other_axis(y, axis))
    return dx
