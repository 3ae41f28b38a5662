"""Layer normalisation (Ba, Kiros & Hinton, 2016), applied per token."""

from .. import backend, kernels, validate
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

    def forward(self, x):
        if x.shape[-1] != self.dim:
            raise ValueError(f"LayerNorm expected input (..., {self.dim}), got {tuple(x.shape)}")
        xp = backend.xp_of(x)
        d = self.dim
        x_hat, y = xp.empty(x.shape, dtype=x.dtype), xp.empty(x.shape, dtype=x.dtype)  # C order
        rstd = xp.empty(x.shape[:-1] + (1,), dtype=x.dtype)  # 1 / sigma: (..., 1)

        def tokens(x, x_hat, rstd, y):  # on slabs of tokens (rows), one per CPU thread
            mu = xp.einsum("td->t", x) / d  # row means as contractions: faster than .mean(-1)
            xp.subtract(x, mu[:, None], out=x_hat)
            var = xp.einsum("td,td->t", x_hat, x_hat) / d
            xp.divide(1.0, xp.sqrt(var + self.eps), out=rstd[:, 0])
            x_hat *= rstd
            xp.multiply(x_hat, self.weight.data, out=y)
            y += self.bias.data

        # tokens as rows: (M, D), (M, D), (M, 1), (M, D)
        kernels.parallel(tokens, x.reshape(-1, d), x_hat.reshape(-1, d), rstd.reshape(-1, 1),
                         y.reshape(-1, d))
        self.save_for_backward(x_hat, rstd)
        return y

    def backward(self, dout):
        xp = backend.xp_of(dout)
        x_hat, rstd = self.saved()
        d, gamma = self.dim, self.weight.data
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

        kernels.parallel(tokens, dout2, x_hat2, rstd.reshape(-1, 1), dx, p)
        self.weight.grad += kernels.sum_rows(p)
        self.bias.grad += kernels.sum_rows(dout2)
        return dx.reshape(dout.shape)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"
