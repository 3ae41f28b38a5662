"""Layer normalisation (Ba, Kiros & Hinton, 2016), applied per token."""

from .. import backend, validate
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
        validate.integer("LayerNorm dim", dim, 1)
        validate.number("LayerNorm eps", eps, 0.0)
        self.dim, self.eps = dim, eps
        self.weight = Parameter(backend.ones((dim,), dtype))
        self.bias = Parameter(backend.zeros((dim,), dtype))

    def check_input(self, x):
        if x.shape[-1] != self.dim:
            raise ValueError(f"LayerNorm expected input (..., {self.dim}), got {tuple(x.shape)}")

    def forward(self, x):
        self.check_input(x)
        xp = backend.xp_of(x)
        mu = x.mean(axis=-1, keepdims=True)  # (..., 1)
        var = x.var(axis=-1, keepdims=True)  # (..., 1), biased
        rstd = 1.0 / xp.sqrt(var + self.eps)  # 1 / sigma
        x_hat = (x - mu) * rstd
        self.save_for_backward(x_hat, rstd)
        return self.weight.data * x_hat + self.bias.data

    def backward(self, dout):
        x_hat, rstd = self.saved()
        d = self.dim
        self.weight.grad += (dout * x_hat).reshape(-1, d).sum(axis=0)  # sum over every token
        self.bias.grad += dout.reshape(-1, d).sum(axis=0)
        g = dout * self.weight.data
        return rstd * (g - g.mean(axis=-1, keepdims=True) - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"
