"""The Vision Transformer and the model registry."""

import math
import re

import numpy as np
import pytest
from conftest import npy, randn, randomize, snapshot, tiny_vit, wrong_douts

from minivit import backend, create_model, list_models, nn
from minivit.gradcheck import gradcheck
from minivit.models import VisionTransformer, model_config

# ----------------------------------------------------------------------------- registry and sizes

REFERENCE_COUNTS = {  # timm's models with 1000 classes
    "vit_tiny_patch16_224": 5_717_416,
    "vit_small_patch16_224": 22_050_664,
    "vit_base_patch16_224": 86_567_656,
}


def test_registry_names():
    names = set(list_models())
    assert {"vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224",
            "vit_large_patch16_224", "vit_digits"} <= names
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", list(REFERENCE_COUNTS))
def test_parameter_counts_equal_the_reference(name):
    model = create_model(name)
    assert model.num_parameters() == REFERENCE_COUNTS[name]
    assert model.num_classes == 1000 and model.dtype == np.float32


@pytest.mark.slow
def test_parameter_count_vit_large():
    model = create_model("vit_large_patch16_224")  # ~1.2 GB of float32 weights and as much for grads
    assert model.num_parameters() == 304_326_632
    assert len(model.blocks) == 24 and model.embed_dim == 1024


@pytest.mark.parametrize("name,dim,depth,heads", [
    ("vit_tiny_patch16_224", 192, 12, 3), ("vit_small_patch16_224", 384, 12, 6),
    ("vit_base_patch16_224", 768, 12, 12), ("vit_large_patch16_224", 1024, 24, 16)])
def test_reference_configurations(name, dim, depth, heads):
    c = model_config(name)
    assert (c["embed_dim"], c["depth"], c["num_heads"]) == (dim, depth, heads)
    assert (c["img_size"], c["patch_size"]) == (224, 16)
    assert c.get("mlp_ratio", 4.0) == 4.0 and c.get("qkv_bias", True) and c.get("pool", "cls") == "cls"


def test_vit_digits_config():
    m = create_model("vit_digits")
    assert m.model_name == "vit_digits"
    assert m.patch_embed.num_patches == 16 and m.in_chans == 1 and m.num_classes == 10
    assert m.embed_dim == 64 and len(m.blocks) == 4 and m.blocks[0].attn.num_heads == 4
    assert m.blocks[0].mlp.fc1.out_features == 128
    assert m.pool.pool == "mean" and "cls_token" not in dict(m.named_modules())
    y = m.forward(np.zeros((3, 1, 8, 8), np.float32))
    assert y.shape == (3, 10) and y.dtype == np.float32


def test_overrides_reach_the_model_and_config():
    m = create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, in_chans=1, num_classes=7,
                     embed_dim=24, depth=3, num_heads=2, mlp_ratio=3.0, qkv_bias=False, pool="mean",
                     drop_rate=0.1, drop_path_rate=0.2, dtype="float64", seed=3)
    assert m.config["num_classes"] == 7 and m.config["embed_dim"] == 24 and m.config["seed"] == 3
    assert m.patch_embed.num_patches == 64 and m.head.weight.shape == (24, 7)
    assert len(m.blocks) == 3 and m.blocks[0].attn.num_heads == 2 and m.blocks[0].attn.qkv.bias is None
    assert m.blocks[0].mlp.fc1.out_features == 72 and m.pool.pool == "mean"
    assert m.pos_drop.p == 0.1 and m.blocks[2].drop_path1.p == pytest.approx(0.2)
    assert all(p.dtype == np.float64 for p in m.parameters())
    assert model_config("vit_tiny_patch16_224")["embed_dim"] == 192  # the registry is not changed


def test_drop_path_rate_grows_linearly_with_depth():
    m = tiny_vit(depth=5, drop_path_rate=0.4)
    rates = [blk.drop_path1.p for blk in m.blocks]
    np.testing.assert_allclose(rates, [0.0, 0.1, 0.2, 0.3, 0.4])
    assert all(blk.drop_path2.p == blk.drop_path1.p for blk in m.blocks)


