"""Optimizers against torch.optim, the schedule's values, clipping, state round trips, and an
overfit run: 32 digits learned to 100% training accuracy."""

import math
import re

import numpy as np
import pytest

from minivit import backend, create_model
from minivit.data import load_dataset
from minivit.losses import CrossEntropyLoss
from minivit.nn import Parameter
from minivit.optim import SGD, AdamW, ModelEMA, WarmupCosine, clip_grad_norm, no_weight_decay, param_groups

SHAPES = {"blocks.0.fc.weight": (4, 3), "blocks.0.fc.bias": (3,), "pos_embed.weight": (1, 5, 2),
          "norm.weight": (2,), "head.weight": (2, 6)}


def make_params(seed=0):
    gen = np.random.default_rng(seed)
    return [(n, Parameter(backend.asarray(gen.standard_normal(s), dtype=np.float64)))
            for n, s in SHAPES.items()]


def grads(steps, seed=1):
    gen = np.random.default_rng(seed)
    return [[gen.standard_normal(s) for s in SHAPES.values()] for _ in range(steps)]


def run_minivit(opt, params, gs, lrs=None):
    for t, g in enumerate(gs):
        for (_, p), gi in zip(params, g, strict=True):
            p.grad[...] = backend.asarray(gi)
        if lrs is not None:
            opt.lr = lrs[t]
        opt.step()
    return [backend.to_numpy(p.data) for _, p in params]


def run_torch(torch, make_opt, gs, lrs=None, seed=0):
    params = [torch.tensor(backend.to_numpy(p.data), requires_grad=True) for _, p in make_params(seed)]
    opt = make_opt(params)
    for t, g in enumerate(gs):
        for p, gi in zip(params, g, strict=True):
            p.grad = torch.tensor(gi)
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[t]
        opt.step()
    return [p.detach().numpy() for p in params]


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.01), (0.8, True, 0.05)])
def test_sgd_matches_torch(momentum, nesterov, wd):
    torch = pytest.importorskip("torch")
    gs = grads(10)
    params = make_params()
    ours = run_minivit(SGD([p for _, p in params], lr=0.1, momentum=momentum, nesterov=nesterov,
                           weight_decay=wd), params, gs)
    ref = run_torch(torch, lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=momentum, nesterov=nesterov,
                                                      weight_decay=wd), gs)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)
    assert not np.allclose(ours[0], backend.to_numpy(make_params()[0][1].data))  # it moved


def test_adamw_matches_torch_with_decay_groups_and_a_schedule():
    torch = pytest.importorskip("torch")
    gs = grads(10)
    lrs = [WarmupCosine(0.01, 10, 3)(t) for t in range(10)]
    params = make_params()
    ours = run_minivit(AdamW(params, lr=0.0, betas=(0.9, 0.98), eps=1e-7, weight_decay=0.3), params, gs, lrs)

    def torch_adamw(ps):  # the same split by hand: decay the two matrices only
        names = list(SHAPES)
        matrices = ("blocks.0.fc.weight", "head.weight")
        decay = [p for n, p in zip(names, ps, strict=True) if n in matrices]
        rest = [p for n, p in zip(names, ps, strict=True) if n not in matrices]
        groups = [{"params": decay, "weight_decay": 0.3}, {"params": rest, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=0.0, betas=(0.9, 0.98), eps=1e-7)

    ref = run_torch(torch, torch_adamw, gs, lrs)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_adamw_plain_parameter_list_decays_everything_like_torch():
    torch = pytest.importorskip("torch")
    gs = grads(10, seed=2)
    params = make_params()
    ours = run_minivit(AdamW([p for _, p in params], lr=0.05, weight_decay=0.5), params, gs)
    ref = run_torch(torch, lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.5), gs)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_no_weight_decay_picks_biases_norms_embeddings_and_tokens():
    model = create_model("vit_digits", pool="cls", class_token=True, pos_embed="learn")
    groups = param_groups(model.named_parameters(), 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for p in groups[0]["params"])
    kept = sorted(names[id(p)] for p in groups[1]["params"])
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert "cls_token.weight" in kept and "pos_embed.weight" in kept and "norm.weight" in kept
    assert all(n.endswith(".bias") or "norm" in n or "token" in n or "pos_embed" in n for n in kept)
    assert all(n.endswith(".weight") and model_param(model, n).ndim == 2 for n in decayed)
    assert "head.weight" in decayed and "patch_embed.proj.weight" in decayed
    assert len(decayed) + len(kept) == len(list(model.named_parameters()))
    assert no_weight_decay("blocks.0.dist_token", Parameter(np.zeros((1, 1, 4))))


def model_param(model, name):
    return dict(model.named_parameters())[name].data


