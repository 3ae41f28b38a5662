"""Layers: one class per equation, each with a hand-written forward and backward."""

from .activation import GELU, Softmax, log_softmax, softmax, softmax_backward
from .attention import (
    ConvAttention,
    ConvProjection,
    MultiHeadSelfAttention,
    ScaledDotProductAttention,
    sum_to_shape,
)
from .block import Block, SwinBlock
from .conv import Conv2d, col2im, conv_output_size, im2col, to_grid, to_tokens
from .embed import ClassToken, ConvEmbed, PatchEmbed, Patchify, PositionEmbedding, SinCosPositionEmbedding
from .linear import Linear, reset_layers
from .mlp import MLP
from .module import Module, ModuleList, Parameter, Sequential
from .norm import BatchNorm2d, LayerNorm
from .regularize import Dropout, DropPath
from .window import (
    CyclicShift,
    PatchMerging,
    RelativePositionBias,
    WindowAttention,
    WindowPartition,
    cyclic_shift,
    relative_position_index,
    shift_window_mask,
    window_partition,
    window_reverse,
)

__all__ = [
    "BatchNorm2d", "Block", "ClassToken", "col2im", "Conv2d", "conv_output_size", "ConvAttention",
    "ConvEmbed", "ConvProjection", "cyclic_shift", "CyclicShift", "Dropout", "DropPath", "GELU", "im2col",
    "LayerNorm", "Linear", "log_softmax", "MLP", "Module", "ModuleList", "MultiHeadSelfAttention",
    "Parameter", "PatchEmbed", "Patchify", "PatchMerging", "PositionEmbedding", "relative_position_index",
    "RelativePositionBias", "reset_layers", "ScaledDotProductAttention", "Sequential", "shift_window_mask",
    "SinCosPositionEmbedding", "Softmax", "softmax", "softmax_backward", "sum_to_shape", "SwinBlock",
    "to_grid", "to_tokens", "WindowAttention", "window_partition", "window_reverse", "WindowPartition",
]
