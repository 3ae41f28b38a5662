"""Swin's pieces (Liu et al., 2021): windows, the cyclic shift, relative position bias, patch merging.

Tokens live on a grid here: (B, H, W, C), channels last, as in the reference implementations.
"""

import numpy as np

from .. import backend, validate
from .attention import MultiHeadSelfAttention
from .linear import Linear
from .module import Module, Parameter
from .norm import LayerNorm


def _check_grid(layer, x, M=1):
    if x.ndim != 4 or x.shape[1] % M or x.shape[2] % M:
        raise ValueError(f"{type(layer).__name__} expected tokens on a grid (B, H, W, C) with H and W "
                         f"multiples of {M}, got shape {tuple(x.shape)}")


class WindowPartition(Module):
    """Cut the token grid into non-overlapping M x M windows: x -> windows.

    Shapes: x (B, H, W, C) -> (B * H/M * W/M, M*M, C), windows in row-major order over the
    (H/M, W/M) window grid, the tokens of each window row-major (as ``Patchify`` orders patches).
    Backward: a pure rearrangement, each entry moved once: the inverse reshape and transpose
    (``window_reverse``).
    """

    def __init__(self, window_size):
        self.window_size = validate.integer("window_size", window_size, 1)

    def forward(self, x):
        _check_grid(self, x, self.window_size)
        self.save_for_backward(x.shape)
        return window_partition(x, self.window_size)

    def backward(self, dout):
        (shape,) = self.saved()
        return window_reverse(dout, self.window_size, shape)

    def extra_repr(self):
        return f"window_size={self.window_size}"


