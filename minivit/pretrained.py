"""Real checkpoints in and out: transformers' folders and timm's state dicts, read and written as
safetensors through NumPy (no torch, no pickle).

``from_pretrained(path)`` reads

* a folder written by transformers' ``save_pretrained`` (``config.json`` + ``model.safetensors``)
  of ``ViTForImageClassification``, ``DeiTForImageClassification`` or
  ``DeiTForImageClassificationWithTeacher``, at any configuration its config describes;
* a ``.safetensors`` file of a timm ViT or DeiT state dict, with ``model_name`` naming its
  architecture (``vit_base_patch16_224``, ``deit_small_distilled_patch16_224``, ...).

Each format is an explicit key map: for every minivit parameter, the checkpoint's key(s) and how
its array becomes minivit's (nanoGPT's ``from_pretrained`` as the model). The layouts differ in
four ways (``LAYOUTS``): both references store a Linear weight (out, in), minivit W (in, out)
(``T``); the patch embedding is a convolution weight (D, C, P, P), minivit's E the (C P P, D)
matrix of the same numbers (``conv``); transformers keeps query, key and value as three Linear
layers, which minivit fuses into U_qkv = [W_q | W_k | W_v] (``qkv``); the class and distillation
tokens are two arrays there and one (1, k, D) here (``tokens``). Every key is looked up and every
shape checked before anything is built or copied: a missing, unexpected or misshaped key is a
ValueError naming it. ``save_pretrained(model, folder)`` writes transformers' format back through
the same map, so that ``AutoModelForImageClassification.from_pretrained(folder)`` loads it.

``img_size=`` uses a checkpoint at another resolution: E_pos's patch part is resampled over the
patch grid by bicubic interpolation as the reference does (``resample_pos_embed``), the positions
of the class and distillation tokens kept.
"""

import functools
import json
import os

import numpy as np

from . import backend, checkpoint
from .models import DistilledVisionTransformer, VisionTransformer, create_model

HF_ARCHITECTURES = {  # transformers class -> (minivit class, with the distillation token x_dist)
    "ViTForImageClassification": (VisionTransformer, False),
    "DeiTForImageClassification": (VisionTransformer, True),  # x_dist is there; one head, on x_class
    "DeiTForImageClassificationWithTeacher": (DistilledVisionTransformer, True),
}
HF_ACTIVATIONS = {"gelu": "none", "gelu_pytorch_tanh": "tanh", "gelu_new": "tanh"}
HF_FILES = ("config.json", "model.safetensors")
TIMM_TRANSPOSED = ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight", "head.weight",
                   "head_dist.weight")  # timm's Linear weights, (out, in)


# ----------------------------------------------------------------------------- layouts

def _source_shapes(layout, shape, n, conv_shape):
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


def _to_minivit(layout, arrays):
    if layout == "T":
        return arrays[0].T
    if layout == "conv":  # (D, C, P, P) -> (C P P, D), rows in Patchify's (c, i, j) order
        return arrays[0].reshape(arrays[0].shape[0], -1).T
    if layout == "qkv":
        return np.concatenate([a.T for a in arrays], axis=-1)
    if layout == "tokens":
        return np.concatenate(arrays, axis=1)
    return arrays[0]


def _from_minivit(layout, array, shapes):
    """The inverse of ``_to_minivit``: minivit's array -> the checkpoint's arrays of ``shapes``."""
    if layout == "T":
        return [array.T]
    if layout == "conv":
        return [array.T.reshape(shapes[0])]
    if layout == "qkv":
        return [a.T for a in np.split(array, 3, axis=-1)]
    if layout == "tokens":
        return np.split(array, len(shapes), axis=1)
    return [array]


LAYOUTS = ("copy", "T", "conv", "qkv", "tokens")


# ----------------------------------------------------------------------------- key maps

