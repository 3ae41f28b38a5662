"""The Vision Transformer (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words")."""

from .. import backend, validate
from ..nn import (
    Block,
    ClassToken,
    Dropout,
    LayerNorm,
    Linear,
    Module,
    ModuleList,
    PatchEmbed,
    PositionEmbedding,
    SinCosPositionEmbedding,
    reset_layers,
)
from .registry import register


class TokenPool(Module):
    """Reduce the sequence to one vector per image.

    pool="cls": y = z[:, 0] (the class token; ViT's y = LN(z_L^0)).
    pool="mean": y = mean of the patch tokens z[:, k:] (k extra tokens skipped).
    Shapes: (B, N, D) -> (B, D). Backward: the gradient goes to token 0, or is spread evenly
    (divided by the number of patch tokens) over the patch tokens; other tokens get zero.
    """

    def __init__(self, pool="cls", num_prefix_tokens=1):
        validate.choice("pool", pool, ("cls", "mean"))
        if pool == "cls" and num_prefix_tokens < 1:
            raise ValueError("pool='cls' needs a class token: set class_token=True or pool='mean'")
        self.pool, self.k = pool, num_prefix_tokens

    def forward(self, z):
        self.save_for_backward(z.shape)
        return z[:, 0] if self.pool == "cls" else z[:, self.k:].mean(axis=1)

    def backward(self, dout):
        (shape,) = self.saved()
        xp = backend.xp_of(dout)
        dz = xp.zeros(shape, dtype=dout.dtype)
        if self.pool == "cls":
            dz[:, 0] = dout
        else:
            dz[:, self.k:] = dout[:, None, :] / (shape[1] - self.k)
        return dz


class PooledClassifier(Module):
    """The end of a model whose final LayerNorm is on its tokens (Swin, CvT): logits =
    head(Dropout(pool(features(x)))). A subclass gives ``forward_features`` / ``backward_features``
    and the modules ``pool`` (a TokenPool), ``head_drop`` and ``head``.

    Shapes: image -> tokens (B, N, D) -> (B, D) -> logits (B, classes). Backward: the head's, the
    dropout's, the pool's, then back through the features.
    """

    def forward(self, x):
        y = self.pool.forward(self.forward_features(x))  # (B, D)
        return self.head.forward(self.head_drop.forward(y))  # (B, classes)

    def backward(self, dlogits):
        dy = self.head_drop.backward(self.head.backward(dlogits))
        return self.backward_features(self.pool.backward(dy))