def test_groups_as_dicts_and_bad_input():
    (_, a), (_, b) = make_params()[:2]
    opt = AdamW([{"params": [a], "weight_decay": 0.2}, {"params": [b]}], weight_decay=0.01)
    assert [g["weight_decay"] for g in opt.groups] == [0.2, 0.01]
    with pytest.raises(ValueError, match="'params'"):
        AdamW([{"weight_decay": 0.1}])
    with pytest.raises(ValueError, match="no parameters"):
        SGD([])
    with pytest.raises(ValueError, match="Parameters"):
        SGD([np.zeros(3)])
    with pytest.raises(ValueError, match="nesterov"):
        SGD([a], nesterov=True)


def test_warmup_cosine_values():
    s = WarmupCosine(1.0, total_steps=10, warmup_steps=2, min_lr=0.1)
    assert s(0) == pytest.approx(0.5) and s(1) == pytest.approx(1.0)  # linear warmup
    assert s(2) == pytest.approx(1.0)  # cosine starts at the peak
    assert s(6) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the cosine
    assert s(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert s(10) == pytest.approx(0.1) and s(1000) == pytest.approx(0.1)
    values = [s(t) for t in range(2, 10)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))  # strictly decreasing
    no_warmup = WarmupCosine(2.0, total_steps=4)
    assert [no_warmup(t) for t in range(4)] == pytest.approx([2.0, 1.0 + 2 ** -0.5, 1.0, 1.0 - 2 ** -0.5])
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(1.0, total_steps=5, warmup_steps=6)


def test_clip_grad_norm_matches_torch():
    torch = pytest.importorskip("torch")
    params = make_params()
    g = grads(1)[0]
    for (_, p), gi in zip(params, g, strict=True):
        p.grad[...] = gi
    tp = [torch.zeros(gi.shape, dtype=torch.float64, requires_grad=True) for gi in g]
    for p, gi in zip(tp, g, strict=True):
        p.grad = torch.tensor(gi)
    total = clip_grad_norm([p for _, p in params], 1.5)
    ref = torch.nn.utils.clip_grad_norm_(tp, 1.5)
    assert total == pytest.approx(float(ref), rel=1e-12)
    assert total > 1.5
    for (_, p), t in zip(params, tp, strict=True):
        np.testing.assert_allclose(backend.to_numpy(p.grad), t.grad.numpy(), rtol=1e-12)
    before = [backend.to_numpy(p.grad).copy() for _, p in params]
    assert clip_grad_norm([p for _, p in params], 100.0) == pytest.approx(1.5, rel=1e-5)  # already small
    for (_, p), b in zip(params, before, strict=True):
        np.testing.assert_array_equal(backend.to_numpy(p.grad), b)


@pytest.mark.parametrize("make", [lambda ps: AdamW(ps, lr=0.01, weight_decay=0.1),
                                  lambda ps: SGD(ps, lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.1)])
