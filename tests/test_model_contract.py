"""The model contract, run over every registered family (discovered from the registry, not
listed): each family registers a small ``*_digits`` configuration, and on it the model maps
images (B, C, H, W) to logits (B, classes) and back, passes a float64 whole-model gradient
check, round-trips its state dict, and behaves by its train/eval mode."""

import numpy as np
import pytest
from conftest import npy, randn

from minivit import create_model, list_models
from minivit.gradcheck import gradcheck
from minivit.models.registry import _REGISTRY

FAMILIES = sorted({cls for cls, _ in _REGISTRY.values()}, key=lambda c: c.__name__)


def small_model_of(family):
    names = [n for n in list_models() if n.endswith("_digits") and _REGISTRY[n][0] is family]
    assert names, f"{family.__name__} registers no small *_digits configuration for these tests"
    return names[0]


def build(family, **overrides):
    return create_model(small_model_of(family), dtype="float64", **overrides)


def images(model, seed=0, batch=2):
    return randn(np.random.default_rng(seed), batch, model.in_chans, model.img_size, model.img_size)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda c: c.__name__)
def test_images_to_logits_and_back(family):
    model = build(family).eval()
    x = images(model)
    logits = model.forward(x)
    assert logits.shape == (2, model.num_classes) and logits.dtype == np.float64
    dx = model.backward(randn(np.random.default_rng(1), *logits.shape))
    assert dx.shape == x.shape


@pytest.mark.parametrize("family", FAMILIES, ids=lambda c: c.__name__)
def test_whole_model_gradcheck_in_float64(family):
    model = build(family).eval()
    result = gradcheck(model, images(model), max_entries=8)
    assert result.worst < 1e-5, f"\n{result}"
    assert len(result.errors) == 1 + len(model.parameters())  # the image and every parameter


@pytest.mark.parametrize("family", FAMILIES, ids=lambda c: c.__name__)
def test_state_dict_round_trip_gives_the_same_model(family):
    a, b = build(family, seed=0).eval(), build(family, seed=1).eval()
    x = images(a)
    assert not np.allclose(npy(a.forward(x)), npy(b.forward(x)))
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(npy(a.forward(x)), npy(b.forward(x)))
    assert sorted(a.state_dict()) == sorted([n for n, _ in a.named_parameters()]
                                            + [n for n, _ in a.named_buffers(persistent_only=True)])


@pytest.mark.parametrize("family", FAMILIES, ids=lambda c: c.__name__)
def test_eval_is_deterministic_and_training_mode_is_not_with_drop_path(family):
    model = build(family, drop_path_rate=0.5)
    x = images(model, batch=8)
    model.eval()
    assert all(not m.training for _, m in model.named_modules())
    np.testing.assert_array_equal(npy(model.forward(x)), npy(model.forward(x)))
    model.train()
    first, second = model.forward(x), model.forward(x)
    first, second = (first[0], second[0]) if isinstance(first, tuple) else (first, second)
    assert not np.array_equal(npy(first), npy(second))
