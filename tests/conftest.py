"""Shared helpers and the table of layer cases that the contract, gradcheck and GPU tests run over.

Arrays are made with ``backend.asarray`` and compared after ``backend.to_numpy``, so the same
tests run on NumPy and (with MINIVIT_BACKEND=cupy) on CuPy.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minivit import backend, nn
from minivit.gradcheck import restore, rng_states  # noqa: F401  (the tests import them from here)
from minivit.models import ConvolutionalVisionTransformer, SwinTransformer, VisionTransformer


def randn(gen, *shape, scale=1.0, dtype=np.float64):
    """Standard normal array on the selected backend."""
    return backend.asarray(scale * gen.standard_normal(shape), dtype=dtype)


def npy(x):
    """Any array (numpy or cupy) as a numpy array."""
    return backend.to_numpy(x)


def randomize(module, gen, scale=0.5):
    """Give every parameter random values: zero class tokens, unit LN gains and zero biases at
    init would hide a backward that forgets them."""
    for _, p in module.named_parameters():
        p.data[...] = backend.asarray(scale * gen.standard_normal(p.shape), dtype=p.dtype)
    return module


def as_tuple(x):
    """What backward returned, as a tuple of the gradients of the inputs that were given (an
    optional input not given gets None, which is dropped: see the Module docstring)."""
    if isinstance(x, (tuple, list)):
        return tuple(g for g in x if g is not None)
    return () if x is None else (x,)  # None: a layer without inputs (RelativePositionBias)


def snapshot(module):
    """Every parameter's data and grad as bytes: equal snapshots mean nothing was touched."""
    return {n: (npy(p.data).tobytes(), npy(p.grad).tobytes()) for n, p in module.named_parameters()}


def wrong_douts(out):
    """Upstream gradients that backward must reject after a forward that returned ``out`` (an
    array, or a tuple of arrays): other shapes, non-float dtypes, non-arrays, the wrong structure."""
    if isinstance(out, tuple):
        good = tuple(backend.asarray(np.zeros(o.shape)) for o in out)
        one_wrong = (wrong_douts(good[0])[0],) + good[1:]
        return [good[0], good[:-1], good + good[:1], (None,) * len(good), one_wrong]
    s = tuple(out.shape)

    def zeros(shape, dtype=np.float64):
        return backend.asarray(np.zeros(shape, dtype))

    return [zeros(s + (1,)), zeros((int(np.prod(s)) + 1,)), zeros(s[:-1] + (s[-1] + 1,)), zeros(()),
            zeros(s, np.int64), zeros(s, np.complex128), zeros(s, bool), 1.0, 3, None, np.zeros(s).tolist(),
            (zeros(s), zeros(s))]


class Case:
    """One layer configuration: build(dtype) -> module, inputs(gen, dtype) -> tuple of arrays,
    kwargs for forward (not differentiated), the expected output shape and the gradcheck bar;
    ``no_grad``: the prefixes of parameters whose gradient is zero by construction."""

    def __init__(self, id, build, inputs, out_shape, kwargs=None, tol=1e-7, no_grad=()):
        self.id, self.build, self.inputs, self.out_shape = id, build, inputs, out_shape
        self.kwargs = kwargs or (lambda: {})
        self.tol, self.no_grad = tol, tuple(no_grad)

    def make(self, seed=0, dtype=np.float64):
        """(module with random parameters, inputs, kwargs), all from one seed."""
        gen = np.random.default_rng(seed)
        module = randomize(self.build(dtype), gen)
        return module, self.inputs(gen, dtype), self.kwargs()


def tiny_vit(dtype=np.float64, cls=VisionTransformer, **kw):
    """A ViT small enough that a gradient check can perturb every entry."""
    config = dict(img_size=4, patch_size=2, in_chans=2, num_classes=3, embed_dim=8, depth=2,
                  num_heads=2, mlp_ratio=2.0, dtype=dtype, seed=0)
    config.update(kw)
    return cls(**config)


