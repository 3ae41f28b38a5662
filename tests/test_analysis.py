"""Attention analysis: rollout against a direct implementation from transformers' attentions,
mean attention distance and position-embedding similarity against their definitions."""

import math

import fakecupy
import numpy as np
import pytest
from conftest import hf_model, randn

import minivit
from minivit import backend, create_model
from minivit.analysis import attention_probs, patch_distances


def direct_rollout(attentions, k, discard_ratio=0.0, fusion=np.mean):
    """Abnar & Zuidema's rollout written out sample by sample, from a list of (B, h, N, N)."""
    out = []
    for b in range(attentions[0].shape[0]):
        N = attentions[0].shape[-1]
        R = np.eye(N)
        for A in attentions:
            F = fusion(A[b], axis=0)
            if discard_ratio:  # the n smallest entries, except F[0, 0] (with a class token)
                flat = F.flatten()
                smallest = np.argsort(flat, kind="stable")[:int(N * N * discard_ratio)]
                flat[[i for i in smallest if not (k and i == 0)]] = 0.0
                F = flat.reshape(N, N)
            A2 = (F + np.eye(N)) / 2
            R = (A2 / A2.sum(axis=1, keepdims=True)) @ R
        out.append(R[0, k:] if k else R.mean(axis=0))
    return np.array(out)


def _tiny(name="vit_tiny_patch16_224", **kw):
    return create_model(name, img_size=32, patch_size=8, embed_dim=24, depth=3, num_heads=3, num_classes=4,
                        dtype="float64", seed=1, **kw)


