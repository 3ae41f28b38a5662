"""The model registry: ``create_model(name, **overrides)`` with timm-style names."""

import inspect

from .deit import DistilledVisionTransformer
from .vit import TokenPool, VisionTransformer

_REGISTRY = {}


def register(name, cls, **config):
    """Register ``name`` as ``cls(**config)``; overrides given to create_model win."""
    _REGISTRY[name] = (cls, config)


def list_models():
    return sorted(_REGISTRY)


def model_config(name):
    """The registered configuration of ``name`` (a copy)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return dict(_REGISTRY[name][1])


def _settings(cls):
    """The keyword arguments ``cls(...)`` takes: its __init__'s, and its bases' where it passes
    ``**kwargs`` on (DistilledVisionTransformer to VisionTransformer)."""
    names = set()
    for c in cls.__mro__:
        if "__init__" in vars(c):
            params = inspect.signature(c.__init__).parameters.values()
            names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
            if not any(p.kind is p.VAR_KEYWORD for p in params):
                break
    return names - {"self"}


def create_model(name, /, **overrides):
    """Build a registered model, e.g. ``create_model("vit_tiny_patch16_224", num_classes=10)``.

    A bad configuration (an unknown name, a nonsense value) is a ValueError that names the
    setting, raised before anything is built."""
    config = model_config(name)
    cls = _REGISTRY[name][0]
    unknown = sorted(set(overrides) - _settings(cls))
    if unknown:
        raise ValueError(f"bad configuration for {name!r}: unknown settings {unknown}; "
                         f"{cls.__name__} takes {', '.join(sorted(_settings(cls)))}")
    config.update(overrides)
    try:
        model = cls(**config)
    except ValueError as e:
        raise ValueError(f"bad configuration for {name!r}: {e}") from None
    model.model_name = name
    model.config = config
    return model


# ViT-{Ti, S, B, L}/16 at 224 px (Dosovitskiy et al.; Touvron et al. for Ti and S).
for _name, _d, _depth, _heads in [("tiny", 192, 12, 3), ("small", 384, 12, 6),
                                  ("base", 768, 12, 12), ("large", 1024, 24, 16)]:
    register(f"vit_{_name}_patch16_224", VisionTransformer, img_size=224, patch_size=16,
             embed_dim=_d, depth=_depth, num_heads=_heads)

# The embedded scikit-learn digits: 8x8, one channel, 10 classes; 2x2 patches -> 16 tokens. From
# scratch on 1,295 images: fan-in init and a fixed sin-cos E_pos (VisionTransformer's docstring).
_DIGITS = dict(img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4,
               mlp_ratio=2.0, weight_init="fan_in", pos_embed="sincos")
register("vit_digits", VisionTransformer, **_DIGITS, pool="mean", class_token=False)

# DeiT-{Ti, S, B}/16 (Touvron et al.): the same ViTs, trained differently; the distilled ones add
# the distillation token, its position and its head (5,910,800 / 22,436,432 / 87,338,192 params).
for _name, _d, _heads in [("tiny", 192, 3), ("small", 384, 6), ("base", 768, 12)]:
    _cfg = dict(img_size=224, patch_size=16, embed_dim=_d, depth=12, num_heads=_heads)
    register(f"deit_{_name}_patch16_224", VisionTransformer, **_cfg)
    register(f"deit_{_name}_distilled_patch16_224", DistilledVisionTransformer, **_cfg)

# vit_digits' size with [x_class; x_dist]; class-token pooling by construction (each head reads its token).
register("deit_digits", DistilledVisionTransformer, **_DIGITS)

__all__ = ["DistilledVisionTransformer", "TokenPool", "VisionTransformer", "create_model", "list_models",
           "model_config", "register"]
