"""Regularisers that act only in training mode: Dropout and DropPath (stochastic depth)."""

from .. import backend
from .module import Module


def _keep_mask(gen, shape, p, like):
    """Bernoulli(1 - p) mask scaled by 1 / (1 - p), drawn on the host, in ``like``'s dtype/device."""
    keep = gen.random(shape) >= p
    return backend.xp_of(like).asarray(keep / (1.0 - p), dtype=like.dtype)


class Dropout(Module):
    """y = m * x / (1 - p), m_i ~ Bernoulli(1 - p), in training; y = x in eval.

    Shapes: any -> same. Backward: dL/dx = m * dL/dy / (1 - p) (the same mask).
    """

    def __init__(self, p=0.0, rng=None):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{type(self).__name__} p must be in [0, 1), got {p}")
        self.p, self.rng = p, backend.rng(rng)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self.save_for_backward(None)
            return x
        mask = _keep_mask(self.rng, self.mask_shape(x), self.p, x)
        self.save_for_backward(mask)
        return x * mask

    def backward(self, dout):
        (mask,) = self.saved()
        return dout if mask is None else dout * mask

    def mask_shape(self, x):
        return x.shape

    def extra_repr(self):
        return f"p={self.p}"



class DropPath(Dropout):
    """Stochastic depth (Huang et al., 2016): drop a residual branch for whole samples.

    y_b = m_b * x_b / (1 - p), m_b ~ Bernoulli(1 - p), one draw per sample b, in training.
    Shapes: (B, ...) -> same. Backward: dL/dx_b = m_b * dL/dy_b / (1 - p).
    """

    def mask_shape(self, x):
        return (x.shape[0],) + (1,) * (x.ndim - 1)  # one draw per sample, broadcast over tokens