def tiny_swin(dtype=np.float64, **kw):
    """A Swin small enough for a gradient check: 8x8 images, 2x2 patches; stage 1 a 4x4 grid of four
    2x2 windows (shifted in block 2), stage 2 a 2x2 grid (global attention)."""
    config = dict(img_size=8, patch_size=2, in_chans=2, num_classes=3, embed_dim=4, depths=(2, 2),
                  num_heads=(2, 2), window_size=2, mlp_ratio=2.0, drop_path_rate=0.0, dtype=dtype, seed=0)
    config.update(kw)
    return SwinTransformer(**config)


def tiny_cvt(dtype=np.float64, **kw):
    """A CvT small enough for a gradient check: 8x8 images; stage 1 a 3x3 convolution of stride 2 to a
    4x4 grid, keys and values on 2x2; stage 2 one of stride 1, the class token joining. (A 1x1 grid of
    keys would leave BatchNorm two values per channel, and make the attention of a single key.)"""
    config = dict(img_size=8, in_chans=2, num_classes=3, embed_dims=(4, 6), depths=(1, 2), num_heads=(1, 2),
                  patch_sizes=(3, 3), patch_strides=(2, 1), patch_paddings=(1, 1), mlp_ratio=2.0,
                  drop_path_rate=0.0, dtype=dtype, seed=0)
    config.update(kw)
    return ConvolutionalVisionTransformer(**config)


BARS = {"float32": 1e-4, "float64": 1e-9}  # logits against transformers': of the largest |logit|


def images(n=2, size=32, channels=3, seed=1):
    """A batch of random float64 images (n, channels, size, size)."""
    return np.random.default_rng(seed).standard_normal((n, channels, size, size))


def assert_close(ours, ref, dtype):
    """Logits within BARS[dtype] of the largest |logit| of the reference's."""
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert err < BARS[dtype], f"max |difference| / max |logit| = {err:.2e} (bar {BARS[dtype]:.0e})"


def hf_logits(model, x, **kw):
    """A transformers model's logits for NumPy images x, in the model's dtype."""
    import torch

    with torch.no_grad():
        dtype = next(model.parameters()).dtype
        return model(torch.from_numpy(x).to(dtype), **kw).logits.numpy()


def hf_model(arch="ViTForImageClassification", dtype="float32", seed=0, **config):
    """A transformers model (torch and transformers needed) with every weight random (LayerNorm
    gains and biases too, so that a swapped pair shows; BatchNorm's running statistics too), in eval
    mode: ViT, DeiT, Swin or CvT, by ``arch``. SDPA attention where there is a choice: the eager one
    takes its softmax in float32 even in a double model."""
    import torch
    import transformers

    if arch.startswith("Swin"):  # stage 1: 8x8 tokens in four windows, shifted in block 2; stage 2:
        # 4x4 tokens, no larger than a window, so global attention and no shift
        settings = dict(image_size=32, patch_size=4, num_channels=3, embed_dim=12, depths=[2, 2],
                        num_heads=[2, 3], window_size=4, num_labels=5)
    elif arch.startswith("Cvt"):  # 32 px: 16x16, 8x8, then 4x4 tokens and the class token (transformers
        # needs depth[i] > i: it indexes each stage's drop-path rates by the stage's number)
        settings = dict(num_channels=3, patch_sizes=[3, 3, 3], patch_stride=[2, 2, 2],
                        patch_padding=[1, 1, 1], embed_dim=[8, 12, 16], num_heads=[1, 2, 2], depth=[1, 2, 3],
                        num_labels=5)
    else:
        settings = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=48, num_hidden_layers=2,
                        num_attention_heads=3, intermediate_size=96, num_labels=5)
    settings.update(config)
    config_class = {"DeiT": transformers.DeiTConfig, "Swin": transformers.SwinConfig,
                    "CvtF": transformers.CvtConfig}.get(arch[:4], transformers.ViTConfig)
    sdpa = {} if arch.startswith("Cvt") else {"attn_implementation": "sdpa"}  # CvT computes its own
    cfg = config_class(**settings, **sdpa)
    cfg.id2label = {i: f"class {i}" for i in range(cfg.num_labels)}
    cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    torch.manual_seed(seed)
    model = getattr(transformers, arch)(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            norm = "layernorm" in name or "normalization" in name
            gain = norm and name.endswith("weight")
            p.copy_(torch.randn(p.shape) * (0.5 if norm else 0.1) + (1.0 if gain else 0.0))
        for name, b in model.named_buffers():  # BatchNorm's running statistics (CvT)
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape) * 0.3)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape) + 0.5)
    return model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype).eval()


