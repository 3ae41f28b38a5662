"""Module, Parameter, ModuleList, Sequential: registration, names, modes, state dicts, and the
checks that make errors all-or-nothing (load_state_dict, backward's dout)."""

import numpy as np
import pytest
from conftest import npy, randn, snapshot, tiny_vit

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


_W = (8, 3)  # head.weight of tiny_vit, the last entry: every other entry would be copied first


@pytest.mark.parametrize("value,message", [
    (np.full(_W, np.nan), r"'head.weight' has 24 non-finite values \(nan or inf\) in float64"),
    (np.where(np.eye(8, 3) > 0, np.inf, 1.0), r"'head.weight' has 3 non-finite values"),
    (np.full(_W, -np.inf), r"'head.weight' has 24 non-finite values"),
    (np.full(_W, "0.5"), r"'head.weight' must be an array of real numbers, got dtype <U3"),
    ([["a", "b", "c"]] * 8, r"'head.weight' must be an array of real numbers, got dtype <U1"),
    (None, r"'head.weight' must be an array of real numbers, got dtype object"),
    (np.full(_W, object()), r"'head.weight' must be an array of real numbers, got dtype object"),
    (np.zeros(_W, np.complex128), r"'head.weight' must be an array of real numbers, got dtype complex128"),
    (np.ones(_W, bool), r"'head.weight' must be an array of real numbers, got dtype bool"),
    ([[1.0, 2.0, 3.0]] * 7 + [[1.0]], r"'head.weight' must be an array of real numbers, got list"),
    (np.zeros((3, 8)), r"'head.weight' has shape \(3, 8\), expected \(8, 3\)"),
    (np.float64(1.0), r"'head.weight' has shape \(\), expected \(8, 3\)"),
], ids=["nan", "inf", "-inf", "str-array", "str-list", "None", "object", "complex", "bool", "ragged", "shape",
        "scalar"])
def test_load_state_dict_rejects_a_bad_entry_and_changes_nothing(value, message):
    m = tiny_vit()
    before = snapshot(m)
    sd = tiny_vit(seed=9).state_dict()  # other values everywhere: a partial copy would show
    sd["head.weight"] = value
    with pytest.raises(ValueError, match="state dict does not fit VisionTransformer: .*" + message):
        m.load_state_dict(sd)
    assert snapshot(m) == before


def test_load_state_dict_rejects_values_that_overflow_the_model_dtype():
    m = tiny_vit(dtype="float32")
    before = snapshot(m)
    sd = tiny_vit(dtype="float64").state_dict()
    sd["head.bias"] = np.array([1.0, 1e39, -1e39])  # finite in float64, inf in float32
    with pytest.raises(ValueError, match=r"'head.bias' has 2 non-finite values \(nan or inf\) in float32"):
        m.load_state_dict(sd)
    assert snapshot(m) == before


def test_load_state_dict_names_every_bad_entry_and_converts_numbers():
    m = tiny_vit()
    sd = m.state_dict()
    sd["cls_token.weight"], sd["head.bias"] = np.full((1, 1, 8), np.nan), np.zeros(5)
    with pytest.raises(ValueError, match=r"'cls_token.weight' has 8 non-finite.*; "
                                         r".*'head.bias' has shape \(5,\)"):
        m.load_state_dict(sd)
    sd = m.state_dict()
    sd["head.bias"] = [1, 2, 3]  # integers and nested lists are numbers too
    m.load_state_dict(sd)
    assert m.head.bias.data.dtype == np.float64
    np.testing.assert_array_equal(npy(m.head.bias.data), [1.0, 2.0, 3.0])


def test_load_state_dict_needs_a_mapping_and_tolerates_odd_keys():
    m = tiny_vit()
    with pytest.raises(ValueError, match="state dict must map names to arrays, got list"):
        m.load_state_dict(list(m.state_dict().items()))
    with pytest.raises(ValueError, match=r"unexpected keys \[0\]"):
        m.load_state_dict({**m.state_dict(), 0: np.zeros(1)})


# ----------------------------------------------------------------------------- backward's dout

class _Flat(nn.Linear):
    """A subclass whose forward and backward call Linear's: the inner calls see other shapes."""

    def forward(self, x):
        return super().forward(x).reshape(-1)  # (M * D_out,)

    def backward(self, dout):
        return super().backward(dout.reshape(-1, self.out_features))


class _Scalar(nn.Module):
    """A loss-like module: forward returns a scalar."""

    def forward(self, x):
        self.save_for_backward(x)
        return float((x * x).sum())

    def backward(self, dout):
        (x,) = self.saved()
        return 2 * dout * x


class _FakeCupyArray(np.ndarray):
    """A NumPy array that backend.is_cupy takes for a CuPy one (its type's module starts with cupy)."""


_FakeCupyArray.__module__ = "cupy._fake"


