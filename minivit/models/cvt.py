"""CvT (Wu et al., 2021, "CvT: Introducing Convolutions to Vision Transformers")."""

from .. import backend, validate
from ..nn import (
    Block,
    ClassToken,
    ConvAttention,
    ConvEmbed,
    Dropout,
    LayerNorm,
    Linear,
    Module,
    ModuleList,
    Sequential,
    conv_output_size,
    reset_layers,
    to_grid,
    to_tokens,
)
from .registry import register
from .vit import PooledClassifier, TokenPool


class CvtStage(Module):
    """One stage: a convolutional token embedding (the grid shrinks by its stride, the width
    becomes this stage's D), dropout, a class token in front where the stage has one (CvT's
    last), then ``depth`` pre-norm blocks of convolutional attention and an MLP.

    Shapes: a feature map (B, C, H, W) -> tokens (B, [1 +] H'W', D), (H', W') = ``out_resolution``.
    Backward: the blocks' in reverse order, the class token's, the embedding's.
    """

    def __init__(self, in_chans, dim, resolution, depth, num_heads, patch_size, patch_stride, patch_padding,
                 cls_token=False, mlp_ratio=4.0, qkv_bias=True, kernel_qkv=3, stride_kv=2, padding_kv=1,
                 stride_q=1, padding_q=1, drop=0.0, attn_drop=0.0, drop_path=(), eps=1e-5, rng=None,
                 dtype=None):
        gen = backend.rng(rng)
        self.dim, self.resolution = dim, resolution  # of the input map
        out = conv_output_size(resolution, patch_size, patch_stride, patch_padding)
        if out < 1:
            raise ValueError(f"a {resolution}x{resolution} map is too small for the stage's "
                             f"{patch_size}x{patch_size} embedding with padding {patch_padding}")
        self.out_resolution = out
        self.patch_embed = ConvEmbed(in_chans, dim, patch_size, patch_stride, patch_padding, eps=eps, rng=gen,
                                     dtype=dtype)
        self.pos_drop = Dropout(drop, rng=gen)
        if cls_token:
            self.cls_token = ClassToken(dim, rng=gen, dtype=dtype)
            # truncated normal(0.02), as the reference initialises it (ViT's class token starts at 0)
            self.cls_token.weight.data[...] = backend.trunc_normal(gen, (1, 1, dim), 0.02, dtype)
        self.blocks = Sequential(*(
            Block(dim, num_heads, mlp_ratio, qkv_bias, drop, attn_drop, drop_path[i], eps, rng=gen,
                  dtype=dtype, attn=ConvAttention(dim, num_heads, out, cls_token, kernel_qkv, stride_kv,
                                                  padding_kv, stride_q, padding_q, qkv_bias, attn_drop, drop,
                                                  rng=gen, dtype=dtype))
            for i in range(depth)
        ))

    def forward(self, x):
        z = self.pos_drop.forward(self.patch_embed.forward(x))  # (B, H'W', D)
        if "cls_token" in self._modules:
            z = self.cls_token.forward(z)  # (B, 1 + H'W', D)
        return self.blocks.forward(z)

    def backward(self, dout):
        dz = self.blocks.backward(dout)
        if "cls_token" in self._modules:
            dz = self.cls_token.backward(dz)
        return self.patch_embed.backward(self.pos_drop.backward(dz))


