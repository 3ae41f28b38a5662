"""The pre-norm transformer encoder block of ViT."""

from .. import backend
from .attention import MultiHeadSelfAttention
from .mlp import MLP
from .module import Module
from .norm import LayerNorm
from .regularize import DropPath


class Block(Module):
    """z'_l = MSA(LN(z_{l-1})) + z_{l-1};   z_l = MLP(LN(z'_l)) + z'_l.

    Shapes: (B, N, D) -> (B, N, D). Each residual branch may be dropped per sample (DropPath).
    Backward: a residual y = x + f(x) passes its gradient on twice, dL/dx = dL/dy + f'(x)^T dL/dy:
    first through the MLP branch, then through the attention branch.
    """

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, drop=0.0, attn_drop=0.0,
                 drop_path=0.0, eps=1e-6, approximate="none", rng=None, dtype=None):
        gen = backend.rng(rng)
        self.norm1 = LayerNorm(dim, eps=eps, dtype=dtype)
        self.attn = MultiHeadSelfAttention(dim, num_heads, qkv_bias, attn_drop, drop, rng=gen, dtype=dtype)
        self.drop_path1 = DropPath(drop_path, rng=gen)
        self.norm2 = LayerNorm(dim, eps=eps, dtype=dtype)
        self.mlp = MLP(dim, int(dim * mlp_ratio), drop, approximate, rng=gen, dtype=dtype)
        self.drop_path2 = DropPath(drop_path, rng=gen)

    def forward(self, z):
        z = z + self.drop_path1.forward(self.attn.forward(self.norm1.forward(z)))  # z'_l
        return z + self.drop_path2.forward(self.mlp.forward(self.norm2.forward(z)))  # z_l

    def backward(self, dout):
        d = dout + self.norm2.backward(self.mlp.backward(self.drop_path2.backward(dout)))
        dz, _ = self.attn.backward(self.drop_path1.backward(d))  # (dL/dz, dL/dbias): no bias here
        return d + self.norm1.backward(dz)
