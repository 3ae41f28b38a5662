"""The benchmark's PyTorch reference: the same ViT as minivit's VisionTransformer, written the
way PyTorch users write it (eager mode, nn.Conv2d patch embedding, nn.GELU, nn.LayerNorm).

Only the benchmark imports this module (and torch); minivit never does. ``load_from_minivit``
copies a minivit model's weights in (transposing the y = x W layouts to torch's y = x W^T), so
both frameworks start a benchmark from the same weights and the benchmark can check that they
compute the same logits.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minivit import backend


class Attention(nn.Module):
    def __init__(self, dim, num_heads, sdpa):
        super().__init__()
        self.num_heads, self.head_dim, self.sdpa = num_heads, dim // num_heads, sdpa
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, h, N, d) each
        if self.sdpa:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            a = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
            out = a.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class Block(nn.Module):
    """The pre-norm block around any attention module ``attn``: x + attn(LN(x)), then + MLP(LN(.)).
    The Swin and CvT scripts use it too, with their attentions and LayerNorm's default eps."""

    def __init__(self, dim, attn, mlp_ratio, eps=1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TorchViT(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, num_classes, embed_dim, depth, num_heads,
                 mlp_ratio=4.0, sdpa=False):
        super().__init__()
        n = (img_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, Attention(embed_dim, num_heads, sdpa), mlp_ratio)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        z = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N', D)
        z = torch.cat([self.cls_token.expand(z.shape[0], -1, -1), z], dim=1) + self.pos_embed
        for blk in self.blocks:
            z = blk(z)
        return self.head(self.norm(z[:, 0]))


def load_from_minivit(tmodel, model):
    """Copy a minivit VisionTransformer's parameters into a TorchViT of the same configuration."""
    sd = {k: backend.to_numpy(v) for k, v in model.state_dict().items()}  # NumPy or CuPy
    out = {}
    for name, v in sd.items():
        t = name.replace("cls_token.weight", "cls_token").replace("pos_embed.weight", "pos_embed")
        t = t.replace("patch_embed.proj.", "patch_embed.").replace("mlp.fc1.", "mlp.0.")
        t = t.replace("mlp.fc2.", "mlp.2.")
        if t == "patch_embed.weight":  # (C*P*P, D) -> conv kernel (D, C, P, P)
            k = tmodel.patch_embed.weight
            v = v.T.reshape(k.shape)
        elif name.endswith(".weight") and v.ndim == 2:  # Linear: y = x W -> torch's y = x W^T
            v = v.T
        out[t] = torch.from_numpy(np.ascontiguousarray(v))
    tmodel.load_state_dict(out)
    return tmodel
