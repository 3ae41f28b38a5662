"""2-D convolution, written as im2col: every output pixel is a column of the input window under
the kernel, and the convolution is one matrix product of the kernel with those columns."""

from .. import backend, validate
from .linear import Linear, draw_weights
from .module import Module, Parameter


def conv_output_size(n, k, s, p):
    """How many positions a k-wide kernel takes on n pixels padded by p, in steps of s."""
    return (n + 2 * p - k) // s + 1


def im2col(x, k, s, p):
    """cols[b, c, u, v, i, j] = x_pad[b, c, s i + u, s j + v]: the k x k window under the kernel
    at each output position (i, j), one kernel offset (u, v) at a time.

    Shapes: x (B, C, H, W) -> cols (B, C, k, k, H', W'), H' = (H + 2p - k) // s + 1.
    """
    xp = backend.xp_of(x)
    B, C, H, W = x.shape
    Ho, Wo = conv_output_size(H, k, s, p), conv_output_size(W, k, s, p)
    x_pad = xp.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))  # (B, C, H + 2p, W + 2p)
    cols = xp.empty((B, C, k, k, Ho, Wo), dtype=x.dtype)
    for u in range(k):
        for v in range(k):
            cols[:, :, u, v] = x_pad[:, :, u:u + s * Ho:s, v:v + s * Wo:s]
    return cols


def col2im(cols, shape, s, p):
    """The adjoint of im2col: each entry of ``cols`` added back to the input pixel it was copied
    from, so a pixel under several windows gets the sum of their entries.

    Shapes: cols (B, C, k, k, H', W') -> (B, C, H, W) of ``shape``.
    """
    xp = backend.xp_of(cols)
    B, C, k, _, Ho, Wo = cols.shape
    H, W = shape[2:]
    d_pad = xp.zeros((B, C, H + 2 * p, W + 2 * p), dtype=cols.dtype)
    for u in range(k):
        for v in range(k):
            d_pad[:, :, u:u + s * Ho:s, v:v + s * Wo:s] += cols[:, :, u, v]
    return d_pad[:, :, p:p + H, p:p + W]


def to_tokens(grid):
    """A feature map as a token sequence: (B, C, H, W) -> (B, H W, C), row-major as Patchify's."""
    B, C = grid.shape[:2]
    return grid.reshape(B, C, -1).transpose(0, 2, 1)


def to_grid(tokens, H, W):
    """The inverse of to_tokens: (B, H W, C) -> (B, C, H, W)."""
    B, _, C = tokens.shape
    return tokens.transpose(0, 2, 1).reshape(B, C, H, W)


class Conv2d(Module):
    """y[b, o, i, j] = sum_{c, u, v} W[o, c, u, v] x_pad[b, g(o) C/G + c, s i + u, s j + v] + b[o].

    ``groups`` G splits the C input and O output channels into G groups, each output channel
    seeing only its group's C/G inputs: G = 1 is the dense convolution, G = C = O the depthwise
    one (each channel filtered on its own, CvT's projections). Kernel k, stride s, padding p
    (zeros), the same along both axes.

    Shapes: x (B, C, H, W) -> y (B, O, H', W'), H' = (H + 2p - k) // s + 1; W (O, C/G, k, k), the
    reference layout; b (O,). im2col makes cols (B, G, C/G k k, H'W') and then per group
    y_g = W_g cols_g with W_g (O/G, C/G k k): one batched matrix product.

    Backward: it is a matrix product, so with dy_g = dL/dy_g: dL/dW_g = sum over the batch of
    dy_g cols_g^T, dL/db = sum of dy over b, i, j, dL/dcols_g = W_g^T dy_g; col2im adds dL/dcols
    back to the pixels (a pixel under several windows collects from all of them).

    Init: "trunc_normal" W ~ truncated normal(0.02), b = 0 (transformers' CvT); "fan_in"
    (PyTorch's default) W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C/G k k.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1, bias=True,
                 init="trunc_normal", rng=None, dtype=None):
        validate.integer("Conv2d in_channels", in_channels, 1)
        validate.integer("Conv2d out_channels", out_channels, 1)
        self.kernel_size = validate.integer("Conv2d kernel_size", kernel_size, 1)
        self.stride = validate.integer("Conv2d stride", stride, 1)
        self.padding = validate.integer("Conv2d padding", padding, 0)
        self.groups = validate.integer("Conv2d groups", groups, 1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d groups {groups} must divide in_channels {in_channels} and "
                             f"out_channels {out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        shape = (out_channels, in_channels // groups, kernel_size, kernel_size)
        self.weight = Parameter(backend.zeros(shape, dtype))
        self.bias = Parameter(backend.zeros((out_channels,), dtype)) if bias else None
        self.reset_parameters(init, rng)

    def reset_parameters(self, init="trunc_normal", rng=None):
        """Draw W and b afresh from ``init`` (one of Linear.INITS), with random generator ``rng``."""
        validate.choice("Conv2d init", init, Linear.INITS)
        draw_weights(self.weight, self.bias, init, self.weight.data[0].size, rng)  # fan_in = C/G k k

    def output_size(self, n):
        """The output's height (width) for an input of height (width) ``n``."""
        return conv_output_size(n, self.kernel_size, self.stride, self.padding)

    def check_input(self, x):
        k, p = self.kernel_size, self.padding
        if x.ndim != 4 or x.shape[1] != self.in_channels or min(x.shape[2:]) + 2 * p < k:
            raise ValueError(f"Conv2d expected images (B, {self.in_channels}, H, W) with H, W >= "
                             f"{k - 2 * p}, got shape {tuple(x.shape)}")

    def forward(self, x):
        self.check_input(x)
        k, s, p, G = self.kernel_size, self.stride, self.padding, self.groups
        B, _, H, W = x.shape
        Ho, Wo = self.output_size(H), self.output_size(W)
        cols = im2col(x, k, s, p).reshape(B, G, -1, Ho * Wo)  # (B, G, C/G k k, H'W')
        W_g = self.weight.data.reshape(G, self.out_channels // G, -1)  # (G, O/G, C/G k k)
        y = (W_g @ cols).reshape(B, self.out_channels, Ho, Wo)  # (B, O, H', W')
        if self.bias is not None:
            y = y + self.bias.data[:, None, None]
        self.save_for_backward(cols, x.shape)
        return y

    def backward(self, dout):
        cols, shape = self.saved()
        k, G = self.kernel_size, self.groups
        B, O, Ho, Wo = dout.shape
        dy = dout.reshape(B, G, O // G, Ho * Wo)  # (B, G, O/G, H'W')
        W_g = self.weight.data.reshape(G, O // G, -1)  # (G, O/G, C/G k k)
        self.weight.grad += (dy @ cols.swapaxes(-1, -2)).sum(axis=0).reshape(self.weight.shape)
        if self.bias is not None:
            self.bias.grad += dout.sum(axis=(0, 2, 3))
        dcols = W_g.swapaxes(-1, -2) @ dy  # (B, G, C/G k k, H'W')
        return col2im(dcols.reshape(B, self.in_channels, k, k, Ho, Wo), shape, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, groups={self.groups}, "
                f"bias={self.bias is not None}")
