"""Layers: one class per equation, each with a hand-written forward and backward."""

from .activation import GELU, Softmax, log_softmax, softmax, softmax_backward
from .attention import MultiHeadSelfAttention, ScaledDotProductAttention, sum_to_shape
from .block import Block
from .embed import ClassToken, PatchEmbed, Patchify, PositionEmbedding, SinCosPositionEmbedding
from .linear import Linear
from .mlp import MLP
from .module import Module, ModuleList, Parameter, Sequential
from .norm import LayerNorm
from .regularize import Dropout, DropPath

__all__ = [
    "Block", "ClassToken", "Dropout", "DropPath", "GELU", "LayerNorm", "Linear", "MLP", "Module",
    "ModuleList", "MultiHeadSelfAttention", "Parameter", "PatchEmbed", "Patchify",
    "PositionEmbedding", "ScaledDotProductAttention", "Sequential", "SinCosPositionEmbedding", "Softmax",
    "log_softmax", "softmax", "softmax_backward", "sum_to_shape",
]
