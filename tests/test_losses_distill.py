"""DeiT's soft and hard distillation losses: gradient checks, a PyTorch oracle, bad input."""

import numpy as np
import pytest

from minivit.gradcheck import assert_gradcheck
from minivit.losses import HardDistillationLoss, SoftDistillationLoss

B, K = 6, 5


def _inputs(seed=0, k_teacher=K):
    gen = np.random.default_rng(seed)
    z_cls = gen.standard_normal((B, K)) * 2
    z_dist = gen.standard_normal((B, K)) * 2
    labels = gen.integers(0, K, B)
    z_teacher = gen.standard_normal((B, k_teacher)) * 3
    return z_cls, z_dist, labels, z_teacher


def _losses():
    return [
        SoftDistillationLoss(alpha=0.5, tau=1.0),
        SoftDistillationLoss(alpha=0.3, tau=3.0, label_smoothing=0.1),
        SoftDistillationLoss(alpha=1.0, tau=0.5),
        HardDistillationLoss(alpha=0.5),
        HardDistillationLoss(alpha=0.8, label_smoothing=0.1),
    ]


@pytest.mark.parametrize("loss", _losses(), ids=lambda m: type(m).__name__)
def test_gradcheck_both_heads(loss):
    result = assert_gradcheck(loss, *_inputs(), wrt=(0, 1))
    assert set(result.errors) == {"input[0]", "input[1]"}


@pytest.mark.parametrize("loss", _losses(), ids=lambda m: type(m).__name__)
def test_backward_returns_two_head_gradients_and_none_for_the_teacher(loss):
    z_cls, z_dist, labels, z_teacher = _inputs()
    loss.forward(z_cls, z_dist, labels, z_teacher)
    grads = loss.backward()
    assert len(grads) == 2
    assert grads[0].shape == z_cls.shape and grads[1].shape == z_dist.shape
    # each row of a softmax-difference gradient sums to zero
    np.testing.assert_allclose(grads[0].sum(axis=1), 0.0, atol=1e-15)
    np.testing.assert_allclose(grads[1].sum(axis=1), 0.0, atol=1e-15)


class _SingleHeadStudent:
    """A student without a distillation token: its class logits serve both terms."""

    def __init__(self, loss):
        self.loss = loss

    def forward(self, z, labels, z_teacher):
        return self.loss.forward(z, z, labels, z_teacher)

    def backward(self, dout=1.0):
        dz_cls, dz_dist = self.loss.backward(dout)
        return dz_cls + dz_dist


@pytest.mark.parametrize("loss", [SoftDistillationLoss(0.5, 2.0), HardDistillationLoss(0.5)],
                         ids=lambda m: type(m).__name__)
def test_student_without_distillation_token_passes_class_logits_twice(loss):
    z, _, labels, z_teacher = _inputs(1)
    assert_gradcheck(_SingleHeadStudent(loss), z, labels, z_teacher, wrt=(0,))


