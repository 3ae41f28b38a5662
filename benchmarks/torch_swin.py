"""The benchmark's PyTorch Swin: the same model as minivit's SwinTransformer, written the way
PyTorch users write it (eager mode, nn.Linear, nn.LayerNorm, nn.GELU, torch.roll; the shift masks
and relative-position indices built once, as buffers).

Only the benchmark imports this module (and torch); minivit never does. ``load_from_minivit``
copies a minivit model's weights in (its names are kept, Linear weights transposed), so both
frameworks start from the same weights and the benchmark can check their logits agree.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_vit import Block

from minivit import backend
from minivit.nn import relative_position_index, shift_window_mask


def partition(x, M):  # (B, H, W, C) -> (B * nW, M*M, C)
    B, H, W, C = x.shape
    return x.view(B, H // M, M, W // M, M, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, M * M, C)


def reverse(w, M, B, H, W):  # (B * nW, M*M, C) -> (B, H, W, C)
    return w.view(B, H // M, W // M, M, M, -1).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, -1)


class WindowAttention(nn.Module):
    def __init__(self, dim, heads, res, M, shift, sdpa):
        super().__init__()
        self.heads, self.res, self.M, self.shift, self.sdpa = heads, res, M, shift, sdpa
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.table = nn.Embedding((2 * M - 1) ** 2, heads)  # the bias table, looked up by offset
        index = torch.from_numpy(relative_position_index(M)).reshape(-1)
        self.register_buffer("index", index, persistent=False)
        mask = torch.from_numpy(shift_window_mask(res, res, M, shift)).float() if shift else None
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        B, N, C = x.shape
        R, M, s, h, n = self.res, self.M, self.shift, self.heads, self.M ** 2
        g = x.view(B, R, R, C)
        if s:
            g = torch.roll(g, (-s, -s), (1, 2))
        w = partition(g, M)
        qkv = self.qkv(w).reshape(-1, n, 3, h, C // h).permute(2, 0, 3, 1, 4)
        bias = self.table(self.index).view(n, n, h).permute(2, 0, 1)  # (h, n, n)
        if s:
            bias = (bias[None] + self.mask[:, None]).repeat(B, 1, 1, 1)  # (B * nW, h, n, n)
        if self.sdpa:
            o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias)
        else:
            a = (qkv[0] * (C // h) ** -0.5) @ qkv[1].transpose(-2, -1) + bias
            o = a.softmax(-1) @ qkv[2]
        o = reverse(self.proj(o.transpose(1, 2).reshape(-1, n, C)), M, B, R, R)
        if s:
            o = torch.roll(o, (s, s), (1, 2))
        return o.reshape(B, N, C)


class Merge(nn.Module):
    def __init__(self, dim, res):
        super().__init__()
        self.res, self.norm = res, nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        B, _, C = x.shape
        g = x.view(B, self.res, self.res, C)
        g = torch.cat([g[:, 0::2, 0::2], g[:, 1::2, 0::2], g[:, 0::2, 1::2], g[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(g)).reshape(B, -1, 2 * C)


class TorchSwin(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, num_classes, embed_dim, depths, num_heads, window_size,
                 mlp_ratio=4.0, sdpa=False):
        super().__init__()
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.patch_norm = nn.LayerNorm(embed_dim)
        layers, dim, res = [], embed_dim, img_size // patch_size
        for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            if i:
                layers.append(Merge(dim, res))
                dim, res = 2 * dim, res // 2
            shifts = [0 if j % 2 == 0 else window_size // 2 for j in range(depth)]
            M = min(window_size, res)  # a grid no larger than a window: one window, no shift
            layers += [Block(dim, WindowAttention(dim, heads, res, M, s if res > window_size else 0, sdpa),
                             mlp_ratio, eps=1e-5) for s in shifts]
        self.layers = nn.Sequential(*layers)
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)

    def forward(self, x):
        z = self.patch_norm(self.patch_embed(x).flatten(2).transpose(1, 2))  # (B, N, C)
        return self.head(self.norm(self.layers(z)).mean(dim=1))


def load_from_minivit(tmodel, model):
    """Copy a minivit SwinTransformer's parameters into a TorchSwin of the same configuration."""
    # minivit registers its parameters in the order this module does (a block: norm1, attention's
    # qkv, proj and bias table, norm2, MLP; patch merging: norm, reduction), so they pair up in order
    ours, theirs = list(model.named_parameters()), list(tmodel.named_parameters())
    if len(ours) != len(theirs):
        raise ValueError(f"{len(ours)} minivit parameters, {len(theirs)} torch ones: not the same model")
    with torch.no_grad():
        for (name, q), (tname, p) in zip(ours, theirs, strict=True):
            v = backend.to_numpy(q.data)
            if name == "patch_embed.proj.weight":  # (C*P*P, D) -> conv kernel (D, C, P, P)
                v = v.T.reshape(p.shape)
            elif name.endswith(".weight") and v.ndim == 2:  # Linear: y = x W -> torch's y = x W^T
                v = v.T
            if tuple(p.shape) != v.shape:
                raise ValueError(f"{name} {v.shape} does not fit {tname} {tuple(p.shape)}")
            p.copy_(torch.from_numpy(np.ascontiguousarray(v)))
    return tmodel
