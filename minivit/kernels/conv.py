"""Conv2d's fast path: the same equation as ``minivit.nn.Conv2d``, channels last, on every CPU thread.

Channels last, (B, H, W, C), because CvT's convolutions read and write tokens, which are laid out
so: ``to_grid`` of tokens and ``to_tokens`` of these outputs are views, not copies.

* Depthwise (groups = in = out channels: CvT's q, k, v projections): the equation's loops, written
  as a C programmer would (``depthwise_forward``, ``depthwise_backward``) and compiled by Numba,
  each thread taking whole images. The channel loop is innermost, over contiguous values, so the
  compiler vectorises it; window offsets that fall on the padding are skipped: no padded copy.
  The backward walks the same windows: each hands dy W back to the pixels it read (dx) and adds
  dy x to its offset's dW, kept per image and summed afterwards (no two threads write one
  number). NumPy alone makes a pass over memory per offset or per einsum: on tokens, its best (an
  einsum over the sliding windows of a padded copy) took 1.8x (stride 1) and 5.0x (stride 2)
  PyTorch's time; these loops take 0.4x and 1.0-1.2x (docs/benchmarks.md). Without Numba, the
  plain body runs.
* Dense (groups = 1, from 16 input channels: CvT's second and third token embeddings): im2col
  with each output pixel's window as a row of k k C values (copied in runs of C contiguous
  values, image by image on the threads), then one large matrix product with W as a (k k C, O)
  matrix, whose result is already the tokens; dW and d(cols) are single products too, and
  col2im adds back image by image on the threads. On the first embedding, of RGB images, the
  runs would be 3 values long: the plain body's channels-first im2col is faster there.
* Other group counts, a dense padding of the kernel's width or more, and CuPy arrays run the
  plain body.
"""

import warnings

import numpy as np

from .. import backend
from ..nn.conv import Conv2d
from . import register
from .linear import add_rows, sum_rows
from .threads import parallel

_compiled = {}  # "loops": the two loops below compiled by Numba, or None without it; set on first use


def _takes(layer):
    """Which fast path takes this convolution: "depthwise" (with Numba), "dense" (groups 1, at
    least 16 input channels, padding under the kernel's width), or None (the plain body: other
    groups, CuPy, and images of a few channels, whose channels-last runs are too short to copy
    fast: RGB)."""
    if backend.is_cupy(layer.weight.data):
        return None
    if layer.groups == layer.in_channels == layer.out_channels:
        return "depthwise" if _loops() else None
    dense = layer.groups == 1 and layer.in_channels >= 16 and layer.padding < layer.kernel_size
    return "dense" if dense else None


def depthwise_forward(x, w, s, p, y):
    """y[b, i, j, c] = sum_{u, v} x[b, s i + u - p, s j + v - p, c] w[u, v, c], offsets outside x
    (the zero padding) skipped. x (B, H, W, C), w (k, k, C), y (B, H', W', C), written."""
    B, H, W, C = x.shape
    k, Ho, Wo = w.shape[0], y.shape[1], y.shape[2]
    for b in range(B):
        for i in range(Ho):
            for j in range(Wo):
                y[b, i, j, :] = 0
                for u in range(k):
                    r = s * i + u - p
                    if 0 <= r < H:
                        for v in range(k):
                            q = s * j + v - p
                            if 0 <= q < W:
                                for c in range(C):
                                    y[b, i, j, c] += x[b, r, q, c] * w[u, v, c]


def depthwise_backward(x, w, dy, s, p, dx, dw):
    """Each output's window hands its gradient back to the pixels it read: for r = s i + u - p and
    q = s j + v - p inside x, dx[b, r, q, c] += dy[b, i, j, c] w[u, v, c] and dw[b, u, v, c] +=
    dy[b, i, j, c] x[b, r, q, c]. x, dx (B, H, W, C), w (k, k, C), dy (B, H', W', C), dw (B, k, k, C):
    each image's share of dW. dx and dw are overwritten, image by image (one image's dx stays in
    the core's cache while its windows add to it)."""
    B, H, W, C = x.shape
    k, Ho, Wo = w.shape[0], dy.shape[1], dy.shape[2]
    for b in range(B):
        dx[b] = 0
        dw[b] = 0
        for i in range(Ho):
            for j in range(Wo):
                for u in range(k):
                    r = s * i + u - p
                    if 0 <= r < H:
                        for v in range(k):
                            q = s * j + v - p
                            if 0 <= q < W:
                                for c in range(C):
                                    dx[b, r, q, c] += dy[b, i, j, c] * w[u, v, c]
                                for c in range(C):
                                    dw[b, u, v, c] += dy[b, i, j, c] * x[b, r, q, c]


def _loops():
    """(forward, backward): the two loops above compiled by Numba, machine code that releases the
    interpreter lock so that the threads run it at once; None, with a warning, where Numba cannot
    be imported. Compiled on first use per dtype, then cached on disk."""
    if "loops" not in _compiled:
        try:
            import numba
        except ImportError as e:
            warnings.warn(f"Numba could not be imported ({e}): depthwise convolutions run the plain body, "
                          f"several times slower")
            _compiled["loops"] = None
        else:
            jit = numba.njit(nogil=True, cache=True)
            _compiled["loops"] = jit(depthwise_forward), jit(depthwise_backward)
    return _compiled["loops"]