def test_bad_configuration_is_a_value_error():
    with pytest.raises(ValueError, match="unknown model 'vit_nope'.*vit_digits"):
        create_model("vit_nope")
    with pytest.raises(ValueError, match=r"bad configuration for 'vit_digits': unknown settings "
                                         r"\['colour'\]; VisionTransformer takes approximate, .*, "
                                         r"weight_init$"):
        create_model("vit_digits", colour=True)
    with pytest.raises(ValueError, match="bad configuration for 'vit_digits': img_size 9 is not divisible by "
                                         "patch_size 2"):
        create_model("vit_digits", img_size=9)
    with pytest.raises(ValueError, match="not divisible by num_heads 5"):
        create_model("vit_digits", num_heads=5)
    with pytest.raises(ValueError, match="pool must be one of 'cls', 'mean', got 'max'"):
        create_model("vit_digits", pool="max")
    with pytest.raises(ValueError, match="pool='cls' needs a class token"):
        create_model("vit_digits", pool="cls", class_token=False)
    with pytest.raises(ValueError, match="float32 or float64"):
        create_model("vit_digits", dtype="float16")
    with pytest.raises(ValueError, match="pos_embed must be one of 'learn', 'sincos', got 'rope'"):
        create_model("vit_digits", pos_embed="rope")
    with pytest.raises(ValueError, match="init must be one of"):
        create_model("vit_digits", weight_init="xavier")


NONSENSE = [  # (override, what the message says), each on vit_digits
    (dict(img_size=0), "img_size must be an integer >= 1, got 0"),
    (dict(img_size=8.0), "img_size must be an integer >= 1, got 8.0"),
    (dict(patch_size=0), "patch_size must be an integer >= 1, got 0"),
    (dict(patch_size=3), "img_size 8 is not divisible by patch_size 3"),
    (dict(in_chans=0), "in_chans must be an integer >= 1, got 0"),
    (dict(num_classes=0), "num_classes must be an integer >= 1, got 0"),
    (dict(num_classes=True), "num_classes must be an integer >= 1, got True"),
    (dict(embed_dim=0), "embed_dim must be an integer >= 1, got 0"),
    (dict(embed_dim=66, num_heads=2), "pos_embed='sincos' needs embed_dim divisible by 4, got embed_dim 66"),
    (dict(depth=-1), "depth must be an integer >= 1, got -1"),
    (dict(depth=0), "depth must be an integer >= 1, got 0"),
    (dict(num_heads=0), "num_heads must be an integer >= 1, got 0"),
    (dict(num_heads=3), "embed_dim 64 is not divisible by num_heads 3"),
    (dict(mlp_ratio=0), "mlp_ratio must be a finite number > 0, got 0.0"),
    (dict(mlp_ratio=float("nan")), "mlp_ratio must be a finite number > 0, got nan"),
    (dict(mlp_ratio=1e-3), "mlp_ratio must give a hidden width int(embed_dim * mlp_ratio) >= 1, "
                           "got int(64 * 0.001) = 0"),
    (dict(mlp_ratio="4"), "mlp_ratio must be a finite number > 0, got '4'"),
    (dict(drop_rate=1.0), "drop_rate must be a finite number in [0, 1), got 1.0"),
    (dict(attn_drop_rate=-0.1), "attn_drop_rate must be a finite number in [0, 1), got -0.1"),
    (dict(drop_path_rate=float("inf")), "drop_path_rate must be a finite number in [0, 1), got inf"),
    (dict(qkv_bias=1), "qkv_bias must be True or False, got 1"),
    (dict(class_token="yes"), "class_token must be True or False, got 'yes'"),
    (dict(pool=None), "pool must be one of 'cls', 'mean', got None"),
    (dict(approximate="erf"), "approximate must be one of 'none', 'tanh', got 'erf'"),
    (dict(weight_init=None), "weight_init must be one of 'trunc_normal', 'fan_in', got None"),
    (dict(dtype="int8"), "dtype must be float32 or float64, got int8"),
    (dict(dtype=5), "dtype must be float32 or float64, got 5"),
    (dict(seed=-1), "seed must be an integer >= 0, a numpy.random.Generator or None, got -1"),
    (dict(seed=1.5), "seed must be an integer >= 0, a numpy.random.Generator or None, got 1.5"),
]


@pytest.mark.parametrize("overrides,message", NONSENSE, ids=[str(o) for o, _ in NONSENSE])
def test_nonsense_configuration_is_rejected_before_anything_is_built(monkeypatch, overrides, message):
    from minivit.models import vit

    def build(*args, **kwargs):
        raise AssertionError("a layer was built")

    monkeypatch.setattr(vit, "PatchEmbed", build)
    with pytest.raises(ValueError, match=r"^bad configuration for 'vit_digits': " + re.escape(message)):
        create_model("vit_digits", **overrides)
    with pytest.raises(ValueError, match=re.escape(message)):  # the constructor checks too
        VisionTransformer(**{**model_config("vit_digits"), **overrides})


