"""CvT as a whole: the reference parameter counts, PatchEmbed as the special case of a convolution,
the model's gradient check with BatchNorm in training mode, transformers' logits on the same
random weights and random running statistics (float32 within 1e-4 of the largest |logit|,
float64 within 1e-9), export back to transformers, training on digits from the command line, and
clear errors for what it cannot do. Its layers are checked in the contract test and against torch
autograd in test_torch_compare."""

import json

import numpy as np
import pytest
from conftest import assert_close, hf_logits, hf_model, images, randn, randomize, tiny_cvt

from minivit import create_model, nn
from minivit.gradcheck import gradcheck
from minivit.models import ConvolutionalVisionTransformer
from minivit.pretrained import from_pretrained, save_pretrained

CVT = "CvtForImageClassification"


@pytest.mark.parametrize("name,count", [("cvt_13", 19_997_480), ("cvt_21", 31_622_696)])
def test_reference_parameter_counts(name, count):
    model = create_model(name)
    assert model.num_parameters() == count
    buffers = dict(model.named_buffers(persistent_only=True))  # BatchNorm's statistics: 3 per block
    assert len(buffers) == 2 * 3 * sum(len(s.blocks) for s in model.stages)
    assert [s.out_resolution for s in model.stages] == [56, 28, 14]
    attn = model.stages[2].blocks[0].attn
    assert attn.cls_token and not model.stages[1].blocks[0].attn.cls_token
    assert attn.attn.scale == pytest.approx(384 ** -0.5)  # the full width, not the head's 64


def test_overrides_per_stage():
    model = create_model("cvt_13", img_size=64, in_chans=1, num_classes=7, embed_dims=(8, 16, 24),
                         depths=(1, 1, 2), num_heads=(1, 2, 3), dtype="float64", seed=3)
    assert [s.dim for s in model.stages] == [8, 16, 24] and model.num_features == 24
    assert model.forward(images(1, 64, 1)).shape == (1, 7)


@pytest.mark.parametrize("settings,message", [
    (dict(depths=(1, 2), num_heads=(1, 3, 6)), r"one entry per stage"),
    (dict(num_heads=(1, 5, 6)), r"stage 2's width 192 is not divisible by its num_heads 5"),
    (dict(patch_strides=(4, 0, 2)), r"patch_strides\[1\] must be an integer >= 1"),
    (dict(img_size=2), r"a 2x2 map is too small for the stage's 7x7 embedding with padding 2"),
    (dict(stride_q=2), r"query projection .* must keep the 56x56 grid"),
])
def test_a_configuration_that_cannot_work_is_named(settings, message):
    with pytest.raises(ValueError, match=message):
        create_model("cvt_13", **settings)


def test_images_of_another_size_are_refused_with_the_size_expected():
    model = tiny_cvt()
    with pytest.raises(ValueError, match=r"expected images \(B, 2, 8, 8\), got shape \(1, 2, 9, 9\)"):
        model.forward(images(1, 9, 2))


