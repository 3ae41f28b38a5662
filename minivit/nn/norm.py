"""Layer normalisation (Ba, Kiros & Hinton, 2016), applied per token."""

from .. import backend
from .module import Module, Parameter


class LayerNorm(Module):
    """LN(x) = gamma * (x - mu) / sqrt(sigma^2 + eps) + beta, over the last axis.

    mu, sigma^2: mean and (biased) variance of each token's D features.
    Shapes: x (..., D) -> same; gamma = weight (D,), beta = bias (D,). ViT uses eps = 1e-6.

    Backward: with x_hat = (x - mu) / sigma and g = gamma * dL/dy, differentiating through mu and
    sigma gives dL/dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sigma (means over D);
    dL/dgamma = sum over tokens of dL/dy * x_hat, dL/dbeta = sum over tokens of dL/dy.
    """

    def __init__(self, dim, eps=1e-6, dtype=None):
        self.dim, self.eps = dim, eps
        self.weight = Parameter(backend.ones((dim,), dtype))
        self.bias = Parameter(backend.zeros((dim,), dtype))

    def forward(self, x):
        if x.shape[-1] != self.dim:
            raise ValueError(f"LayerNorm expected input (..., {self.dim}), got {tuple(x.shape)}")
        xp = backend.xp_of(x)
        x_hat = x - x.mean(axis=-1, keepdims=True)
        var = (x_hat * x_hat).mean(axis=-1, keepdims=True)
        rstd = 1.0 / xp.sqrt(var + self.eps)  # (..., 1)
        x_hat *= rstd
        self.save_for_backward(x_hat, rstd)
        return x_hat * self.weight.data + self.bias.data

    def backward(self, dout):
        x_hat, rstd = self.saved()
        d = self.dim
        dout2, x_hat2 = dout.reshape(-1, d), x_hat.reshape(-1, d)
        self.weight.grad += (dout2 * x_hat2).sum(axis=0)
        self.bias.grad += dout2.sum(axis=0)
        g = dout * self.weight.data
        dx = g - g.mean(axis=-1, keepdims=True)
        dx -= x_hat * (g * x_hat).mean(axis=-1, keepdims=True)
        dx *= rstd
        return dx

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"