def _bool_mask():
    # every query row keeps at least one key, else softmax of an all -inf row is undefined
    m = np.random.default_rng(7).random((2, 1, 3, 5)) > 0.4
    m[..., 0] = True
    return backend.asarray(m)


def _square_mask():
    m = np.tril(np.ones((5, 5), dtype=bool))  # causal: token i attends to tokens <= i
    return backend.asarray(m)


B = 2


def _x(*shape):
    return lambda gen, dtype: (randn(gen, *shape, dtype=dtype),)


CASES = [
    Case("Linear", lambda dt: nn.Linear(8, 6, dtype=dt), _x(B, 5, 8), (B, 5, 6)),
    Case("Linear-nobias", lambda dt: nn.Linear(4, 3, bias=False, dtype=dt), _x(3, 4), (3, 3)),
    Case("Patchify", lambda dt: nn.Patchify(2), _x(B, 3, 4, 6), (B, 6, 12)),
    Case("PatchEmbed", lambda dt: nn.PatchEmbed(4, 2, 2, 6, dtype=dt), _x(B, 2, 4, 4), (B, 4, 6)),
    Case("ClassToken-k1", lambda dt: nn.ClassToken(6, 1, dtype=dt), _x(B, 4, 6), (B, 5, 6)),
    Case("ClassToken-k2", lambda dt: nn.ClassToken(6, 2, dtype=dt), _x(B, 4, 6), (B, 6, 6)),
    Case("PositionEmbedding", lambda dt: nn.PositionEmbedding(5, 6, dtype=dt), _x(B, 5, 6), (B, 5, 6)),
    Case("SinCosPositionEmbedding", lambda dt: nn.SinCosPositionEmbedding(2, 8, 1, dtype=dt), _x(B, 5, 8),
         (B, 5, 8)),
    Case("LayerNorm", lambda dt: nn.LayerNorm(6, dtype=dt), _x(B, 5, 6), (B, 5, 6)),
    Case("Softmax", lambda dt: nn.Softmax(), _x(B, 3, 4), (B, 3, 4)),
    Case("Softmax-axis1", lambda dt: nn.Softmax(axis=1), _x(B, 3, 4), (B, 3, 4)),
    Case("GELU", lambda dt: nn.GELU(), lambda g, dt: (randn(g, B, 5, 6, scale=3, dtype=dt),), (B, 5, 6)),
    Case("GELU-tanh", lambda dt: nn.GELU("tanh"), lambda g, dt: (randn(g, B, 5, 6, scale=3, dtype=dt),),
         (B, 5, 6)),
    Case("SDPA", lambda dt: nn.ScaledDotProductAttention(),
         lambda g, dt: (randn(g, B, 2, 3, 4, dtype=dt), randn(g, B, 2, 5, 4, dtype=dt),
                        randn(g, B, 2, 5, 4, dtype=dt)), (B, 2, 3, 4)),
    Case("SDPA-bias", lambda dt: nn.ScaledDotProductAttention(),
         lambda g, dt: (randn(g, B, 2, 3, 4, dtype=dt), randn(g, B, 2, 5, 4, dtype=dt),
                        randn(g, B, 2, 5, 4, dtype=dt), randn(g, 1, 2, 3, 5, dtype=dt)), (B, 2, 3, 4)),
    Case("SDPA-bias-perkey", lambda dt: nn.ScaledDotProductAttention(),
         lambda g, dt: (randn(g, B, 2, 3, 4, dtype=dt), randn(g, B, 2, 5, 4, dtype=dt),
                        randn(g, B, 2, 5, 4, dtype=dt), randn(g, 2, 1, 5, dtype=dt)), (B, 2, 3, 4)),
    Case("SDPA-mask", lambda dt: nn.ScaledDotProductAttention(),
         lambda g, dt: (randn(g, B, 2, 3, 4, dtype=dt), randn(g, B, 2, 5, 4, dtype=dt),
                        randn(g, B, 2, 5, 4, dtype=dt)), (B, 2, 3, 4), kwargs=lambda: {"mask": _bool_mask()}),
    Case("SDPA-dropout", lambda dt: nn.ScaledDotProductAttention(attn_drop=0.3, rng=1),
         lambda g, dt: (randn(g, B, 2, 3, 4, dtype=dt), randn(g, B, 2, 5, 4, dtype=dt),
                        randn(g, B, 2, 5, 4, dtype=dt)), (B, 2, 3, 4)),
    Case("MHSA", lambda dt: nn.MultiHeadSelfAttention(8, 2, dtype=dt), _x(B, 5, 8), (B, 5, 8)),
    Case("MHSA-nobias-dropout",
         lambda dt: nn.MultiHeadSelfAttention(8, 4, qkv_bias=False, attn_drop=0.2, proj_drop=0.2, rng=3,
                                              dtype=dt), _x(B, 5, 8), (B, 5, 8)),
    Case("MHSA-bias", lambda dt: nn.MultiHeadSelfAttention(8, 2, dtype=dt),
         lambda g, dt: (randn(g, B, 5, 8, dtype=dt), randn(g, 2, 5, 5, dtype=dt)), (B, 5, 8)),
    Case("MHSA-mask", lambda dt: nn.MultiHeadSelfAttention(8, 2, dtype=dt), _x(B, 5, 8), (B, 5, 8),
         kwargs=lambda: {"mask": _square_mask()}),
    Case("MLP", lambda dt: nn.MLP(8, 12, dtype=dt), _x(B, 5, 8), (B, 5, 8)),
    Case("MLP-tanh-dropout", lambda dt: nn.MLP(8, 12, drop=0.25, approximate="tanh", rng=2, dtype=dt),
         _x(B, 5, 8), (B, 5, 8)),
    Case("Dropout", lambda dt: nn.Dropout(0.4, rng=5), _x(B, 5, 6), (B, 5, 6)),
    Case("DropPath", lambda dt: nn.DropPath(0.5, rng=5), _x(6, 3, 4), (6, 3, 4)),
    Case("Block", lambda dt: nn.Block(8, 2, mlp_ratio=2.0, dtype=dt), _x(B, 5, 8), (B, 5, 8)),
    Case("Block-drop", lambda dt: nn.Block(8, 2, mlp_ratio=2.0, drop=0.2, attn_drop=0.2, drop_path=0.4, rng=4,
                                           approximate="tanh", dtype=dt), _x(4, 5, 8), (4, 5, 8)),
    Case("Sequential",
         lambda dt: nn.Sequential(nn.Linear(6, 10, dtype=dt), nn.GELU(), nn.Linear(10, 4, dtype=dt)),
         _x(B, 3, 6), (B, 3, 4)),
    Case("WindowPartition", lambda dt: nn.WindowPartition(2), _x(B, 4, 6, 3), (B * 6, 4, 3)),
    Case("CyclicShift", lambda dt: nn.CyclicShift(1), _x(B, 4, 6, 3), (B, 4, 6, 3)),
    Case("RelativePositionBias", lambda dt: nn.RelativePositionBias(3, 2, dtype=dt), lambda g, dt: (),
         (2, 9, 9)),
    Case("PatchMerging", lambda dt: nn.PatchMerging(3, dtype=dt), _x(B, 4, 6, 3), (B, 2, 3, 6)),
    Case("PatchEmbed-norm", lambda dt: nn.PatchEmbed(4, 2, 2, 6, norm_eps=1e-5, dtype=dt), _x(B, 2, 4, 4),
         (B, 4, 6)),
    Case("WindowAttention", lambda dt: nn.WindowAttention(6, 2, (4, 6), 2, dtype=dt), _x(B, 24, 6),
         (B, 24, 6)),
    Case("WindowAttention-shift",
         lambda dt: nn.WindowAttention(6, 2, 6, 3, shift=1, qkv_bias=False, dtype=dt), _x(B, 36, 6),
         (B, 36, 6)),
    Case("SwinBlock-shift", lambda dt: nn.SwinBlock(6, 2, 4, 2, shift=1, mlp_ratio=2.0, dtype=dt),
         _x(B, 16, 6), (B, 16, 6)),
    Case("SwinBlock-global", lambda dt: nn.SwinBlock(6, 2, 2, 4, shift=2, mlp_ratio=2.0, drop_path=0.5, rng=2,
                                                     dtype=dt), _x(4, 4, 6), (4, 4, 6)),
    Case("SwinStage", lambda dt: _swin_stage(dt), _x(B, 16, 4), (B, 4, 8)),
    Case("Conv2d", lambda dt: nn.Conv2d(3, 4, 3, stride=2, padding=1, dtype=dt), _x(B, 3, 5, 6),
         (B, 4, 3, 3)),
    Case("Conv2d-dense-16ch", lambda dt: nn.Conv2d(16, 5, 3, stride=2, padding=1, dtype=dt), _x(B, 16, 5, 5),
         (B, 5, 3, 3)),  # enough channels for the dense fast path
    Case("Conv2d-depthwise-nobias", lambda dt: nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False, dtype=dt),
         _x(B, 4, 5, 5), (B, 4, 5, 5)),
    Case("Conv2d-depthwise-s2", lambda dt: nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, dtype=dt),
         _x(B, 4, 5, 6), (B, 4, 3, 3)),  # k and v's projection, with a bias, on an odd grid
    Case("Conv2d-depthwise-wide-pad", lambda dt: nn.Conv2d(3, 3, 2, stride=3, padding=2, groups=3, bias=False,
                                                          dtype=dt), _x(B, 3, 4, 5), (B, 3, 3, 3)),  # p >= k
    Case("Conv2d-groups2-patch", lambda dt: nn.Conv2d(4, 6, 2, stride=2, groups=2, init="fan_in", dtype=dt),
         _x(B, 4, 4, 6), (B, 6, 2, 3)),
    Case("BatchNorm2d-train", lambda dt: nn.BatchNorm2d(3, dtype=dt), _x(B, 3, 4, 5), (B, 3, 4, 5)),
    Case("BatchNorm2d-eval", lambda dt: _bn_eval(dt), _x(B, 3, 4, 5), (B, 3, 4, 5)),
    Case("ConvEmbed", lambda dt: nn.ConvEmbed(2, 6, 3, 2, 1, dtype=dt), _x(B, 2, 6, 6), (B, 9, 6)),
    Case("ConvProjection", lambda dt: nn.ConvProjection(4, 3, 2, 1, dtype=dt), _x(B, 4, 5, 5), (B, 9, 4)),
    Case("ConvAttention", lambda dt: nn.ConvAttention(6, 2, 4, dtype=dt), _x(B, 16, 6), (B, 16, 6)),
    Case("ConvAttention-cls-drop",
         lambda dt: nn.ConvAttention(6, 3, (3, 5), cls_token=True, qkv_bias=False, attn_drop=0.2,
                                     proj_drop=0.2, rng=1, dtype=dt), _x(B, 16, 6), (B, 16, 6)),
    Case("CvtStage", lambda dt: _cvt_stage(dt), _x(B, 2, 8, 8), (B, 17, 6)),
    Case("TokenPool-cls", lambda dt: _pool("cls", 1), _x(B, 5, 6), (B, 6)),
    Case("TokenPool-mean", lambda dt: _pool("mean", 1), _x(B, 5, 6), (B, 6)),
    Case("TokenPool-mean-k0", lambda dt: _pool("mean", 0), _x(B, 5, 6), (B, 6)),
    Case("TokenPool-mean-k2", lambda dt: _pool("mean", 2), _x(B, 5, 6), (B, 6)),
    Case("ViT-cls", lambda dt: tiny_vit(dt), _x(B, 2, 4, 4), (B, 3), tol=1e-5),
    Case("ViT-mean-noclass", lambda dt: tiny_vit(dt, pool="mean", class_token=False), _x(B, 2, 4, 4), (B, 3),
         tol=1e-5),
    Case("ViT-mean-class", lambda dt: tiny_vit(dt, pool="mean", approximate="tanh", qkv_bias=False),
         _x(B, 2, 4, 4), (B, 3), tol=1e-5),
    Case("Swin", lambda dt: tiny_swin(dt), _x(B, 2, 8, 8), (B, 3), tol=1e-5),
    Case("Swin-drop-fanin",
         lambda dt: tiny_swin(dt, drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.3, qkv_bias=False,
                              weight_init="fan_in", seed=4), _x(4, 2, 8, 8), (4, 3), tol=1e-5),
    # only the class token reaches the head, and it bypasses the last block's query convolution
    Case("CvT", lambda dt: tiny_cvt(dt), _x(B, 2, 8, 8), (B, 3), tol=1e-5,
         no_grad=["stages.1.blocks.1.attn.conv_proj_q."]),
    Case("CvT-mean-drop-fanin",
         lambda dt: tiny_cvt(dt, cls_token=False, drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.3,
                             qkv_bias=False, weight_init="fan_in", seed=4), _x(4, 2, 8, 8), (4, 3), tol=1e-5),
    Case("ViT-k2-drop", lambda dt: tiny_vit(dt, dist_token=True, drop_rate=0.2, attn_drop_rate=0.1,
                                            drop_path_rate=0.3, seed=3), _x(4, 2, 4, 4), (4, 3), tol=1e-5),
]


