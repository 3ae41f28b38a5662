"""Swin: transformers' names and config, and timm's names, as key maps.

The two references place patch merging differently: timm at the start of stages 2-4
(``layers.{i}.downsample``, as minivit), transformers at the end of stages 1-3
(``swin.encoder.layers.{i-1}.downsample``). Both keep the relative position bias table as
((2M-1)^2, heads); the index and the shift mask are buffers rebuilt from the configuration
(older timm files store them too: they are skipped).
"""

from ..models import SwinTransformer
from .layouts import pairs, timm_layout

CLASSES = (SwinTransformer,)
HF_ARCHITECTURES = {"SwinForImageClassification": SwinTransformer}
TIMM_HEAD = "head.fc.weight"
SKIPPED_KEYS = ("relative_position_index", "attn_mask")  # buffers minivit rebuilds, never learned


def hf_settings(c, arch):
    """(SwinTransformer, its settings) from transformers' config.json ``c``."""
    if c.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"hidden_act {c['hidden_act']!r}: minivit's Swin uses the exact GELU ('gelu')")
    if c.get("use_absolute_embeddings", False):
        raise ValueError("use_absolute_embeddings=True: minivit's Swin has no absolute position embedding")
    return SwinTransformer, dict(
        img_size=c.get("image_size", 224), patch_size=c.get("patch_size", 4),
        in_chans=c.get("num_channels", 3), embed_dim=c["embed_dim"], depths=tuple(c["depths"]),
        num_heads=tuple(c["num_heads"]), window_size=c.get("window_size", 7),
        mlp_ratio=c.get("mlp_ratio", 4.0), qkv_bias=c.get("qkv_bias", True),
        layer_norm_eps=c.get("layer_norm_eps", 1e-5), drop_rate=c.get("hidden_dropout_prob", 0.0),
        attn_drop_rate=c.get("attention_probs_dropout_prob", 0.0),
        drop_path_rate=c.get("drop_path_rate", 0.1))


def hf_key_map(model, present):
    """[(minivit name, [transformers keys], layout)] for a SwinTransformer."""
    e = "swin.embeddings."
    entries = [("patch_embed.proj.weight", [e + "patch_embeddings.projection.weight"], "conv"),
               ("patch_embed.proj.bias", [e + "patch_embeddings.projection.bias"], "copy"),
               *pairs(present, "patch_embed.norm", e + "norm")]
    for i, stage in enumerate(model.layers):
        if i:  # transformers: the end of the stage before
            down = f"swin.encoder.layers.{i - 1}.downsample."
            entries += [*pairs(present, f"layers.{i}.downsample.norm", down + "norm"),
                        (f"layers.{i}.downsample.reduction.weight", [down + "reduction.weight"], "T")]
        for j in range(len(stage.blocks)):
            b, layer = f"layers.{i}.blocks.{j}.", f"swin.encoder.layers.{i}.blocks.{j}."
            att = layer + "attention.self."
            entries += [(f"{b}attn.msa.qkv.{p}", [f"{att}{n}.{p}" for n in ("query", "key", "value")], "qkv")
                        for p in ("weight", "bias") if f"{b}attn.msa.qkv.{p}" in present]
            table = (f"{b}attn.relative_position_bias.table", [att + "relative_position_bias_table"], "copy")
            entries += [table,
                        *pairs(present, b + "norm1", layer + "layernorm_before"),
                        *pairs(present, b + "attn.msa.proj", layer + "attention.output.dense", "T"),
                        *pairs(present, b + "norm2", layer + "layernorm_after"),
                        *pairs(present, b + "mlp.fc1", layer + "intermediate.dense", "T"),
                        *pairs(present, b + "mlp.fc2", layer + "output.dense", "T")]
    return entries + [*pairs(present, "norm", "swin.layernorm"), *pairs(present, "head", "classifier", "T")]


def timm_name(name):
    """timm's name of minivit's Swin array ``name``."""
    name = name.replace(".attn.msa.", ".attn.").replace(".relative_position_bias.table",
                                                         ".relative_position_bias_table")
    return "head.fc." + name[len("head."):] if name.startswith("head.") else name


def timm_key_map(model, present):
    return [(name, [timm_name(name)], timm_layout(name, a)) for name, a in present.items()]


def resize(state, native, img_size, antialias):
    """The same weights serve another resolution whose grids the windows tile: the bias tables
    depend on the window size only."""
    return state


def hf_config(model):
    """(transformers architecture, config.json entries) of a SwinTransformer."""
    stages = list(model.layers)
    block = stages[0].blocks[0]
    return "SwinForImageClassification", {
        "model_type": "swin", "image_size": model.img_size, "patch_size": model.patch_embed.patch_size,
        "num_channels": model.in_chans, "embed_dim": model.embed_dim,
        "depths": [len(s.blocks) for s in stages],
        "num_heads": [s.blocks[0].attn.msa.num_heads for s in stages],
        "window_size": model.window_size, "mlp_ratio": model.mlp_ratio,
        "qkv_bias": block.attn.msa.qkv.bias is not None, "hidden_act": "gelu",
        "layer_norm_eps": block.norm1.eps, "use_absolute_embeddings": False, "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0, "drop_path_rate": 0.0, "encoder_stride": 32,
        "initializer_range": 0.02, "hidden_size": model.num_features,
    }