def test_seed_may_be_a_generator_or_none():
    a = tiny_vit(seed=np.random.default_rng(4))
    b = tiny_vit(seed=4)
    assert all(np.array_equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert tiny_vit(seed=None).num_parameters() == b.num_parameters()


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("shape,message", [
    ((1, 8, 8), r"expected an image batch \(B, C, H, W\), got shape \(1, 8, 8\)"),
    ((2, 3, 8, 8), r"expected 1 input channels, got 3"),
    ((2, 1, 10, 10), r"expected 8x8 images, got 10x10"),
    ((2, 1, 8, 6), r"expected 8x8 images, got 8x6"),
])
def test_bad_image_is_a_value_error(shape, message):
    m = create_model("vit_digits", dtype="float64")
    with pytest.raises(ValueError, match=message):
        m.forward(np.zeros(shape))


# ----------------------------------------------------------------------------- forward and backward

def test_forward_backward_shapes_and_every_gradient_filled():
    m = randomize(tiny_vit(), np.random.default_rng(0))
    x = randn(np.random.default_rng(1), 3, 2, 4, 4)
    logits = m.forward(x)
    assert logits.shape == (3, 3)
    dx = m.backward(randn(np.random.default_rng(2), 3, 3))
    assert dx.shape == x.shape and dx.dtype == np.float64
    for name, p in m.named_parameters():
        assert np.abs(npy(p.grad)).max() > 0, f"{name} got no gradient"


def test_wrong_dout_leaves_every_gradient_unchanged():
    m = randomize(create_model("vit_digits", dtype="float64"), np.random.default_rng(0))
    x = randn(np.random.default_rng(1), 4, 1, 8, 8)
    m.forward(x)
    m.backward(randn(np.random.default_rng(2), 4, 10))  # gradients that are not zero
    logits = m.forward(x)
    before = snapshot(m)
    with pytest.raises(ValueError, match=r"^VisionTransformer.backward expected dout to be a floating-point "
                                         r"array of shape \(4, 10\) \(what forward returned\), "
                                         r"got an array of shape \(40,\), dtype float64$"):
        m.backward(np.zeros(40))
    for dout in wrong_douts(logits):
        with pytest.raises(ValueError, match="VisionTransformer.backward expected dout"):
            m.backward(dout)
        assert snapshot(m) == before
    dx = m.backward(np.ones((4, 10), np.float32))  # then a right one (float32 into float64 is fine)
    assert dx.shape == x.shape and snapshot(m) != before


def test_forward_is_features_then_head():
    m = randomize(tiny_vit(pool="mean"), np.random.default_rng(0))
    x = randn(np.random.default_rng(1), 2, 2, 4, 4)
    z = m.forward_features(x)
    assert z.shape == (2, 5, 8)  # class token + 4 patches
    y = m.forward_head(z)
    np.testing.assert_array_equal(npy(y), npy(m.forward(x)))
    g = randn(np.random.default_rng(2), 2, 3)
    dx = m.backward(g)
    m.forward(x)
    np.testing.assert_array_equal(npy(m.backward_features(m.backward_head(g))), npy(dx))


def test_gradcheck_vit_digits_sampled():
    """The registered digits model at its own init, every tensor sampled (the tiny models in the
    contract table check every entry)."""
    m = create_model("vit_digits", dtype="float64", depth=2)
    x = randn(np.random.default_rng(0), 2, 1, 8, 8)
    result = gradcheck(m, x, max_entries=12)
    assert result.worst < 1e-5, f"\n{result}"


def test_attention_probabilities_are_kept():
    m = tiny_vit()
    m.forward(randn(np.random.default_rng(0), 2, 2, 4, 4))
    a = npy(m.blocks[1].attn.attn_probs)
    assert a.shape == (2, 2, 5, 5)
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-14)


def test_eval_is_deterministic_train_is_not():
    m = tiny_vit(drop_rate=0.3, drop_path_rate=0.3)
    x = randn(np.random.default_rng(0), 4, 2, 4, 4)
    m.eval()
    np.testing.assert_array_equal(npy(m.forward(x)), npy(m.forward(x)))
    m.train()
    assert not np.array_equal(npy(m.forward(x)), npy(m.forward(x)))


def test_accepts_other_dtypes_and_converts_to_the_models():
    m = tiny_vit(dtype="float32")
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4))
    y64, y32 = m.forward(x), m.forward(x.astype(np.float32))
    assert y64.dtype == np.float32
    np.testing.assert_array_equal(npy(y64), npy(y32))


# ----------------------------------------------------------------------------- initialisation

