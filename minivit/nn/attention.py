"""Scaled dot-product attention and multi-head self-attention (Vaswani et al., 2017)."""

from .. import backend, validate
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
    dS = A * (dA - rowsum(dA * A)); then dq = s dS k, dk = s dS^T q, and dbias = dS summed over
    the axes the bias was broadcast along. Returns (dq, dk, dv, dbias), dbias None when no bias
    was given (the mask is not differentiated).
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
        s = (q @ k.swapaxes(-1, -2)) * scale  # (B, h, N, M)
        if bias is not None:
            s = s + bias
        if mask is not None:
            s = xp.where(mask, s, -xp.inf)
        a = softmax(s)  # A: (B, h, N, M)
        self.attn_probs = a
        a_drop = self.attn_drop.forward(a)
        self.save_for_backward(q, k, v, a, a_drop, scale, None if bias is None else bias.shape)
        return a_drop @ v  # (B, h, N, d)

    def backward(self, dout):
        q, k, v, a, a_drop, scale, bias_shape = self.saved()
        dv = a_drop.swapaxes(-1, -2) @ dout  # (B, h, M, d)
        da = self.attn_drop.backward(dout @ v.swapaxes(-1, -2))  # (B, h, N, M)
        ds = softmax_backward(a, da)
        dq = (ds @ k) * scale
        dk = (ds.swapaxes(-1, -2) @ q) * scale
        return dq, dk, dv, None if bias_shape is None else sum_to_shape(ds, bias_shape)


class MultiHeadSelfAttention(Module):
    """MSA(z) = [SA_1(z); ...; SA_h(z)] U_msa, with [q, k, v] = z U_qkv split into h heads.

    Shapes: z (B, N, D) -> (B, N, D); U_qkv = qkv.weight (D, 3D) fused over q, k, v and the
    heads (head j of q is columns j*d..(j+1)*d of the first D), U_msa = proj.weight (D, D),
    d = D / h; scale d^-1/2 unless ``scale`` says otherwise. ``bias`` and ``mask`` are passed to
    the attention (see ScaledDotProductAttention). Any number of extra tokens (class,
    distillation) just adds to N.

    Backward: the projection's backward, heads split again to (B, h, N, d), the attention's
    backward for dq, dk, dv, which stack into d[q, k, v] for the qkv projection's backward.
    Returns (dL/dz, dL/dbias), dL/dbias None when no bias was given.
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
        out = out.transpose(0, 2, 1, 3).reshape(B, N, D)  # heads merged: (B, N, D)
        return self.proj_drop.forward(self.proj.forward(out))

    def backward(self, dout):
        B, N, D = dout.shape
        h, d = self.num_heads, self.head_dim
        xp = backend.xp_of(dout)
        g = self.proj.backward(self.proj_drop.backward(dout))  # (B, N, D)
        dq, dk, dv, dbias = self.attn.backward(g.reshape(B, N, h, d).transpose(0, 2, 1, 3))  # (B, h, N, d)
        dqkv = xp.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4)  # (B, N, 3, h, d), as qkv's output
        return self.qkv.backward(dqkv.reshape(B, N, 3 * D)), dbias

    def extra_repr(self):
        return f"dim={self.dim}, num_heads={self.num_heads}"
