"""Scaled dot-product attention and multi-head self-attention (Vaswani et al., 2017)."""

from .. import backend, kernels, validate
from .activation import softmax, softmax_backward
from .linear import Linear
from .module import Module
from .regularize import Dropout


def sum_to_shape(g, shape):
    """Sum a broadcast gradient ``g`` back down to ``shape`` (the inverse of broadcasting)."""
    lead = g.ndim - len(shape)
    broadcast = tuple(i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1)
    axes = tuple(range(lead)) + broadcast
    return g.sum(axis=axes, keepdims=True).reshape(shape) if axes else g


def _token_major(xp, shape, dtype):
    """An empty array of ``shape`` (..., h, N, d), stored as (..., N, h, d) in memory."""
    if len(shape) < 3:
        return xp.empty(shape, dtype=dtype)
    return xp.empty(shape[:-3] + (shape[-2], shape[-3], shape[-1]), dtype=dtype).swapaxes(-3, -2)


class ScaledDotProductAttention(Module):
    """A = softmax(s q k^T + bias), masked where mask is False;  out = A v;  s = d^-1/2 by default.

    Shapes: q (B, h, N, d), k and v (B, h, M, d) -> out (B, h, N, d); A (B, h, N, M).
    bias (optional, float) broadcasts to (B, h, N, M): Swin's relative position bias.
    mask (optional, bool, True = attend) broadcasts to (B, h, N, M): Swin's shifted windows.
    q, k, v come from the caller, so a layer that projects them its own way (CvT's
    convolutions) reuses this; ``scale`` s replaces d^-1/2 where a model scales otherwise (CvT
    scales by its full width, D^-1/2). The probabilities A of the last forward stay in
    ``self.attn_probs``.

    Backward: dv = A^T g and dA = g v^T (g = dL/dout); through the softmax
    dS = A * (dA - rowsum(dA * A)); then dq = s dS k, dk = s dS^T q,
    dbias = dS summed over the axes the bias was broadcast along. ``backward(dout, out=(dq, dk,
    dv))`` writes the three gradients into given arrays (multi-head attention passes views of its
    fused d[q, k, v] buffer, so no copies are made).

    Memory layout (not semantics): the scores become A in place, and ``out`` is stored token-major,
    (B, N, h, d) in memory, so that merging the heads back to (B, N, h*d) is a free reshape. The
    products are ``kernels.matmul``: the B*h small matrix products spread over the CPU threads.
    """

    def __init__(self, attn_drop=0.0, scale=None, rng=None):
        if scale is not None:
            validate.number("attention scale", scale, 0.0, low_open=True)
        self.scale = scale
        self.attn_drop = Dropout(attn_drop, rng=rng)
        self.attn_probs = None

    def forward(self, q, k, v, bias=None, mask=None):
        xp = backend.xp_of(q)
        scale = q.shape[-1] ** -0.5 if self.scale is None else self.scale
        s = kernels.matmul(q * scale, k.swapaxes(-1, -2))  # (B, h, N, M)
        if bias is not None:
            s += bias
        if mask is not None:
            s = xp.where(mask, s, -xp.inf)
        a = softmax(s, out=s)
        self.attn_probs = a
        a_drop = self.attn_drop.forward(a)
        self.save_for_backward(q, k, v, a, a_drop, scale, None if bias is None else bias.shape)
        return kernels.matmul(a_drop, v, out=_token_major(xp, q.shape[:-1] + v.shape[-1:], q.dtype))

    def backward(self, dout, out=None):
        q, k, v, a, a_drop, scale, bias_shape = self.saved()
        dq, dk, dv = out if out is not None else (None, None, None)
        dv = kernels.matmul(a_drop.swapaxes(-1, -2), dout, out=dv)  # (B, h, M, d)
        da = self.attn_drop.backward(kernels.matmul(dout, v.swapaxes(-1, -2)))  # (B, h, N, M)
        ds = softmax_backward(a, da, out=da)
        dq = kernels.matmul(ds, k, out=dq)
        dq *= scale
        dk = kernels.matmul(ds.swapaxes(-1, -2), q, out=dk)
        dk *= scale
        if bias_shape is None:
            return dq, dk, dv
        return dq, dk, dv, sum_to_shape(ds, bias_shape)


class MultiHeadSelfAttention(Module):
    """MSA(z) = [SA_1(z); ...; SA_h(z)] U_msa, with [q, k, v] = z U_qkv split into h heads.

    Shapes: z (B, N, D) -> (B, N, D); U_qkv = qkv.weight (D, 3D) fused over q, k, v and the
    heads (head j of q is columns j*d..(j+1)*d of the first D), U_msa = proj.weight (D, D),
    d = D / h; scale d^-1/2 unless ``scale`` says otherwise. ``bias`` and ``mask`` are passed to
    the attention (see ScaledDotProductAttention). Any number of extra tokens (class,
    distillation) just adds to N.

    Backward: the projection's backward, heads split again to (B, h, N, d), the attention's
    backward for dq, dk, dv, which stack into d[q, k, v] for the qkv projection's backward.
    Returns dL/dz, or (dL/dz, dL/dbias) when a bias was given.
    """

    def __init__(self, dim, num_heads=8, qkv_bias=True, attn_drop=0.0, proj_drop=0.0, scale=None,
                 rng=None, dtype=None):
        validate.integer("attention dim", dim, 1)
        validate.integer("attention num_heads", num_heads, 1)
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        gen = backend.rng(rng)
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias, rng=gen, dtype=dtype)
        self.attn = ScaledDotProductAttention(attn_drop, scale, rng=gen)
        self.proj = Linear(dim, dim, rng=gen, dtype=dtype)
        self.proj_drop = Dropout(proj_drop, rng=gen)

    @property
    def attn_probs(self):
        """Attention probabilities A of the last forward, (B, h, N, N)."""
        return self.attn.attn_probs

    def forward(self, z, bias=None, mask=None):
        if z.ndim != 3 or z.shape[-1] != self.dim:
            raise ValueError(f"attention expected tokens (B, N, {self.dim}), got {tuple(z.shape)}")
        B, N, D = z.shape
        h, d = self.num_heads, self.head_dim
        qkv = self.qkv.forward(z).reshape(B, N, 3, h, d).transpose(2, 0, 3, 1, 4)  # (3, B, h, N, d)
        out = self.attn.forward(qkv[0], qkv[1], qkv[2], bias, mask)  # (B, h, N, d)
        out = out.transpose(0, 2, 1, 3).reshape(B, N, D)  # heads merged: (B, N, D), no copy
        return self.proj_drop.forward(self.proj.forward(out))

    def backward(self, dout):
        B, N, D = dout.shape
        h, d = self.num_heads, self.head_dim
        xp = backend.xp_of(dout)
        g = self.proj.backward(self.proj_drop.backward(dout))
        dqkv = xp.empty((B, N, 3, h, d), dtype=dout.dtype)  # d[q, k, v] in the layout of qkv's output
        grads = self.attn.backward(g.reshape(B, N, h, d).transpose(0, 2, 1, 3),  # (B, h, N, d)
                                   out=dqkv.transpose(2, 0, 3, 1, 4))  # dq, dk, dv written into dqkv
        dz = self.qkv.backward(dqkv.reshape(B, N, 3 * D))
        return dz if len(grads) == 3 else (dz, grads[3])

    def extra_repr(self):
        return f"dim={self.dim}, num_heads={self.num_heads}"
