"""Softmax cross-entropy with label smoothing (the distillation losses have their own file)."""

import numpy as np
import pytest
from conftest import npy, randn
from scipy.special import logsumexp

from minivit.gradcheck import gradcheck
from minivit.losses import CrossEntropyLoss


def _reference(logits, labels, eps):
    """Cross-entropy written out: (1 - eps) NLL(y) + eps * mean over classes of -log p."""
    logp = logits - logsumexp(logits, axis=1, keepdims=True)
    nll = -logp[np.arange(len(labels)), labels]
    return float(((1 - eps) * nll - eps * logp.mean(axis=1)).mean())


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_value_matches_the_formula(eps):
    gen = np.random.default_rng(0)
    logits, labels = randn(gen, 7, 5, scale=3), gen.integers(0, 5, size=7)
    loss = CrossEntropyLoss(eps).forward(logits, labels)
    assert abs(float(loss) - _reference(npy(logits), labels, eps)) < 1e-13


def test_uniform_logits_give_log_k():
    loss = CrossEntropyLoss().forward(np.zeros((3, 10)), np.array([0, 4, 9]))
    assert abs(float(loss) - np.log(10)) < 1e-14


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_gradcheck(eps):
    gen = np.random.default_rng(1)
    logits, labels = randn(gen, 4, 6, scale=2), gen.integers(0, 6, size=4)
    result = gradcheck(CrossEntropyLoss(eps), logits, labels)
    assert result.worst < 1e-7, f"\n{result}"
    assert list(result.errors) == ["input[0]"] and result.counts["input[0]"] == 24


def test_gradient_is_softmax_minus_targets_over_batch():
    gen = np.random.default_rng(2)
    logits, labels = randn(gen, 3, 4), np.array([3, 0, 3])
    loss = CrossEntropyLoss(0.3)
    loss.forward(logits, labels)
    g = npy(loss.backward(2.0))
    x = npy(logits)
    p = np.exp(x - logsumexp(x, axis=1, keepdims=True))
    q = np.full((3, 4), 0.3 / 4)
    q[np.arange(3), labels] += 0.7
    np.testing.assert_allclose(g, 2.0 * (p - q) / 3, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-15)  # shift invariance of softmax


def test_numerically_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4 + 3.0, 1e4]])
    loss = CrossEntropyLoss()
    value = float(loss.forward(logits, np.array([0, 2])))
    assert np.isfinite(value) and abs(value - _reference(logits, np.array([0, 2]), 0.0)) < 1e-10
    assert abs(value - np.log1p(np.exp(-3.0)) / 2 - 3.0 / 2) < 1e-10  # row 1: -log p = 3 + log(1 + e^-3)
    assert np.all(np.isfinite(npy(loss.backward())))


def test_float32_stays_float32():
    logits = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    loss = CrossEntropyLoss(0.1)
    loss.forward(logits, np.array([0, 1, 2, 0]))
    assert loss.backward().dtype == np.float32


def test_labels_may_be_a_list():
    loss = CrossEntropyLoss()
    logits = np.random.default_rng(0).standard_normal((2, 3))
    assert float(loss.forward(logits, [2, 1])) == pytest.approx(_reference(logits, np.array([2, 1]), 0.0))


def test_backward_before_forward_raises():
    loss = CrossEntropyLoss()
    with pytest.raises(RuntimeError, match="before forward"):
        loss.backward()
    loss.forward(np.zeros((2, 3)), np.array([0, 1]))
    loss.backward()
    with pytest.raises(RuntimeError, match="before forward"):
        loss.backward()


@pytest.mark.parametrize("logits,labels,message", [
    (np.zeros(5), np.array([0]), r"logits must be \(B, classes\), got shape \(5,\)"),
    (np.zeros((4, 3)), np.array([0, 1, 2]), r"labels must be \(4,\) to match logits, got \(3,\)"),
    (np.zeros((2, 3)), np.array([0.0, 1.0]), "labels must be integer class indices, got dtype float64"),
    (np.zeros((2, 3)), np.array([0, 3]), r"class indices in \[0, 3\), got values in \[0, 3\]"),
    (np.zeros((2, 3)), np.array([-1, 2]), r"class indices in \[0, 3\), got values in \[-1, 2\]"),
])
def test_bad_input_is_a_value_error(logits, labels, message):
    with pytest.raises(ValueError, match=message):
        CrossEntropyLoss().forward(logits, labels)


@pytest.mark.parametrize("eps", [-0.1, 1.0])
def test_bad_label_smoothing(eps):
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        CrossEntropyLoss(eps)


def test_floor_is_the_entropy_of_the_target_reached_where_softmax_equals_it():
    K, eps = 10, 0.1
    loss = CrossEntropyLoss(eps)
    floor = loss.floor(K)
    assert floor == pytest.approx(0.5003, abs=1e-4)  # -0.91 log 0.91 - 9 (0.01 log 0.01)
    labels = np.arange(K)
    q = loss.targets(labels, K, np.float64, np)
    assert float(loss.forward(np.log(q), labels)) == pytest.approx(floor, rel=1e-12)  # logits log q reach it
    gen = np.random.default_rng(3)
    for _ in range(20):  # nothing goes lower, however confident
        logits = np.log(q) + gen.standard_normal((K, K)) * gen.choice([0.01, 1, 10])
        assert float(loss.forward(logits, labels)) > floor
    assert CrossEntropyLoss().floor(K) == 0.0
