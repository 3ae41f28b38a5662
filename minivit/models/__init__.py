"""The model families; importing one registers its names (``registry.register``), so that
``create_model(name, **overrides)`` builds any of them by its timm-style name."""

from .cvt import ConvolutionalVisionTransformer, CvtStage
from .deit import DistilledVisionTransformer
from .registry import create_model, list_models, model_config, register
from .swin import SwinStage, SwinTransformer
from .vit import TokenPool, VisionTransformer

__all__ = ["ConvolutionalVisionTransformer", "CvtStage", "DistilledVisionTransformer", "SwinStage",
           "SwinTransformer", "TokenPool", "VisionTransformer", "create_model", "list_models", "model_config",
           "register"]
