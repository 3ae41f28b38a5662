"""The model registry: ``create_model(name, **overrides)`` with timm-style names.

Each family registers its names beside its classes (timm's ``@register_model`` idea), with
``register(name, cls, **config)``; ``models/__init__.py`` only imports the families.
"""

import inspect

_REGISTRY = {}  # name -> (class, config)


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


def model_class(name):
    """The class that builds ``name``."""
    model_config(name)  # a clear error for an unknown name
    return _REGISTRY[name][0]


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
