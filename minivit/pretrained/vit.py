"""ViT and DeiT: transformers' names and config, and timm's names, as key maps."""

from ..models import DistilledVisionTransformer, VisionTransformer
from .layouts import timm_layout
from .resample import resample_pos_embed

CLASSES = (VisionTransformer,)  # what this family reads and writes (DistilledVisionTransformer too)
HF_ARCHITECTURES = {  # transformers class -> (minivit class, with the distillation token x_dist)
    "ViTForImageClassification": (VisionTransformer, False),
    "DeiTForImageClassification": (VisionTransformer, True),  # x_dist is there; one head, on x_class
    "DeiTForImageClassificationWithTeacher": (DistilledVisionTransformer, True),
}
HF_ACTIVATIONS = {"gelu": "none", "gelu_pytorch_tanh": "tanh", "gelu_new": "tanh"}
TIMM_HEAD = "head.weight"


def hf_settings(c, arch):
    """(minivit class, its settings) from transformers' config.json ``c``."""
    if c.get("hidden_act", "gelu") not in HF_ACTIVATIONS:
        raise ValueError(f"hidden_act {c['hidden_act']!r} is not one of {sorted(HF_ACTIVATIONS)}")
    cls, dist_token = HF_ARCHITECTURES[arch]
    D, hidden = c["hidden_size"], c["intermediate_size"]
    ratio = hidden / D if int(D * (hidden / D)) == hidden else (hidden + 0.5) / D  # int(D ratio) = hidden
    settings = dict(img_size=c.get("image_size", 224), patch_size=c.get("patch_size", 16),
                    in_chans=c.get("num_channels", 3), embed_dim=D, depth=c["num_hidden_layers"],
                    num_heads=c["num_attention_heads"], mlp_ratio=ratio, qkv_bias=c.get("qkv_bias", True),
                    layer_norm_eps=c.get("layer_norm_eps", 1e-12),
                    approximate=HF_ACTIVATIONS[c.get("hidden_act", "gelu")],
                    drop_rate=c.get("hidden_dropout_prob", 0.0),
                    attn_drop_rate=c.get("attention_probs_dropout_prob", 0.0))
    if cls is VisionTransformer:
        settings["dist_token"] = dist_token
    return cls, settings


def _prefix(model):
    return "deit" if model.num_prefix_tokens == 2 else "vit"


def hf_key_map(model, present):
    """[(minivit name, [transformers keys], layout)] for ``model``, of the names in ``present``."""
    prefix = _prefix(model)
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
    return [entry for entry in entries if entry[0] in present]  # e.g. no qkv bias


def timm_key_map(model, present):
    """[(minivit name, [timm keys], layout)]: timm's names are minivit's, but the tokens'."""
    tokens = ["cls_token"] + ["dist_token"] * (model.num_prefix_tokens == 2)
    renamed = {"cls_token.weight": (tokens, "tokens"), "pos_embed.weight": (["pos_embed"], "copy")}
    return [(name, *renamed.get(name, ([name], timm_layout(name, a)))) for name, a in present.items()]


def resize(state, native, img_size, antialias):
    """The state at another resolution: E_pos's patch part resampled, the prefix tokens' kept."""
    grid = img_size // native.patch_embed.patch_size
    state["pos_embed.weight"] = resample_pos_embed(state["pos_embed.weight"], native.num_prefix_tokens,
                                                   (grid, grid), antialias)
    return state


def hf_config(model):
    """(transformers architecture, config.json entries) of a class-token ViT or DeiT."""
    pool = getattr(model.pool, "pool", None)  # DistilledVisionTransformer reads its tokens itself
    if pool not in ("cls", None) or model.num_prefix_tokens == 0:
        raise ValueError("save_pretrained writes class-token ViT and DeiT models (pool='cls'); "
                         f"got {type(model).__name__} with pool={pool!r}")
    arch = "DeiTForImageClassificationWithTeacher" if isinstance(model, DistilledVisionTransformer) else \
        "DeiTForImageClassification" if model.num_prefix_tokens == 2 else "ViTForImageClassification"
    block = model.blocks[0]
    return arch, {
        "model_type": _prefix(model), "image_size": model.img_size,
        "patch_size": model.patch_embed.patch_size, "num_channels": model.in_chans,
        "hidden_size": model.embed_dim, "num_hidden_layers": len(model.blocks),
        "num_attention_heads": block.attn.num_heads, "intermediate_size": block.mlp.fc1.out_features,
        "qkv_bias": block.attn.qkv.bias is not None,
        "hidden_act": {"none": "gelu", "tanh": "gelu_pytorch_tanh"}[block.mlp.act.approximate],
        "layer_norm_eps": block.norm1.eps, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "encoder_stride": model.patch_embed.patch_size, "initializer_range": 0.02,
    }
