"""Real checkpoints in and out: transformers' folders and timm's state dicts, read and written as
safetensors through NumPy (no torch, no pickle).

``from_pretrained(path)`` reads

* a folder written by transformers' ``save_pretrained`` (``config.json`` + ``model.safetensors``)
  of ``ViTForImageClassification``, ``DeiTForImageClassification``,
  ``DeiTForImageClassificationWithTeacher``, ``SwinForImageClassification`` or
  ``CvtForImageClassification`` (BatchNorm's running statistics included), at any configuration
  of widths, depths, heads, sizes and rates that minivit's model takes (an option it lacks, such
  as Swin's absolute position embedding or CvT's per-stage q/k/v settings, is a ValueError that
  names it);
* a ``.safetensors`` file of a timm ViT, DeiT or Swin state dict, with ``model_name`` naming its
  architecture (``vit_base_patch16_224``, ``swin_tiny_patch4_window7_224``, ...).

Each format is an explicit key map, one module per family (``vit``, ``swin``, ``cvt``): for every minivit
parameter, the checkpoint's key(s) and how its array becomes minivit's (``layouts``; nanoGPT's
``from_pretrained`` as the model). Every key is looked up and every shape checked before anything
is built or copied: a missing, unexpected or misshaped key is a ValueError naming it.
``save_pretrained(model, folder)`` writes transformers' format back through the same map, so that
``AutoModelForImageClassification.from_pretrained(folder)`` loads it.

``img_size=`` uses a checkpoint at another resolution: a ViT's E_pos is resampled over the patch
grid by bicubic interpolation as the reference does (``resample_pos_embed``), the positions of
the class and distillation tokens kept; a Swin needs nothing (its bias tables depend on the
window only), as long as the windows tile the new grids, and neither does a CvT.
"""

import json
import os

import numpy as np

from .. import backend, checkpoint
from ..models import create_model, registry
from . import cvt, swin, vit
from .layouts import LAYOUTS, from_minivit, source_shapes, to_minivit
from .resample import resample_pos_embed, resize_weights

__all__ = ["LAYOUTS", "from_pretrained", "resample_pos_embed", "resize_weights", "save_pretrained"]

FAMILIES = (vit, swin, cvt)
HF_FILES = ("config.json", "model.safetensors")


def _family(model_class):
    for family in FAMILIES:
        if issubclass(model_class, family.CLASSES):
            return family
    raise ValueError(f"no checkpoint format for {model_class.__name__}; minivit reads and writes "
                     f"{', '.join(c.__name__ for f in FAMILIES for c in f.CLASSES)}")


def _arrays(model):
    """minivit's name -> array, of every parameter and persistent buffer (BatchNorm's running
    statistics), and of a fixed E_pos table (exported as a learned one: the same numbers)."""
    arrays = {name: p.data for name, p in model.named_parameters()}
    arrays.update(model.named_buffers(persistent_only=True))
    if "pos_embed" in model._modules and "pos_embed.weight" not in arrays:
        arrays["pos_embed.weight"] = model.pos_embed.table
    return arrays


def _conv_shape(model):
    """The shape of ViT's and Swin's patch projection as a convolution (the "conv" layout); None
    for a model without one (CvT keeps its convolutions in the reference layout)."""
    embed = model._modules.get("patch_embed")
    if embed is None:
        return None
    P = embed.patch_size
    return (embed.proj.out_features, model.in_chans, P, P)


# ----------------------------------------------------------------------------- reading

def _convert(tensors, entries, model, source):
    """The checkpoint's ``tensors`` -> minivit's state dict by ``entries``, every key and shape
    checked first; a ValueError lists every problem."""
    want = {name: tuple(a.shape) for name, a in _arrays(model).items()}
    conv = _conv_shape(model)
    used = {key for _, keys, _ in entries for key in keys}
    problems = [f"missing key {k!r}" for k in sorted(used - set(tensors))]
    problems += [f"unexpected key {k!r}" for k in sorted(set(tensors) - used)]
    for name, keys, layout in entries:
        for key, shape in zip(keys, source_shapes(layout, want[name], len(keys), conv), strict=True):
            if key in tensors and tuple(tensors[key].shape) != shape:
                problems.append(f"key {key!r} has shape {tuple(tensors[key].shape)}, expected {shape}")
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise ValueError(f"{source} does not fit {type(model).__name__}: {'; '.join(problems[:8])}{more}")
    return {name: to_minivit(layout, [tensors[k] for k in keys]) for name, keys, layout in entries}


def _hf_config(folder):
    """(family, minivit class, its settings with num_classes, label names) from config.json."""
    with open(os.path.join(folder, "config.json")) as f:
        c = json.load(f)
    arch = (c.get("architectures") or [None])[0]
    known = {a: family for family in FAMILIES for a in family.HF_ARCHITECTURES}
    if arch not in known:
        raise ValueError(f"{folder}: config.json names architecture {arch!r}; expected one of "
                         f"{sorted(known)}")
    try:
        cls, settings = known[arch].hf_settings(c, arch)
    except ValueError as e:
        raise ValueError(f"{folder}: {e}") from None
    id2label = c.get("id2label") or {str(i): f"LABEL_{i}" for i in range(c.get("num_labels", 2))}
    labels = [id2label[str(i)] for i in range(len(id2label))]
    return known[arch], cls, {**settings, "num_classes": len(labels)}, labels


