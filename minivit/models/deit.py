"""DeiT (Touvron et al., 2021, "Training data-efficient image transformers & distillation
through attention"): a ViT with a second, distillation token that learns from a teacher."""

from .. import backend
from ..nn import Linear
from .registry import register
from .vit import DIGITS_CONFIG, VisionTransformer


class DistilledVisionTransformer(VisionTransformer):
    """z_0 = [x_class; x_dist; x_p E] + E_pos (N' + 2 tokens);  z_l = Block(z_{l-1});
    z_cls = LN(z_L^0) W_head + b_head,  z_dist = LN(z_L^1) W_head_dist + b_head_dist.

    Training mode: forward returns (z_cls, z_dist), for a distillation loss (z_cls learns the
    labels, z_dist the teacher). Eval mode: forward returns (z_cls + z_dist) / 2, DeiT's
    inference rule. backward takes what forward returned: a pair (dz_cls, dz_dist) in training
    mode, one array in eval mode (each head then gets half of it).

    Shapes: x (B, C, H, W) -> z_L (B, N' + 2, D) -> LN of tokens 0 and 1 (B, 2, D) -> two
    (B, classes) logits. The blocks are ViT's unchanged: attention treats x_dist as one more token.
    Backward: each head's backward gives dL/dy for its token; the two stack into (B, 2, D) for
    LN's backward (LN acts per token), the other tokens get zero, then ViT's backward_features.

    Init as DeiT / timm: x_dist and E_pos truncated normal(0.02), the distillation head like every
    Linear (W truncated normal(0.02), b = 0). x_class is 0 as in minivit's ViT (timm draws it from
    normal(1e-6), the DeiT repository truncated normal(0.02)). Only class-token pooling makes
    sense here: each head reads its own token.
    """

    def __init__(self, *args, pool="cls", class_token=True, dist_token=True, **kwargs):
        if pool != "cls" or not class_token or not dist_token:
            raise ValueError(
                "DistilledVisionTransformer reads its class and distillation tokens: expected pool='cls', "
                f"class_token=True and dist_token=True, got pool={pool!r}, class_token={class_token}, "
                f"dist_token={dist_token}"
            )
        super().__init__(*args, pool=pool, class_token=True, dist_token=True, **kwargs)
        self.pool = None  # the two heads read tokens 0 and 1 themselves
        self.head_dist = Linear(self.embed_dim, self.num_classes, init=self.weight_init, rng=self.rng,
                                dtype=self.dtype)

    def forward_head(self, z):
        y = self.head_drop.forward(self.norm.forward(z[:, :2]))  # (B, 2, D)
        z_cls = self.head.forward(y[:, 0])  # (B, classes)
        z_dist = self.head_dist.forward(y[:, 1])  # (B, classes)
        self.save_for_backward(z.shape, self.training)
        return (z_cls, z_dist) if self.training else (z_cls + z_dist) / 2

    def backward_head(self, dout):
        shape, pair = self.saved()  # backward() has checked that dout is what forward returned
        d_cls, d_dist = dout if pair else (dout / 2, dout / 2)
        xp = backend.xp_of(d_cls)
        dy = xp.stack([self.head.backward(d_cls), self.head_dist.backward(d_dist)], axis=1)  # (B, 2, D)
        dz = xp.zeros(shape, dtype=dy.dtype)  # (B, N' + 2, D)
        dz[:, :2] = self.norm.backward(self.head_drop.backward(dy))
        return dz


# DeiT-{Ti, S, B}/16 (Touvron et al.): the same ViTs, trained differently; the distilled ones add
# the distillation token, its position and its head (5,910,800 / 22,436,432 / 87,338,192 params).
for _name, _d, _heads in [("tiny", 192, 3), ("small", 384, 6), ("base", 768, 12)]:
    _cfg = dict(img_size=224, patch_size=16, embed_dim=_d, depth=12, num_heads=_heads)
    register(f"deit_{_name}_patch16_224", VisionTransformer, **_cfg)
    register(f"deit_{_name}_distilled_patch16_224", DistilledVisionTransformer, **_cfg)

# vit_digits' size with [x_class; x_dist]; class-token pooling by construction (each head reads its token).
register("deit_digits", DistilledVisionTransformer, **DIGITS_CONFIG)