def test_patch_embed_is_a_convolution_with_kernel_and_stride_p():
    """ViT's patch embedding x_p E + b is Conv2d with kernel = stride = P and the same numbers in
    the reference layout: E (C P P, D) = W (D, C, P, P) reshaped and transposed."""
    gen = np.random.default_rng(0)
    embed = nn.PatchEmbed(img_size=8, patch_size=4, in_chans=3, embed_dim=5, dtype="float64")
    conv = nn.Conv2d(3, 5, kernel_size=4, stride=4, dtype="float64")
    conv.weight.data[...] = embed.proj.weight.data.T.reshape(5, 3, 4, 4)
    conv.bias.data[...] = embed.proj.bias.data
    x = randn(gen, 2, 3, 8, 8)
    tokens = embed.forward(x)  # (B, N', D)
    np.testing.assert_allclose(nn.to_tokens(conv.forward(x)), tokens, rtol=1e-13, atol=1e-14)
    g = randn(gen, *tokens.shape)
    np.testing.assert_allclose(conv.backward(nn.to_grid(g, 2, 2)), embed.backward(g), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(conv.weight.grad, embed.proj.weight.grad.T.reshape(5, 3, 4, 4), rtol=1e-13)


def test_whole_model_gradcheck_with_batch_norm_in_training_mode():
    gen = np.random.default_rng(0)
    model = randomize(tiny_cvt(), gen).train()  # weights of scale 0.5: a BatchNorm fed values of scale
    # 0.02 (the init) would be nonlinear at the scale of the differences' step
    result = gradcheck(model, randn(gen, 3, 2, 8, 8), max_entries=16)
    assert result.worst < 1e-5, f"\n{result}"
    assert len(result.errors) == 1 + len(model.parameters())


def test_training_updates_the_running_statistics_and_eval_uses_them():
    model = tiny_cvt()
    x = images(4, 8, 2)
    before = {n: b.copy() for n, b in model.named_buffers(persistent_only=True)}
    model.train().forward(x)
    after = dict(model.named_buffers(persistent_only=True))
    assert all(not np.array_equal(before[n], after[n]) for n in before)
    model.eval()
    one, four = model.forward(x[:1]), model.forward(x)[:1]
    np.testing.assert_allclose(one, four, rtol=1e-12)  # eval: an image's logits do not depend on its batch
    assert all(np.array_equal(after[n], b) for n, b in model.named_buffers(persistent_only=True))


def test_a_batch_too_small_for_batch_norm_is_refused_before_training(tmp_path):
    """cvt_digits' last keys are a 1x1 map: BatchNorm there needs two images in every training batch.
    1,295 training images in batches of 2 leave one alone at the end of the epoch."""
    from minivit import train

    assert create_model("cvt_digits").min_train_batch == 2 and create_model("cvt_13").min_train_batch == 1
    with pytest.raises(ValueError, match=r"--batch-size 2 leaves a training batch of one image of the 1295"):
        config = dict(model="cvt_digits", batch_size=2, epochs=1, warmup=0)
        train.train(config, str(tmp_path / "run"), quiet=True)
    assert not any((tmp_path / "run").glob("*.npz"))


# ----------------------------------------------------------------------------- transformers

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


CONFIGS = {  # conftest's default: three stages, the class token in the last
    "three-stages": {},
    "no-qkv-bias-1ch-mlp-2": dict(num_channels=1, qkv_bias=[False] * 3, mlp_ratio=[2.0] * 3),
    "two-stages-kernel-5-stride-kv-1": dict(
        patch_sizes=[5, 3], patch_stride=[2, 2], patch_padding=[2, 1], embed_dim=[6, 9], num_heads=[2, 3],
        depth=[1, 2], padding_kv=[1, 1], stride_kv=[1, 1], mlp_ratio=[3.0, 3.0], cls_token=[False, True],
        qkv_bias=[True, True], drop_path_rate=[0.0, 0.0], attention_drop_rate=[0.0, 0.0],
        drop_rate=[0.0, 0.0], qkv_projection_method=["dw_bn"] * 2, kernel_qkv=[3, 3], padding_q=[1, 1],
        stride_q=[1, 1]),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", CONFIGS)
def test_transformers_folder_gives_transformers_logits(tmp_path, name, dtype):
    ref = hf_model(CVT, dtype=getattr(torch, dtype), **CONFIGS[name])
    ref.save_pretrained(tmp_path)
    size, channels = 32, ref.config.num_channels
    model = from_pretrained(str(tmp_path), dtype=dtype, img_size=size)  # transformers' CvT has no image size
    assert type(model) is ConvolutionalVisionTransformer and not model.training
    assert model.dtype == np.dtype(dtype) and model.labels == [f"class {i}" for i in range(5)]
    assert model.num_parameters() == sum(p.numel() for p in ref.parameters())
    x = images(size=size, channels=channels)
    assert_close(model.forward(x), hf_logits(ref, x), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reference_size_cvt_13_gives_transformers_logits(tmp_path, dtype):
    ref = hf_model(CVT, dtype=getattr(torch, dtype), patch_sizes=[7, 3, 3], patch_stride=[4, 2, 2],
                   patch_padding=[2, 1, 1], embed_dim=[64, 192, 384], num_heads=[1, 3, 6], depth=[1, 2, 10],
                   num_labels=10)
    ref.save_pretrained(tmp_path)
    model = from_pretrained(str(tmp_path), dtype=dtype)  # 224 px, the default
    assert model.num_parameters() == 19_997_480 - 990 * 384 - 990  # 10 classes, not 1,000
    x = images(1, 224)
    assert_close(model.forward(x), hf_logits(ref, x), dtype)


def test_unsupported_transformers_configs_are_named(tmp_path):
    hf_model(CVT, qkv_projection_method=["dw_bn", "avg", "dw_bn"]).save_pretrained(tmp_path / "avg")
    with pytest.raises(ValueError, match=r"qkv_projection_method .*'dw_bn'\) only"):
        from_pretrained(str(tmp_path / "avg"), img_size=32)
    hf_model(CVT, stride_kv=[2, 1, 2]).save_pretrained(tmp_path / "kv")
    with pytest.raises(ValueError, match=r"stride_kv \[2, 1, 2\]: minivit's CvT takes one stride_kv"):
        from_pretrained(str(tmp_path / "kv"), img_size=32)
    with pytest.raises(ValueError, match="timm has no such architecture"):
        from_pretrained(str(tmp_path / "kv" / "model.safetensors"), model_name="cvt_13")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_export_round_trip_through_transformers(tmp_path, dtype):
    model = create_model("cvt_digits", dtype=dtype, seed=2)
    gen = np.random.default_rng(0)
    model.train().forward(images(8, 8, 1))  # running statistics of its own
    for _, p in model.named_parameters():
        gain = p.data.ndim == 1 and np.all(p.data == 1)
        p.data[...] = 0.1 * gen.standard_normal(p.shape) + (1.0 if gain else 0.0)
    model.eval().labels = [f"digit {i}" for i in range(10)]
    save_pretrained(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == [CVT] and config["patch_stride"] == [1, 2, 2]
    auto = transformers.AutoModelForImageClassification
    ref = auto.from_pretrained(tmp_path, dtype=getattr(torch, dtype)).eval()
    assert type(ref).__name__ == CVT and ref.config.id2label[3] == "digit 3"
    x = images(size=8, channels=1)
    assert_close(hf_logits(ref, x), model.forward(x), dtype)
    back = from_pretrained(str(tmp_path), dtype=dtype, img_size=8)
    for (n, a), (m, b) in zip(model.state_dict().items(), back.state_dict().items(), strict=True):
        assert n == m
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        save_pretrained(model, tmp_path)
    with pytest.raises(ValueError, match="with a class token"):  # transformers' CvT fails without one
        save_pretrained(create_model("cvt_digits", cls_token=False), tmp_path / "mean")


# ----------------------------------------------------------------------------- the command line

@pytest.mark.slow
def test_cvt_digits_trains_from_the_command_line(tmp_path):
    """cvt_digits for 10 epochs of the default recipe: the model chosen on validation reaches 90%
    test accuracy; its checkpoint holds the averaged BatchNorm statistics, and evaluating it gives
    the test accuracy the run reported."""
    from minivit.__main__ import main

    out = tmp_path / "run"
    assert main(["train", "--model", "cvt_digits", "--epochs", "10", "--out", str(out), "--quiet"]) == 0
    reported = json.loads((out / "test.json").read_text())["test_acc"]
    assert reported >= 0.90
    ckpt = np.load(out / "best.npz")
    stats = [k for k in ckpt.files if k.startswith("ema/") and k.endswith("running_var")]
    assert stats and all(np.all(ckpt[k] > 0) for k in stats)
    assert main(["evaluate", str(out / "best.npz"), "--json"]) == 0
