"""Attention's fast path: the same equations as ``minivit.nn.ScaledDotProductAttention`` and
``MultiHeadSelfAttention``, with three changes of how, not what.

* The B*h small matrix products are ``threads.matmul``: spread over the CPU threads, each with
  single-threaded BLAS, instead of one BLAS thread hand-off per product.
* The scores become the probabilities in place (``softmax(s, out=s)``), and the softmax backward
  overwrites dA: two fewer (B, h, N, M) arrays per layer.
* Layouts chosen for the next step: the output is stored token-major, (B, N, h, d) in memory, so
  that merging the heads back to (B, N, h*d) is a free reshape; and the backward writes dq, dk, dv
  straight into one d[q, k, v] buffer in the layout of the qkv projection's output, so that
  multi-head attention's backward needs no stack or copy.
"""

from .. import backend
from ..nn.attention import MultiHeadSelfAttention, ScaledDotProductAttention, sum_to_shape
from . import register
from .softmax import softmax, softmax_backward
from .threads import matmul


def _token_major(xp, shape, dtype):
    """An empty array of ``shape`` (..., h, N, d), stored as (..., N, h, d) in memory."""
    if len(shape) < 3:
        return xp.empty(shape, dtype=dtype)
    return xp.empty(shape[:-3] + (shape[-2], shape[-3], shape[-1]), dtype=dtype).swapaxes(-3, -2)


def sdpa_forward(layer, q, k, v, bias=None, mask=None):
    xp = backend.xp_of(q)
    scale = q.shape[-1] ** -0.5 if layer.scale is None else layer.scale
    s = matmul(q * scale, k.swapaxes(-1, -2))  # (B, h, N, M)
    if bias is not None:
        s += bias
    if mask is not None:
        s = xp.where(mask, s, -xp.inf)
    a = softmax(s, out=s)
    layer.attn_probs = a
    a_drop = layer.attn_drop.forward(a)
    layer.save_for_backward(q, k, v, a, a_drop, scale, None if bias is None else bias.shape)
    return matmul(a_drop, v, out=_token_major(xp, q.shape[:-1] + v.shape[-1:], q.dtype))


def sdpa_backward(layer, dout, out=(None, None, None)):
    """The backward; ``out`` = (dq, dk, dv) arrays to write the three gradients into."""
    q, k, v, a, a_drop, scale, bias_shape = layer.saved()
    dq, dk, dv = out
    dv = matmul(a_drop.swapaxes(-1, -2), dout, out=dv)  # (B, h, M, d)
    da = layer.attn_drop.backward(matmul(dout, v.swapaxes(-1, -2)))  # (B, h, N, M)
    ds = softmax_backward(a, da, out=da)
    dq = matmul(ds, k, out=dq)
    dq *= scale
    dk = matmul(ds.swapaxes(-1, -2), q, out=dk)
    dk *= scale
    return dq, dk, dv, None if bias_shape is None else sum_to_shape(ds, bias_shape)


def mhsa_backward(layer, dout):
    """MultiHeadSelfAttention's backward, d[q, k, v] written in place by the attention's."""
    if not layer.attn.__dict__.get("_fast"):  # its attention ran the plain way: so must this
        return MultiHeadSelfAttention.backward.__wrapped__(layer, dout)
    *lead, N, D = dout.shape  # lead: (B,), or (B, nW) for windows
    h, d = layer.num_heads, layer.head_dim
    xp = backend.xp_of(dout)
    g = layer.proj.backward(layer.proj_drop.backward(dout))  # (..., N, D)
    g = g.reshape(*lead, N, h, d).swapaxes(-3, -2)  # (..., h, N, d)
    dqkv = xp.empty((*lead, N, 3, h, d), dtype=dout.dtype)  # d[q, k, v] in the layout of qkv's output
    views = xp.moveaxis(dqkv, (-3, -4), (0, -2))  # (3, ..., h, N, d): dq, dk, dv
    *_, dbias = sdpa_backward(layer.attn, g, out=tuple(views))
    return layer.qkv.backward(dqkv.reshape(*lead, N, 3 * D)), dbias


register(ScaledDotProductAttention, sdpa_forward, sdpa_backward)
register(MultiHeadSelfAttention, None, mhsa_backward)