def window_partition(x, M):
    """(B, H, W, C) -> (B * H/M * W/M, M*M, C): WindowPartition's forward, as a function."""
    B, H, W, C = x.shape
    ### BEGIN SOLUTION a4.window.partition
    x = x.reshape(B, H // M, M, W // M, M, C).transpose(0, 1, 3, 2, 4, 5)  # (B, H/M, W/M, M, M, C)
    windows = x.reshape(-1, M * M, C)
    ### END SOLUTION
    return windows


def window_reverse(windows, M, shape):
    """The inverse of window_partition: (B * H/M * W/M, M*M, C) -> (B, H, W, C) of ``shape``."""
    B, H, W, C = shape
    ### BEGIN SOLUTION a4.window.reverse
    x = windows.reshape(B, H // M, W // M, M, M, C).transpose(0, 1, 3, 2, 4, 5)  # (B, H/M, M, W/M, M, C)
    x = x.reshape(B, H, W, C)
    ### END SOLUTION
    return x


class CyclicShift(Module):
    """Roll the token grid by -s rows and -s columns (Swin's shifted windows): y[i, j] = x[i + s, j + s],
    indices mod H and W. ``shift`` s; the reverse shift is CyclicShift(-s).

    Shapes: (B, H, W, C) -> same. Backward: a permutation, so dL/dx is dL/dy rolled back by +s.
    """

    def __init__(self, shift):
        self.shift = validate.integer("shift", shift, None)

    def forward(self, x):
        _check_grid(self, x)
        self.save_for_backward(None)
        return cyclic_shift(x, self.shift)

    def backward(self, dout):
        self.saved()
        return cyclic_shift(dout, -self.shift)

    def extra_repr(self):
        return f"shift={self.shift}"


def cyclic_shift(x, s):
    """CyclicShift's forward, as a function: (B, H, W, C) rolled by -s along H and W."""
    return backend.xp_of(x).roll(x, (-s, -s), axis=(1, 2))


def shift_window_mask(H, W, M, s):
    """Swin's attention mask for shifted windows, (H/M * W/M, M*M, M*M): 0 where query and key
    came from the same region of the unshifted grid, -100 where they did not (the reference's
    fill). The grid is labelled in 3 x 3 regions, cut at -M and -s from each edge; after the
    shift by s, a window may hold tokens of up to four regions, which must not attend to each
    other."""
    ### BEGIN SOLUTION a4.shift_mask
    labels = np.zeros((H, W), dtype=np.int64)
    cuts = [slice(0, -M), slice(-M, -s), slice(-s, None)]
    for n, (rows, cols) in enumerate((r, c) for r in cuts for c in cuts):
        labels[rows, cols] = n
    M2 = M * M
    windows = labels.reshape(H // M, M, W // M, M).transpose(0, 2, 1, 3).reshape(-1, M2)  # (nW, M*M)
    mask = np.where(windows[:, :, None] == windows[:, None, :], 0.0, -100.0)  # (nW, M*M, M*M)
    ### END SOLUTION
    return mask


def relative_position_index(M):
    """(M*M, M*M) index into the ((2M-1)^2, heads) bias table: for query token i at (r_i, c_i) and
    key token j at (r_j, c_j) of an M x M window, (r_i - r_j + M - 1) (2M - 1) + (c_i - c_j + M - 1)."""
    ### BEGIN SOLUTION a4.relative_index
    r, c = np.divmod(np.arange(M * M), M)
    dr, dc = r[:, None] - r[None] + M - 1, c[:, None] - c[None] + M - 1  # each in [0, 2M - 2]
    index = dr * (2 * M - 1) + dc
    ### END SOLUTION
    return index


class RelativePositionBias(Module):
    """Swin's learned bias B of attention: B[h, i, j] = table[index[i, j], h], added to the scores
    A_ij = q_i k_j^T / sqrt(d) + B_(i-j); one table entry per relative offset (i - j) of two tokens
    in an M x M window.

    Shapes: forward() takes no input and returns B (heads, M*M, M*M); table ((2M-1)^2, heads),
    index (M*M, M*M) a non-persistent buffer (rebuilt from M). Init: truncated normal(0.02).
    Backward: each table entry was copied to every (i, j) of its offset, so its gradient is the
    sum of dL/dB over those: a scatter-add through the index (``backend.scatter_add``).
    """

    def __init__(self, window_size, num_heads, rng=None, dtype=None):
        M = validate.integer("window_size", window_size, 1)
        self.window_size, self.num_heads = M, validate.integer("num_heads", num_heads, 1)
        table = backend.trunc_normal(backend.rng(rng), ((2 * M - 1) ** 2, num_heads), 0.02, dtype)
        self.table = Parameter(table)
        self.register_buffer("index", backend.asarray(relative_position_index(M)), persistent=False)

    def forward(self):
        self.save_for_backward(None)
        n = self.window_size ** 2
        ### BEGIN SOLUTION a4.relative_bias.forward
        bias = self.table.data[self.index.reshape(-1)].reshape(n, n, -1).transpose(2, 0, 1)  # (heads, n, n)
        ### END SOLUTION
        return bias

    def backward(self, dout):
        self.saved()
        ### BEGIN SOLUTION a4.relative_bias.backward
        g = dout.transpose(1, 2, 0).reshape(-1, self.num_heads)  # (n*n, heads), rows as index.reshape(-1)
        backend.scatter_add(self.table.grad, self.index.reshape(-1), g)
        ### END SOLUTION
        return None

    def extra_repr(self):
        return f"window_size={self.window_size}, num_heads={self.num_heads}"


class WindowAttention(Module):
    """W-MSA and SW-MSA: multi-head self-attention inside each M x M window of the token grid,
    A = softmax(q k^T / sqrt(d) + B + mask) per window and head, with B the relative position
    bias. With a shift s > 0 (SW-MSA) the grid is first rolled by -s (CyclicShift), so that the
    windows straddle the previous layer's window borders, and rolled back by +s afterwards; the
    shift mask (-100 between tokens of different regions) keeps a window's pieces of the far
    edges apart.

    Shapes: x (B, N, C) with N = H*W tokens in row-major order over the ``resolution`` (H, W)
    -> (B, H, W, C) -> shifted -> windows (B, nW, M*M, C), nW = (H/M)(W/M) -> attention, the
    same MultiHeadSelfAttention as ViT's (``msa``), with bias B (h, M*M, M*M), plus the mask
    (nW, 1, M*M, M*M) for SW-MSA, broadcast over the batch -> the grid back -> (B, N, C). The
    mask is a non-persistent buffer ``attn_mask`` (none when s = 0).

    Backward: the reshapes and rolls are permutations, undone in reverse order (roll by +s
    becomes -s, window_reverse becomes window_partition); the attention's backward returns the
    windows' gradient and dL/d(B + mask), which summed over the windows is dL/dB, scattered
    into the bias table.
    """

    def __init__(self, dim, num_heads, resolution, window_size, shift=0, qkv_bias=True, attn_drop=0.0,
                 proj_drop=0.0, rng=None, dtype=None):
        H, W = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        M = validate.integer("window_size", window_size, 1)
        if validate.integer("resolution", H, 1) % M or validate.integer("resolution", W, 1) % M:
            raise ValueError(f"a {H}x{W} token grid is not cut into {M}x{M} windows: expected a "
                             f"resolution divisible by the window size {M}")
        self.shift = validate.integer("shift", shift, 0, M - 1)
        gen = backend.rng(rng)
        self.resolution, self.window_size = (H, W), M
        self.msa = MultiHeadSelfAttention(dim, num_heads, qkv_bias, attn_drop, proj_drop, rng=gen,
                                          dtype=dtype)
        self.relative_position_bias = RelativePositionBias(M, num_heads, rng=gen, dtype=dtype)
        if self.shift:
            mask = shift_window_mask(H, W, M, self.shift)[:, None]  # (nW, 1, M*M, M*M)
            self.register_buffer("attn_mask", backend.asarray(mask, dtype=backend.resolve_dtype(dtype)),
                                 persistent=False)

    @property
    def attn_probs(self):
        """Attention probabilities A of the last forward, (B, nW, h, M*M, M*M)."""
        return self.msa.attn_probs

    def forward(self, x):
        (H, W), M, s = self.resolution, self.window_size, self.shift
        if x.ndim != 3 or x.shape[1] != H * W:
            raise ValueError(f"WindowAttention expected tokens (B, {H * W}, C) of a {H}x{W} grid, "
                             f"got shape {tuple(x.shape)}")
        B, N, C = x.shape
        x = cyclic_shift(x.reshape(B, H, W, C), s)  # (B, H, W, C)
        windows = window_partition(x, M).reshape(B, -1, M * M, C)  # (B, nW, M*M, C)
        bias = self.relative_position_bias.forward()  # (h, M*M, M*M)
        if s:
            bias = bias + self.attn_mask  # (nW, h, M*M, M*M)
        out = self.msa.forward(windows, bias).reshape(-1, M * M, C)  # (B*nW, M*M, C)
        return cyclic_shift(window_reverse(out, M, (B, H, W, C)), -s).reshape(B, N, C)

    def backward(self, dout):
        (H, W), M, s = self.resolution, self.window_size, self.shift
        B, N, C = dout.shape
        d = cyclic_shift(dout.reshape(B, H, W, C), s)
        dwindows, dbias = self.msa.backward(window_partition(d, M).reshape(B, -1, M * M, C))
        self.relative_position_bias.backward(dbias.sum(axis=0) if s else dbias)  # (h, M*M, M*M)
        d = window_reverse(dwindows.reshape(-1, M * M, C), M, (B, H, W, C))
        return cyclic_shift(d, -s).reshape(B, N, C)

    def extra_repr(self):
        return f"resolution={self.resolution}, window_size={self.window_size}, shift={self.shift}"


class PatchMerging(Module):
    """Swin's downsampling: each 2 x 2 group of neighbours concatenated, x_m = [x(2i, 2j);
    x(2i+1, 2j); x(2i, 2j+1); x(2i+1, 2j+1)] (the reference's order), then LN(4C) and a Linear
    4C -> 2C without bias.

    Shapes: (B, H, W, C) -> (B, H/2, W/2, 4C) -> (B, H/2, W/2, 2C). Backward: LN's and Linear's,
    then the gradient of each of the four channel blocks goes back to its neighbour's position.
    """

    def __init__(self, dim, eps=1e-5, rng=None, dtype=None):
        self.dim = validate.integer("PatchMerging dim", dim, 1)
        self.norm = LayerNorm(4 * dim, eps=eps, dtype=dtype)
        self.reduction = Linear(4 * dim, 2 * dim, bias=False, rng=rng, dtype=dtype)

    def forward(self, x):
        _check_grid(self, x, 2)
        if x.shape[3] != self.dim:
            raise ValueError(f"PatchMerging expected (B, H, W, {self.dim}), got {tuple(x.shape)}")
        B, H, W, C = x.shape
        self.save_for_backward(x.shape)
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).transpose(0, 1, 3, 4, 2, 5)  # (B, H/2, W/2, dw, dh, C)
        x = x.reshape(B, H // 2, W // 2, 4 * C)  # blocks (dh, dw) = (0,0), (1,0), (0,1), (1,1)
        return self.reduction.forward(self.norm.forward(x))

    def backward(self, dout):
        (shape,) = self.saved()
        B, H, W, C = shape
        d = self.norm.backward(self.reduction.backward(dout)).reshape(B, H // 2, W // 2, 2, 2, C)
        return d.transpose(0, 1, 4, 2, 3, 5).reshape(B, H, W, C)

    def extra_repr(self):
        return f"dim={self.dim}"
