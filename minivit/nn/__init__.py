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
from .window import (
    CyclicShift,
    PatchMerging,
    RelativePositionBias,
    WindowPartition,
    relative_position_index,
    shift_window_mask,
    window_reverse,
)

__all__ = [
    "Block", "ClassToken", "CyclicShift", "Dropout", "DropPath", "GELU", "LayerNorm", "Linear",
    "log_softmax", "MLP", "Module", "ModuleList", "MultiHeadSelfAttention", "Parameter", "PatchEmbed",
    "Patchify", "PatchMerging", "PositionEmbedding", "relative_position_index", "RelativePositionBias",
    "ScaledDotProductAttention", "Sequential", "shift_window_mask", "SinCosPositionEmbedding", "Softmax",
    "softmax", "softmax_backward", "sum_to_shape", "window_reverse", "WindowPartition",
]