class ConvolutionalVisionTransformer(PooledClassifier):
    """CvT: three stages, each a convolutional token embedding and blocks of convolutional
    attention; no position embedding (the convolutions see where each token is). Between stages
    the tokens are a feature map again, (B, D, H, W). The class token joins in the last stage;
    y = LN(z_L^0), logits = y W_head + b_head (``cls_token=False``: the mean of LN(z_L) instead).

    Shapes (cvt_13, 224 px): x (B, 3, 224, 224) -> (B, 56*56, 64) -> (B, 28*28, 192)
    -> (B, 1 + 14*14, 384) -> y (B, 384) -> (B, classes). Backward: each stage's in reverse order,
    the tokens folded back into maps between them; returns dL/dx (B, C, H, W).

    Settings: per stage (tuples) ``embed_dims``, ``depths``, ``num_heads``, and the embedding's
    ``patch_sizes``, ``patch_strides``, ``patch_paddings`` (CvT: 7/4/2, 3/2/1, 3/2/1); for every
    stage the q/k/v projections' kernel, strides and paddings (3; k and v stride 2, q stride 1,
    padding 1). ``drop_path_rate``: a number rises linearly from 0 over all blocks (timm's rule, as
    minivit's ViT and Swin); one rate per stage rises from 0 within each stage (the original CvT's
    rule: cvt_13 and cvt_21 take 0, 0, 0.1). Init as transformers' CvT:
    Linear and convolution weights truncated normal(0.02), zero biases, the class token
    truncated normal(0.02), LayerNorm and BatchNorm gamma = 1, beta = 0; weight_init="fan_in"
    draws every Linear and convolution from PyTorch's default instead (for small models on
    small data). LayerNorm eps 1e-5 throughout, BatchNorm eps 1e-5, momentum 0.1.
    """

    def __init__(self, img_size=224, in_chans=3, num_classes=1000, embed_dims=(64, 192, 384),
                 depths=(1, 2, 10), num_heads=(1, 3, 6), patch_sizes=(7, 3, 3), patch_strides=(4, 2, 2),
                 patch_paddings=(2, 1, 1), mlp_ratio=4.0, qkv_bias=True, kernel_qkv=3, stride_kv=2,
                 padding_kv=1, stride_q=1, padding_q=1, cls_token=True, drop_rate=0.0, attn_drop_rate=0.0,
                 drop_path_rate=0.1, layer_norm_eps=1e-5, weight_init="trunc_normal", dtype=None, seed=0):
        for name, value in [("img_size", img_size), ("in_chans", in_chans), ("num_classes", num_classes),
                            ("kernel_qkv", kernel_qkv), ("stride_kv", stride_kv), ("stride_q", stride_q)]:
            validate.integer(name, value, 1)
        validate.integer("padding_kv", padding_kv, 0)
        validate.integer("padding_q", padding_q, 0)
        names = ("embed_dims", "depths", "num_heads", "patch_sizes", "patch_strides", "patch_paddings")
        stages = [tuple(s) for s in (embed_dims, depths, num_heads, patch_sizes, patch_strides,
                                     patch_paddings)]
        if not stages[0] or len({len(s) for s in stages}) != 1:
            raise ValueError(f"{', '.join(names[:-1])} and {names[-1]} need one entry per stage, got "
                             f"{', '.join(map(str, stages))}")
        embed_dims, depths, num_heads, patch_sizes, patch_strides, patch_paddings = stages
        for i, (dim, depth, heads, k, s, p) in enumerate(zip(*stages, strict=True)):
            for name, value, low in zip(names, (dim, depth, heads, k, s, p), (1, 1, 1, 1, 1, 0), strict=True):
                validate.integer(f"{name}[{i}]", value, low)
            if dim % heads:
                raise ValueError(f"stage {i + 1}'s width {dim} is not divisible by its num_heads {heads}")
        validate.number("mlp_ratio", mlp_ratio, 0.0, low_open=True)
        per_stage = not isinstance(drop_path_rate, (int, float))
        rates = tuple(drop_path_rate) if per_stage else (drop_path_rate,)
        if per_stage and len(rates) != len(depths):
            raise ValueError(f"drop_path_rate needs one rate per stage ({len(depths)}), got {rates}")
        for name, value in [("drop_rate", drop_rate), ("attn_drop_rate", attn_drop_rate),
                            *((f"drop_path_rate[{i}]" if per_stage else "drop_path_rate", r)
                              for i, r in enumerate(rates))]:
            validate.probability(name, value)
        validate.flag("qkv_bias", qkv_bias)
        validate.flag("cls_token", cls_token)
        validate.number("layer_norm_eps", layer_norm_eps, 0.0)
        validate.choice("weight_init", weight_init, Linear.INITS)
        validate.seed("seed", seed)
        dtype = backend.resolve_dtype(dtype)
        gen = backend.rng(seed)
        self.rng = gen  # shared by dropout and drop-path
        self.dtype, self.num_classes, self.img_size, self.in_chans = dtype, num_classes, img_size, in_chans
        self.num_prefix_tokens = int(cls_token)
        self.mlp_ratio = mlp_ratio
        if per_stage:  # from 0 to each stage's rate within the stage
            dpr = [r * i / max(d - 1, 1) for r, d in zip(rates, depths, strict=True) for i in range(d)]
        else:  # from 0 to the rate over all blocks
            dpr = [drop_path_rate * i / max(sum(depths) - 1, 1) for i in range(sum(depths))]
        self.stages = ModuleList()
        chans, r = in_chans, img_size
        for i in range(len(depths)):
            last = i == len(depths) - 1
            start = sum(depths[:i])
            stage = CvtStage(chans, embed_dims[i], r, depths[i], num_heads[i], patch_sizes[i],
                             patch_strides[i], patch_paddings[i], cls_token and last, mlp_ratio, qkv_bias,
                             kernel_qkv, stride_kv, padding_kv, stride_q, padding_q, drop_rate,
                             attn_drop_rate, dpr[start:start + depths[i]], layer_norm_eps, rng=gen,
                             dtype=dtype)
            self.stages.append(stage)
            chans, r = embed_dims[i], stage.out_resolution
        # BatchNorm needs two values per channel in training: where a projection's map is 1x1 (the
        # keys of a 2x2 grid), that takes two images in every training batch
        sides = [r for s in self.stages for r in (s.out_resolution, conv_output_size(
            s.out_resolution, kernel_qkv, stride_kv, padding_kv))]
        self.min_train_batch = 2 if min(sides) == 1 else 1
        self.num_features = embed_dims[-1]
        self.norm = LayerNorm(self.num_features, eps=layer_norm_eps, dtype=dtype)
        self.pool = TokenPool("cls" if cls_token else "mean", int(cls_token))
        self.head_drop = Dropout(drop_rate, rng=gen)
        self.head = Linear(self.num_features, num_classes, rng=gen, dtype=dtype)
        if weight_init != "trunc_normal":
            reset_layers(self, ("stages.", "head"), weight_init, gen)

    def forward_features(self, x):
        """Image -> the last stage's tokens after the final LN, (B, C, H, W) -> (B, [1 +] N_3, D_3)."""
        x = backend.xp_of(self.head.weight.data).asarray(x, dtype=self.dtype)  # onto the model's device
        want = (self.in_chans, self.img_size, self.img_size)
        if x.ndim != 4 or x.shape[1:] != want:
            raise ValueError(f"expected images (B, {', '.join(map(str, want))}), got shape {tuple(x.shape)}")
        for stage in self.stages[:-1]:
            r = stage.out_resolution
            x = to_grid(stage.forward(x), r, r)  # tokens -> the next stage's feature map (B, D, r, r)
        return self.norm.forward(self.stages[-1].forward(x))

    def backward_features(self, dz):
        dz = self.stages[-1].backward(self.norm.backward(dz))
        for stage in reversed(self.stages[:-1]):
            dz = stage.backward(to_tokens(dz))  # the next stage's map (B, D, r, r) -> tokens (B, r r, D)
        return dz


