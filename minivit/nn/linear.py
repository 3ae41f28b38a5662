"""Linear: the affine map every projection in a transformer is made of."""

from .. import backend, kernels
from .module import Module, Parameter


class Linear(Module):
    """y = x W + b.

    Shapes: x (..., D_in) -> y (..., D_out); W (D_in, D_out), b (D_out,). All leading axes are
    folded into one, so the work is one 2-D matmul (B*N, D_in) @ (D_in, D_out).

    Backward: with g = dL/dy folded to (M, D_out) and x folded to (M, D_in),
    dL/dW = x^T g, dL/db = sum_rows g, dL/dx = g W^T.

    Init (ViT/timm): W ~ truncated normal(0, std=0.02), b = 0.
    """

    def __init__(self, in_features, out_features, bias=True, std=0.02, rng=None, dtype=None):
        self.in_features, self.out_features = in_features, out_features
        gen = backend.rng(rng)
        self.weight = Parameter(backend.trunc_normal(gen, (in_features, out_features), std, dtype))
        if bias:
            self.bias = Parameter(backend.zeros((out_features,), dtype))
        else:
            self.bias = None

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear expected input (..., {self.in_features}), got shape {tuple(x.shape)}"
            )
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (M, D_in)
        y = x2 @ self.weight.data  # (M, D_out)
        if self.bias is not None:
            kernels.add_rows(y, self.bias.data)  # y += b, on every row
        self.save_for_backward(x2)
        return y.reshape(*lead, self.out_features)

    def backward(self, dout):
        (x2,) = self.saved()
        lead = dout.shape[:-1]
        g = dout.reshape(-1, self.out_features)  # (M, D_out)
        self.weight.grad += x2.T @ g
        if self.bias is not None:
            self.bias.grad += kernels.sum_rows(g)  # sum over the M rows
        return (g @ self.weight.data.T).reshape(*lead, self.in_features)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"
