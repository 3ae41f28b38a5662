"""Checkpoints in and out: transformers' folders and timm's state dicts give minivit the
reference's logits (float32 within 1e-4 of the largest |logit|, float64 within 1e-9), on
random-weight models built here from configs (no network); minivit's models export back; every
key and shape is checked before anything is copied; E_pos resamples as the references do."""

import json
import os

import numpy as np
import pytest
from conftest import assert_close, hf_logits, hf_model, images
from safetensors.numpy import load_file, save_file

from minivit import create_model
from minivit.models import DistilledVisionTransformer, VisionTransformer
from minivit.pretrained import from_pretrained, resample_pos_embed, resize_weights, save_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


CONFIGS = {  # name -> (transformers class, config)
    "vit-small-shapes": ("ViTForImageClassification", {}),
    "vit-no-qkv-bias-tanh": ("ViTForImageClassification", dict(qkv_bias=False, hidden_act="gelu_pytorch_tanh",
                                                              layer_norm_eps=1e-6)),
    "vit-rect-mlp-1ch": ("ViTForImageClassification",
                         dict(num_channels=1, intermediate_size=100, patch_size=4)),
    "deit-cls-head": ("DeiTForImageClassification", {}),
    "deit-with-teacher": ("DeiTForImageClassificationWithTeacher", {}),
    # the reference sizes' widths and heads (ViT-B: 768 wide, 12 heads of 64; DeiT-S: 384, 6), depth 1
    "vit-base-shapes": ("ViTForImageClassification", dict(hidden_size=768, num_attention_heads=12,
                                                          intermediate_size=3072, num_hidden_layers=1,
                                                          patch_size=16)),
    "deit-small-shapes": ("DeiTForImageClassificationWithTeacher",
                          dict(hidden_size=384, num_attention_heads=6, intermediate_size=1536,
                               num_hidden_layers=1, patch_size=16)),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", CONFIGS)
def test_transformers_folder_gives_transformers_logits(tmp_path, name, dtype):
    arch, config = CONFIGS[name]
    ref = hf_model(arch, dtype=getattr(torch, dtype), **config)
    ref.save_pretrained(tmp_path)
    model = from_pretrained(str(tmp_path), dtype=dtype)
    distilled = arch == "DeiTForImageClassificationWithTeacher"
    assert type(model) is (DistilledVisionTransformer if distilled else VisionTransformer)
    assert not model.training and model.dtype == np.dtype(dtype)
    assert model.labels == [f"class {i}" for i in range(5)]
    assert model.num_prefix_tokens == (2 if arch.startswith("DeiT") else 1)
    x = images(channels=ref.config.num_channels)
    assert_close(model.forward(x), hf_logits(ref, x), dtype)


def test_full_depth_reference_size_vit_tiny(tmp_path):
    # ViT-Ti/16 at 224 px, all 12 blocks: 5.7M parameters, as timm and transformers count them
    ref = hf_model(image_size=224, patch_size=16, hidden_size=192, num_hidden_layers=12,
                   num_attention_heads=3, intermediate_size=768, num_labels=10)
    ref.save_pretrained(tmp_path)
    model = from_pretrained(str(tmp_path))
    assert model.num_parameters() == sum(p.numel() for p in ref.parameters())
    x = images(1, 224)
    assert_close(model.forward(x), hf_logits(ref, x), "float32")


def test_another_resolution_resamples_pos_embed_as_transformers(tmp_path):
    ref = hf_model(dtype=torch.float64)
    ref.save_pretrained(tmp_path)
    model = from_pretrained(str(tmp_path), dtype="float64", img_size=48)  # grid 4x4 -> 6x6
    assert model.img_size == 48 and model.pos_embed.weight.shape == (1, 37, 48)
    x = images(size=48)
    assert_close(model.forward(x), hf_logits(ref, x, interpolate_pos_encoding=True), "float64")


@pytest.mark.parametrize("n_in,n_out", [(4, 6), (14, 24), (14, 7), (5, 5), (24, 14)])
@pytest.mark.parametrize("antialias", [False, True])
def test_resize_weights_are_torchs_bicubic(n_in, n_out, antialias):
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, n_in, n_in)))
    ref = torch.nn.functional.interpolate(x, size=(n_out, n_out), mode="bicubic", align_corners=False,
                                          antialias=antialias).numpy()
    W = resize_weights(n_in, n_out, antialias)
    ours = np.einsum("ai,bj,cij->cab", W, W, x.numpy()[0])
    np.testing.assert_allclose(ours, ref[0], rtol=1e-12, atol=1e-12)


