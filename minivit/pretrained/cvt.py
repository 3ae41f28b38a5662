"""CvT: transformers' names and config as a key map (timm has no CvT).

transformers keeps q, k and v as three Linear layers, as minivit does, and convolution weights in
the layout minivit keeps, so only the names change (and Linear weights are transposed). Its
BatchNorm layers store ``num_batches_tracked`` beside the running statistics; minivit's
BatchNorm2d has a fixed momentum and needs no count, so the key is skipped on reading and written
as 0 on saving.
"""

import numpy as np

from ..models import ConvolutionalVisionTransformer
from .layouts import pairs

CLASSES = (ConvolutionalVisionTransformer,)
HF_ARCHITECTURES = {"CvtForImageClassification": ConvolutionalVisionTransformer}
TIMM_HEAD = None  # timm has no CvT
SKIPPED_KEYS = ("num_batches_tracked",)
BN = ("weight", "bias", "running_mean", "running_var")  # a BatchNorm's arrays
_PER_STAGE = [("embed_dim", "embed_dims"), ("depth", "depths"), ("num_heads", "num_heads"),
              ("patch_sizes", "patch_sizes"), ("patch_stride", "patch_strides"),
              ("patch_padding", "patch_paddings")]
_SHARED = [("mlp_ratio", "mlp_ratio", 4.0), ("qkv_bias", "qkv_bias", True), ("kernel_qkv", "kernel_qkv", 3),
           ("stride_kv", "stride_kv", 2), ("padding_kv", "padding_kv", 1), ("stride_q", "stride_q", 1),
           ("padding_q", "padding_q", 1), ("drop_rate", "drop_rate", 0.0),
           ("attention_drop_rate", "attn_drop_rate", 0.0)]


def hf_settings(c, arch):
    """(ConvolutionalVisionTransformer, its settings) from transformers' config.json ``c``."""
    n = len(c["depth"])
    settings = {ours: tuple(c[theirs]) for theirs, ours in _PER_STAGE}
    for theirs, ours, default in _SHARED:  # one value for every stage in minivit
        values = set(c.get(theirs, [default] * n))
        if len(values) != 1:
            raise ValueError(f"{theirs} {c[theirs]}: minivit's CvT takes one {theirs} for every stage")
        settings[ours] = values.pop()
    methods = set(c.get("qkv_projection_method", ["dw_bn"] * n))
    if methods != {"dw_bn"}:
        raise ValueError(f"qkv_projection_method {c['qkv_projection_method']}: minivit's CvT projects q, k "
                         f"and v by depthwise convolution and BatchNorm ('dw_bn') only")
    cls_token = list(c.get("cls_token", [False] * (n - 1) + [True]))
    if any(cls_token[:-1]):
        raise ValueError(f"cls_token {cls_token}: minivit's CvT has a class token in the last stage only")
    return ConvolutionalVisionTransformer, dict(
        settings, img_size=c.get("image_size", 224), in_chans=c.get("num_channels", 3),
        cls_token=cls_token[-1], drop_path_rate=tuple(c.get("drop_path_rate", [0.0] * n)))


def hf_key_map(model, present):
    """[(minivit name, [transformers keys], layout)] for a ConvolutionalVisionTransformer."""
    entries = []
    for i, stage in enumerate(model.stages):
        s, t = f"stages.{i}.", f"cvt.encoder.stages.{i}."
        e = t + "embedding.convolution_embeddings."
        entries += [(s + "patch_embed.proj.weight", [e + "projection.weight"], "copy"),
                    (s + "patch_embed.proj.bias", [e + "projection.bias"], "copy"),
                    *pairs(present, s + "patch_embed.norm", e + "normalization")]
        if "cls_token" in stage._modules:
            entries.append((s + "cls_token.weight", [t + "cls_token"], "copy"))
        for j in range(len(stage.blocks)):
            b, layer = f"{s}blocks.{j}.", f"{t}layers.{j}."
            att = layer + "attention.attention."
            for x, name in [("q", "query"), ("k", "key"), ("v", "value")]:
                conv = f"{att}convolution_projection_{name}.convolution_projection."
                entries += [(f"{b}attn.conv_proj_{x}.conv.weight", [conv + "convolution.weight"], "copy"),
                            *pairs(present, f"{b}attn.conv_proj_{x}.bn", conv + "normalization", params=BN),
                            *pairs(present, f"{b}attn.proj_{x}", f"{att}projection_{name}", "T")]
            entries += [*pairs(present, b + "attn.proj", layer + "attention.output.dense", "T"),
                        *pairs(present, b + "norm1", layer + "layernorm_before"),
                        *pairs(present, b + "norm2", layer + "layernorm_after"),
                        *pairs(present, b + "mlp.fc1", layer + "intermediate.dense", "T"),
                        *pairs(present, b + "mlp.fc2", layer + "output.dense", "T")]
    return entries + [*pairs(present, "norm", "layernorm"), *pairs(present, "head", "classifier", "T")]


def hf_extra_tensors(entries):
    """The BatchNorm counts transformers stores beside the running statistics in ``entries``: 0 each."""
    return {keys[0].replace(".running_mean", ".num_batches_tracked"): np.zeros((), np.int64)
            for name, keys, _ in entries if name.endswith(".running_mean")}


def resize(state, native, img_size, antialias):
    """The same weights serve another resolution: nothing in CvT depends on the grid's size."""
    return state


def hf_config(model):
    """(transformers architecture, config.json entries) of a ConvolutionalVisionTransformer."""
    if model.num_prefix_tokens != 1:  # transformers' CvT breaks without one (its outputs lose the None)
        raise ValueError("save_pretrained writes CvTs with a class token (cls_token=True): transformers' "
                         "CvtForImageClassification does not run without one")
    if model.norm.eps != 1e-5:
        raise ValueError(f"transformers' CvT uses LayerNorm eps 1e-5 throughout; this model has "
                         f"{model.norm.eps}")
    stages = list(model.stages)
    n = len(stages)
    attn = stages[0].blocks[0].attn
    projections = (attn.conv_proj_q.conv, attn.conv_proj_k.conv)
    return "CvtForImageClassification", {
        "model_type": "cvt", "image_size": model.img_size, "num_channels": model.in_chans,
        "embed_dim": [s.dim for s in stages], "depth": [len(s.blocks) for s in stages],
        "num_heads": [s.blocks[0].attn.num_heads for s in stages],
        "patch_sizes": [s.patch_embed.proj.kernel_size for s in stages],
        "patch_stride": [s.patch_embed.proj.stride for s in stages],
        "patch_padding": [s.patch_embed.proj.padding for s in stages],
        "mlp_ratio": [model.mlp_ratio] * n,
        "qkv_bias": [attn.proj_q.bias is not None] * n,
        "cls_token": [False] * (n - 1) + [model.num_prefix_tokens == 1],
        "qkv_projection_method": ["dw_bn"] * n, "kernel_qkv": [projections[0].kernel_size] * n,
        "stride_q": [projections[0].stride] * n, "padding_q": [projections[0].padding] * n,
        "stride_kv": [projections[1].stride] * n, "padding_kv": [projections[1].padding] * n,
        "attention_drop_rate": [0.0] * n, "drop_rate": [0.0] * n, "drop_path_rate": [0.0] * n,
        "initializer_range": 0.02,
    }
