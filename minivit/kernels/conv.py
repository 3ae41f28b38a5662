"""Conv2d's fast path: the same equation as ``minivit.nn.Conv2d``, channels last, on every CPU thread.

Channels last, (B, H, W, C), because CvT's convolutions read and write tokens, which are laid out
so: ``to_grid`` of tokens and ``to_tokens`` of these outputs are views, not copies.

* Depthwise (groups = in = out channels: CvT's q, k, v projections): y[b, i, j, c] = sum over
  the kernel offsets (u, v) of x_pad[b, s i + u, s j + v, c] W[c, u, v], one einsum over the
  sliding k x k windows of the padded input, a strided view of it: no k^2-times larger im2col
  copy and no stack of one-row matrix products. dW is the same sum of dy times the windows; dx
  is the correlation of dy with the kernel turned by 180 degrees at stride 1, and at larger
  strides dy W[:, u, v] added back where each offset's products came from. Each thread takes
  whole images.
* Dense (groups = 1, from 16 input channels: CvT's second and third token embeddings): im2col
  with each output pixel's window as a row of k k C values (copied in runs of C contiguous
  values, image by image on the threads), then one large matrix product with W as a (k k C, O)
  matrix, whose result is already the tokens; dW and d(cols) are single products too, and
  col2im adds back image by image on the threads. On the first embedding, of RGB images, the
  runs would be 3 values long: the plain body's channels-first im2col is faster there.
* Other group counts, a padding of the kernel's width or more, and CuPy arrays run the plain body.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import backend
from ..nn.conv import Conv2d
from . import register
from .linear import add_rows, sum_rows
from .threads import parallel


def _takes(layer):
    """Which fast path takes this convolution: "depthwise", "dense" (groups 1, at least 16 input
    channels), or None (the plain body: other groups, padding of a kernel's width or more, CuPy, and
    images of a few channels, whose channels-last runs are too short to copy fast: RGB)."""
    if layer.padding >= layer.kernel_size or backend.is_cupy(layer.weight.data):
        return None
    if layer.groups == layer.in_channels == layer.out_channels:
        return "depthwise"
    return "dense" if layer.groups == 1 and layer.in_channels >= 16 else None


def _channels_last_padded(x, p):
    """x (B, C, H, W) -> (B, H + 2p, W + 2p, C), zeros around: each pixel's C channels contiguous."""
    B, C, H, W = x.shape
    x_pad = np.zeros((B, H + 2 * p, W + 2 * p, C), dtype=x.dtype)
    x_pad[:, p:p + H, p:p + W] = x.transpose(0, 2, 3, 1)  # a plain copy when x is a view of tokens
    return x_pad


def _shifted(a, u, v, s, Ho, Wo):
    """The view a[:, s i + u, s j + v] over the output positions (i, j), of a channels-last a."""
    return a[:, u:u + s * Ho:s, v:v + s * Wo:s]


def _correlate(a, w, s, out):
    """out[b, i, j, c] = sum_{u, v} a[b, s i + u, s j + v, c] w[u, v, c]: the depthwise correlation
    as one einsum over the sliding k x k windows of ``a`` (a view: no im2col copy), image by image
    on the threads. a (B, H, W, C), w (k, k, C), out (B, H', W', C)."""
    k, (Ho, Wo) = w.shape[0], out.shape[1:3]

    def images(a, out):
        windows = sliding_window_view(a, (k, k), axis=(1, 2))[:, :s * Ho:s, :s * Wo:s]  # (b, H', W', C, k, k)
        np.einsum("bhwcuv,uvc->bhwc", windows, w, out=out)

    parallel(images, a, out)


def _depthwise_kernel(weight):
    """W (C, 1, k, k) as a contiguous (k, k, C) array (einsum is several times slower on a strided one)."""
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
    x_pad = _channels_last_padded(x, p)  # (B, H + 2p, W + 2p, C)
    if path == "depthwise":
        y = np.empty((B, Ho, Wo, C), dtype=x.dtype)
        _correlate(x_pad, _depthwise_kernel(layer.weight.data), s, y)
        if layer.bias is not None:
            y += layer.bias.data
        layer.save_for_backward(x_pad, x.shape)
        return y.transpose(0, 3, 1, 2)  # (B, C, H', W'), a view: to_tokens of it is free
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
    saved, (B, C, H, W) = layer.saved()
    k, s, p = layer.kernel_size, layer.stride, layer.padding
    O, Ho, Wo = dout.shape[1:]
    dy = np.ascontiguousarray(dout.transpose(0, 2, 3, 1), dtype=saved.dtype)  # (B, H', W', O): free
    # from a view of tokens
    if layer.bias is not None:
        layer.bias.grad += sum_rows(dy.reshape(-1, O))
    if path == "depthwise":
        x_pad = saved
        # dW[c, u, v] = sum over b, i, j of dy[b, i, j, c] x_pad[b, s i + u, s j + v, c]
        dw = np.empty((B, k, k, C), dtype=dy.dtype)  # each image's share

        def images(dy, x_pad, dw):
            windows = sliding_window_view(x_pad, (k, k), axis=(1, 2))[:, :s * Ho:s, :s * Wo:s]
            np.einsum("bhwc,bhwcuv->buvc", dy, windows, out=dw)

        parallel(images, dy, x_pad, dw)
        layer.weight.grad += dw.sum(axis=0).transpose(2, 0, 1)[:, None]  # (C, 1, k, k)
        # dx: dy[i, j] W[u, v] lands on pixel (s i + u - p, s j + v - p)
        if s == 1:  # a correlation of dy, padded by k - 1 - p, with the kernel turned by 180 degrees
            d = np.zeros((B, H + k - 1, W + k - 1, C), dtype=dy.dtype)
            d[:, k - 1 - p:k - 1 - p + Ho, k - 1 - p:k - 1 - p + Wo] = dy
            dx = np.empty((B, H, W, C), dtype=dy.dtype)
            _correlate(d, _depthwise_kernel(layer.weight.data[:, :, ::-1, ::-1]), 1, dx)
            return dx.transpose(0, 3, 1, 2)  # (B, C, H, W), a view
        # strided: a correlation would run over the zeros between dy's entries; add each offset's
        # products where they land instead (measured 1.6x faster at stride 2, 2x slower at stride 1)
        w = _depthwise_kernel(layer.weight.data)
        d_pad = np.zeros(x_pad.shape, dtype=dy.dtype)

        def scatter(dy, d_pad):
            tmp = np.empty(dy.shape, dtype=dy.dtype)
            for u in range(k):
                for v in range(k):
                    np.multiply(dy, w[u, v], out=tmp)
                    _shifted(d_pad, u, v, s, Ho, Wo)[...] += tmp

        parallel(scatter, dy, d_pad, chunked=True)
        return d_pad[:, p:p + H, p:p + W].transpose(0, 3, 1, 2)  # (B, C, H, W), a view
    cols, dy = saved, dy.reshape(-1, O)  # (B H' W', k k C), (B H' W', O)
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