def test_resample_pos_embed_keeps_the_prefix_tokens():
    pos = np.random.default_rng(0).standard_normal((1, 2 + 9, 4))
    out = resample_pos_embed(pos, 2, (5, 5))
    assert out.shape == (1, 27, 4)
    np.testing.assert_array_equal(out[:, :2], pos[:, :2])
    np.testing.assert_allclose(resample_pos_embed(pos, 2, (3, 3)), pos, rtol=1e-14)  # same size: the same
    with pytest.raises(ValueError, match="not a square grid"):
        resample_pos_embed(pos[:, :-1], 2, (3, 3))


# ----------------------------------------------------------------------------- errors

PATCH = "vit.embeddings.patch_embeddings.projection.weight"


def _folder_with(tmp_path, edit):
    hf_model().save_pretrained(tmp_path)
    path = os.path.join(tmp_path, "model.safetensors")
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})
    return str(tmp_path)


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.pop("vit.encoder.layer.1.attention.attention.key.weight"),
     r"missing key 'vit.encoder.layer.1.attention.attention.key.weight'"),
    (lambda t: t.update(extra=np.zeros(3, np.float32)), r"unexpected key 'extra'"),
    (lambda t: t.update({"vit.layernorm.bias": np.zeros(47, np.float32)}),
     r"key 'vit.layernorm.bias' has shape \(47,\), expected \(48,\)"),
    (lambda t: t.update({PATCH: np.zeros((48, 3, 4, 16), np.float32)}),
     rf"key '{PATCH}' has shape \(48, 3, 4, 16\), expected \(48, 3, 8, 8\)"),
])
def test_a_wrong_key_or_shape_is_named(tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        from_pretrained(_folder_with(tmp_path, edit))


def test_paths_that_are_not_checkpoints_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not a transformers folder: it has no config.json or model.safet"):
        from_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="expected a transformers folder"):
        from_pretrained(str(tmp_path / "nothing.bin"))
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="needs model_name="):
        from_pretrained(str(tmp_path / "w.safetensors"))
    hf_model().save_pretrained(tmp_path / "swin")
    config = json.loads((tmp_path / "swin" / "config.json").read_text())
    (tmp_path / "swin" / "config.json").write_text(json.dumps({**config, "architectures": ["SwinModel"]}))
    with pytest.raises(ValueError, match="names architecture 'SwinModel'; expected one of"):
        from_pretrained(str(tmp_path / "swin"))


# ----------------------------------------------------------------------------- export

@pytest.mark.parametrize("name,overrides", [
    ("vit_tiny_patch16_224", dict(img_size=32, num_classes=7, depth=2)),
    ("deit_tiny_distilled_patch16_224", dict(img_size=32, num_classes=7, depth=2)),
    ("vit_tiny_patch16_224", dict(img_size=32, num_classes=7, depth=2, qkv_bias=False, approximate="tanh",
                                  dist_token=True)),
])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_export_round_trip_through_transformers(tmp_path, name, overrides, dtype):
    model = create_model(name, dtype=dtype, seed=3, **overrides).eval()
    gen = np.random.default_rng(0)
    for _, p in model.named_parameters():  # away from the init: LN gains, biases, tokens all random
        gain = p.data.ndim == 1 and np.all(p.data == 1)  # a LayerNorm's gamma stays near 1
        p.data[...] = 0.1 * gen.standard_normal(p.shape) + (1.0 if gain else 0.0)
    model.labels = [f"digit {i}" for i in range(7)]
    save_pretrained(model, tmp_path)
    ref = transformers.AutoModelForImageClassification.from_pretrained(tmp_path, attn_implementation="sdpa",
                                                                       dtype=getattr(torch, dtype)).eval()
    assert ref.config.id2label[3] == "digit 3"
    x = images()
    assert_close(hf_logits(ref, x), model.forward(x), dtype)
    back = from_pretrained(str(tmp_path), dtype=dtype)  # and back into minivit: the same numbers
    assert type(back) is type(model) and back.labels == model.labels
    for (n, p), (m, q) in zip(model.named_parameters(), back.named_parameters(), strict=True):
        assert n == m
        np.testing.assert_array_equal(p.data, q.data)


