"""DeiT: the distillation token, the two heads, eval-mode averaging, a PyTorch oracle, counts."""

import numpy as np
import pytest
from conftest import snapshot, wrong_douts

from minivit import create_model
from minivit.gradcheck import assert_gradcheck
from minivit.losses import HardDistillationLoss, SoftDistillationLoss
from minivit.models import DistilledVisionTransformer, VisionTransformer
from minivit.nn import Module

SMALL = dict(img_size=8, patch_size=4, in_chans=2, num_classes=3, embed_dim=8, depth=2, num_heads=2,
             mlp_ratio=2.0, dtype="float64", seed=0)


def _model(**overrides):
    model = DistilledVisionTransformer(**{**SMALL, **overrides})
    # make the class token and the heads' biases nonzero, so that their gradients are checked on
    # a general point, not on the zero init
    gen = np.random.default_rng(1)
    for p in (model.cls_token.weight, model.head.bias, model.head_dist.bias):
        p.data[...] = gen.standard_normal(p.shape) * 0.1
    return model


def _images(B=3, seed=2):
    return np.random.default_rng(seed).standard_normal((B, SMALL["in_chans"], 8, 8))


@pytest.mark.parametrize("name,count", [
    ("deit_tiny_distilled_patch16_224", 5_910_800),
    ("deit_small_distilled_patch16_224", 22_436_432),
    ("deit_base_distilled_patch16_224", 87_338_192),
])
def test_distilled_parameter_counts(name, count):
    model = create_model(name)
    assert isinstance(model, DistilledVisionTransformer)
    assert model.num_parameters() == count


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_plain_deit_is_the_vit_of_the_same_size(size):
    deit, vit = create_model(f"deit_{size}_patch16_224"), create_model(f"vit_{size}_patch16_224")
    assert type(deit) is VisionTransformer
    assert deit.num_parameters() == vit.num_parameters()
    shapes = [{k: v.shape for k, v in m.state_dict().items()} for m in (deit, vit)]
    assert shapes[0] == shapes[1]


def test_token_layout_and_init():
    model = create_model("deit_tiny_distilled_patch16_224", num_classes=10)
    tokens = model.cls_token.weight.data
    assert tokens.shape == (1, 2, 192)  # [x_class; x_dist]
    assert model.pos_embed.weight.shape == (1, 196 + 2, 192)
    assert model.head_dist.weight.shape == (192, 10)
    assert np.all(tokens[0, 0] == 0)  # x_class 0
    assert 0.01 < tokens[0, 1].std() < 0.03 and np.abs(tokens[0, 1]).max() <= 0.04  # trunc normal(0.02)
    assert np.all(model.head_dist.bias.data == 0)
    assert not np.allclose(model.head.weight.data, model.head_dist.weight.data)


def test_deit_digits():
    model = create_model("deit_digits")
    vit = create_model("vit_digits")
    # vit_digits' size plus x_class, x_dist and the distillation head (the sin-cos positions are fixed)
    assert model.num_parameters() == vit.num_parameters() + 2 * 64 + (64 * 10 + 10)
    assert model.head_dist.weight.data.std() > 0.06  # fan-in init for the second head: U(+-1/8), std 0.072
    np.testing.assert_array_equal(model.pos_embed.table[0, :2], 0)  # the two tokens get no position
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    z_cls, z_dist = model.forward(x)
    assert z_cls.shape == z_dist.shape == (4, 10) and z_cls.dtype == np.float32
    with pytest.raises(ValueError, match="pool='cls'"):
        create_model("deit_digits", pool="mean")
    with pytest.raises(ValueError, match="class_token=True"):
        create_model("deit_digits", class_token=False)


def test_training_mode_returns_both_heads_eval_mode_their_average():
    model, x = _model(), _images()
    z_cls, z_dist = model.train().forward(x)
    assert not np.allclose(z_cls, z_dist)
    out = model.eval().forward(x)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, (z_cls + z_dist) / 2, rtol=0, atol=1e-15)


def test_gradcheck_training_mode_both_heads():
    model = _model().train()
    result = assert_gradcheck(model, _images(), tol=1e-5)
    checked = {"input[0]", "cls_token.weight", "head.weight", "head_dist.weight", "head_dist.bias"}
    assert checked <= set(result.errors)


def test_gradcheck_eval_mode_average():
    assert_gradcheck(_model().eval(), _images(), tol=1e-5)


def test_gradcheck_with_dropout_and_drop_path():
    model = _model(drop_rate=0.2, drop_path_rate=0.3).train()
    assert_gradcheck(model, _images(), tol=1e-5)