class VisionTransformer(Module):
    """ViT: z_0 = [x_class; x_p E] + E_pos;  z_l = Block(z_{l-1}), l = 1..L;  y = LN(pool(z_L));
    logits = y W_head + b_head.

    Shapes: x (B, C, H, W) -> x_p E (B, N', D) -> z (B, N' + 1, D) -> y (B, D) -> (B, classes).
    Backward: each stage's backward in reverse order; returns dL/dx (B, C, H, W).

    Init as the reference (timm) ViT: Linear weights truncated normal(0.02) with zero biases,
    E_pos truncated normal(0.02), LayerNorm gamma = 1 and beta = 0, the patch projection
    uniform(+-1/sqrt(C P^2)) (the convolution default), the class token 0 (original ViT).
    Two options suit small models trained from scratch on small data (vit_digits uses both):
    weight_init="fan_in" draws the blocks' and the head's Linear layers from U(+-1/sqrt(D_in))
    (PyTorch's default), larger than 0.02 at small D; pos_embed="sincos" replaces the learned
    E_pos by a fixed 2-D sine-cosine table (SinCosPositionEmbedding).
    dist_token=True adds DeiT's distillation token x_dist after x_class (transformers'
    DeiTForImageClassification: the token is there, the head reads x_class);
    DistilledVisionTransformer adds its head. layer_norm_eps: every LayerNorm's eps (1e-6 in
    timm, 1e-12 in transformers' configs).
    Mean pooling takes LN after pooling (timm's fc_norm); for class-token pooling LN(z_L^0) is
    the same whichever comes first, because LN acts per token.
    Every setting is checked before anything is built: a nonsense one (embed_dim=0, depth=-1,
    drop_rate=1.5, patch_size not dividing img_size, ...) is a ValueError that names it.
    """

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=768,
                 depth=12, num_heads=12, mlp_ratio=4.0, qkv_bias=True, pool="cls", class_token=True,
                 dist_token=False, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                 approximate="none", layer_norm_eps=1e-6, weight_init="trunc_normal", pos_embed="learn",
                 dtype=None, seed=0):
        # every setting is checked before anything is built: a ValueError names the setting
        for name, value in [("img_size", img_size), ("patch_size", patch_size), ("in_chans", in_chans),
                            ("num_classes", num_classes), ("embed_dim", embed_dim), ("depth", depth),
                            ("num_heads", num_heads)]:
            validate.integer(name, value, 1)
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        validate.number("mlp_ratio", mlp_ratio, 0.0, low_open=True)
        if int(embed_dim * mlp_ratio) < 1:
            raise ValueError(f"mlp_ratio must give a hidden width int(embed_dim * mlp_ratio) >= 1, "
                             f"got int({embed_dim} * {mlp_ratio!r}) = 0")
        for name, value in [("drop_rate", drop_rate), ("attn_drop_rate", attn_drop_rate),
                            ("drop_path_rate", drop_path_rate)]:
            validate.probability(name, value)
        validate.flag("qkv_bias", qkv_bias)
        if validate.flag("dist_token", dist_token) and not validate.flag("class_token", class_token):
            raise ValueError("dist_token=True needs class_token=True: DeiT's x_dist follows x_class")
        k = (1 + dist_token) if validate.flag("class_token", class_token) else 0
        validate.number("layer_norm_eps", layer_norm_eps, 0.0)
        pooling = TokenPool(pool, k)  # checks pool (it has no weights to build)
        validate.choice("approximate", approximate, ("none", "tanh"))
        validate.choice("weight_init", weight_init, Linear.INITS)
        validate.choice("pos_embed", pos_embed, ("learn", "sincos"))
        if pos_embed == "sincos" and embed_dim % 4:
            raise ValueError(f"pos_embed='sincos' needs embed_dim divisible by 4, got embed_dim {embed_dim}")
        validate.seed("seed", seed)
        dtype = backend.resolve_dtype(dtype)
        gen = backend.rng(seed)
        self.rng = gen  # shared by dropout and drop-path: one state to save and restore
        self.dtype, self.num_classes, self.embed_dim = dtype, num_classes, embed_dim
        self.img_size, self.in_chans, self.weight_init = img_size, in_chans, weight_init
        self.num_prefix_tokens = k  # [x_class] (1), [x_class; x_dist] (2) or none (0)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, rng=gen, dtype=dtype)
        if k:
            self.cls_token = ClassToken(embed_dim, k, rng=gen, dtype=dtype)
        if pos_embed == "learn":
            num_tokens = k + self.patch_embed.num_patches
            self.pos_embed = PositionEmbedding(num_tokens, embed_dim, rng=gen, dtype=dtype)
        else:
            self.pos_embed = SinCosPositionEmbedding(self.patch_embed.grid_size, embed_dim, k, dtype=dtype)
        self.pos_drop = Dropout(drop_rate, rng=gen)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear in depth
        self.blocks = ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dpr[i],
                  eps=layer_norm_eps, approximate=approximate, rng=gen, dtype=dtype)
            for i in range(depth)
        )
        self.pool = pooling
        self.norm = LayerNorm(embed_dim, eps=layer_norm_eps, dtype=dtype)
        self.head_drop = Dropout(drop_rate, rng=gen)
        self.head = Linear(embed_dim, num_classes, rng=gen, dtype=dtype)
        if weight_init != "trunc_normal":
            reset_layers(self, ("blocks.", "head"), weight_init, gen)

    # -- the token sequence ------------------------------------------------------------------
    def forward_features(self, x):
        """Image -> encoded tokens z_L, (B, C, H, W) -> (B, N, D)."""
        x = backend.xp_of(self.head.weight.data).asarray(x, dtype=self.dtype)  # onto the model's device
        z = self.patch_embed.forward(x)  # (B, N', D)
        if "cls_token" in self._modules:
            z = self.cls_token.forward(z)  # (B, k + N', D)
        z = self.pos_drop.forward(self.pos_embed.forward(z))
        for blk in self.blocks:
            z = blk.forward(z)
        return z

    def backward_features(self, dz):
        for blk in reversed(self.blocks):
            dz = blk.backward(dz)
        dz = self.pos_embed.backward(self.pos_drop.backward(dz))
        if "cls_token" in self._modules:
            dz = self.cls_token.backward(dz)
        return self.patch_embed.backward(dz)

    # -- the classifier ----------------------------------------------------------------------
    def forward_head(self, z):
        y = self.norm.forward(self.pool.forward(z))  # (B, D)
        return self.head.forward(self.head_drop.forward(y))  # (B, classes)

    def backward_head(self, dlogits):
        dy = self.head_drop.backward(self.head.backward(dlogits))
        return self.pool.backward(self.norm.backward(dy))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def backward(self, dlogits):
        return self.backward_features(self.backward_head(dlogits))


# ViT-{Ti, S, B, L}/16 at 224 px (Dosovitskiy et al.; Touvron et al. for Ti and S).
for _name, _d, _depth, _heads in [("tiny", 192, 12, 3), ("small", 384, 12, 6),
                                  ("base", 768, 12, 12), ("large", 1024, 24, 16)]:
    register(f"vit_{_name}_patch16_224", VisionTransformer, img_size=224, patch_size=16,
             embed_dim=_d, depth=_depth, num_heads=_heads)

# The embedded scikit-learn digits: 8x8, one channel, 10 classes; 2x2 patches -> 16 tokens. From
# scratch on 1,295 images: fan-in init and a fixed sin-cos E_pos (VisionTransformer's docstring).
DIGITS_CONFIG = dict(img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=64, depth=4,
                     num_heads=4, mlp_ratio=2.0, weight_init="fan_in", pos_embed="sincos")
register("vit_digits", VisionTransformer, **DIGITS_CONFIG, pool="mean", class_token=False)
# The same size as the reference ViT reads images: a class token and a learned E_pos. It trains a
# little worse on digits, but its attention has a class token's row to follow (rollout) and it
# exports to transformers (save_pretrained), whose ViT has no mean pooling.
register("vit_digits_cls", VisionTransformer, **{**DIGITS_CONFIG, "pos_embed": "learn"})
