"""The Swin Transformer (Liu et al., 2021, "Hierarchical Vision Transformer using Shifted Windows")."""

from .. import backend, validate
from ..nn import (
    Dropout,
    LayerNorm,
    Linear,
    Module,
    ModuleList,
    PatchEmbed,
    PatchMerging,
    Sequential,
    SwinBlock,
    reset_layers,
)
from .registry import register
from .vit import PooledClassifier, TokenPool


class SwinStage(Module):
    """One stage: (patch merging, in every stage but the first, then) ``depth`` Swin blocks,
    W-MSA and SW-MSA alternating.

    Shapes: tokens (B, H*W, C) of the (H, W) input grid -> merged (B, H/2 * W/2, 2C) -> the blocks,
    same shape. Patch merging sits at the start of a stage, as in timm (transformers puts it at
    the end of the stage before: the same computation, other names).
    Backward: the blocks' in reverse order, then the merging's.
    """

    def __init__(self, dim, resolution, depth, num_heads, window_size, downsample, mlp_ratio=4.0,
                 qkv_bias=True, drop=0.0, attn_drop=0.0, drop_path=(), eps=1e-5, rng=None, dtype=None):
        gen = backend.rng(rng)
        self.resolution = resolution  # of the input grid
        if downsample:
            self.downsample = PatchMerging(dim, rng=gen, dtype=dtype)  # eps 1e-5 in both references
            dim, resolution = 2 * dim, resolution // 2
        self.dim, self.out_resolution = dim, resolution
        self.blocks = Sequential(*(
            SwinBlock(dim, num_heads, resolution, window_size, 0 if i % 2 == 0 else window_size // 2,
                      mlp_ratio, qkv_bias, drop, attn_drop, drop_path[i], eps, rng=gen, dtype=dtype)
            for i in range(depth)
        ))

    def forward(self, x):
        if "downsample" in self._modules:
            B, _, C = x.shape
            r = self.resolution
            x = self.downsample.forward(x.reshape(B, r, r, C)).reshape(B, -1, 2 * C)  # (B, H/2 * W/2, 2C)
        return self.blocks.forward(x)

    def backward(self, dout):
        dout = self.blocks.backward(dout)
        if "downsample" in self._modules:
            B, _, C2 = dout.shape
            r = self.out_resolution
            dout = self.downsample.backward(dout.reshape(B, r, r, C2)).reshape(B, -1, C2 // 2)
        return dout


class SwinTransformer(PooledClassifier):
    """Swin: z_0 = LN(x_p E) on the (H/P, W/P) grid of P x P patches; four stages (S) of Swin
    blocks, each after the first halving the grid and doubling the width by patch merging;
    y = mean over tokens of LN(z_L); logits = y W_head + b_head.

    Shapes (swin_tiny, 224 px, P = 4, C = 96): x (B, 3, 224, 224) -> (B, 56*56, 96) -> (B, 28*28, 192)
    -> (B, 14*14, 384) -> (B, 7*7, 768) -> y (B, 768) -> (B, classes). Window attention costs
    O(N M^2) per stage instead of ViT's O(N^2). Backward: each stage's backward in reverse order;
    returns dL/dx (B, C, H, W).

    Settings as timm names them; ``depths`` and ``num_heads`` per stage. Init as timm: Linear
    weights truncated normal(0.02) with zero biases, the relative position bias tables truncated
    normal(0.02), LayerNorm gamma = 1 and beta = 0, the patch projection the convolution
    default; weight_init="fan_in" draws the stages' and the head's Linear layers from
    U(+-1/sqrt(D_in)) instead, as VisionTransformer's (for small models on small data).
    ``layer_norm_eps`` is the blocks' and the final LayerNorm's; the patch embedding's and patch
    merging's keep 1e-5, as in transformers (timm uses 1e-5 throughout). Every stage's grid must
    be cut into whole windows (or be no larger than one): a resolution the windows do not tile is
    a ValueError naming the sizes that work (timm pads instead; transformers pads at another
    step, so the two disagree there).
    """

    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000, embed_dim=96,
                 depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4.0, qkv_bias=True,
                 drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1, layer_norm_eps=1e-5,
                 weight_init="trunc_normal", dtype=None, seed=0):
        for name, value in [("img_size", img_size), ("patch_size", patch_size), ("in_chans", in_chans),
                            ("num_classes", num_classes), ("embed_dim", embed_dim),
                            ("window_size", window_size)]:
            validate.integer(name, value, 1)
        depths, num_heads = tuple(depths), tuple(num_heads)
        if not depths or len(depths) != len(num_heads):
            raise ValueError(f"depths and num_heads need one entry per stage, got depths={depths}, "
                             f"num_heads={num_heads}")
        for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            validate.integer(f"depths[{i}]", depth, 1)
            validate.integer(f"num_heads[{i}]", heads, 1)
            if (embed_dim << i) % heads:
                raise ValueError(f"stage {i + 1}'s width {embed_dim << i} is not divisible by its "
                                 f"num_heads {heads}")
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        M, grid = window_size, img_size // patch_size
        resolutions = [grid >> i for i in range(len(depths))]  # each stage's grid
        unit = patch_size * M << (len(depths) - 1)
        hint = (f"expected an img_size that patch merging halves evenly into grids divisible by window_size "
                f"{M} (or no larger than it), e.g. a multiple of {unit} for patch_size {patch_size}")
        for i, r in enumerate(resolutions):
            if i and (r << 1) != resolutions[i - 1]:
                odd = resolutions[i - 1]
                raise ValueError(f"img_size {img_size}: stage {i}'s {odd}x{odd} token grid cannot be "
                                 f"halved by patch merging; {hint}")
            if r > M and r % M:
                raise ValueError(f"img_size {img_size}: stage {i + 1}'s {r}x{r} token grid is not cut into "
                                 f"whole {M}x{M} windows; {hint}")
        validate.number("mlp_ratio", mlp_ratio, 0.0, low_open=True)
        for name, value in [("drop_rate", drop_rate), ("attn_drop_rate", attn_drop_rate),
                            ("drop_path_rate", drop_path_rate)]:
            validate.probability(name, value)
        validate.flag("qkv_bias", qkv_bias)
        validate.number("layer_norm_eps", layer_norm_eps, 0.0)
        validate.choice("weight_init", weight_init, Linear.INITS)
        validate.seed("seed", seed)
        dtype = backend.resolve_dtype(dtype)
        gen = backend.rng(seed)
        self.rng = gen  # shared by dropout and drop-path
        self.dtype, self.num_classes, self.embed_dim = dtype, num_classes, embed_dim
        self.img_size, self.in_chans, self.window_size = img_size, in_chans, window_size
        self.mlp_ratio = mlp_ratio
        self.num_prefix_tokens = 0
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, norm_eps=1e-5, rng=gen,
                                      dtype=dtype)
        self.pos_drop = Dropout(drop_rate, rng=gen)
        n = sum(depths)
        dpr = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # linear over all blocks
        self.layers = ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.layers.append(SwinStage(embed_dim << max(i - 1, 0), resolutions[max(i - 1, 0)], depth,
                                         num_heads[i], M, i > 0, mlp_ratio, qkv_bias, drop_rate,
                                         attn_drop_rate, dpr[start:start + depth], layer_norm_eps, rng=gen,
                                         dtype=dtype))
        self.num_features = embed_dim << (len(depths) - 1)
        self.norm = LayerNorm(self.num_features, eps=layer_norm_eps, dtype=dtype)
        self.pool = TokenPool("mean", 0)
        self.head_drop = Dropout(drop_rate, rng=gen)
        self.head = Linear(self.num_features, num_classes, rng=gen, dtype=dtype)
        if weight_init != "trunc_normal":
            reset_layers(self, ("layers.", "head"), weight_init, gen)

    def forward_features(self, x):
        """Image -> the last stage's tokens, (B, C, H, W) -> (B, N_4, C_4), after the final LN."""
        x = backend.xp_of(self.head.weight.data).asarray(x, dtype=self.dtype)  # onto the model's device
        z = self.pos_drop.forward(self.patch_embed.forward(x))  # (B, N, C)
        for stage in self.layers:
            z = stage.forward(z)
        return self.norm.forward(z)

    def backward_features(self, dz):
        dz = self.norm.backward(dz)
        for stage in reversed(self.layers):
            dz = stage.backward(dz)
        return self.patch_embed.backward(self.pos_drop.backward(dz))


# Swin-T, -S, -B with 4x4 patches and 7x7 windows at 224 px (Liu et al., Table 1).
for _name, _c, _depths, _heads in [("tiny", 96, (2, 2, 6, 2), (3, 6, 12, 24)),
                                   ("small", 96, (2, 2, 18, 2), (3, 6, 12, 24)),
                                   ("base", 128, (2, 2, 18, 2), (4, 8, 16, 32))]:
    register(f"swin_{_name}_patch4_window7_224", SwinTransformer, img_size=224, patch_size=4, window_size=7,
             embed_dim=_c, depths=_depths, num_heads=_heads)

# The embedded scikit-learn digits: 8x8, one channel, 10 classes; 2x2 patches -> a 4x4 grid. Stage 1
# attends in four 2x2 windows (shifted by one in its second block); patch merging halves the grid to
# 2x2, which one window covers (global attention, no shift). From scratch on 1,295 images: fan-in
# init, as vit_digits (with 0.02 it reached 92% after 30 epochs instead of 97%).
register("swin_digits", SwinTransformer, img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=48,
         depths=(2, 2), num_heads=(3, 6), window_size=2, mlp_ratio=2.0, drop_path_rate=0.0,
         weight_init="fan_in")