def _channels_last(a, dtype=None):
    """a (B, C, H, W) -> (B, H, W, C), contiguous, of ``dtype`` (default a's): free for a view of
    tokens, else a copy made on the threads."""
    t, dtype = a.transpose(0, 2, 3, 1), dtype or a.dtype
    if t.flags.c_contiguous and t.dtype == dtype:
        return t
    out = np.empty(t.shape, dtype=dtype)
    parallel(np.copyto, out, t)
    return out


def _channels_last_padded(x, p):
    """x (B, C, H, W) -> (B, H + 2p, W + 2p, C), zeros around: each pixel's C channels contiguous."""
    B, C, H, W = x.shape
    x_pad = np.zeros((B, H + 2 * p, W + 2 * p, C), dtype=x.dtype)
    x_pad[:, p:p + H, p:p + W] = x.transpose(0, 2, 3, 1)  # a plain copy when x is a view of tokens
    return x_pad


def _shifted(a, u, v, s, Ho, Wo):
    """The view a[:, s i + u, s j + v] over the output positions (i, j), of a channels-last a."""
    return a[:, u:u + s * Ho:s, v:v + s * Wo:s]


def _depthwise_kernel(weight):
    """W (C, 1, k, k) as a contiguous (k, k, C) array: the channel loop innermost, over contiguous values."""
    return np.ascontiguousarray(weight[:, 0].transpose(1, 2, 0))


def _dense_kernel(weight):
    """W (O, C, k, k) as the (k k C, O) matrix that multiplies channels-last im2col rows."""
    O = weight.shape[0]
    return weight.transpose(2, 3, 1, 0).reshape(-1, O)


def forward(layer, x):
    path = _takes(layer)
    if path is None:
        return Conv2d.forward.__wrapped__(layer, x)
    layer.check_input(x)
    k, s, p = layer.kernel_size, layer.stride, layer.padding
    B, C, H, W = x.shape
    Ho, Wo = layer.output_size(H), layer.output_size(W)
    if path == "depthwise":
        x = _channels_last(x)  # (B, H, W, C)
        w, loop = _depthwise_kernel(layer.weight.data), _loops()[0]
        y = np.empty((B, Ho, Wo, C), dtype=x.dtype)
        parallel(lambda x, y: loop(x, w, s, p, y), x, y)
        if layer.bias is not None:
            y += layer.bias.data
        layer.save_for_backward(x, None)
        return y.transpose(0, 3, 1, 2)  # (B, C, H', W'), a view: to_tokens of it is free
    x_pad = _channels_last_padded(x, p)  # (B, H + 2p, W + 2p, C)
    cols = np.empty((B, Ho, Wo, k, k, C), dtype=x.dtype)  # im2col, a row per output pixel

    def im2col(x_pad, cols):
        for u in range(k):
            for v in range(k):
                cols[:, :, :, u, v] = _shifted(x_pad, u, v, s, Ho, Wo)  # runs of C contiguous values

    parallel(im2col, x_pad, cols, chunked=True)
    cols = cols.reshape(B * Ho * Wo, -1)  # (B H' W', k k C)
    y = cols @ _dense_kernel(layer.weight.data)  # (B H' W', O): one matrix product, on every thread
    if layer.bias is not None:
        add_rows(y, layer.bias.data)
    layer.save_for_backward(cols, x.shape)
    return y.reshape(B, Ho, Wo, -1).transpose(0, 3, 1, 2)  # (B, O, H', W'), a view of tokens


def backward(layer, dout):
    path = _takes(layer)
    if path is None:
        return Conv2d.backward.__wrapped__(layer, dout)
    saved, shape = layer.saved()
    k, s, p = layer.kernel_size, layer.stride, layer.padding
    O, Ho, Wo = dout.shape[1:]
    dy = _channels_last(dout, saved.dtype)  # (B, H', W', O)
    if layer.bias is not None:
        layer.bias.grad += sum_rows(dy.reshape(-1, O))
    if path == "depthwise":
        x, w, loop = saved, _depthwise_kernel(layer.weight.data), _loops()[1]
        dx, dw = np.empty_like(x), np.empty((x.shape[0], k, k, O), dtype=x.dtype)  # dW per image
        parallel(lambda x, dy, dx, dw: loop(x, w, dy, s, p, dx, dw), x, dy, dx, dw)
        layer.weight.grad += dw.sum(axis=0).transpose(2, 0, 1)[:, None]  # (C, 1, k, k)
        return dx.transpose(0, 3, 1, 2)  # (B, C, H, W), a view
    (B, C, H, W), cols, dy = shape, saved, dy.reshape(-1, O)  # cols (B H' W', k k C), dy (B H' W', O)
    layer.weight.grad += (cols.T @ dy).reshape(k, k, C, O).transpose(3, 2, 0, 1)
    dcols = (dy @ _dense_kernel(layer.weight.data).T).reshape(B, Ho, Wo, k, k, C)
    d_pad = np.zeros((B, H + 2 * p, W + 2 * p, C), dtype=dy.dtype)

    def col2im(dcols, d_pad):
        for u in range(k):
            for v in range(k):
                _shifted(d_pad, u, v, s, Ho, Wo)[...] += dcols[:, :, :, u, v]

    parallel(col2im, dcols, d_pad, chunked=True)
    return d_pad[:, p:p + H, p:p + W].transpose(0, 3, 1, 2)  # (B, C, H, W), a view


register(Conv2d, forward, backward)