def test_eval_backward_splits_the_gradient_evenly_between_the_heads():
    model, x = _model(), _images()
    g = np.random.default_rng(3).standard_normal((3, SMALL["num_classes"]))
    model.train().forward(x)
    model.zero_grad()
    dx_train = model.backward((g / 2, g / 2))
    grads_train = {k: p.grad.copy() for k, p in model.named_parameters()}
    model.eval().forward(x)
    model.zero_grad()
    dx_eval = model.backward(g)
    np.testing.assert_allclose(dx_eval, dx_train, rtol=0, atol=1e-15)
    for k, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, grads_train[k], rtol=0, atol=1e-15, err_msg=k)


def test_backward_must_take_what_forward_returned():
    model, x = _model(), _images()
    z_cls, _ = model.train().forward(x)
    pair = r"a tuple \(a floating-point array of shape \(3, 3\), a floating-point array of shape \(3, 3\)\)"
    with pytest.raises(ValueError, match=rf"DistilledVisionTransformer.backward expected dout to be {pair} "
                                         r"\(what forward returned\), got an array of shape \(3, 3\)"):
        model.backward(z_cls)
    model.eval().forward(x)
    with pytest.raises(ValueError, match=r"expected dout to be a floating-point array of shape \(3, 3\) "
                                         r"\(what forward returned\), got a tuple \("):
        model.backward((z_cls, z_cls))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_wrong_dout_leaves_every_gradient_unchanged(mode):
    model, x = _model(drop_rate=0.1), _images()
    model.train(mode == "train")
    out = model.forward(x)
    model.backward(tuple(np.ones_like(o) for o in out) if mode == "train" else np.ones_like(out))
    out = model.forward(x)
    before = snapshot(model)
    for dout in wrong_douts(out):
        with pytest.raises(ValueError, match="DistilledVisionTransformer.backward expected dout to be"):
            model.backward(dout)
        assert snapshot(model) == before
    model.backward(tuple(np.ones_like(o) for o in out) if mode == "train" else np.ones_like(out))
    assert snapshot(model) != before


class _DistilledStudent(Module):
    """Student, teacher and loss as one training step computes them: the teacher's forward runs
    between the student's forward and backward. The teacher sits in a tuple, so it is not a
    registered child: the check perturbs the student's parameters only, and the teacher reads
    inputs of its own, so perturbing x moves the student only (the teacher gets no gradient)."""

    def __init__(self, loss, x_teacher):
        self.student = _model()
        self.frozen = (VisionTransformer(**{**SMALL, "seed": 7}).eval(),)
        self.loss, self.x_teacher, self.labels = loss, x_teacher, np.array([0, 2, 1])

    def forward(self, x):
        z_cls, z_dist = self.student.forward(x)
        return self.loss.forward(z_cls, z_dist, self.labels, self.frozen[0].forward(self.x_teacher))

    def backward(self, dout):
        return self.student.backward(self.loss.backward(dout))


@pytest.mark.parametrize("make", [lambda: SoftDistillationLoss(0.5, 2.0, label_smoothing=0.1),
                                  lambda: HardDistillationLoss(0.5)], ids=["soft", "hard"])
def test_gradcheck_student_through_distillation_loss(make):
    result = assert_gradcheck(_DistilledStudent(make(), _images(seed=8)), _images(), tol=1e-5)
    assert "student.head_dist.weight" in result.errors and not any("frozen" in k for k in result.errors)


