"""Linear: the affine map every projection in a transformer is made of."""

import math

from .. import backend, validate
from .module import Module, Parameter


class Linear(Module):
    """y = x W + b.

    Shapes: x (..., D_in) -> y (..., D_out); W (D_in, D_out), b (D_out,). All leading axes are
    folded into one, so the work is one 2-D matmul (B*N, D_in) @ (D_in, D_out).

    Backward: with g = dL/dy folded to (M, D_out) and x folded to (M, D_in),
    dL/dW = x^T g, dL/db = sum_rows g, dL/dx = g W^T.

    Init (``reset_parameters``): "trunc_normal" (ViT/timm) W ~ truncated normal(0, std), b = 0;
    "fan_in" (PyTorch's default for linear and convolution layers) W, b ~ U(-1/sqrt(D_in), 1/sqrt(D_in)).
    """

    INITS = ("trunc_normal", "fan_in")

    def __init__(self, in_features, out_features, bias=True, init="trunc_normal", std=0.02, rng=None,
                 dtype=None):
        validate.integer("Linear in_features", in_features, 1)
        validate.integer("Linear out_features", out_features, 1)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(backend.zeros((in_features, out_features), dtype))
        self.bias = Parameter(backend.zeros((out_features,), dtype)) if bias else None
        self.reset_parameters(init, std, rng)

    def reset_parameters(self, init="trunc_normal", std=0.02, rng=None):
        """Draw W and b afresh from ``init`` (one of INITS), with random generator ``rng``."""
        if init not in self.INITS:
            raise ValueError(f"Linear init must be one of {self.INITS}, got {init!r}")
        draw_weights(self.weight, self.bias, init, self.in_features, rng, std)

    def check_input(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear expected input (..., {self.in_features}), got shape {tuple(x.shape)}"
            )

    def forward(self, x):
        self.check_input(x)
        ### BEGIN SOLUTION a1.linear.forward
        x2 = x.reshape(-1, self.in_features)  # (M, D_in)
        y = x2 @ self.weight.data  # (M, D_out)
        if self.bias is not None:
            y = y + self.bias.data
        ### END SOLUTION
        self.save_for_backward(x2)
        return y.reshape(*x.shape[:-1], self.out_features)

    def backward(self, dout):
        (x2,) = self.saved()
        ### BEGIN SOLUTION a1.linear.backward
        g = dout.reshape(-1, self.out_features)  # (M, D_out)
        self.weight.grad += x2.T @ g
        if self.bias is not None:
            self.bias.grad += g.sum(axis=0)  # sum over the M rows
        dx2 = g @ self.weight.data.T  # (M, D_in)
        ### END SOLUTION
        return dx2.reshape(*dout.shape[:-1], self.in_features)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


def draw_weights(weight, bias, init, fan_in, rng=None, std=0.02):
    """Fill the Parameters ``weight`` and ``bias`` (None for none) from ``init``, as Linear's and
    Conv2d's reset_parameters: "trunc_normal" W ~ truncated normal(0, std), b = 0; "fan_in"
    W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    gen, W = backend.rng(rng), weight.data
    if init == "trunc_normal":
        W[...] = backend.trunc_normal(gen, W.shape, std, W.dtype)
        if bias is not None:
            bias.data[...] = 0
        return
    bound = 1.0 / math.sqrt(fan_in)
    W[...] = backend.uniform(gen, W.shape, -bound, bound, W.dtype)
    if bias is not None:
        bias.data[...] = backend.uniform(gen, bias.shape, -bound, bound, W.dtype)


def reset_layers(model, prefixes, init, rng):
    """Draw every Linear and Conv2d layer (every layer with ``reset_parameters``) of ``model`` whose
    name starts with one of ``prefixes`` afresh from ``init`` (a model's ``weight_init`` option),
    in the order the model registered them."""
    for name, m in model.named_modules():
        if hasattr(m, "reset_parameters") and name.startswith(prefixes):
            m.reset_parameters(init, rng=rng)
