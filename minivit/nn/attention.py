"""Scaled dot-product attention and multi-head self-attention (Vaswani et al., 2017), and CvT's
convolutional attention (Wu et al., 2021), which feeds it q, k and v of its own."""

from .. import backend, validate
from .activation import softmax, softmax_backward
from .conv import Conv2d, conv_output_size, to_grid, to_tokens
from .linear import Linear
from .module import Module
from .norm import BatchNorm2d
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
        ### BEGIN SOLUTION a2.attention.forward
        scale = q.shape[-1] ** -0.5 if self.scale is None else self.scale
        s = (q @ k.swapaxes(-1, -2)) * scale  # (B, h, N, M)
        if bias is not None:
            s = s + bias
        if mask is not None:
            s = xp.where(mask, s, -xp.inf)
        a = softmax(s)  # A: (B, h, N, M)
        ### END SOLUTION
        self.attn_probs = a
        a_drop = self.attn_drop.forward(a)
        self.save_for_backward(q, k, v, a, a_drop, scale, None if bias is None else bias.shape)
        return a_drop @ v  # (B, h, N, d)

    def backward(self, dout):
        q, k, v, a, a_drop, scale, bias_shape = self.saved()
        ### BEGIN SOLUTION a2.attention.backward
        dv = a_drop.swapaxes(-1, -2) @ dout  # (B, h, M, d)
        da = self.attn_drop.backward(dout @ v.swapaxes(-1, -2))  # (B, h, N, M)
        ds = softmax_backward(a, da)
        dq = (ds @ k) * scale
        dk = (ds.swapaxes(-1, -2) @ q) * scale
        ### END SOLUTION
        return dq, dk, dv, None if bias_shape is None else sum_to_shape(ds, bias_shape)