def _load_safetensors(path):
    from safetensors.numpy import load_file  # the NumPy API: no torch, no pickle

    return load_file(path)


def _skip(family, tensors):
    """``tensors`` without the buffers that minivit rebuilds or does not keep (the family's
    SKIPPED_KEYS: Swin's index and mask in older timm files, BatchNorm's batch counts)."""
    skipped = getattr(family, "SKIPPED_KEYS", ())
    return {k: v for k, v in tensors.items() if not k.endswith(skipped)}


def from_pretrained(path, model_name=None, dtype=None, img_size=None):
    """A minivit ViT, DeiT, Swin or CvT with a checkpoint's weights, in eval mode (see the module
    docstring).

    path: a transformers folder, or a timm ``.safetensors`` file with ``model_name`` its
    architecture (its number of classes is read from the head). dtype: float32 (default) or
    float64. img_size: use the weights at another resolution. The model's ``labels`` holds the
    class names (transformers' id2label; ``None`` for timm).
    """
    if os.path.isdir(path):
        missing = [f for f in HF_FILES if not os.path.isfile(os.path.join(path, f))]
        if missing:
            raise ValueError(f"{path} is not a transformers folder: it has no {' or '.join(missing)}")
        family, build, settings, labels = _hf_config(path)
        tensors = _skip(family, _load_safetensors(os.path.join(path, "model.safetensors")))
        native = build(**settings, dtype=dtype)
        entries, antialias = family.hf_key_map(native, _arrays(native)), False
    elif str(path).endswith(".safetensors") and os.path.isfile(path):
        if model_name is None:
            raise ValueError("a timm .safetensors file needs model_name= naming its architecture, "
                             "e.g. 'vit_base_patch16_224'")
        family = _family(registry.model_class(model_name))
        if family.TIMM_HEAD is None:
            raise ValueError(f"{model_name}: timm has no such architecture, so there is no timm file to "
                             "read; minivit reads this family from transformers folders")
        tensors = _skip(family, _load_safetensors(path))
        if tensors.get(family.TIMM_HEAD) is None:
            raise ValueError(f"{path} has no {family.TIMM_HEAD!r}: expected a timm state dict of "
                             f"{model_name} with a head")
        settings = {"num_classes": int(tensors[family.TIMM_HEAD].shape[0])}

        def build(**kw):
            return create_model(model_name, **kw)

        native = build(**settings, dtype=dtype)
        labels, entries, antialias = None, family.timm_key_map(native, _arrays(native)), True
    else:
        raise ValueError(f"{path}: expected a transformers folder (config.json + model.safetensors) "
                         "or a timm .safetensors file")
    state = _convert(tensors, entries, native, source=path)
    model = native
    if img_size is not None and img_size != native.img_size:
        model = build(**{**settings, "img_size": img_size}, dtype=dtype)
        state = family.resize(state, native, img_size, antialias)
    model.load_state_dict(state)
    model.labels = labels
    return model.eval()


# ----------------------------------------------------------------------------- writing

def save_pretrained(model, folder, overwrite=False):
    """Write a minivit ViT, DeiT, Swin or CvT as a transformers folder (config.json + model.safetensors).

    ViT and DeiT with a class token only (transformers' heads read x_class): a mean-pooled or
    token-less ViT is a ValueError. A folder that already holds a checkpoint is refused unless
    ``overwrite``.
    """
    from safetensors.numpy import save

    family = _family(type(model))
    arch, config = family.hf_config(model)
    if not overwrite and any(os.path.exists(os.path.join(folder, f)) for f in HF_FILES):
        raise ValueError(f"{folder} already holds a checkpoint; pass overwrite=True to replace it")
    arrays = _arrays(model)
    conv = _conv_shape(model)
    entries = family.hf_key_map(model, arrays)
    tensors = family.hf_extra_tensors(entries) if hasattr(family, "hf_extra_tensors") else {}
    for name, keys, layout in entries:
        a = backend.to_numpy(arrays[name])
        shapes = source_shapes(layout, a.shape, len(keys), conv)
        parts = [np.ascontiguousarray(t) for t in from_minivit(layout, a, shapes)]
        tensors.update(zip(keys, parts, strict=True))
    labels = getattr(model, "labels", None) or [f"LABEL_{i}" for i in range(model.num_classes)]
    config = {"architectures": [arch], **config, "id2label": {str(i): name for i, name in enumerate(labels)},
              "label2id": {name: i for i, name in enumerate(labels)}}
    os.makedirs(folder, exist_ok=True)
    blob = save(tensors, metadata={"format": "pt"})
    checkpoint.write_atomic(os.path.join(folder, "model.safetensors"), lambda f: f.write(blob))
    text = json.dumps(config, indent=2) + "\n"
    checkpoint.write_atomic(os.path.join(folder, "config.json"), lambda f: f.write(text.encode()))
    return folder