def test_export_of_a_fixed_sincos_table_and_refusals(tmp_path):
    model = create_model("vit_tiny_patch16_224", img_size=32, num_classes=3, depth=1, pos_embed="sincos",
                         dtype="float64").eval()
    save_pretrained(model, tmp_path / "sincos")
    ref = transformers.AutoModelForImageClassification.from_pretrained(tmp_path / "sincos",
                                                                       attn_implementation="sdpa",
                                                                       dtype=torch.float64).eval()
    x = images()
    assert_close(hf_logits(ref, x), model.forward(x), "float64")
    with pytest.raises(ValueError, match="already holds a checkpoint; pass overwrite=True"):
        save_pretrained(model, tmp_path / "sincos")
    save_pretrained(model, tmp_path / "sincos", overwrite=True)
    with pytest.raises(ValueError, match="save_pretrained writes class-token ViT and DeiT models"):
        save_pretrained(create_model("vit_digits"), tmp_path / "digits")
    assert not (tmp_path / "digits").exists()


# ----------------------------------------------------------------------------- timm's format

def _timm_state_from_transformers(ref, folder):
    """timm's state dict of a transformers ViT/DeiT, converted here by its own mapping (timm's
    names, (out, in) Linear weights, one fused qkv): an independent route to timm's format.
    Read from the saved file, whose names are the checkpoints' (transformers 5 renames some in
    memory)."""
    ref.save_pretrained(folder)
    sd = load_file(os.path.join(folder, "model.safetensors"))
    p = "deit." if "deit.embeddings.cls_token" in sd else "vit."
    out = {"cls_token": sd[p + "embeddings.cls_token"], "pos_embed": sd[p + "embeddings.position_embeddings"],
           "patch_embed.proj.weight": sd[p + "embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": sd[p + "embeddings.patch_embeddings.projection.bias"],
           "norm.weight": sd[p + "layernorm.weight"], "norm.bias": sd[p + "layernorm.bias"]}
    if p == "deit.":
        out["dist_token"] = sd[p + "embeddings.distillation_token"]
        for ours, theirs in [("head", "cls_classifier"), ("head_dist", "distillation_classifier")]:
            out[f"{ours}.weight"], out[f"{ours}.bias"] = sd[f"{theirs}.weight"], sd[f"{theirs}.bias"]
    else:
        out["head.weight"], out["head.bias"] = sd["classifier.weight"], sd["classifier.bias"]
    for i in range(ref.config.num_hidden_layers):
        L, b = f"{p}encoder.layer.{i}.", f"blocks.{i}."
        att = L + "attention.attention."
        for s in ("weight", "bias"):
            qkv = [sd[f"{att}{n}.{s}"] for n in ("query", "key", "value")]
            out[b + f"attn.qkv.{s}"] = np.concatenate(qkv, axis=0)
            for ours, theirs in [("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
                                 ("attn.proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
                                 ("mlp.fc2", "output.dense")]:
                out[f"{b}{ours}.{s}"] = sd[f"{L}{theirs}.{s}"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


@pytest.mark.parametrize("arch,name", [
    ("ViTForImageClassification", "vit_tiny_patch16_224"),
    ("DeiTForImageClassificationWithTeacher", "deit_tiny_distilled_patch16_224"),
])
def test_timm_format_from_a_converted_state_dict(tmp_path, arch, name):
    ref = hf_model(arch, dtype=torch.float64, image_size=224, patch_size=16, hidden_size=192,
                   num_attention_heads=3, intermediate_size=768, num_hidden_layers=12, layer_norm_eps=1e-6)
    path = str(tmp_path / "model.safetensors")
    save_file(_timm_state_from_transformers(ref, tmp_path / "hf"), path)
    model = from_pretrained(path, model_name=name, dtype="float64")
    assert model.labels is None and model.num_classes == 5
    x = images(1, 224)
    assert_close(model.forward(x), hf_logits(ref, x), "float64")
    with pytest.raises(ValueError, match=r"key 'cls_token' has shape \(1, 1, 192\), expected \(1, 1, 384\)"):
        from_pretrained(path, model_name=name.replace("tiny", "small"), dtype="float64")