def _swin_stage(dtype):
    from minivit.models import SwinStage

    return SwinStage(4, 4, 2, 2, 2, downsample=True, mlp_ratio=2.0, drop_path=(0.0, 0.0), dtype=dtype)


def _cvt_stage(dtype):
    from minivit.models import CvtStage

    return CvtStage(2, 6, 8, 2, 2, 3, 2, 1, cls_token=True, mlp_ratio=2.0, drop_path=(0.0, 0.0), dtype=dtype)


def _bn_eval(dtype):
    """BatchNorm2d in eval mode with running statistics of its own (random, positive variances)."""
    bn = nn.BatchNorm2d(3, dtype=dtype).eval()
    gen = np.random.default_rng(9)
    bn.running_mean = backend.asarray(gen.standard_normal(3), dtype=dtype)
    bn.running_var = backend.asarray(gen.uniform(0.5, 2.0, 3), dtype=dtype)
    return bn


def _pool(pool, k):
    from minivit.models import TokenPool

    return TokenPool(pool, k)


def case_ids(cases):
    return [c.id for c in cases]


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """The docs site, built once (``mkdocs build --strict``) for every test that reads it."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("latex2mathml")  # the site's build renders the equations with it
    site = tmp_path_factory.mktemp("site")
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml"),
           "-d", str(site)]
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return site


@pytest.fixture
def gen():
    return np.random.default_rng(0)
