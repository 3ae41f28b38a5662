"""MLP: fc2(GELU(fc1(z)))."""

import numpy as np
from conftest import npy, randn, randomize
from scipy.special import ndtr

from minivit import nn


def test_forward_is_fc2_gelu_fc1():
    gen = np.random.default_rng(0)
    mlp = randomize(nn.MLP(4, 10, dtype="float64"), gen)
    z = randn(gen, 2, 3, 4)
    h = npy(z) @ npy(mlp.fc1.weight.data) + npy(mlp.fc1.bias.data)
    expected = (h * ndtr(h)) @ npy(mlp.fc2.weight.data) + npy(mlp.fc2.bias.data)
    np.testing.assert_allclose(npy(mlp.forward(z)), expected, rtol=1e-12, atol=1e-13)
    assert mlp.fc1.weight.shape == (4, 10) and mlp.fc2.weight.shape == (10, 4)


def test_options_reach_the_sublayers():
    mlp = nn.MLP(4, 6, drop=0.3, approximate="tanh")
    assert mlp.act.approximate == "tanh" and mlp.drop1.p == 0.3 and mlp.drop2.p == 0.3


def test_dropout_only_in_training():
    gen = np.random.default_rng(1)
    mlp = randomize(nn.MLP(4, 8, drop=0.5, rng=3, dtype="float64"), gen)
    z = randn(gen, 5, 4)
    mlp.eval()
    y_eval = npy(mlp.forward(z))
    reference = nn.MLP(4, 8, dtype="float64")
    reference.load_state_dict(mlp.state_dict())
    np.testing.assert_array_equal(y_eval, npy(reference.forward(z)))
    mlp.train()
    assert not np.allclose(npy(mlp.forward(z)), y_eval)
