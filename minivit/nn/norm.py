"""Layer normalisation (Ba, Kiros & Hinton, 2016), applied per token."""

from .. import backend, kernels
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
        x_hat, y = xp.empty(x.shape, dtype=x.dtype), xp.empty(x.shape, dtype=x.dtype)  # C order
        rstd = xp.empty(x.shape[:-1] + (1,), dtype=x.dtype)  # (..., 1)

        def tokens(x, x_hat, rstd, y):  # on slabs of tokens, one per CPU thread
            xp.subtract(x, x.mean(axis=-1, keepdims=True), out=x_hat)
            var = (x_hat * x_hat).mean(axis=-1, keepdims=True)
            xp.divide(1.0, xp.sqrt(var + self.eps), out=rstd)
            x_hat *= rstd
            xp.multiply(x_hat, self.weight.data, out=y)
            y += self.bias.data

        d = self.dim  # tokens as rows: (M, D), (M, D), (M, 1), (M, D)
        kernels.parallel(tokens, x.reshape(-1, d), x_hat.reshape(-1, d), rstd.reshape(-1, 1),
                         y.reshape(-1, d))
        self.save_for_backward(x_hat, rstd)
        return y

    def backward(self, dout):
        xp = backend.xp_of(dout)
        x_hat, rstd = self.saved()
        d = self.dim
        dout2, x_hat2 = dout.reshape(-1, d), x_hat.reshape(-1, d)
        self.weight.grad += (dout2 * x_hat2).sum(axis=0)
        self.bias.grad += dout2.sum(axis=0)
        dx = xp.empty(dout.shape, dtype=dout.dtype)  # C order: dx.reshape below is a view

        def tokens(dout, x_hat, rstd, dx):
            g = dout * self.weight.data  # dL/dx_hat
            xp.subtract(g, g.mean(axis=-1, keepdims=True), out=dx)
            dx -= x_hat * (g * x_hat).mean(axis=-1, keepdims=True)
            dx *= rstd

        kernels.parallel(tokens, dout2, x_hat2, rstd.reshape(-1, 1), dx.reshape(-1, d))
        return dx

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"
