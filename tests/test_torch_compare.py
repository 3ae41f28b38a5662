"""minivit against PyTorch autograd in float64: forward, input gradients and every parameter gradient.

The references are written with torch primitives (F.linear, F.conv2d, F.unfold, F.layer_norm,
F.gelu, F.scaled_dot_product_attention, F.cross_entropy) and take minivit's weights as they are;
minivit's W is (D_in, D_out), so the references call F.linear(x, W.T, b).
"""

import numpy as np
import pytest
from conftest import as_tuple, npy, randn, randomize, tiny_vit

from minivit import nn
from minivit.losses import CrossEntropyLoss
from minivit.models import TokenPool

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = 1e-10


def T(a, grad=False):
    t = torch.from_numpy(np.array(npy(a)))
    return t.requires_grad_(grad) if t.is_floating_point() else t


def _maxdiff(a, b):
    return float(np.abs(npy(a) - b.detach().numpy()).max(initial=0.0))


def compare(module, inputs, ref, kwargs=None, seed=1):
    """Run minivit's forward/backward and the torch reference on the same weights and inputs;
    assert the output, every input gradient and every parameter gradient agree to TOL."""
    kwargs = kwargs or {}
    P = {name: T(p.data, grad=True) for name, p in module.named_parameters()}
    Tin = [T(a, grad=a.dtype.kind == "f") for a in inputs]
    Tkw = {k: T(v) for k, v in kwargs.items()}
    y = module.forward(*inputs, **kwargs)
    G = randn(np.random.default_rng(seed), *y.shape)
    module.zero_grad()
    grads = as_tuple(module.backward(G))
    yt = ref(P, *Tin, **Tkw)
    (yt * T(G)).sum().backward()
    assert yt.dtype == torch.float64
    diffs = {"output": _maxdiff(y, yt)}
    float_inputs = [t for t in Tin if t.is_floating_point()]
    assert len(grads) == len(float_inputs)
    for i, (g, t) in enumerate(zip(grads, float_inputs, strict=True)):
        diffs[f"input[{i}]"] = _maxdiff(g, t.grad)
    for name, p in module.named_parameters():
        diffs[name] = _maxdiff(p.grad, P[name].grad)
    bad = {k: v for k, v in diffs.items() if not v < TOL}
    assert not bad, f"differences over {TOL}: {bad}"
    return diffs


# ----------------------------------------------------------------------------- references

def linear(P, name, x):
    return F.linear(x, P[f"{name}.weight"].T, P.get(f"{name}.bias"))


def layer_norm(P, name, x, eps=1e-6):
    return F.layer_norm(x, x.shape[-1:], P[f"{name}.weight"], P[f"{name}.bias"], eps)


def patch_embed(P, name, x, patch):
    W = P[f"{name}.proj.weight"]  # (C*P*P, D): column j is output channel j's kernel, in (c, i, j) order
    kernel = W.T.reshape(W.shape[1], x.shape[1], patch, patch)  # (D, C, P, P)
    y = F.conv2d(x, kernel, P[f"{name}.proj.bias"], stride=patch)  # (B, D, H/P, W/P)
    return y.flatten(2).transpose(1, 2)  # (B, N', D)