# CvT-13 and CvT-21 at 224 px (Wu et al., Table 2): widths 64, 192, 384 with 1, 3, 6 heads.
register("cvt_13", ConvolutionalVisionTransformer, depths=(1, 2, 10), drop_path_rate=(0.0, 0.0, 0.1))
register("cvt_21", ConvolutionalVisionTransformer, depths=(1, 4, 16), drop_path_rate=(0.0, 0.0, 0.1))

# The embedded scikit-learn digits: 8x8, one channel, 10 classes. Stage 1 embeds every pixel with
# its 3x3 neighbourhood (stride 1: an 8x8 grid, keys and values on 4x4), stages 2 and 3 halve the
# grid (4x4, then 2x2 with the class token). Depths 1, 2, 3 (transformers' CvT needs depth > stage
# index to build). From scratch on 1,295 images: fan-in init, as vit_digits and swin_digits.
register("cvt_digits", ConvolutionalVisionTransformer, img_size=8, in_chans=1, num_classes=10,
         embed_dims=(16, 32, 64), depths=(1, 2, 3), num_heads=(1, 2, 4), patch_sizes=(3, 3, 3),
         patch_strides=(1, 2, 2), patch_paddings=(1, 1, 1), mlp_ratio=2.0, drop_path_rate=0.0,
         weight_init="fan_in")