def test_rollout_matches_a_direct_implementation_from_transformers_attentions(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    ref = hf_model(dtype="float64", num_hidden_layers=3)
    ref.save_pretrained(tmp_path)
    model = minivit.from_pretrained(str(tmp_path), dtype="float64")
    ref.set_attn_implementation("eager")  # the one that returns its attention probabilities
    softmax = torch.nn.functional.softmax  # eager asks for a float32 softmax: keep the double
    monkeypatch.setattr(torch.nn.functional, "softmax", lambda s, dim, dtype=None: softmax(s, dim=dim))
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    with torch.no_grad():
        theirs = [a.numpy() for a in ref(torch.from_numpy(x), output_attentions=True).attentions]
    ours = attention_probs(model, x)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
    for fusion in ("mean", "max", "min"):
        for ratio in (0.0, 0.3):
            R = minivit.attention_rollout(model, x, head_fusion=fusion, discard_ratio=ratio)
            assert R.shape == (2, 4, 4)
            expected = direct_rollout(theirs, 1, ratio, getattr(np, fusion)).reshape(2, 4, 4)
            np.testing.assert_allclose(R, expected, rtol=1e-10)


def test_rollout_properties_and_errors():
    model = _tiny().train()
    x = randn(np.random.default_rng(0), 3, 3, 32, 32)
    R = minivit.attention_rollout(model, x)
    assert model.training  # the mode is restored
    assert R.shape == (3, 4, 4) and np.all(R > 0) and np.all(R.sum(axis=(1, 2)) < 1)  # not renormalised
    assert not np.allclose(R, minivit.attention_rollout(model, x, discard_ratio=0.5))
    assert not np.allclose(R, minivit.attention_rollout(model, x, head_fusion="max"))
    np.testing.assert_allclose(R.reshape(3, -1), direct_rollout(attention_probs(model, x), 1), rtol=1e-12)
    with pytest.raises(ValueError, match="head_fusion"):
        minivit.attention_rollout(model, x, head_fusion="median")
    for bad in (1.0, -0.1, float("nan"), "0.5"):
        with pytest.raises(ValueError, match=r"discard_ratio must be a finite number in \[0, 1\)"):
            minivit.attention_rollout(model, x, discard_ratio=bad)


def test_discard_spares_the_class_tokens_own_entry_and_counts_it(monkeypatch):
    """N = 5, discard_ratio 0.2: the n = 5 smallest entries are F[0, 0] = 0.001 and the four
    0.01s; F[0, 0] is kept, the four 0.01s are zeroed, and row 0 (0.02 the next smallest) is not
    touched, so the rollout of one block is row 0 of rownorm(F / 2 + I / 2) = F[0, 1:] / 2."""
    model = create_model("vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=8, depth=1, num_heads=2,
                         num_classes=2, dtype="float64")
    F = np.array([[0.001, 0.02, 0.279, 0.3, 0.4],
                  [0.01, 0.3, 0.2, 0.2, 0.29],
                  [0.2, 0.01, 0.3, 0.2, 0.29],
                  [0.2, 0.2, 0.01, 0.3, 0.29],
                  [0.2, 0.2, 0.29, 0.01, 0.3]])
    monkeypatch.setattr(minivit.analysis, "attention_probs", lambda m, x: [np.broadcast_to(F, (1, 2, 5, 5))])
    R = minivit.attention_rollout(model, None, discard_ratio=0.2)
    np.testing.assert_allclose(R, [[[0.01, 0.1395], [0.15, 0.2]]], rtol=1e-12)


def test_rollout_of_distilled_and_mean_pooled_models():
    x = randn(np.random.default_rng(1), 2, 3, 32, 32)
    deit = _tiny("deit_tiny_distilled_patch16_224")
    assert deit.num_prefix_tokens == 2
    R = minivit.attention_rollout(deit, x, discard_ratio=0.3)
    assert R.shape == (2, 4, 4)  # the patches after the class and distillation tokens
    np.testing.assert_allclose(R.reshape(2, -1), direct_rollout(attention_probs(deit, x), 2, 0.3), rtol=1e-12)
    pooled = _tiny(pool="mean", class_token=False)
    for ratio in (0.0, 0.5):
        R = minivit.attention_rollout(pooled, x, discard_ratio=ratio)
        assert R.shape == (2, 4, 4)
        np.testing.assert_allclose(R.reshape(2, -1), direct_rollout(attention_probs(pooled, x), 0, ratio),
                                   rtol=1e-12)
        # the mean row of a product of row-stochastic A' sums to 1, discarded entries or not
        np.testing.assert_allclose(R.sum(axis=(1, 2)), 1.0, rtol=1e-12)


def test_mean_attention_distance_against_its_definition():
    model = _tiny()
    x = randn(np.random.default_rng(2), 2, 3, 32, 32)
    d = patch_distances(model)
    assert d.shape == (16, 16) and d[0, 5] == pytest.approx(8 * np.sqrt(2)) and d[0, 3] == 24
    dist = minivit.mean_attention_distance(model, x)
    assert dist.shape == (3, 3)
    A = attention_probs(model, x)
    h = 2  # block 2, head 3, over both images and all 16 query patches
    by_hand = [sum(A[1][b, h, 1 + q, 1 + j] * d[q, j] for j in range(16))
               for b in range(2) for q in range(16)]
    assert dist[1, h] == pytest.approx(np.mean(by_hand), rel=1e-12)


def test_mean_attention_distance_of_uniform_and_self_attention(monkeypatch):
    model = _tiny()
    for blk in model.blocks:  # q = k = 0: every score 0, every token attends 1/17 to each of the 17
        blk.attn.qkv.weight.data[:, :48] = 0.0
        blk.attn.qkv.bias.data[:48] = 0.0
    x = randn(np.random.default_rng(3), 2, 3, 32, 32)
    centres = [(8 * r + 4, 8 * c + 4) for r in range(4) for c in range(4)]  # pixels, 8 px patches
    pairwise = np.mean([math.dist(p, q) for p in centres for q in centres])  # over the 16 x 16 pairs
    # each query gives 1/17 to each of the 16 patches (and 1/17 to the class token, at no distance)
    np.testing.assert_allclose(minivit.mean_attention_distance(model, x), pairwise * 16 / 17, rtol=1e-12)
    itself = [np.broadcast_to(np.eye(17), (2, 3, 17, 17))]
    monkeypatch.setattr(minivit.analysis, "attention_probs", lambda m, x: itself)
    assert not minivit.mean_attention_distance(model, x).any()  # attending only to itself: distance 0


def test_pos_embed_similarity():
    model = _tiny()
    S = minivit.pos_embed_similarity(model)
    e = model.pos_embed.weight.data[0, 1:]
    assert S.shape == (16, 16)
    np.testing.assert_allclose(np.diag(S), 1.0, rtol=1e-12)
    assert S[2, 9] == pytest.approx(e[2] @ e[9] / np.linalg.norm(e[2]) / np.linalg.norm(e[9]), rel=1e-12)
    fixed = minivit.pos_embed_similarity(create_model("vit_digits"))  # a sin-cos table, no class token
    assert fixed.shape == (16, 16) and np.allclose(fixed, fixed.T)


@pytest.mark.skipif(backend.name() != "numpy", reason="the fake stands in for CuPy on a NumPy run")
def test_the_analyses_read_device_models_and_return_host_arrays(monkeypatch):
    fakecupy.install(monkeypatch)
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32))
    analyses = (lambda m, x: minivit.attention_rollout(m, x, head_fusion="max", discard_ratio=0.2),
                minivit.mean_attention_distance, lambda m, x: minivit.pos_embed_similarity(m))
    on_host = [f(_tiny(), x) for f in analyses]
    backend.use("cupy")
    try:
        model = _tiny()
        on_device = [f(model, backend.asarray(x)) for f in analyses]
    finally:
        backend.use("numpy")
    assert backend.is_cupy(model.blocks[0].attn.attn_probs)
    for host, device in zip(on_host, on_device, strict=True):
        assert type(device) is np.ndarray
        np.testing.assert_allclose(device, host, rtol=1e-12)