def hf_key_map(model, prefix):
    """[(minivit name, [transformers keys], layout)] for ``model``; prefix "vit" or "deit"."""
    e = f"{prefix}.embeddings."
    tokens = [e + "cls_token"] + [e + "distillation_token"] * (model.num_prefix_tokens == 2)
    entries = [("patch_embed.proj.weight", [e + "patch_embeddings.projection.weight"], "conv"),
               ("patch_embed.proj.bias", [e + "patch_embeddings.projection.bias"], "copy"),
               ("cls_token.weight", tokens, "tokens"),
               ("pos_embed.weight", [e + "position_embeddings"], "copy")]
    for i in range(len(model.blocks)):
        layer, b = f"{prefix}.encoder.layer.{i}.", f"blocks.{i}."
        qkv = [f"{layer}attention.attention.{n}" for n in ("query", "key", "value")]
        entries += [(f"{b}attn.qkv.{p}", [f"{k}.{p}" for k in qkv], "qkv") for p in ("weight", "bias")]
        for ours, theirs in [("norm1", "layernorm_before"), ("norm2", "layernorm_after")]:
            entries += [(f"{b}{ours}.{p}", [f"{layer}{theirs}.{p}"], "copy") for p in ("weight", "bias")]
        for ours, theirs in [("attn.proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
                             ("mlp.fc2", "output.dense")]:
            entries += [(f"{b}{ours}.weight", [f"{layer}{theirs}.weight"], "T"),
                        (f"{b}{ours}.bias", [f"{layer}{theirs}.bias"], "copy")]
    entries += [(f"norm.{p}", [f"{prefix}.layernorm.{p}"], "copy") for p in ("weight", "bias")]
    heads = [("head", "cls_classifier"), ("head_dist", "distillation_classifier")] \
        if isinstance(model, DistilledVisionTransformer) else [("head", "classifier")]
    for ours, theirs in heads:
        entries += [(f"{ours}.weight", [f"{theirs}.weight"], "T"),
                    (f"{ours}.bias", [f"{theirs}.bias"], "copy")]
    present = _arrays(model)
    return [entry for entry in entries if entry[0] in present]  # e.g. no qkv bias


def timm_key_map(model):
    """[(minivit name, [timm keys], layout)]: timm's names are minivit's, but the tokens."""
    tokens = ["cls_token"] + ["dist_token"] * (model.num_prefix_tokens == 2)
    entries = []
    for name in _arrays(model):
        if name == "cls_token.weight":
            entries.append((name, tokens, "tokens"))
        elif name == "pos_embed.weight":
            entries.append((name, ["pos_embed"], "copy"))
        else:
            transposed = "T" if name.endswith(TIMM_TRANSPOSED) else "copy"
            entries.append((name, [name], "conv" if name == "patch_embed.proj.weight" else transposed))
    return entries


def _arrays(model):
    """minivit's name -> array, of every parameter, and of a fixed E_pos table (exported as a
    learned one: the same numbers)."""
    arrays = {name: p.data for name, p in model.named_parameters()}
    if "pos_embed.weight" not in arrays:
        arrays["pos_embed.weight"] = model.pos_embed.table
    return arrays


# ----------------------------------------------------------------------------- reading

def _convert(tensors, entries, model, source):
    """The checkpoint's ``tensors`` -> minivit's state dict by ``entries``, every key and shape
    checked first; a ValueError lists every problem."""
    want = {name: tuple(a.shape) for name, a in _arrays(model).items()}
    P = model.patch_embed.patch_size
    conv = (want["patch_embed.proj.weight"][1], model.in_chans, P, P)
    used = {key for _, keys, _ in entries for key in keys}
    problems = [f"missing key {k!r}" for k in sorted(used - set(tensors))]
    problems += [f"unexpected key {k!r}" for k in sorted(set(tensors) - used)]
    for name, keys, layout in entries:
        for key, shape in zip(keys, _source_shapes(layout, want[name], len(keys), conv), strict=True):
            if key in tensors and tuple(tensors[key].shape) != shape:
                problems.append(f"key {key!r} has shape {tuple(tensors[key].shape)}, expected {shape}")
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise ValueError(f"{source} does not fit {type(model).__name__}: {'; '.join(problems[:8])}{more}")
    return {name: _to_minivit(layout, [tensors[k] for k in keys]) for name, keys, layout in entries}


def _hf_config(folder):
    """(minivit class, its settings, label names, key prefix) from transformers' config.json."""
    with open(os.path.join(folder, "config.json")) as f:
        c = json.load(f)
    arch = (c.get("architectures") or [None])[0]
    if arch not in HF_ARCHITECTURES:
        raise ValueError(f"{folder}: config.json names architecture {arch!r}; expected one of "
                         f"{sorted(HF_ARCHITECTURES)}")
    if c.get("hidden_act", "gelu") not in HF_ACTIVATIONS:
        raise ValueError(f"{folder}: hidden_act {c['hidden_act']!r} is not one of {sorted(HF_ACTIVATIONS)}")
    cls, dist_token = HF_ARCHITECTURES[arch]
    id2label = c.get("id2label") or {str(i): f"LABEL_{i}" for i in range(c.get("num_labels", 2))}
    labels = [id2label[str(i)] for i in range(len(id2label))]
    D, hidden = c["hidden_size"], c["intermediate_size"]
    ratio = hidden / D if int(D * (hidden / D)) == hidden else (hidden + 0.5) / D  # int(D ratio) = hidden
    settings = dict(img_size=c.get("image_size", 224), patch_size=c.get("patch_size", 16),
                    in_chans=c.get("num_channels", 3), num_classes=len(labels), embed_dim=D,
                    depth=c["num_hidden_layers"], num_heads=c["num_attention_heads"], mlp_ratio=ratio,
                    qkv_bias=c.get("qkv_bias", True), layer_norm_eps=c.get("layer_norm_eps", 1e-12),
                    approximate=HF_ACTIVATIONS[c.get("hidden_act", "gelu")],
                    drop_rate=c.get("hidden_dropout_prob", 0.0),
                    attn_drop_rate=c.get("attention_probs_dropout_prob", 0.0))
    if cls is VisionTransformer:
        settings["dist_token"] = dist_token
    return cls, settings, labels, "deit" if arch.startswith("DeiT") else "vit"


def _load_safetensors(path):
    from safetensors.numpy import load_file  # the NumPy API: no torch, no pickle

    return load_file(path)


def from_pretrained(path, model_name=None, dtype=None, img_size=None):
    """A minivit ViT or DeiT with a checkpoint's weights, in eval mode (see the module docstring).

    path: a transformers folder, or a timm ``.safetensors`` file with ``model_name`` its
    architecture (its number of classes is read from the head). dtype: float32 (default) or
    float64. img_size: use the weights at another resolution (E_pos resampled). The model's
    ``labels`` holds the class names (transformers' id2label; ``None`` for timm).
    """
    if os.path.isdir(path):
        missing = [f for f in HF_FILES if not os.path.isfile(os.path.join(path, f))]
        if missing:
            raise ValueError(f"{path} is not a transformers folder: it has no {' or '.join(missing)}")
        build, settings, labels, prefix = _hf_config(path)
        tensors = _load_safetensors(os.path.join(path, "model.safetensors"))
        native = build(**settings, dtype=dtype)
        entries, antialias = hf_key_map(native, prefix), False
    elif str(path).endswith(".safetensors") and os.path.isfile(path):
        if model_name is None:
            raise ValueError("a timm .safetensors file needs model_name= naming its architecture, "
                             "e.g. 'vit_base_patch16_224'")
        tensors = _load_safetensors(path)
        if tensors.get("head.weight") is None:
            raise ValueError(f"{path} has no 'head.weight': expected a timm ViT/DeiT state dict with a head")
        build = functools.partial(create_model, model_name)
        settings = {"num_classes": int(tensors["head.weight"].shape[0])}
        native = build(**settings, dtype=dtype)
        labels, entries, antialias = None, timm_key_map(native), True
    else:
        raise ValueError(f"{path}: expected a transformers folder (config.json + model.safetensors) "
                         "or a timm .safetensors file")
    state = _convert(tensors, entries, native, source=path)
    model = native
    if img_size is not None and img_size != native.img_size:
        grid = img_size // native.patch_embed.patch_size
        state["pos_embed.weight"] = resample_pos_embed(state["pos_embed.weight"], native.num_prefix_tokens,
                                                       (grid, grid), antialias)
        model = build(**{**settings, "img_size": img_size}, dtype=dtype)
    model.load_state_dict(state)
    model.labels = labels
    return model.eval()


# ----------------------------------------------------------------------------- writing

def save_pretrained(model, folder, overwrite=False):
    """Write a minivit ViT or DeiT as a transformers folder (config.json + model.safetensors).

    Class-token models only (transformers' heads read x_class): a mean-pooled or token-less model
    is a ValueError. A folder that already holds a checkpoint is refused unless ``overwrite``.
    """
    from safetensors.numpy import save

    if not isinstance(model, VisionTransformer) or model.pool is not None and model.pool.pool != "cls" \
            or model.num_prefix_tokens == 0:
        raise ValueError("save_pretrained writes class-token ViT and DeiT models (pool='cls'); "
                         f"got {type(model).__name__} with pool={getattr(model.pool, 'pool', None)!r}")
    if not overwrite and any(os.path.exists(os.path.join(folder, f)) for f in HF_FILES):
        raise ValueError(f"{folder} already holds a checkpoint; pass overwrite=True to replace it")
    distilled = isinstance(model, DistilledVisionTransformer)
    arch = "DeiTForImageClassificationWithTeacher" if distilled else \
        "DeiTForImageClassification" if model.num_prefix_tokens == 2 else "ViTForImageClassification"
    prefix = "deit" if arch.startswith("DeiT") else "vit"
    arrays = _arrays(model)
    P = model.patch_embed.patch_size
    conv = (model.embed_dim, model.in_chans, P, P)
    tensors = {}
    for name, keys, layout in hf_key_map(model, prefix):
        a = backend.to_numpy(arrays[name])
        shapes = _source_shapes(layout, a.shape, len(keys), conv)
        parts = [np.ascontiguousarray(t) for t in _from_minivit(layout, a, shapes)]
        tensors.update(zip(keys, parts, strict=True))
    labels = getattr(model, "labels", None) or [f"LABEL_{i}" for i in range(model.num_classes)]
    block = model.blocks[0]
    config = {
        "architectures": [arch], "model_type": prefix, "image_size": model.img_size,
        "patch_size": P, "num_channels": model.in_chans, "hidden_size": model.embed_dim,
        "num_hidden_layers": len(model.blocks), "num_attention_heads": block.attn.num_heads,
        "intermediate_size": block.mlp.fc1.out_features, "qkv_bias": "blocks.0.attn.qkv.bias" in arrays,
        "hidden_act": {"none": "gelu", "tanh": "gelu_pytorch_tanh"}[block.mlp.act.approximate],
        "layer_norm_eps": block.norm1.eps, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
        "encoder_stride": model.patch_embed.patch_size, "initializer_range": 0.02,
    }
    os.makedirs(folder, exist_ok=True)
    blob = save(tensors, metadata={"format": "pt"})
    checkpoint.write_atomic(os.path.join(folder, "model.safetensors"), lambda f: f.write(blob))
    text = json.dumps(config, indent=2) + "\n"
    checkpoint.write_atomic(os.path.join(folder, "config.json"), lambda f: f.write(text.encode()))
    return folder


# ----------------------------------------------------------------------------- E_pos at another size

def _cubic(t, a):
    """Keys' cubic convolution kernel W(t) (a = -0.75 in PyTorch's bicubic, -0.5 in PIL's and
    PyTorch's antialiased one)."""
    t = np.abs(t)
    return np.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                    np.where(t < 2, ((t - 5) * t + 8) * t * a - 4 * a, 0.0))