def test_initialisation_follows_the_reference():
    m = create_model("vit_small_patch16_224", seed=0)
    sd = m.state_dict()
    # Linear weights: truncated normal(0, 0.02) cut at +-2 std; biases zero
    w = np.concatenate([sd[f"blocks.{i}.{n}.weight"].ravel() for i in range(12)
                        for n in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")])
    assert np.abs(w).max() <= 0.04 and abs(w.mean()) < 2e-5
    # the std of N(0, 1) cut at +-a is sqrt(1 - 2 a phi(a) / (2 Phi(a) - 1)); here a = 2
    truncated_std = 0.02 * math.sqrt(1 - 4 * math.exp(-2) / math.sqrt(2 * math.pi) / math.erf(math.sqrt(2)))
    assert abs(w.std() / truncated_std - 1) < 0.005
    assert np.abs(sd["head.weight"]).max() <= 0.04 and 0.015 < sd["head.weight"].std() < 0.02
    for name, v in sd.items():
        if name.endswith(".bias") and "norm" not in name and "patch_embed" not in name:
            assert not v.any(), name
        if "norm" in name:
            np.testing.assert_array_equal(v, 1.0 if name.endswith("weight") else 0.0)
    # patch embedding: the convolution default U(+-1/sqrt(fan_in)), fan_in = 3*16*16
    pe = sd["patch_embed.proj.weight"]
    bound = 1 / math.sqrt(3 * 16 * 16)
    assert pe.shape == (768, 384) and np.abs(pe).max() <= bound and np.abs(pe).max() > 0.99 * bound
    assert abs(pe.std() / (bound / math.sqrt(3)) - 1) < 0.01
    assert np.abs(sd["patch_embed.proj.bias"]).max() <= bound and sd["patch_embed.proj.bias"].any()
    # class token zero (original ViT), position embedding truncated normal(0.02)
    assert not sd["cls_token.weight"].any() and sd["cls_token.weight"].shape == (1, 1, 384)
    pos = sd["pos_embed.weight"]
    assert pos.shape == (1, 197, 384) and np.abs(pos).max() <= 0.04 and 0.016 < pos.std() < 0.019


def test_vit_digits_small_data_options():
    """vit_digits: fan-in init for the blocks and the head, a fixed sin-cos E_pos; the reference
    options give the timm init and a learned E_pos, with the same patch embedding."""
    m = create_model("vit_digits")
    sd = m.state_dict()
    assert "pos_embed.weight" not in sd and isinstance(m.pos_embed, nn.SinCosPositionEmbedding)
    for name, d_in in [("blocks.0.attn.qkv", 64), ("blocks.3.mlp.fc2", 128), ("head", 64)]:
        w, b = sd[name + ".weight"], sd[name + ".bias"]
        bound = 1 / math.sqrt(d_in)
        assert np.abs(w).max() <= bound and abs(w.std() / (bound / math.sqrt(3)) - 1) < 0.05, name
        assert np.abs(b).max() <= bound and b.any(), name
    ref = create_model("vit_digits", weight_init="trunc_normal", pos_embed="learn")
    rsd = ref.state_dict()
    assert np.abs(rsd["blocks.0.attn.qkv.weight"]).max() <= 0.04 and not rsd["head.bias"].any()
    assert rsd["pos_embed.weight"].shape == (1, 16, 64)
    np.testing.assert_array_equal(rsd["patch_embed.proj.weight"], sd["patch_embed.proj.weight"])
    assert ref.num_parameters() == m.num_parameters() + 16 * 64


def test_seed_reproduces_and_changes_the_weights():
    a, b, c = tiny_vit(seed=1), tiny_vit(seed=1), tiny_vit(seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert not np.array_equal(sa["blocks.0.attn.qkv.weight"], sc["blocks.0.attn.qkv.weight"])


def test_dtype_honoured_and_default_float32():
    params = tiny_vit(dtype=None).parameters()
    assert all(p.dtype == np.float32 and p.grad.dtype == np.float32 for p in params)
    assert all(p.dtype == np.float64 for p in create_model("vit_digits", dtype="float64").parameters())
    backend.set_default_dtype("float64")
    try:
        assert create_model("vit_digits").dtype == np.float64
    finally:
        backend.set_default_dtype("float32")
    assert create_model("vit_digits").dtype == np.float32


def test_dist_token_adds_a_second_prefix_token():
    m = tiny_vit(dist_token=True)
    assert m.num_prefix_tokens == 2 and tiny_vit().num_prefix_tokens == 1
    assert tiny_vit(class_token=False, pool="mean").num_prefix_tokens == 0
    assert m.cls_token.weight.shape == (1, 2, 8) and m.pos_embed.weight.shape == (1, 6, 8)
    assert m.forward_features(randn(np.random.default_rng(0), 2, 2, 4, 4)).shape == (2, 6, 8)
    with pytest.raises(ValueError, match="dist_token=True needs class_token=True"):
        tiny_vit(dist_token=True, class_token=False, pool="mean")
