"""The pre-norm transformer encoder block: ViT's, and Swin's with window attention."""

from .. import backend
from .attention import MultiHeadSelfAttention
from .mlp import MLP
from .module import Module
from .norm import LayerNorm
from .regularize import DropPath
from .window import WindowAttention


class Block(Module):
    """z'_l = MSA(LN(z_{l-1})) + z_{l-1};   z_l = MLP(LN(z'_l)) + z'_l.

    Shapes: (B, N, D) -> (B, N, D). Each residual branch may be dropped per sample (DropPath).
    Backward: a residual y = x + f(x) passes its gradient on twice, dL/dx = dL/dy + f'(x)^T dL/dy:
    first through the MLP branch, then through the attention branch.
    ``attn``: another attention module of the same shapes in place of MSA: Swin's WindowAttention
    (SwinBlock), CvT's ConvAttention (CvtStage).
    """

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, drop=0.0, attn_drop=0.0,
                 drop_path=0.0, eps=1e-6, approximate="none", attn=None, rng=None, dtype=None):
        gen = backend.rng(rng)
        self.norm1 = LayerNorm(dim, eps=eps, dtype=dtype)
        self.attn = attn if attn is not None else MultiHeadSelfAttention(dim, num_heads, qkv_bias, attn_drop,
                                                                          drop, rng=gen, dtype=dtype)
        self.drop_path1 = DropPath(drop_path, rng=gen)
        self.norm2 = LayerNorm(dim, eps=eps, dtype=dtype)
        self.mlp = MLP(dim, int(dim * mlp_ratio), drop, approximate, rng=gen, dtype=dtype)
        self.drop_path2 = DropPath(drop_path, rng=gen)

    def forward(self, z):
        ### BEGIN SOLUTION a3.block.forward
        z = z + self.drop_path1.forward(self.attn.forward(self.norm1.forward(z)))  # z'_l
        z = z + self.drop_path2.forward(self.mlp.forward(self.norm2.forward(z)))  # z_l
        ### END SOLUTION
        return z

    def backward(self, dout):
        ### BEGIN SOLUTION a3.block.backward
        d = dout + self.norm2.backward(self.mlp.backward(self.drop_path2.backward(dout)))
        dz = self.attn.backward(self.drop_path1.backward(d))
        if isinstance(dz, tuple):  # MSA's (dL/dz, dL/dbias), with no bias here; WindowAttention and
            dz = dz[0]  # ConvAttention take z alone, so they return dL/dz alone
        dz = d + self.norm1.backward(dz)
        ### END SOLUTION
        return dz


class SwinBlock(Block):
    """Swin's block (Liu et al., 2021): the same pre-norm residual pair with window attention,
    z'_l = W-MSA(LN(z_{l-1})) + z_{l-1};  z_l = MLP(LN(z'_l)) + z'_l, and SW-MSA in place of
    W-MSA in every second block of a stage (``shift`` = M/2 there, 0 otherwise).

    Shapes: tokens (B, N, C) of a ``resolution`` (H, W) grid -> same. Where the grid is not larger
    than the window (min(H, W) <= M), the window shrinks to the grid and there is no shift:
    attention is global, as in the reference (stage 4 at 224 px). LayerNorm eps 1e-5.
    Backward: Block's, through WindowAttention's.
    """

    def __init__(self, dim, num_heads, resolution, window_size=7, shift=0, mlp_ratio=4.0, qkv_bias=True,
                 drop=0.0, attn_drop=0.0, drop_path=0.0, eps=1e-5, rng=None, dtype=None):
        H, W = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        if min(H, W) <= window_size:
            window_size, shift = min(H, W), 0
        gen = backend.rng(rng)
        attn = WindowAttention(dim, num_heads, (H, W), window_size, shift, qkv_bias, attn_drop, drop,
                               rng=gen, dtype=dtype)
        super().__init__(dim, num_heads, mlp_ratio, qkv_bias, drop, attn_drop, drop_path, eps, attn=attn,
                         rng=gen, dtype=dtype)