def _torch_deit(torch, sd, x, cfg):
    """DeiT written directly in torch ops (convolution for the patches, torch's own attention)."""
    F = torch.nn.functional
    P, D, h = cfg["patch_size"], cfg["embed_dim"], cfg["num_heads"]
    W = sd["patch_embed.proj.weight"]  # (C P P, D)
    kernel = W.T.reshape(D, cfg["in_chans"], P, P)
    z = F.conv2d(x, kernel, sd["patch_embed.proj.bias"], stride=P).flatten(2).transpose(1, 2)
    B = z.shape[0]
    z = torch.cat([sd["cls_token.weight"].expand(B, -1, -1), z], dim=1) + sd["pos_embed.weight"]
    N = z.shape[1]
    for i in range(cfg["depth"]):
        p = f"blocks.{i}."
        y = F.layer_norm(z, (D,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = (y @ sd[p + "attn.qkv.weight"] + sd[p + "attn.qkv.bias"]).reshape(B, N, 3, h, D // h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D)
        z = z + a @ sd[p + "attn.proj.weight"] + sd[p + "attn.proj.bias"]
        y = F.layer_norm(z, (D,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        y = F.gelu(y @ sd[p + "mlp.fc1.weight"] + sd[p + "mlp.fc1.bias"])
        z = z + y @ sd[p + "mlp.fc2.weight"] + sd[p + "mlp.fc2.bias"]
    z = F.layer_norm(z, (D,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    z_cls = z[:, 0] @ sd["head.weight"] + sd["head.bias"]
    z_dist = z[:, 1] @ sd["head_dist.weight"] + sd["head_dist.bias"]
    return z_cls, z_dist


def test_matches_torch_forward_and_backward():
    torch = pytest.importorskip("torch")
    cfg = dict(SMALL, in_chans=3, embed_dim=16, num_heads=4)
    model = _model(**cfg).train()
    x = np.random.default_rng(4).standard_normal((2, 3, 8, 8))
    g_cls, g_dist = np.random.default_rng(5).standard_normal((2, 2, cfg["num_classes"]))
    z_cls, z_dist = model.forward(x)
    model.zero_grad()
    dx = model.backward((g_cls, g_dist))

    sd = {k: torch.tensor(v, requires_grad=True) for k, v in model.state_dict().items()}
    tx = torch.tensor(x, requires_grad=True)
    t_cls, t_dist = _torch_deit(torch, sd, tx, cfg)
    ((t_cls * torch.tensor(g_cls)).sum() + (t_dist * torch.tensor(g_dist)).sum()).backward()
    np.testing.assert_allclose(z_cls, t_cls.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(z_dist, t_dist.detach().numpy(), rtol=0, atol=1e-12)
    assert np.abs(dx - tx.grad.numpy()).max() < 1e-10
    for name, p in model.named_parameters():
        assert np.abs(p.grad - sd[name].grad.numpy()).max() < 1e-10, name


# ----------------------------------------------------------------------------- the training command

def _train(capsys, out, *flags):
    from minivit.__main__ import main

    rc = main(["train", "--dataset", "synthetic", "--epochs", "1", "--quiet", "--out", str(out), *flags])
    return rc, capsys.readouterr().err


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    """A one-epoch vit_digits teacher on the synthetic set, through the command line."""
    from minivit.__main__ import main

    out = tmp_path_factory.mktemp("teacher")
    assert main(["train", "--model", "vit_digits", "--dataset", "synthetic", "--epochs", "1", "--quiet",
                 "--out", str(out)]) == 0
    return out / "last.npz"


@pytest.mark.slow
def test_cli_one_epoch_distillation_soft_and_hard(tmp_path, capsys, teacher_ckpt):
    from minivit import checkpoint

    weights = {}
    runs = {"none": [], "soft": ["--teacher", str(teacher_ckpt), "--distill", "soft", "--alpha", "0.5",
                                 "--tau", "2.0"],
            "hard": ["--teacher", str(teacher_ckpt), "--distill", "hard", "--alpha", "0.5"]}
    for name, flags in runs.items():
        rc, err = _train(capsys, tmp_path / name, "--model", "deit_digits", *flags)
        assert rc == 0, err
        for f in ("metrics.csv", "curves.png", "last.npz", "best.npz"):
            assert (tmp_path / name / f).is_file(), f
        ckpt = checkpoint.load(str(tmp_path / name / "last.npz"))
        assert ckpt["config"]["model"] == "deit_digits" and ckpt["epoch"] == 1
        assert np.isfinite(ckpt["history"]).all()
        weights[name] = ckpt["model"]
        if name != "none":
            assert ckpt["config"]["teacher"] == str(teacher_ckpt) and ckpt["config"]["distill"] == name
    # same seed, same data order: only the objective differs, and it changed what was learned
    for a, b in [("none", "soft"), ("none", "hard"), ("soft", "hard")]:
        assert not np.allclose(weights[a]["head_dist.weight"], weights[b]["head_dist.weight"]), (a, b)


@pytest.mark.slow
def test_cli_teacher_with_other_class_count_is_a_clear_error(tmp_path, capsys):
    from minivit import checkpoint
    from minivit.train import DEFAULTS

    teacher = create_model("vit_digits", num_classes=5)
    path = str(tmp_path / "teacher5.npz")
    checkpoint.save(path, config=dict(DEFAULTS, model="vit_digits", model_config=teacher.config),
                    model_state=teacher.state_dict(), optim_state={}, epoch=0, rng_states={}, history=[],
                    history_columns=("epoch",))
    rc, err = _train(capsys, tmp_path / "student", "--model", "deit_digits", "--teacher", path)
    assert rc == 2
    assert "predicts 5 classes" in err and "10 classes" in err