def attention(q, k, v, bias=None, mask=None):
    if mask is not None:
        bias = torch.zeros(()) if bias is None else bias
        bias = bias.masked_fill(~mask, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def mhsa(P, name, z, heads, bias=None, mask=None):
    B, N, D = z.shape
    qkv = linear(P, f"{name}.qkv", z).reshape(B, N, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
    o = attention(qkv[0], qkv[1], qkv[2], bias, mask)  # (B, h, N, d)
    return linear(P, f"{name}.proj", o.transpose(1, 2).reshape(B, N, D))


def mlp(P, name, z, approximate="none"):
    return linear(P, f"{name}.fc2", F.gelu(linear(P, f"{name}.fc1", z), approximate=approximate))


def block(P, name, z, heads, approximate="none"):
    z = z + mhsa(P, f"{name}.attn", layer_norm(P, f"{name}.norm1", z), heads)
    return z + mlp(P, f"{name}.mlp", layer_norm(P, f"{name}.norm2", z), approximate)


def sincos_2d(grid, D, k):
    """The fixed 2-D sin-cos position table, written independently: (1, k + grid^2, D)."""
    omega = 10000.0 ** (-torch.arange(D // 4, dtype=torch.float64) / (D // 4))
    r, c = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    r, c = r.reshape(-1, 1) * omega, c.reshape(-1, 1) * omega  # (grid^2, D/4) each
    table = torch.cat([c.sin(), c.cos(), r.sin(), r.cos()], dim=1)
    return torch.cat([torch.zeros(k, D, dtype=torch.float64), table])[None]


def vit(model):
    """The torch forward of a minivit VisionTransformer's configuration."""
    patch = model.patch_embed.patch_size
    pool, k = model.pool.pool, model.pool.k
    heads = model.blocks[0].attn.num_heads
    approximate = model.blocks[0].mlp.act.approximate

    def ref(P, x):
        z = patch_embed(P, "patch_embed", x, patch)
        if k:
            z = torch.cat([P["cls_token.weight"].expand(x.shape[0], -1, -1), z], dim=1)
        z = z + (P["pos_embed.weight"] if "pos_embed.weight" in P else
                 sincos_2d(model.patch_embed.grid_size, model.embed_dim, k))
        for i in range(len(model.blocks)):
            z = block(P, f"blocks.{i}", z, heads, approximate)
        y = z[:, 0] if pool == "cls" else z[:, k:].mean(dim=1)
        return linear(P, "head", layer_norm(P, "norm", y))

    return ref


def rooted(P):
    """Parameters of a layer used on its own, named as if it were a child ``m``."""
    return {f"m.{k}": v for k, v in P.items()}


def _setup(module, seed=0):
    gen = np.random.default_rng(seed)
    return randomize(module, gen), gen


# ----------------------------------------------------------------------------- layers

@pytest.mark.parametrize("bias", [True, False])
def test_linear(bias):
    m, gen = _setup(nn.Linear(7, 5, bias=bias, dtype="float64"))
    compare(m, [randn(gen, 2, 3, 7)], lambda P, x: F.linear(x, P["weight"].T, P.get("bias")))


def test_patchify_is_unfold():
    gen = np.random.default_rng(0)
    compare(nn.Patchify(3), [randn(gen, 2, 2, 6, 9)],
            lambda P, x: F.unfold(x, kernel_size=3, stride=3).transpose(1, 2))


def test_patch_embed_is_a_strided_convolution():
    m, gen = _setup(nn.PatchEmbed(img_size=8, patch_size=4, in_chans=3, embed_dim=5, dtype="float64"))
    compare(m, [randn(gen, 2, 3, 8, 8)],
            lambda P, x: patch_embed(rooted(P), "m", x, 4))


@pytest.mark.parametrize("k", [1, 2])
def test_class_token(k):
    m, gen = _setup(nn.ClassToken(6, k, dtype="float64"))
    compare(m, [randn(gen, 3, 4, 6)], lambda P, z: torch.cat([P["weight"].expand(3, -1, -1), z], dim=1))


def test_position_embedding():
    m, gen = _setup(nn.PositionEmbedding(5, 6, dtype="float64"))
    compare(m, [randn(gen, 3, 5, 6)], lambda P, z: z + P["weight"])


def test_layer_norm():
    m, gen = _setup(nn.LayerNorm(6, eps=1e-5, dtype="float64"))
    compare(m, [randn(gen, 2, 4, 6, scale=3) + 1.0],
            lambda P, x: F.layer_norm(x, (6,), P["weight"], P["bias"], eps=1e-5))


@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax(axis):
    gen = np.random.default_rng(0)
    compare(nn.Softmax(axis), [randn(gen, 2, 3, 4, scale=4)], lambda P, x: torch.softmax(x, dim=axis))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    gen = np.random.default_rng(0)
    compare(nn.GELU(approximate), [randn(gen, 4, 50, scale=4)],
            lambda P, x: F.gelu(x, approximate=approximate))


@pytest.mark.parametrize("variant", ["plain", "bias", "mask", "bias+mask"])
def test_scaled_dot_product_attention(variant):
    gen = np.random.default_rng(0)
    q, k, v = randn(gen, 2, 3, 4, 5), randn(gen, 2, 3, 6, 5), randn(gen, 2, 3, 6, 5)
    inputs = [q, k, v]
    if "bias" in variant:
        inputs.append(randn(gen, 3, 4, 6))  # per head, like Swin's relative position bias
    kwargs = {}
    if "mask" in variant:
        mask = np.random.default_rng(1).random((2, 1, 4, 6)) > 0.5
        mask[..., 2] = True
        kwargs["mask"] = mask
    compare(nn.ScaledDotProductAttention(), inputs, lambda P, *a, **kw: attention(*a, **kw), kwargs)


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_multi_head_self_attention(qkv_bias):
    m, gen = _setup(nn.MultiHeadSelfAttention(12, 3, qkv_bias=qkv_bias, dtype="float64"))
    compare(m, [randn(gen, 2, 5, 12)], lambda P, z: mhsa(rooted(P), "m", z, 3))


def test_multi_head_self_attention_bias_and_mask():
    m, gen = _setup(nn.MultiHeadSelfAttention(8, 2, dtype="float64"))
    mask = np.tril(np.ones((5, 5), dtype=bool))
    compare(m, [randn(gen, 2, 5, 8), randn(gen, 2, 5, 5)],
            lambda P, z, bias, mask: mhsa(rooted(P), "m", z, 2, bias, mask), {"mask": mask})


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_mlp(approximate):
    m, gen = _setup(nn.MLP(6, 10, approximate=approximate, dtype="float64"))
    compare(m, [randn(gen, 2, 5, 6)], lambda P, z: mlp(rooted(P), "m", z, approximate))


def test_block():
    m, gen = _setup(nn.Block(8, 2, mlp_ratio=3.0, dtype="float64"))
    compare(m, [randn(gen, 2, 5, 8)], lambda P, z: block(rooted(P), "m", z, 2))


@pytest.mark.parametrize("cls", [nn.Dropout, nn.DropPath])
def test_dropout_backward_uses_the_forward_mask(cls):
    gen = np.random.default_rng(0)
    x = randn(gen, 6, 4, 5) + 4.0
    layer = cls(0.5, rng=3)
    mask = (npy(layer.forward(x)) != 0) / 0.5  # the mask this forward drew
    layer.backward(x)  # free the saved mask before compare's own forward
    layer = cls(0.5, rng=3)  # same seed: compare's forward draws the same mask
    compare(layer, [x], lambda P, t: t * torch.from_numpy(mask))


@pytest.mark.parametrize("pool,k", [("cls", 1), ("mean", 0), ("mean", 1), ("mean", 2)])
def test_token_pool(pool, k):
    gen = np.random.default_rng(0)
    compare(TokenPool(pool, k), [randn(gen, 2, 5, 6)],
            lambda P, z: z[:, 0] if pool == "cls" else z[:, k:].mean(dim=1))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy(smoothing):
    gen = np.random.default_rng(0)
    logits, labels = randn(gen, 6, 5, scale=3), gen.integers(0, 5, size=6)
    loss = CrossEntropyLoss(smoothing)
    value = loss.forward(logits, labels)
    dlogits = loss.backward()
    t = T(logits, grad=True)
    ref = F.cross_entropy(t, torch.from_numpy(labels), label_smoothing=smoothing)
    ref.backward()
    assert abs(float(value) - ref.item()) < TOL
    assert _maxdiff(dlogits, t.grad) < TOL


# ----------------------------------------------------------------------------- the whole model

VIT_CONFIGS = {
    "cls": {},
    "mean-noclass": {"pool": "mean", "class_token": False},
    "mean-class-tanh-noqkvbias": {"pool": "mean", "approximate": "tanh", "qkv_bias": False},
    "two-tokens": {"dist_token": True},
}


@pytest.mark.parametrize("config", list(VIT_CONFIGS), ids=list(VIT_CONFIGS))
def test_vit(config):
    m, gen = _setup(tiny_vit(**VIT_CONFIGS[config]))
    compare(m, [randn(gen, 3, 2, 4, 4)], vit(m))


def test_vit_digits_config_with_its_init():
    """The registered digits model at its own initialisation (not randomised), in float64."""
    from minivit import create_model

    m = create_model("vit_digits", dtype="float64", seed=5)
    x = randn(np.random.default_rng(0), 4, 1, 8, 8)
    diffs = compare(m, [x], vit(m))
    assert len(diffs) == 2 + len(m.parameters())


# ----------------------------------------------------------------------------- Swin, written again in torch

def t_partition(x, M):
    B, H, W, C = x.shape
    return x.view(B, H // M, M, W // M, M, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, M * M, C)


def t_reverse(w, M, B, H, W):
    return w.view(B, H // M, W // M, M, M, -1).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, -1)


def t_index(M):
    """The relative position index as the reference builds it: coordinates, differences, shift, fold."""
    rows, cols = torch.meshgrid(torch.arange(M), torch.arange(M), indexing="ij")
    coords = torch.stack([rows, cols]).flatten(1)  # (2, M^2)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (M - 1)  # (M^2, M^2, 2)
    return rel[..., 0] * (2 * M - 1) + rel[..., 1]


def t_rpb(table, M):
    n = M * M
    return table[t_index(M).reshape(-1)].view(n, n, -1).permute(2, 0, 1)  # (heads, n, n)


def t_mask(H, W, M, s):
    """The shifted-window mask as the reference builds it: an image of region labels, partitioned."""
    img = torch.zeros(1, H, W, 1)
    n = 0
    for rows in (slice(0, -M), slice(-M, -s), slice(-s, None)):
        for cols in (slice(0, -M), slice(-M, -s), slice(-s, None)):
            img[:, rows, cols, :] = n
            n += 1
    w = t_partition(img, M).squeeze(-1)  # (nW, M^2)
    diff = w[:, None, :] - w[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0).double()


def t_window_attention(P, name, x, heads, H, W, M, s):
    B, N, C = x.shape
    g = torch.roll(x.view(B, H, W, C), (-s, -s), (1, 2)) if s else x.view(B, H, W, C)
    w = t_partition(g, M)  # (B nW, n, C)
    n, nW = M * M, (H // M) * (W // M)
    qkv = linear(P, f"{name}.msa.qkv", w).reshape(-1, n, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    scores = (qkv[0] * (C // heads) ** -0.5) @ qkv[1].transpose(-2, -1) + t_rpb(
        P[f"{name}.relative_position_bias.table"], M)
    if s:
        scores = (scores.view(B, nW, heads, n, n) + t_mask(H, W, M, s)[None, :, None]).view(-1, heads, n, n)
    o = (scores.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(-1, n, C)
    o = t_reverse(linear(P, f"{name}.msa.proj", o), M, B, H, W)
    return (torch.roll(o, (s, s), (1, 2)) if s else o).reshape(B, N, C)


def t_swin_block(P, name, x, heads, H, W, M, s, eps=1e-5):
    x = x + t_window_attention(P, f"{name}.attn", layer_norm(P, f"{name}.norm1", x, eps), heads, H, W, M, s)
    return x + mlp(P, f"{name}.mlp", layer_norm(P, f"{name}.norm2", x, eps))


def t_merge(P, name, x):
    x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
    return F.linear(layer_norm(P, f"{name}.norm", x, 1e-5), P[f"{name}.reduction.weight"].T)


def swin(model):
    """The torch forward of a minivit SwinTransformer's configuration."""
    patch = model.patch_embed.patch_size

    def ref(P, x):
        z = layer_norm(P, "patch_embed.norm", patch_embed(P, "patch_embed", x, patch), 1e-5)
        for i, stage in enumerate(model.layers):
            if i:
                B, N, C = z.shape
                r = stage.resolution
                z = t_merge(P, f"layers.{i}.downsample", z.view(B, r, r, C)).reshape(B, -1, 2 * C)
            for j, blk in enumerate(stage.blocks):
                a = blk.attn
                z = t_swin_block(P, f"layers.{i}.blocks.{j}", z, a.msa.num_heads, *a.resolution,
                                 a.window_size, a.shift)
        return linear(P, "head", layer_norm(P, "norm", z, 1e-5).mean(dim=1))

    return ref


def test_window_partition_and_cyclic_shift():
    gen = np.random.default_rng(0)
    compare(nn.WindowPartition(3), [randn(gen, 2, 6, 9, 4)], lambda P, x: t_partition(x, 3))
    compare(nn.CyclicShift(2), [randn(gen, 2, 6, 9, 4)], lambda P, x: torch.roll(x, (-2, -2), (1, 2)))


def test_shift_window_mask_is_the_references():
    for H, W, M, s in [(8, 8, 4, 2), (14, 21, 7, 3), (6, 6, 3, 1)]:
        np.testing.assert_array_equal(nn.shift_window_mask(H, W, M, s), t_mask(H, W, M, s).numpy())
        np.testing.assert_array_equal(nn.relative_position_index(M), t_index(M).numpy())


def test_relative_position_bias():
    m, _ = _setup(nn.RelativePositionBias(3, 2, dtype="float64"))
    compare(m, [], lambda P: t_rpb(P["table"], 3))


def test_patch_merging():
    m, gen = _setup(nn.PatchMerging(3, dtype="float64"))
    compare(m, [randn(gen, 2, 4, 6, 3)], lambda P, x: t_merge(rooted(P), "m", x))


@pytest.mark.parametrize("shift", [0, 2])
def test_window_attention(shift):
    m, gen = _setup(nn.WindowAttention(8, 2, (8, 12), 4, shift, dtype="float64"))
    compare(m, [randn(gen, 2, 96, 8)], lambda P, x: t_window_attention(rooted(P), "m", x, 2, 8, 12, 4, shift))


@pytest.mark.parametrize("resolution,shift", [(8, 2), (4, 2)])  # at 4 x 4: one window, no shift
def test_swin_block(resolution, shift):
    m, gen = _setup(nn.SwinBlock(8, 2, resolution, 4, shift, mlp_ratio=2.0, dtype="float64"))
    s = shift if resolution > 4 else 0
    compare(m, [randn(gen, 2, resolution ** 2, 8)],
            lambda P, x: t_swin_block(rooted(P), "m", x, 2, resolution, resolution, 4, s))


def test_swin():
    from conftest import tiny_swin

    m, gen = _setup(tiny_swin(depths=(2, 2, 1), num_heads=(1, 2, 2), img_size=16, embed_dim=4))
    compare(m, [randn(gen, 2, 2, 16, 16)], swin(m))


# ----------------------------------------------------------------------------- CvT, written again in torch

def t_bn(P, name, x, bn):
    """BatchNorm2d as F.batch_norm: batch statistics in training mode, minivit's running ones in eval."""
    stats = (None, None) if bn.training else (T(bn.running_mean), T(bn.running_var))
    return F.batch_norm(x, *stats, P[f"{name}.weight"], P[f"{name}.bias"], training=bn.training, eps=bn.eps)


def t_conv(P, name, x, conv):
    return F.conv2d(x, P[f"{name}.weight"], P.get(f"{name}.bias"), conv.stride, conv.padding,
                    groups=conv.groups)


def t_conv_projection(P, name, grid, m):
    return t_bn(P, f"{name}.bn", t_conv(P, f"{name}.conv", grid, m.conv), m.bn).flatten(2).transpose(1, 2)


def t_conv_attention(P, name, z, m):
    B, (H, W), c, h = z.shape[0], m.resolution, int(m.cls_token), m.num_heads
    grid = z[:, c:].transpose(1, 2).reshape(B, m.dim, H, W)
    q, k, v = (linear(P, f"{name}.proj_{x}", torch.cat([z[:, :c], t_conv_projection(
                   P, f"{name}.conv_proj_{x}", grid, getattr(m, f"conv_proj_{x}"))], dim=1))
               .reshape(B, -1, h, m.dim // h).transpose(1, 2) for x in "qkv")
    a = ((q @ k.transpose(-2, -1)) * m.dim ** -0.5).softmax(-1)  # the full width's scale
    return linear(P, f"{name}.proj", (a @ v).transpose(1, 2).reshape(B, -1, m.dim))


def t_cvt(model):
    """The torch forward of a minivit ConvolutionalVisionTransformer's configuration."""

    def ref(P, x):
        for i, stage in enumerate(model.stages):
            s = f"stages.{i}."
            z = t_conv(P, s + "patch_embed.proj", x, stage.patch_embed.proj).flatten(2).transpose(1, 2)
            z = layer_norm(P, s + "patch_embed.norm", z, 1e-5)
            if "cls_token" in stage._modules:
                z = torch.cat([P[s + "cls_token.weight"].expand(x.shape[0], -1, -1), z], dim=1)
            for j, blk in enumerate(stage.blocks):
                b = f"{s}blocks.{j}."
                z = z + t_conv_attention(P, b + "attn", layer_norm(P, b + "norm1", z, 1e-5), blk.attn)
                z = z + mlp(P, b + "mlp", layer_norm(P, b + "norm2", z, 1e-5))
            r = stage.out_resolution
            x = z.transpose(1, 2).reshape(x.shape[0], -1, r, r) if i < len(model.stages) - 1 else None
        y = z[:, 0] if model.pool.pool == "cls" else z.mean(dim=1)
        return linear(P, "head", layer_norm(P, "norm", y, 1e-5))

    return ref


@pytest.mark.parametrize("cin,cout,k,s,p,g,bias", [(3, 4, 3, 2, 1, 1, True), (4, 4, 3, 1, 1, 4, False),
                                                   (4, 6, 2, 2, 0, 2, True), (2, 6, 7, 4, 2, 1, True),
                                                   (6, 6, 3, 2, 1, 6, False),
                                                   (3, 3, 2, 3, 2, 3, True)])
def test_conv2d(cin, cout, k, s, p, g, bias):
    m, gen = _setup(nn.Conv2d(cin, cout, k, s, p, groups=g, bias=bias, dtype="float64"))
    compare(m, [randn(gen, 2, cin, 9, 10)],
            lambda P, x: F.conv2d(x, P["weight"], P.get("bias"), s, p, groups=g))


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm(training):
    m, gen = _setup(nn.BatchNorm2d(3, dtype="float64"))
    m.running_mean, m.running_var = randn(gen, 3), np.abs(randn(gen, 3)) + 0.5
    m.train(training)
    x = randn(gen, 4, 3, 5, 6, scale=2) + 1.0
    compare(m, [x], lambda P, x: t_bn(rooted(P), "m", x, m))


def test_batch_norm_running_statistics_follow_torchs():
    """Momentum 0.1, the unbiased batch variance; eval mode leaves them alone."""
    m = nn.BatchNorm2d(3, dtype="float64")
    ref = torch.nn.BatchNorm2d(3, dtype=torch.float64)
    gen = np.random.default_rng(0)
    for _ in range(3):
        x = randn(gen, 4, 3, 5, 6, scale=2) + 1.0
        m.forward(x)
        ref(T(x))
    np.testing.assert_allclose(m.running_mean, ref.running_mean.numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(m.running_var, ref.running_var.numpy(), rtol=1e-13)
    before = m.running_var.copy()
    m.eval().forward(x)
    np.testing.assert_array_equal(m.running_var, before)


def test_conv_embed_and_projection():
    m, gen = _setup(nn.ConvEmbed(3, 6, 3, 2, 1, dtype="float64"))
    compare(m, [randn(gen, 2, 3, 7, 7)], lambda P, x: layer_norm(
        rooted(P), "m.norm", t_conv(rooted(P), "m.proj", x, m.proj).flatten(2).transpose(1, 2), 1e-5))
    m, gen = _setup(nn.ConvProjection(4, 3, 2, 1, dtype="float64"))
    compare(m, [randn(gen, 2, 4, 5, 5)], lambda P, x: t_conv_projection(rooted(P), "m", x, m))


@pytest.mark.parametrize("cls_token", [False, True])
def test_conv_attention(cls_token):
    m, gen = _setup(nn.ConvAttention(6, 2, (4, 5), cls_token=cls_token, dtype="float64"))
    compare(m, [randn(gen, 2, int(cls_token) + 20, 6)], lambda P, z: t_conv_attention(rooted(P), "m", z, m))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_cvt(mode):
    from conftest import tiny_cvt

    m, gen = _setup(tiny_cvt(depths=(1, 2), embed_dims=(4, 6)))
    for name, b in m.named_buffers(persistent_only=True):  # statistics of their own, for eval mode
        value = randn(gen, *b.shape)
        m._set_buffer(name, value if name.endswith("mean") else np.abs(value) + 0.5)
    m.train(mode == "train")
    compare(m, [randn(gen, 2, 2, 8, 8)], t_cvt(m))