class MultiHeadSelfAttention(Module):
    """MSA(z) = [SA_1(z); ...; SA_h(z)] U_msa, with [q, k, v] = z U_qkv split into h heads.

    Shapes: z (B, N, D) -> (B, N, D); U_qkv = qkv.weight (D, 3D) fused over q, k, v and the
    heads (head j of q is columns j*d..(j+1)*d of the first D), U_msa = proj.weight (D, D),
    d = D / h; scale d^-1/2 unless ``scale`` says otherwise. ``bias`` and ``mask`` are passed to
    the attention (see ScaledDotProductAttention). Any number of extra tokens (class,
    distillation) just adds to N. More leading axes are more independent sequences: Swin's
    windows, z (B, nW, N, D) with a bias (nW, h, N, N) that differs per window.

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
        if z.ndim < 3 or z.shape[-1] != self.dim:
            raise ValueError(f"attention expected tokens (B, N, {self.dim}), got {tuple(z.shape)}")
        *lead, N, D = z.shape  # lead: (B,), or (B, nW) for windows
        h, d = self.num_heads, self.head_dim
        ### BEGIN SOLUTION a2.heads.forward
        qkv = self.qkv.forward(z).reshape(-1, N, 3, h, d).transpose(2, 0, 3, 1, 4)  # (3, B, h, N, d)
        q, k, v = (t.reshape(*lead, h, N, d) for t in qkv)
        out = self.attn.forward(q, k, v, bias, mask).reshape(-1, h, N, d)  # (B, h, N, d)
        out = out.transpose(0, 2, 1, 3).reshape(*lead, N, D)  # heads merged: (B, N, D)
        ### END SOLUTION
        return self.proj_drop.forward(self.proj.forward(out))

    def backward(self, dout):
        *lead, N, D = dout.shape
        h, d = self.num_heads, self.head_dim
        xp = backend.xp_of(dout)
        ### BEGIN SOLUTION a2.heads.backward
        g = self.proj.backward(self.proj_drop.backward(dout)).reshape(-1, N, h, d)  # (B, N, h, d)
        g = g.transpose(0, 2, 1, 3).reshape(*lead, h, N, d)  # (B, h, N, d)
        dq, dk, dv, dbias = self.attn.backward(g)
        dqkv = xp.stack([t.reshape(-1, h, N, d) for t in (dq, dk, dv)])  # (3, B, h, N, d)
        dqkv = dqkv.transpose(1, 3, 0, 2, 4)  # (B, N, 3, h, d), as qkv's output
        dz = self.qkv.backward(dqkv.reshape(*lead, N, 3 * D))
        ### END SOLUTION
        return dz, dbias

    def extra_repr(self):
        return f"dim={self.dim}, num_heads={self.num_heads}"


class ConvProjection(Module):
    """CvT's convolutional projection of the token grid before q, k or v: a depthwise k x k
    convolution of stride s (each channel filtered on its own), BatchNorm, then the pixels as
    tokens again: Flatten(BN(DWConv(z))).

    Shapes: z (B, D, H, W) -> (B, D, H', W') -> tokens (B, H'W', D); H' = (H + 2p - k) // s + 1.
    Backward: the tokens folded back to (B, D, H', W'), BatchNorm's, the convolution's.
    """

    def __init__(self, dim, kernel_size=3, stride=1, padding=1, rng=None, dtype=None):
        self.conv = Conv2d(dim, dim, kernel_size, stride, padding, groups=dim, bias=False, rng=rng,
                           dtype=dtype)
        self.bn = BatchNorm2d(dim, dtype=dtype)

    def forward(self, z):
        y = self.bn.forward(self.conv.forward(z))  # (B, D, H', W')
        self.save_for_backward(y.shape[2:])
        return to_tokens(y)  # (B, H'W', D)

    def backward(self, dout):
        (grid,) = self.saved()
        return self.conv.backward(self.bn.backward(to_grid(dout, *grid)))


class ConvAttention(Module):
    """CvT's convolutional self-attention: q = ConvProj_q(z) W_q, k = ConvProj_k(z) W_k,
    v = ConvProj_v(z) W_v over the token grid, then multi-head attention (the same
    ScaledDotProductAttention as ViT's) and the output projection, MSA's "[SA_1; ...; SA_h] U".
    q's projection keeps the grid (stride 1); k's and v's have stride 2, so each query meets a
    quarter as many keys. The scores are scaled by D^-1/2, the full width, not the head width
    (the reference does; with one head the two agree). A class token (``cls_token``, CvT's last
    stage) bypasses the convolutions and is put in front of q, k and v as it is.

    Shapes: z (B, [1 +] H W, D) of the ``resolution`` (H, W) -> grid (B, D, H, W) -> q
    (B, [1 +] H W, D), k and v (B, [1 +] H_kv W_kv, D) -> heads (B, h, N, d) -> attention
    (B, h, [1 +] H W, d) -> merged (B, [1 +] H W, D) -> proj, same shape.

    Backward: the projection's and the attention's as in MSA give dq, dk, dv; each goes back
    through its Linear; the class token's rows of the three add up, the rest go back through the
    three convolutional projections, whose gradients add up on the one grid z.
    """

    def __init__(self, dim, num_heads, resolution, cls_token=False, kernel_size=3, stride_kv=2, padding_kv=1,
                 stride_q=1, padding_q=1, qkv_bias=True, attn_drop=0.0, proj_drop=0.0, rng=None, dtype=None):
        validate.integer("ConvAttention dim", dim, 1)
        validate.integer("ConvAttention num_heads", num_heads, 1)
        if dim % num_heads:
            raise ValueError(f"ConvAttention dim {dim} must be divisible by num_heads {num_heads}")
        H, W = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        validate.integer("ConvAttention resolution", H, 1)
        validate.integer("ConvAttention resolution", W, 1)
        if tuple(conv_output_size(n, kernel_size, stride_q, padding_q) for n in (H, W)) != (H, W):
            raise ValueError(f"ConvAttention's query projection (kernel {kernel_size}, stride {stride_q}, "
                             f"padding {padding_q}) must keep the {H}x{W} grid: the output has a token "
                             f"per input")
        gen = backend.rng(rng)
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.resolution, self.cls_token = (H, W), validate.flag("cls_token", cls_token)
        self.conv_proj_q = ConvProjection(dim, kernel_size, stride_q, padding_q, rng=gen, dtype=dtype)
        self.conv_proj_k = ConvProjection(dim, kernel_size, stride_kv, padding_kv, rng=gen, dtype=dtype)
        self.conv_proj_v = ConvProjection(dim, kernel_size, stride_kv, padding_kv, rng=gen, dtype=dtype)
        self.proj_q = Linear(dim, dim, bias=qkv_bias, rng=gen, dtype=dtype)
        self.proj_k = Linear(dim, dim, bias=qkv_bias, rng=gen, dtype=dtype)
        self.proj_v = Linear(dim, dim, bias=qkv_bias, rng=gen, dtype=dtype)
        self.attn = ScaledDotProductAttention(attn_drop, scale=dim ** -0.5, rng=gen)
        self.proj = Linear(dim, dim, rng=gen, dtype=dtype)
        self.proj_drop = Dropout(proj_drop, rng=gen)

    @property
    def attn_probs(self):
        """Attention probabilities A of the last forward, (B, h, N_q, N_kv)."""
        return self.attn.attn_probs

    def forward(self, z):
        (H, W), c = self.resolution, int(self.cls_token)
        if z.ndim != 3 or z.shape[1:] != (c + H * W, self.dim):
            raise ValueError(f"ConvAttention expected tokens (B, {c + H * W}, {self.dim}) of a {H}x{W} grid"
                             f"{' and a class token' if c else ''}, got shape {tuple(z.shape)}")
        xp = backend.xp_of(z)
        B, h, d = z.shape[0], self.num_heads, self.head_dim
        grid = to_grid(z[:, c:], H, W)  # (B, D, H, W)
        heads = []
        for conv_proj, proj in [(self.conv_proj_q, self.proj_q), (self.conv_proj_k, self.proj_k),
                                (self.conv_proj_v, self.proj_v)]:
            t = xp.concatenate([z[:, :c], conv_proj.forward(grid)], axis=1)  # (B, [1 +] N', D)
            heads.append(proj.forward(t).reshape(B, -1, h, d).transpose(0, 2, 1, 3))  # (B, h, N', d)
        out = self.attn.forward(*heads)  # (B, h, N, d)
        out = out.transpose(0, 2, 1, 3).reshape(B, -1, self.dim)  # heads merged: (B, N, D)
        return self.proj_drop.forward(self.proj.forward(out))

    def backward(self, dout):
        c = int(self.cls_token)
        B, N, D = dout.shape
        h, d = self.num_heads, self.head_dim
        g = self.proj.backward(self.proj_drop.backward(dout))  # (B, N, D)
        # dq, dk, dv: (B, h, N', d); the fourth entry, the bias's, is None
        grads = self.attn.backward(g.reshape(B, N, h, d).transpose(0, 2, 1, 3))[:3]
        dz = backend.xp_of(dout).zeros_like(dout)  # (B, [1 +] H W, D)
        for dt, conv_proj, proj in zip(grads, [self.conv_proj_q, self.conv_proj_k, self.conv_proj_v],
                                       [self.proj_q, self.proj_k, self.proj_v], strict=True):
            dt = proj.backward(dt.transpose(0, 2, 1, 3).reshape(B, -1, D))  # (B, [1 +] N', D)
            dz[:, :c] += dt[:, :c]
            dz[:, c:] += to_tokens(conv_proj.backward(dt[:, c:]))
        return dz

    def extra_repr(self):
        return (f"dim={self.dim}, num_heads={self.num_heads}, resolution={self.resolution}, "
                f"cls_token={self.cls_token}")
