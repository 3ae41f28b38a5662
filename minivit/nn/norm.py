"""Normalisation: LayerNorm per token (Ba, Kiros & Hinton, 2016), BatchNorm per channel over a batch
(Ioffe & Szegedy, 2015)."""

from .. import backend, validate
from .module import Module, Parameter


def normalize_backward(g, x_hat, axis):
    """sigma dL/dx, given g = dL/dx_hat, for x_hat = (x - mu) / sigma with mu and sigma^2 the mean and
    (biased) variance over ``axis`` (an int or a tuple): g - mean(g) - x_hat mean(g x_hat).

    Derivation: x_hat_i depends on x_j directly (1/sigma), through mu (-1/(n sigma)) and through
    sigma (-x_hat_i x_hat_j / (n sigma)); contracting with g gives the three terms, means over the n
    values of ``axis``. LayerNorm (the features) and BatchNorm2d (batch and pixels) both end in it.
    """
    ### BEGIN SOLUTION a1.normalize.backward
    d = g - g.mean(axis=axis, keepdims=True) - x_hat * (g * x_hat).mean(axis=axis, keepdims=True)
    ### END SOLUTION
    return d


class LayerNorm(Module):
    """LN(x) = gamma * (x - mu) / sqrt(sigma^2 + eps) + beta, over the last axis.

    mu, sigma^2: mean and (biased) variance of each token's D features.
    Shapes: x (..., D) -> same; gamma = weight (D,), beta = bias (D,). ViT uses eps = 1e-6.

    Backward: with x_hat = (x - mu) / sigma and g = gamma * dL/dy, differentiating through mu and
    sigma gives dL/dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sigma (means over D:
    ``normalize_backward``);
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
        ### BEGIN SOLUTION a1.layernorm.forward
        mu = x.mean(axis=-1, keepdims=True)  # (..., 1)
        var = x.var(axis=-1, keepdims=True)  # (..., 1), biased
        rstd = 1.0 / xp.sqrt(var + self.eps)  # 1 / sigma
        x_hat = (x - mu) * rstd
        y = self.weight.data * x_hat + self.bias.data
        ### END SOLUTION
        self.save_for_backward(x_hat, rstd)
        return y

    def backward(self, dout):
        x_hat, rstd = self.saved()
        ### BEGIN SOLUTION a1.layernorm.backward
        d = self.dim
        self.weight.grad += (dout * x_hat).reshape(-1, d).sum(axis=0)  # sum over every token
        self.bias.grad += dout.reshape(-1, d).sum(axis=0)
        g = dout * self.weight.data  # dL/dx_hat
        dx = rstd * normalize_backward(g, x_hat, axis=-1)
        ### END SOLUTION
        return dx

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


class BatchNorm2d(Module):
    """BN(x) = gamma * (x - mu) / sqrt(sigma^2 + eps) + beta per channel (Ioffe & Szegedy, 2015).

    Training: mu and sigma^2 are the mean and (biased) variance of the channel over the batch and
    the image, n = B H W values; the running estimates follow them, running_mean <- (1 - m)
    running_mean + m mu and running_var <- (1 - m) running_var + m sigma^2 n / (n - 1) (unbiased),
    momentum m = 0.1 (PyTorch's rule). Eval: the running estimates stand in for mu and sigma^2.
    Shapes: x (B, C, H, W) -> same; gamma = weight (C,), beta = bias (C,); running_mean and
    running_var (C,) are persistent buffers (saved, not learned). eps 1e-5.

    Backward, training: the statistics depend on x, and LayerNorm's derivation over the other
    axes gives, with g = gamma * dL/dy and means over (B, H, W),
    dL/dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sigma. Eval: the statistics are constants,
    dL/dx = g / sigma. Both: dL/dgamma = sum of dL/dy * x_hat, dL/dbeta = sum of dL/dy over (B, H, W).
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=None):
        self.num_features = validate.integer("BatchNorm2d num_features", num_features, 1)
        self.eps = validate.number("BatchNorm2d eps", eps, 0.0)
        self.momentum = validate.number("BatchNorm2d momentum", momentum, 0.0, 1.0)
        self.weight = Parameter(backend.ones((num_features,), dtype))
        self.bias = Parameter(backend.zeros((num_features,), dtype))
        self.register_buffer("running_mean", backend.zeros((num_features,), dtype))
        self.register_buffer("running_var", backend.ones((num_features,), dtype))

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm2d expected (B, {self.num_features}, H, W), got {tuple(x.shape)}")
        xp = backend.xp_of(x)
        axes = (0, 2, 3)  # statistics per channel
        if self.training:
            n = x.size // self.num_features
            if n < 2:
                raise ValueError(f"BatchNorm2d in training mode needs more than one value per channel, "
                                 f"got shape {tuple(x.shape)}")
            mu, var = x.mean(axis=axes), x.var(axis=axes)  # (C,), biased
            m, dtype = self.momentum, self.running_mean.dtype  # a float64 batch leaves float32 stats float32
            self.running_mean = ((1 - m) * self.running_mean + m * mu).astype(dtype)
            self.running_var = ((1 - m) * self.running_var + m * var * (n / (n - 1))).astype(dtype)
        else:
            mu, var = self.running_mean, self.running_var
        rstd = 1.0 / xp.sqrt(var + self.eps)  # 1 / sigma, (C,)
        x_hat = (x - mu[:, None, None]) * rstd[:, None, None]
        self.save_for_backward(x_hat, rstd, self.training)
        return self.weight.data[:, None, None] * x_hat + self.bias.data[:, None, None]

    def backward(self, dout):
        x_hat, rstd, batch_statistics = self.saved()
        axes = (0, 2, 3)
        self.weight.grad += (dout * x_hat).sum(axis=axes)
        self.bias.grad += dout.sum(axis=axes)
        g = dout * self.weight.data[:, None, None]
        if batch_statistics:
            g = normalize_backward(g, x_hat, axis=axes)
        return g * rstd[:, None, None]

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