@pytest.mark.parametrize("alpha,tau,eps", [(0.5, 1.0, 0.0), (0.3, 3.0, 0.1), (0.9, 0.5, 0.0)])
def test_soft_distillation_matches_torch(alpha, tau, eps):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    z_cls, z_dist, labels, z_teacher = _inputs(2)
    loss = SoftDistillationLoss(alpha, tau, label_smoothing=eps)
    value = loss.forward(z_cls, z_dist, labels, z_teacher)
    dz_cls, dz_dist = loss.backward()

    tc = torch.tensor(z_cls, requires_grad=True)
    td = torch.tensor(z_dist, requires_grad=True)
    tt = torch.tensor(z_teacher)
    kl = F.kl_div(F.log_softmax(td / tau, dim=1), F.log_softmax(tt / tau, dim=1),
                  reduction="batchmean", log_target=True)
    ref = (1 - alpha) * F.cross_entropy(tc, torch.tensor(labels), label_smoothing=eps) + alpha * tau**2 * kl
    ref.backward()
    assert abs(float(value) - ref.item()) < 1e-13
    np.testing.assert_allclose(dz_cls, tc.grad.numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(dz_dist, td.grad.numpy(), rtol=0, atol=1e-14)


@pytest.mark.parametrize("alpha,eps", [(0.5, 0.0), (0.25, 0.1)])
def test_hard_distillation_matches_torch(alpha, eps):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    z_cls, z_dist, labels, z_teacher = _inputs(3)
    loss = HardDistillationLoss(alpha, label_smoothing=eps)
    value = loss.forward(z_cls, z_dist, labels, z_teacher)
    dz_cls, dz_dist = loss.backward(2.0)

    tc = torch.tensor(z_cls, requires_grad=True)
    td = torch.tensor(z_dist, requires_grad=True)
    y_teacher = torch.tensor(z_teacher).argmax(dim=1)
    ref = ((1 - alpha) * F.cross_entropy(tc, torch.tensor(labels), label_smoothing=eps)
           + alpha * F.cross_entropy(td, y_teacher))
    (2.0 * ref).backward()
    assert abs(float(value) - ref.item()) < 1e-13
    np.testing.assert_allclose(dz_cls, tc.grad.numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(dz_dist, td.grad.numpy(), rtol=0, atol=1e-14)


def test_soft_distillation_vanishes_when_the_student_matches_the_teacher():
    z_cls, _, labels, z_teacher = _inputs(4)
    loss = SoftDistillationLoss(alpha=1.0, tau=4.0)
    assert abs(float(loss.forward(z_cls, z_teacher.copy(), labels, z_teacher))) < 1e-12
    _, dz_dist = loss.backward()
    assert np.abs(dz_dist).max() < 1e-15


def test_hard_distillation_uses_the_teachers_argmax_as_label():
    z_cls, z_dist, labels, z_teacher = _inputs(5)
    hard = HardDistillationLoss(alpha=1.0)
    from minivit.losses import CrossEntropyLoss

    expected = CrossEntropyLoss().forward(z_dist, z_teacher.argmax(axis=1))
    assert float(hard.forward(z_cls, z_dist, labels, z_teacher)) == pytest.approx(float(expected), abs=1e-15)
    # the teacher's scale does not matter, only its decision
    scaled = hard.forward(z_cls, z_dist, labels, 100 * z_teacher)
    assert float(scaled) == pytest.approx(float(expected), abs=1e-15)


@pytest.mark.parametrize("make", [lambda: SoftDistillationLoss(0.5, 2.0), lambda: HardDistillationLoss(0.5)])
def test_teacher_with_other_class_count_is_a_clear_error(make):
    z_cls, z_dist, labels, z_teacher = _inputs(6, k_teacher=K + 3)
    with pytest.raises(ValueError, match=f"teacher predicts {K + 3} classes but the student {K}"):
        make().forward(z_cls, z_dist, labels, z_teacher)


def test_bad_shapes_and_settings_are_clear_errors():
    z_cls, z_dist, labels, z_teacher = _inputs(7)
    loss = SoftDistillationLoss(0.5, 1.0)
    with pytest.raises(ValueError, match="z_dist must have the shape of z_cls"):
        loss.forward(z_cls, z_dist[:, :3], labels, z_teacher)
    with pytest.raises(ValueError, match="teacher logits must be"):
        loss.forward(z_cls, z_dist, labels, z_teacher[:4])
    with pytest.raises(ValueError, match="labels must be"):
        loss.forward(z_cls, z_dist, labels[:3], z_teacher)
    with pytest.raises(ValueError, match="alpha must be in"):
        SoftDistillationLoss(alpha=1.5)
    with pytest.raises(ValueError, match="tau must be positive"):
        SoftDistillationLoss(tau=0.0)
    with pytest.raises(ValueError, match="alpha must be in"):
        HardDistillationLoss(alpha=-0.1)


@pytest.mark.parametrize("make", [lambda: SoftDistillationLoss(0.5, 2.0), lambda: HardDistillationLoss(0.5)])
def test_backward_before_forward_raises(make):
    loss = make()
    with pytest.raises(RuntimeError, match="called before forward"):
        loss.backward()
    loss.forward(*_inputs(8))
    loss.backward()
    with pytest.raises(RuntimeError, match="called before forward"):
        loss.backward()
