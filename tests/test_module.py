"""Module, Parameter, ModuleList, Sequential: registration, names, modes and state dicts."""

import numpy as np
import pytest
from conftest import npy, randn, tiny_vit

from minivit import backend, nn


class Two(nn.Module):
    def __init__(self):
        self.first = nn.Linear(3, 4, dtype="float64")
        self.scale = nn.Parameter(backend.ones((4,), "float64"))
        self.blocks = nn.ModuleList([nn.LayerNorm(4, dtype="float64") for _ in range(2)])
        self.not_a_param = np.zeros(3)  # plain arrays are not registered


def test_parameter_holds_data_and_matching_grad():
    p = nn.Parameter(np.arange(6.0).reshape(2, 3))
    assert p.shape == (2, 3) and p.dtype == np.float64 and p.size == 6
    assert p.grad.shape == p.data.shape and p.grad.dtype == p.data.dtype and not p.grad.any()
    assert "shape=(2, 3)" in repr(p)


def test_attributes_register_in_assignment_order_with_dotted_names():
    m = Two()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["scale", "first.weight", "first.bias", "blocks.0.weight", "blocks.0.bias",
                     "blocks.1.weight", "blocks.1.bias"]
    assert m.parameters()[0] is m.scale
    assert m.num_parameters() == 4 + 12 + 4 + 4 * 4
    assert [n for n, _ in m.named_modules()] == ["", "first.", "blocks.", "blocks.0.", "blocks.1."]


def test_reassigning_replaces_the_registration():
    m = Two()
    m.first = nn.Linear(3, 2, bias=False, dtype="float64")
    assert [n for n, _ in m.named_parameters() if n.startswith("first")] == ["first.weight"]
    m.scale = None  # no longer a parameter
    assert "scale" not in dict(m.named_parameters())


def test_linear_without_bias_has_no_bias_parameter():
    assert [n for n, _ in nn.Linear(3, 2, bias=False).named_parameters()] == ["weight"]


def test_model_state_dict_names():
    names = list(tiny_vit().state_dict())
    assert names[:5] == ["patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token.weight",
                         "pos_embed.weight", "blocks.0.norm1.weight"]
    assert "blocks.0.attn.qkv.weight" in names and "blocks.1.mlp.fc2.bias" in names
    assert names[-4:] == ["norm.weight", "norm.bias", "head.weight", "head.bias"]
    assert len(names) == 4 + 2 * 12 + 4


def test_state_dict_is_a_host_copy():
    m = tiny_vit()
    sd = m.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    sd["head.bias"][...] = 123.0
    assert not np.any(npy(m.head.bias.data) == 123.0)


def test_state_dict_round_trip_gives_identical_outputs():
    a, b = tiny_vit(seed=1), tiny_vit(seed=2)
    x = randn(np.random.default_rng(0), 3, 2, 4, 4)
    assert not np.array_equal(npy(a.forward(x)), npy(b.forward(x)))
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(npy(a.forward(x)), npy(b.forward(x)))
    # loading copies: the parameters are not the state dict's arrays
    sd = a.state_dict()
    b.load_state_dict(sd)
    sd["head.weight"][...] = 0.0
    np.testing.assert_array_equal(npy(a.forward(x)), npy(b.forward(x)))


def test_load_state_dict_keeps_the_model_dtype():
    a, b = tiny_vit(dtype="float64"), tiny_vit(dtype="float32", seed=3)
    b.load_state_dict(a.state_dict())
    assert all(p.dtype == np.float32 for p in b.parameters())
    np.testing.assert_allclose(npy(b.head.weight.data), npy(a.head.weight.data), rtol=1e-7)


def test_load_state_dict_missing_key():
    m = tiny_vit()
    sd = m.state_dict()
    del sd["blocks.1.attn.proj.bias"]
    with pytest.raises(ValueError, match=r"missing keys \['blocks.1.attn.proj.bias'\], unexpected keys \[\]"):
        m.load_state_dict(sd)


def test_load_state_dict_unexpected_key():
    m = tiny_vit()
    sd = m.state_dict()
    sd["dist_token.weight"] = np.zeros((1, 1, 8))
    with pytest.raises(ValueError, match=r"missing keys \[\], unexpected keys \['dist_token.weight'\]"):
        m.load_state_dict(sd)


def test_load_state_dict_mis_shaped_key():
    m = tiny_vit()
    before = m.state_dict()
    sd = tiny_vit(seed=9).state_dict()
    sd["head.weight"] = np.zeros((3, 8))  # transposed
    with pytest.raises(ValueError, match=r"'head.weight' has shape \(3, 8\), expected \(8, 3\)"):
        m.load_state_dict(sd)
    # a rejected state dict leaves the model as it was, not half loaded
    after = m.state_dict()
    assert all(np.array_equal(after[k], before[k]) for k in before)


def test_zero_grad_and_train_eval_over_the_tree():
    m = Two()
    for p in m.parameters():
        p.grad[...] = 1.0
    m.zero_grad()
    assert not any(npy(p.grad).any() for p in m.parameters())
    assert m.eval() is m and not m.blocks[1].training
    assert m.train() is m and m.blocks[1].training


def test_module_list_and_sequential():
    gen = np.random.default_rng(0)
    layers = [nn.Linear(4, 5, rng=gen, dtype="float64"), nn.GELU(), nn.Linear(5, 2, rng=gen, dtype="float64")]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and seq[1] is layers[1] and list(seq) == layers
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x = randn(gen, 3, 4)
    y = seq.forward(x)
    ref = layers[2].forward(layers[1].forward(layers[0].forward(x)))
    np.testing.assert_array_equal(npy(y), npy(ref))
    assert seq(x).shape == (3, 2)  # __call__ is forward


def test_repr_lists_children():
    r = repr(nn.MLP(4, 8))
    assert r.startswith("MLP(") and "(fc1): Linear(4, 8, bias=True)" in r and "approximate='none'" in r


def test_base_module_forward_backward_are_abstract():
    with pytest.raises(NotImplementedError):
        nn.Module().forward(np.zeros(1))
    with pytest.raises(NotImplementedError):
        nn.Module().backward(np.zeros(1))