def test_state_dict_round_trip_continues_bit_for_bit(make):
    gs = grads(10)
    params = make_params()
    full = run_minivit(make(params), params, gs)

    params = make_params()
    opt = make(params)
    run_minivit(opt, params, gs[:4])
    sd = opt.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values()) and int(sd["steps"]) == 4
    weights = [backend.to_numpy(p.data).copy() for _, p in params]
    params2 = make_params(seed=5)  # fresh parameters, overwritten with the saved ones
    for (_, p), w in zip(params2, weights, strict=True):
        p.data[...] = w
    opt2 = make(params2)
    opt2.load_state_dict(sd)
    resumed = run_minivit(opt2, params2, gs[4:])
    for a, b in zip(full, resumed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_load_state_dict_errors():
    params = make_params()
    opt = AdamW(params)
    run_minivit(opt, params, grads(1))
    sd = opt.state_dict()
    bad = dict(sd, **{"exp_avg.0": np.zeros((9, 9))})
    with pytest.raises(ValueError, match="exp_avg.0.*shape"):
        AdamW(make_params()).load_state_dict(bad)
    with pytest.raises(ValueError, match="unexpected keys"):
        AdamW(make_params()).load_state_dict(dict(sd, **{"momentum_buffer.0": np.zeros(3)}))
    with pytest.raises(ValueError, match="steps"):
        AdamW(make_params()).load_state_dict({k: v for k, v in sd.items() if k != "steps"})


def _optimizer_state(opt):
    return opt.steps, {k: [None if b is None else backend.to_numpy(b).tobytes() for b in bufs]
                       for k, bufs in opt.state.items()}


@pytest.mark.parametrize("change,message", [
    ({"steps": np.array(-1)}, "optimizer state 'steps' must be an integer >= 0, got -1"),
    ({"steps": np.array(2.5)}, "optimizer state 'steps' must be an integer >= 0, got array(2.5)"),
    ({"steps": np.array([1, 2])}, "optimizer state 'steps' must be an integer >= 0, got array([1, 2])"),
    ({"steps": True}, "optimizer state 'steps' must be an integer >= 0, got True"),
    ({"steps": "3"}, "optimizer state 'steps' must be an integer >= 0, got '3'"),
    ({"exp_avg_sq.4": np.full((2, 6), np.nan)}, "optimizer state 'exp_avg_sq.4' has 12 non-finite values"),
    ({"exp_avg.4": np.full((2, 6), "x")}, "optimizer state 'exp_avg.4' must be an array of real numbers"),
    ({"exp_avg.4": None}, "optimizer state 'exp_avg.4' must be an array of real numbers, got dtype object"),
    ({"exp_avg_sq.4": np.zeros((6, 2))}, "optimizer state 'exp_avg_sq.4' has shape (6, 2), expected (2, 6)"),
])
def test_load_state_dict_is_all_or_nothing(change, message):
    params = make_params()
    opt = AdamW([p for _, p in params])  # one group: buffer i belongs to SHAPES' entry i
    run_minivit(opt, params, grads(3))
    sd = dict(opt.state_dict(), **{"exp_avg.0": np.ones((4, 3))})  # a valid entry that would be loaded first
    params2 = make_params()
    opt2 = AdamW([p for _, p in params2])
    run_minivit(opt2, params2, grads(1))
    before = _optimizer_state(opt2)
    with pytest.raises(ValueError, match=re.escape(message)):
        opt2.load_state_dict(dict(sd, **change))
    assert _optimizer_state(opt2) == before


def test_load_state_dict_takes_a_plain_int_and_leaves_out_missing_buffers():
    params = make_params()
    opt = SGD([p for _, p in params], lr=0.1, momentum=0.9)
    run_minivit(opt, params, grads(2))
    sd = {k: v for k, v in opt.state_dict().items() if k != "momentum_buffer.1"}
    opt.load_state_dict(dict(sd, steps=7))
    assert opt.steps == 7 and opt.state["momentum_buffer"][1] is None
    with pytest.raises(ValueError, match="optimizer state must map names to arrays, got list"):
        opt.load_state_dict(list(sd.items()))


def test_overfit_32_digits_to_100_percent():
    """The issue's overfit test: 32 training images, full-batch AdamW, 100% within 300 steps."""
    ds = load_dataset("digits", val_fraction=0.0)
    x = backend.asarray(ds.normalize(ds.x_train[:32]))
    y = ds.y_train[:32]
    model = create_model("vit_digits", seed=0)
    opt = AdamW(model.named_parameters(), lr=2e-3, weight_decay=0.0)
    loss_fn = CrossEntropyLoss()
    acc = []
    while len(acc) < 300 and (not acc or acc[-1] < 1.0):
        logits = model.forward(x)
        loss_fn.forward(logits, y)
        acc.append((backend.to_numpy(logits).argmax(1) == y).mean())
        model.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
    assert acc[-1] == 1.0, f"training accuracy {acc[-1]:.0%} after {len(acc)} steps"
    assert acc[0] < 0.3  # it started from chance


def test_model_ema_is_the_moving_average_of_the_weights():
    model, copy = create_model("vit_digits", depth=1, seed=0), create_model("vit_digits", depth=1, seed=1)
    ema = ModelEMA(model, copy, 0.9)
    start = model.state_dict()
    np.testing.assert_array_equal(copy.state_dict()["head.weight"], start["head.weight"])  # starts at theta
    assert not copy.training
    for p in model.parameters():
        p.data += 1.0
    ema.update()
    for name, value in copy.state_dict().items():  # 0.9 theta_0 + 0.1 (theta_0 + 1)
        np.testing.assert_allclose(value, start[name] + 0.1, rtol=1e-6, atol=1e-6, err_msg=name)
    ema.update()  # 0.9 (theta_0 + 0.1) + 0.1 (theta_0 + 1)
    for name, value in copy.state_dict().items():
        np.testing.assert_allclose(value, start[name] + 0.19, rtol=1e-6, atol=1e-6, err_msg=name)
    for bad in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="EMA decay must be a finite number in"):
            ModelEMA(model, copy, bad)


def test_model_ema_averages_batch_norm_statistics_too():
    """BatchNorm's running statistics are persistent buffers: averaged as the weights are, even
    though the model's layers replace their arrays at every training step."""
    model, copy = create_model("cvt_digits", seed=0), create_model("cvt_digits", seed=1)
    ema = ModelEMA(model, copy, 0.9)
    name = "stages.0.blocks.0.attn.conv_proj_k.bn.running_mean"
    start = dict(copy.named_buffers())[name].copy()  # the model's, copied at the start
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    model.train().forward(x)  # the statistics move, in new arrays
    moved = dict(model.named_buffers())[name]
    assert not np.allclose(moved, start)
    ema.update()
    np.testing.assert_allclose(dict(copy.named_buffers())[name], 0.9 * start + 0.1 * moved, rtol=1e-6)
    assert copy.state_dict()[name].dtype == np.float32
