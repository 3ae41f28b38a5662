"""How a checkpoint's arrays become minivit's, and back (``LAYOUTS``).

* ``copy``: the same array;
* ``T``: a Linear weight, stored (out, in) by both references, W (in, out) in minivit;
* ``conv``: the patch embedding, a convolution weight (D, C, P, P) there, the (C P P, D) matrix E
  of the same numbers here;
* ``qkv``: transformers keeps query, key and value as three Linear layers, which minivit fuses into
  U_qkv = [W_q | W_k | W_v];
* ``tokens``: the class and distillation tokens are two arrays there and one (1, k, D) here.
"""

import numpy as np

LAYOUTS = ("copy", "T", "conv", "qkv", "tokens")


def source_shapes(layout, shape, n, conv_shape):
    """The shapes of the ``n`` checkpoint arrays that make a minivit array of ``shape``."""
    if layout == "T":
        return [shape[::-1]]
    if layout == "conv":
        return [conv_shape]
    if layout == "qkv":  # U_qkv (D_in, 3D) from three (D, D_in); b_qkv (3D,) from three (D,)
        return [(shape[-1] // 3,) + shape[:-1][::-1]] * 3
    if layout == "tokens":  # (1, k, D) from k arrays (1, 1, D)
        return [(1, 1, shape[2])] * n
    return [shape]


def to_minivit(layout, arrays):
    if layout == "T":
        return arrays[0].T
    if layout == "conv":  # (D, C, P, P) -> (C P P, D), rows in Patchify's (c, i, j) order
        return arrays[0].reshape(arrays[0].shape[0], -1).T
    if layout == "qkv":
        return np.concatenate([a.T for a in arrays], axis=-1)
    if layout == "tokens":
        return np.concatenate(arrays, axis=1)
    return arrays[0]


def from_minivit(layout, array, shapes):
    """The inverse of ``to_minivit``: minivit's array -> the checkpoint's arrays of ``shapes``."""
    if layout == "T":
        return [array.T]
    if layout == "conv":
        return [array.T.reshape(shapes[0])]
    if layout == "qkv":
        return [a.T for a in np.split(array, 3, axis=-1)]
    if layout == "tokens":
        return np.split(array, len(shapes), axis=1)
    return [array]


def pairs(present, ours, theirs, layout="copy", params=("weight", "bias")):
    """Key-map entries for the arrays ``params`` of minivit's layer ``ours``, named ``theirs`` there:
    the weight in ``layout`` ("T" for a Linear), the others copied; arrays the model lacks (a
    Linear without bias) are left out."""
    return [(f"{ours}.{p}", [f"{theirs}.{p}"], layout if p == "weight" else "copy")
            for p in params if f"{ours}.{p}" in present]


def timm_layout(name, array):
    """The layout of a timm array that keeps minivit's ``name``: the patch embedding's convolution,
    a Linear weight (out, in), or a copy."""
    if name == "patch_embed.proj.weight":
        return "conv"
    return "T" if name.endswith(".weight") and array.ndim == 2 else "copy"
