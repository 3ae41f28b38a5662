"""The benchmark's PyTorch CvT: the same model as minivit's ConvolutionalVisionTransformer, written
the way PyTorch users write it (eager mode, nn.Conv2d with groups for the depthwise projections,
nn.BatchNorm2d, nn.LayerNorm, nn.Linear, nn.GELU).

Only the benchmark imports this module (and torch); minivit never does. ``load_from_minivit``
copies a minivit model's parameters and BatchNorm statistics in (Linear weights transposed), so
both frameworks start from the same weights and the benchmark can check their logits agree.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_vit import Block

from minivit import backend


class ConvProjection(nn.Module):
    def __init__(self, dim, stride):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, stride, 1, groups=dim, bias=False)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, grid):
        return self.bn(self.conv(grid)).flatten(2).transpose(1, 2)  # (B, N', D)


class Attention(nn.Module):
    def __init__(self, dim, heads, res, cls_token, sdpa):
        super().__init__()
        self.dim, self.heads, self.res, self.cls, self.sdpa = dim, heads, res, int(cls_token), sdpa
        self.conv_proj_q, self.conv_proj_k, self.conv_proj_v = (ConvProjection(dim, s) for s in (1, 2, 2))
        self.proj_q, self.proj_k, self.proj_v = (nn.Linear(dim, dim) for _ in range(3))
        self.proj = nn.Linear(dim, dim)

    def forward(self, z):
        B, c, h = z.shape[0], self.cls, self.heads
        grid = z[:, c:].transpose(1, 2).reshape(B, self.dim, self.res, self.res)
        pairs = [(self.conv_proj_q, self.proj_q), (self.conv_proj_k, self.proj_k),
                 (self.conv_proj_v, self.proj_v)]
        q, k, v = (proj(torch.cat([z[:, :c], conv(grid)], dim=1)).reshape(B, -1, h, self.dim // h)
                   .transpose(1, 2) for conv, proj in pairs)
        scale = self.dim ** -0.5  # the full width, as the reference
        if self.sdpa:
            out = F.scaled_dot_product_attention(q, k, v, scale=scale)
        else:
            out = ((q * scale) @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(B, -1, self.dim))


class Stage(nn.Module):
    def __init__(self, in_chans, dim, res, depth, heads, k, s, p, cls_token, mlp_ratio, sdpa):
        super().__init__()
        self.embed = nn.Conv2d(in_chans, dim, k, s, p)
        self.embed_norm = nn.LayerNorm(dim)
        self.res = (res + 2 * p - k) // s + 1
        # in a ParameterList, a module of its own, so that it comes after the embedding's parameters
        self.cls_token = nn.ParameterList([torch.zeros(1, 1, dim)]) if cls_token else None
        self.blocks = nn.Sequential(*(Block(dim, Attention(dim, heads, self.res, cls_token, sdpa), mlp_ratio,
                                            eps=1e-5) for _ in range(depth)))

    def forward(self, x):
        z = self.embed_norm(self.embed(x).flatten(2).transpose(1, 2))  # (B, N, D)
        if self.cls_token is not None:
            z = torch.cat([self.cls_token[0].expand(z.shape[0], -1, -1), z], dim=1)
        return self.blocks(z)


class TorchCvT(nn.Module):
    def __init__(self, img_size, in_chans, num_classes, embed_dims, depths, num_heads, patch_sizes,
                 patch_strides, patch_paddings, mlp_ratio=4.0, sdpa=False):
        super().__init__()
        stages, chans, res = [], in_chans, img_size
        for i, (dim, depth, heads, k, s, p) in enumerate(zip(embed_dims, depths, num_heads, patch_sizes,
                                                             patch_strides, patch_paddings, strict=True)):
            last = i == len(depths) - 1
            stages.append(Stage(chans, dim, res, depth, heads, k, s, p, last, mlp_ratio, sdpa))
            chans, res = dim, stages[-1].res
        self.stages = nn.ModuleList(stages)
        self.norm, self.head = nn.LayerNorm(embed_dims[-1]), nn.Linear(embed_dims[-1], num_classes)

    def forward(self, x):
        for stage in self.stages[:-1]:
            z = stage(x)
            x = z.transpose(1, 2).reshape(z.shape[0], -1, stage.res, stage.res)
        return self.head(self.norm(self.stages[-1](x)[:, 0]))


def load_from_minivit(tmodel, model):
    """Copy a minivit ConvolutionalVisionTransformer's parameters and BatchNorm statistics into a TorchCvT
    of the same configuration."""
    # both register in the same order (a stage: the embedding's convolution and LayerNorm, the class
    # token, then the blocks; a block: norm1, the q, k, v convolutional projections, their Linears,
    # proj, norm2, the MLP), so parameters and buffers pair up in order
    pairs = [(list(model.named_parameters()), list(tmodel.named_parameters())),
             (list(model.named_buffers(persistent_only=True)),
              [(n, b) for n, b in tmodel.named_buffers() if not n.endswith("num_batches_tracked")])]
    with torch.no_grad():
        for ours, theirs in pairs:
            if len(ours) != len(theirs):
                raise ValueError(f"{len(ours)} minivit arrays, {len(theirs)} torch ones: not the same model")
            for (name, q), (tname, p) in zip(ours, theirs, strict=True):
                v = backend.to_numpy(getattr(q, "data", q))
                if v.ndim == 2:  # Linear: y = x W -> torch's y = x W^T
                    v = v.T
                if tuple(p.shape) != v.shape:
                    raise ValueError(f"{name} {v.shape} does not fit {tname} {tuple(p.shape)}")
                p.copy_(torch.from_numpy(np.ascontiguousarray(v)))
    return tmodel
