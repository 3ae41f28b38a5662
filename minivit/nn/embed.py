"""From an image to a sequence of tokens: patches, their embedding, extra tokens, positions."""

import numpy as np

from .. import backend, validate
from .conv import Conv2d, to_grid, to_tokens
from .linear import Linear
from .module import Module, Parameter
from .norm import LayerNorm


class Patchify(Module):
    """Cut an image into non-overlapping P x P patches and flatten each: x -> x_p.

    Shapes: x (B, C, H, W) -> x_p (B, N', C*P*P), N' = (H/P)(W/P), patches in row-major order
    over the (H/P, W/P) grid, each flattened in (c, i, j) order (so that x_p E is exactly a
    stride-P convolution whose kernel (D, C, P, P) is E^T reshaped).

    Backward: patchify only moves entries, each exactly once, so dL/dx is dL/dx_p moved back:
    the inverse reshape and transpose.
    """

    def __init__(self, patch_size):
        self.patch_size = validate.integer("patch_size", patch_size, 1)

    def forward(self, x):
        P = self.patch_size
        if x.ndim != 4:
            raise ValueError(f"Patchify expected an image batch (B, C, H, W), got shape {tuple(x.shape)}")
        B, C, H, W = x.shape
        if H % P or W % P:
            raise ValueError(
                f"image size {H}x{W} is not divisible by the patch size {P}: "
                f"expected H and W to be multiples of {P}"
            )
        self.save_for_backward(x.shape)
        ### BEGIN SOLUTION a3.patchify.forward
        x = x.reshape(B, C, H // P, P, W // P, P)  # (B, C, H/P, P, W/P, P)
        x = x.transpose(0, 2, 4, 1, 3, 5)  # (B, H/P, W/P, C, P, P)
        x_p = x.reshape(B, (H // P) * (W // P), C * P * P)  # (B, N', C*P*P)
        ### END SOLUTION
        return x_p

    def backward(self, dout):
        ((B, C, H, W),) = self.saved()
        P = self.patch_size
        ### BEGIN SOLUTION a3.patchify.backward
        d = dout.reshape(B, H // P, W // P, C, P, P)
        d = d.transpose(0, 3, 1, 4, 2, 5)  # (B, C, H/P, P, W/P, P)
        dx = d.reshape(B, C, H, W)
        ### END SOLUTION
        return dx

    def extra_repr(self):
        return f"patch_size={self.patch_size}"


class PatchEmbed(Module):
    """Patch embedding: z = x_p E + b, a linear projection of each flattened patch.

    Shapes: x (B, C, H, W) -> (B, N', D); E = proj.weight (C*P*P, D). Equal to a convolution
    with kernel size and stride P. Init: E and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    fan_in = C*P*P (the convolution default, which timm keeps for its patch embedding).
    ``norm_eps``: when given, a LayerNorm of that eps follows, z = LN(x_p E + b) (Swin's).

    Backward: (LayerNorm's, then) Linear's backward gives dL/dx_p and dL/dE; Patchify's
    backward folds dL/dx_p back into image layout.
    """

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, norm_eps=None, rng=None,
                 dtype=None):
        for name, value in [("img_size", img_size), ("patch_size", patch_size), ("in_chans", in_chans),
                            ("embed_dim", embed_dim)]:
            validate.integer(name, value, 1)
        if img_size % patch_size:
            raise ValueError(
                f"img_size {img_size} is not divisible by patch_size {patch_size}"
            )
        gen = backend.rng(rng)
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.patchify = Patchify(patch_size)
        self.proj = Linear(in_chans * patch_size * patch_size, embed_dim, init="fan_in", rng=gen, dtype=dtype)
        if norm_eps is not None:
            self.norm = LayerNorm(embed_dim, eps=norm_eps, dtype=dtype)

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"PatchEmbed expected an image batch (B, C, H, W), got shape {tuple(x.shape)}")
        _, C, H, W = x.shape
        if C != self.in_chans:
            raise ValueError(f"expected {self.in_chans} input channels, got {C} (shape {tuple(x.shape)})")
        if (H, W) != (self.img_size, self.img_size):
            raise ValueError(
                f"expected {self.img_size}x{self.img_size} images, got {H}x{W} (shape {tuple(x.shape)})"
            )
        z = self.proj.forward(self.patchify.forward(x))  # (B, N', D)
        return self.norm.forward(z) if "norm" in self._modules else z

    def backward(self, dout):
        if "norm" in self._modules:
            dout = self.norm.backward(dout)
        return self.patchify.backward(self.proj.backward(dout))


class ConvEmbed(Module):
    """CvT's convolutional token embedding: z = LN(Conv(x)), each output pixel's D channels one
    token (Wu et al., 2021). With kernel k > stride s the windows overlap (CvT-13: 7/4/2, then
    3/2/1), where PatchEmbed's k = s = P patches do not: PatchEmbed is the special case.

    Shapes: x (B, C, H, W) -> conv (B, D, H', W'), H' = (H + 2p - k) // s + 1 -> tokens
    (B, H'W', D), row-major -> LN over D. Backward: LayerNorm's, the tokens folded back into the
    (B, D, H', W') map, the convolution's.
    """

    def __init__(self, in_chans, embed_dim, kernel_size, stride, padding, eps=1e-5, init="trunc_normal",
                 rng=None, dtype=None):
        self.proj = Conv2d(in_chans, embed_dim, kernel_size, stride, padding, init=init, rng=rng, dtype=dtype)
        self.norm = LayerNorm(embed_dim, eps=eps, dtype=dtype)

    def forward(self, x):
        y = self.proj.forward(x)  # (B, D, H', W')
        self.save_for_backward(y.shape[2:])
        return self.norm.forward(to_tokens(y))  # (B, H'W', D)

    def backward(self, dout):
        (grid,) = self.saved()
        return self.proj.backward(to_grid(self.norm.backward(dout), *grid))


class ClassToken(Module):
    """Prepend k learned tokens to the sequence: z -> [x_class; z] (k = 1, ViT) or
    [x_class; x_dist; z] (k = 2, DeiT).

    Shapes: z (B, N, D) -> (B, k + N, D); weight (1, k, D) holds the tokens.
    Init: the class token 0 (as the original ViT), further tokens (DeiT's distillation token)
    truncated normal(0.02).

    Backward: the tokens are shared by every sample, so dL/dweight sums dL/dy[:, :k] over the
    batch; dL/dz = dL/dy[:, k:].
    """

    def __init__(self, dim, num_tokens=1, rng=None, dtype=None):
        validate.integer("ClassToken dim", dim, 1)
        self.num_tokens = validate.integer("ClassToken num_tokens", num_tokens, 1)
        gen = backend.rng(rng)
        tokens = backend.trunc_normal(gen, (1, num_tokens, dim), 0.02, dtype)
        tokens[:, 0] = 0.0
        self.weight = Parameter(tokens)

    def forward(self, z):
        xp = backend.xp_of(z)
        D = self.weight.shape[2]
        if z.ndim != 3 or z.shape[2] != D:
            raise ValueError(f"ClassToken expected tokens (B, N, {D}), got {tuple(z.shape)}")
        B = z.shape[0]
        k = self.num_tokens
        ### BEGIN SOLUTION a3.class_token.forward
        out = xp.empty((B, k + z.shape[1], D), dtype=z.dtype)  # (B, k + N, D)
        out[:, :k] = self.weight.data
        out[:, k:] = z
        ### END SOLUTION
        self.save_for_backward(k)
        return out

    def backward(self, dout):
        (k,) = self.saved()
        ### BEGIN SOLUTION a3.class_token.backward
        self.weight.grad += dout[:, :k].sum(axis=0, keepdims=True)
        dz = dout[:, k:]
        ### END SOLUTION
        return dz

    def extra_repr(self):
        return f"num_tokens={self.num_tokens}"


def _check_tokens(layer, z, table):
    """A position table (1, N, D) adds to tokens (B, N, D) only."""
    if z.ndim != 3 or z.shape[1:] != table.shape[1:]:
        raise ValueError(
            f"{type(layer).__name__} expected tokens (B, {table.shape[1]}, {table.shape[2]}), "
            f"got {tuple(z.shape)}"
        )


class PositionEmbedding(Module):
    """Add a learned position embedding: z_0 = z + E_pos.

    Shapes: z (B, N, D) -> same; E_pos = weight (1, N, D). Init: truncated normal(0.02).
    Backward: dL/dz = dL/dy; dL/dE_pos = sum over the batch of dL/dy.
    """

    def __init__(self, num_tokens, dim, rng=None, dtype=None):
        validate.integer("PositionEmbedding num_tokens", num_tokens, 1)
        validate.integer("PositionEmbedding dim", dim, 1)
        gen = backend.rng(rng)
        self.weight = Parameter(backend.trunc_normal(gen, (1, num_tokens, dim), 0.02, dtype))

    def forward(self, z):
        _check_tokens(self, z, self.weight.data)
        self.save_for_backward(None)
        return z + self.weight.data

    def backward(self, dout):
        self.saved()
        ### BEGIN SOLUTION a3.position.backward
        self.weight.grad += dout.sum(axis=0, keepdims=True)
        ### END SOLUTION
        return dout


class SinCosPositionEmbedding(Module):
    """Add a fixed 2-D sine-cosine position embedding: z_0 = z + E_pos, E_pos not learned.

    The patch at grid row r, column c gets E_pos = [sin(c w), cos(c w), sin(r w), cos(r w)], with
    the D/4 frequencies w_k = 10000^(-k / (D/4)) of the Transformer's sinusoids (Vaswani et al.),
    one set per axis (as in MAE and in Beyer et al., 2022, "Better plain ViT baselines"); extra
    tokens in front (class, distillation) get zeros. On small datasets a fixed table helps: the
    model need not learn from few images which patches are neighbours.
    Shapes: z (B, k + g*g, D) -> same; D must be divisible by 4. Backward: dL/dz = dL/dy.
    """

    def __init__(self, grid_size, dim, num_prefix_tokens=0, dtype=None):
        validate.integer("SinCosPositionEmbedding grid_size", grid_size, 1)
        validate.integer("SinCosPositionEmbedding dim", dim, 1)
        validate.integer("SinCosPositionEmbedding num_prefix_tokens", num_prefix_tokens, 0)
        if dim % 4:
            raise ValueError(f"a 2-D sin-cos position embedding needs embed_dim divisible by 4, got {dim}")
        w = 10000.0 ** (-np.arange(dim // 4) / (dim // 4))  # (D/4,)
        r, c = np.divmod(np.arange(grid_size * grid_size), grid_size)  # row-major grid, as Patchify
        table = np.zeros((num_prefix_tokens + grid_size * grid_size, dim))  # (k + N', D)
        cw, rw = c[:, None] * w, r[:, None] * w  # (N', D/4) each
        table[num_prefix_tokens:] = np.concatenate([np.sin(cw), np.cos(cw), np.sin(rw), np.cos(rw)], axis=1)
        self.table = backend.asarray(table[None], dtype=backend.resolve_dtype(dtype))  # (1, k + N', D)

    def forward(self, z):
        _check_tokens(self, z, self.table)
        self.save_for_backward(None)
        return z + self.table

    def backward(self, dout):
        self.saved()
        return dout