def test_only_the_outermost_call_records_and_checks():
    lin = _Flat(3, 2, dtype="float64")
    x = randn(np.random.default_rng(0), 4, 3)
    assert lin.forward(x).shape == (8,)
    with pytest.raises(ValueError, match=r"_Flat.backward expected dout to be a floating-point array of "
                                         r"shape \(8,\) \(what forward returned\), "
                                         r"got an array of shape \(4, 2\)"):
        lin.backward(randn(np.random.default_rng(1), 4, 2))
    assert lin.backward(randn(np.random.default_rng(1), 8)).shape == (4, 3)


def test_a_failed_forward_records_nothing_and_leaves_no_trace():
    lin = nn.Linear(3, 2, dtype="float64")
    with pytest.raises(ValueError, match="Linear expected input"):
        lin.forward(np.zeros((4, 5)))
    lin.forward(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"shape \(4, 2\) \(what forward returned\), "
                                         r"got an array of shape \(4, 5\)"):
        lin.backward(np.zeros((4, 5)))
    assert lin.backward(np.zeros((4, 2))).shape == (4, 3)


def test_scalar_output_takes_a_float_or_a_0d_array():
    m = _Scalar()
    x = np.arange(3.0)
    for dout in (1.0, np.float64(1.0), np.array(1.0), np.array(1.0, np.float32)):
        m.forward(x)
        np.testing.assert_array_equal(m.backward(dout), 2 * x)
    m.forward(x)
    for dout in (1, np.ones(1), np.array(1), None):
        with pytest.raises(ValueError, match=r"_Scalar.backward expected dout to be "
                                             r"a floating-point array of shape \(\)"):
            m.backward(dout)


def test_dout_on_the_other_device_is_rejected():
    lin = nn.Linear(3, 2, dtype="float64")
    out = lin.forward(randn(np.random.default_rng(0), 4, 3))
    other = npy(out) if backend.is_cupy(out) else npy(out).view(_FakeCupyArray)
    with pytest.raises(ValueError, match=r"expected dout to be a floating-point (CuPy )?array "
                                         r"of shape \(4, 2\)"):
        lin.backward(other)
    lin.backward(out)


def test_backward_before_forward_is_a_runtime_error_whatever_the_dout():
    for dout in (3, None, np.zeros(40), np.zeros((2, 3))):
        with pytest.raises(RuntimeError, match="before forward"):
            tiny_vit().backward(dout)


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


# ----------------------------------------------------------------------------- buffers

class _Stats(nn.Module):
    """A layer with a learned weight, a persistent and a non-persistent buffer."""

    def __init__(self):
        self.weight = nn.Parameter(np.ones(3))
        self.register_buffer("running_mean", np.zeros(3))
        self.register_buffer("index", np.arange(4), persistent=False)


class _Net(nn.Module):
    def __init__(self):
        self.norm = _Stats()


def test_buffers_persistent_ones_in_the_state_dict_only():
    net = _Net()
    assert [n for n, _ in net.named_buffers()] == ["norm.running_mean", "norm.index"]
    assert [n for n, _ in net.named_buffers(persistent_only=True)] == ["norm.running_mean"]
    assert sorted(net.state_dict()) == ["norm.running_mean", "norm.weight"]
    net.norm.running_mean = np.full(3, 2.0)  # reassigning keeps it a buffer
    sd = net.state_dict()
    np.testing.assert_array_equal(sd["norm.running_mean"], 2.0)
    sd["norm.running_mean"][:] = 7.0  # a copy: the model is not changed through it
    assert net.norm.running_mean[0] == 2.0
    other = _Net()
    other.load_state_dict(sd)
    np.testing.assert_array_equal(other.norm.running_mean, 7.0)
    np.testing.assert_array_equal(other.norm.index, np.arange(4))  # rebuilt, not loaded
    sd["norm.running_mean"][:] = 9.0  # loading copied: the dict and the model share no memory
    other.norm.running_mean *= 2.0
    assert sd["norm.running_mean"][0] == 9.0 and other.norm.running_mean[0] == 14.0


def test_buffers_are_loaded_all_or_nothing():
    net = _Net()
    good = net.state_dict()
    with pytest.raises(ValueError, match=r"missing keys \['norm.running_mean'\]"):
        net.load_state_dict({"norm.weight": np.full(3, 5.0)})
    with pytest.raises(ValueError, match=r"'norm.running_mean' has shape \(4,\), expected \(3,\)"):
        net.load_state_dict({"norm.weight": np.full(3, 5.0), "norm.running_mean": np.zeros(4)})
    with pytest.raises(ValueError, match="non-finite"):
        net.load_state_dict({"norm.weight": np.full(3, 5.0), "norm.running_mean": np.full(3, np.nan)})
    assert net.state_dict().keys() == good.keys()
    for k in good:  # nothing was copied by the rejected calls
        np.testing.assert_array_equal(net.state_dict()[k], good[k])


def test_buffer_names_cannot_clash():
    layer = _Stats()
    with pytest.raises(ValueError, match="taken by a parameter"):
        layer.register_buffer("weight", np.zeros(3))
    with pytest.raises(ValueError, match="is a buffer"):
        layer.running_mean = nn.Parameter(np.zeros(3))