def resize_weights(n_in, n_out, antialias=False):
    """The (n_out, n_in) matrix of bicubic resampling along one axis, as PyTorch's
    ``interpolate(mode="bicubic", align_corners=False)`` computes it: output pixel i samples the
    input at x = (i + 1/2) n_in / n_out - 1/2. Plain (transformers): a = -0.75 on the four
    nearest pixels, indices clamped at the border. Antialiased (timm: ``antialias=True``):
    a = -0.5, the kernel stretched by the scale when shrinking, truncated at the border and
    renormalised."""
    scale = n_in / n_out
    centre = (np.arange(n_out) + 0.5) * scale  # (n_out,), in input pixels
    W = np.zeros((n_out, n_in))
    if not antialias:
        x = centre - 0.5
        base = np.floor(x).astype(int)
        for k in range(-1, 3):
            np.add.at(W, (np.arange(n_out), np.clip(base + k, 0, n_in - 1)), _cubic(x - (base + k), -0.75))
        return W
    stretch = max(scale, 1.0)
    j = np.arange(n_in)
    W = _cubic((j[None, :] + 0.5 - centre[:, None]) / stretch, -0.5)  # zero beyond the support
    return W / W.sum(axis=1, keepdims=True)


def resample_pos_embed(pos_embed, num_prefix_tokens, grid, antialias=False):
    """E_pos (1, k + g*g, D) -> (1, k + gh*gw, D): the patch part resampled bicubically from the
    g x g grid to ``grid`` = (gh, gw), the k prefix tokens' positions kept."""
    k = num_prefix_tokens
    prefix, patches = pos_embed[:, :k], pos_embed[0, k:]
    g = int(round(np.sqrt(patches.shape[0])))
    if g * g != patches.shape[0]:
        raise ValueError(f"E_pos has {patches.shape[0]} patch positions: not a square grid")
    table = patches.reshape(g, g, -1).astype(np.float64)  # (g, g, D)
    rows, cols = resize_weights(g, grid[0], antialias), resize_weights(g, grid[1], antialias)
    out = np.einsum("ai,bj,ijd->abd", rows, cols, table)  # (gh, gw, D)
    return np.concatenate([prefix, out.reshape(1, -1, out.shape[-1]).astype(pos_embed.dtype)], axis=1)
