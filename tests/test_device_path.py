"""The device path on the CPU: with the CuPy look-alike (fakecupy) as backend "cupy", every layer
case of the contract table and a few training steps run on device arrays, never convert one to
NumPy implicitly nor mix a host array into device math, and give what they give on NumPy."""

import itertools
import json
import os
import re

import fakecupy
import numpy as np
import pytest
from conftest import CASES, as_tuple, case_ids, randn
from test_model_contract import FAMILIES, build, images

from minivit import backend, checkpoint, create_model, data, kernels, optim, train
from minivit.gradcheck import gradcheck

pytestmark = pytest.mark.skipif(backend.name() != "numpy",
                                reason="the fake stands in for CuPy where NumPy is the backend")


@pytest.fixture
def device(monkeypatch):
    """The fake installed as CuPy (the backend stays NumPy until a test selects "cupy")."""
    yield fakecupy.install(monkeypatch)
    backend.use("numpy")


@pytest.fixture(params=[True, False], ids=["kernels", "plain"])
def kernels_switch(request):
    """Both ways a layer runs on the device: its fast path (where one is registered) and its body."""
    previous = kernels.use(request.param)
    yield request.param
    kernels.use(previous)


def on_both(fn):
    """fn() on NumPy, then on the fake device: (host result, device result)."""
    backend.use("numpy")
    host = fn()
    backend.use("cupy")
    return host, fn()


# ----------------------------------------------------------------------------- the fake itself

def test_the_fake_refuses_implicit_conversions_and_host_operands(device):
    x = device.asarray(np.arange(6.0).reshape(2, 3))
    assert backend.is_cupy(x) and backend.xp_of(x) is device
    for implicit in (np.asarray, np.array, np.float64):
        with pytest.raises(TypeError, match=rf"^{re.escape(fakecupy.IMPLICIT)}$"):
            implicit(x)
    host = np.ones(3)
    mixed = [lambda: x + host, lambda: host * x, lambda: np.maximum(x, host), lambda: device.exp(host),
             lambda: np.concatenate([x, host[None]]), lambda: x.__setitem__(0, host),
             lambda: x[np.array([0, 1])], lambda: device.einsum("ij,j->i", x, host)]
    for f in mixed:
        with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
            f()
    with pytest.raises(ValueError, match="size 1"):
        float(x)


def test_the_fake_keeps_results_on_the_device_and_get_copies_to_the_host(device):
    a = np.arange(6.0).reshape(2, 3)
    x = device.asarray(a)
    a[0, 0] = 100.0  # asarray copied it to the device
    results = [x + 1, np.float64(2) * x, x**2, -x, x > 2, x @ x.T, np.exp(x), np.einsum("ij->i", x),
               device.where(x > 2, x, -device.inf), x.sum(), x.max(axis=0), x[0, 0], x.T, x.reshape(3, 2),
               device.zeros_like(x), device.stack([x, x]), x.astype(np.float32)]
    assert all(isinstance(r, device.ndarray) for r in results)
    h = x.get()
    assert type(h) is np.ndarray and type(backend.to_numpy(x)) is np.ndarray
    np.testing.assert_array_equal(h, np.arange(6.0).reshape(2, 3))
    h[0, 0] = 7.0  # get() copied it to the host
    assert float(x[0, 0]) == 0.0 and int(x[1, 1]) == 4 and bool(x[1, 2] > 4) and f"{x.sum():.1f}" == "15.0"
    y = x.copy()
    z, out = y, device.empty_like(x)
    y += 1  # in place: the same array
    assert y is z and device.exp(x, out=out) is out
    x[:, 0] = device.asarray([9.0, 9.0])
    x[1] = 0.5
    np.testing.assert_array_equal(x.get(), [[9, 1, 2], [0.5, 0.5, 0.5]])


# ----------------------------------------------------------------------------- layers and models

def assert_same(host, dev):
    """Host arrays (NumPy) and device arrays (the fake's) of the same values, pair by pair: to
    rounding, measured against each array's largest entry (the depthwise convolution's fast path
    serves NumPy only, so the two sum a CvT's convolutions in different orders, and its BatchNorms
    in training mode carry the difference on)."""
    assert len(dev) == len(host)
    for h, d in zip(host, dev, strict=True):
        assert type(h) is np.ndarray and isinstance(d, fakecupy.ndarray)
        assert d.shape == h.shape and d.dtype == h.dtype == np.float64
        np.testing.assert_allclose(d.get(), h, rtol=1e-12, atol=1e-13 * max(1.0, np.abs(h).max(initial=0.0)))


def _forward_backward(module, inputs, kwargs=None):
    """What forward returns, what backward returns (given a seeded upstream gradient) and the
    parameters' gradients, as one list of arrays."""
    out = as_tuple(module.forward(*inputs, **(kwargs or {})))
    gen = np.random.default_rng(1)
    dout = tuple(randn(gen, *o.shape) for o in out)
    grads = as_tuple(module.backward(dout if len(dout) > 1 else dout[0]))
    return [*out, *grads, *(p.grad for p in module.parameters())]


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_every_layer_case_runs_on_the_device_as_on_numpy(device, case, kernels_switch):
    assert_same(*on_both(lambda: _forward_backward(*case.make())))


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("family", FAMILIES, ids=lambda c: c.__name__)
def test_every_model_family_runs_on_the_device_as_on_numpy(device, family, mode):
    def run():
        model = build(family, drop_rate=0.1, drop_path_rate=0.2).train(mode == "train")
        return _forward_backward(model, (images(model),))

    assert_same(*on_both(run))


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_gradcheck_runs_on_the_device(device, case):
    backend.use("cupy")
    module, inputs, kwargs = case.make()
    result = gradcheck(module, *inputs, max_entries=6, **kwargs)
    assert result.worst < case.tol, f"\n{result}"
    assert all(isinstance(p.data, device.ndarray) for p in module.parameters())


# ----------------------------------------------------------------------------- training

def _small(name, **kw):
    return create_model(name, embed_dim=16, depth=2, num_heads=2, drop_rate=0.1, drop_path_rate=0.2,
                        dtype="float64", **kw)


OBJECTIVES = {  # the student, and the settings train.Objective reads
    "labels": ("vit_digits", {"teacher": None}),
    "soft": ("deit_digits", {"teacher": "a vit", "distill": "soft", "alpha": 0.1, "tau": 3.0}),
    "hard": ("deit_digits", {"teacher": "a vit", "distill": "hard", "alpha": 0.5}),
}


def _steps(objective, n=4):
    """n AdamW steps of a small student on synthetic images, float64, with mixup, label smoothing,
    dropout, drop-path, gradient clipping and a weight EMA (and a teacher to distill from): the
    losses, and the state dicts (host arrays) of the model, the optimizer and the EMA after them."""
    name, settings = OBJECTIVES[objective]
    ds = data.load_dataset("synthetic")
    model = _small(name, seed=0)
    teacher = _small("vit_digits", seed=1).eval() if settings["teacher"] else None
    ema = optim.ModelEMA(model, _small(name), 0.9)
    loss_fn = train.Objective({"label_smoothing": 0.1, **settings}, teacher)
    opt = optim.AdamW(model.named_parameters(), lr=3e-3, weight_decay=0.05)
    schedule = optim.WarmupCosine(3e-3, total_steps=n, warmup_steps=1)
    gen = np.random.default_rng(0)
    losses = []
    for x, y in itertools.islice(data.batches(ds, "train", 16, gen), n):
        x, perm, lam = data.mixup(x, 0.8, gen)
        x = backend.asarray(x, dtype=np.float64)
        loss, logits = loss_fn.forward(model.forward(x), x, y, y[perm], lam)
        model.zero_grad()
        model.backward(loss_fn.backward())
        optim.clip_grad_norm(opt.params, 1.0)
        opt.lr = schedule(opt.steps)
        opt.step()
        ema.update()
        losses.append(float(loss))
    return losses, model.state_dict(), opt.state_dict(), ema.averaged.state_dict()


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_training_steps_on_the_device_equal_numpy(device, objective, kernels_switch):
    host, dev = on_both(lambda: _steps(objective))
    assert dev[0] == host[0]
    assert any(not np.array_equal(host[1][k], host[3][k]) for k in host[1])  # the weights moved, the EMA lags
    # The plain bodies give the same bits. With the fast paths on, the host sums the bias gradients by
    # BLAS, the device by .sum(), and Adam turns the rounding noise of the key bias's gradient (zero in
    # exact arithmetic: softmax ignores a shift shared by a row's scores) into steps: 2e-13 apart.
    tol = 1e-12 if kernels_switch else 0.0
    for h, d in zip(host[1:], dev[1:], strict=True):
        assert h.keys() == d.keys()
        for k in h:
            assert type(d[k]) is np.ndarray, k
            np.testing.assert_allclose(d[k], h[k], rtol=tol, atol=tol, err_msg=k)


def test_state_dicts_and_checkpoints_round_trip_on_the_device(device, tmp_path):
    backend.use("cupy")
    model = _small("vit_digits").eval()
    x = backend.asarray(np.random.default_rng(0).random((3, 1, 8, 8)))
    opt = optim.AdamW(model.named_parameters())
    model.backward(model.forward(x))
    opt.step()
    path = str(tmp_path / "ck.npz")
    checkpoint.save(path, config={"model": "vit_digits", "model_config": model.config},
                    model_state=model.state_dict(), optim_state=opt.state_dict(), epoch=1,
                    rng_states={"model": model.rng}, history=[[1.0] * len(train.COLUMNS)],
                    history_columns=train.COLUMNS)
    ck = checkpoint.load(path)
    again = train.model_from_checkpoint(ck).eval()
    assert all(isinstance(p.data, device.ndarray) for p in again.parameters())
    np.testing.assert_array_equal(again.forward(x).get(), model.forward(x).get())
    opt_again = optim.AdamW(again.named_parameters())
    opt_again.load_state_dict(ck["optim"])
    for name, bufs in opt.state.items():
        for a, b in zip(bufs, opt_again.state[name], strict=True):
            assert isinstance(b, device.ndarray)
            np.testing.assert_array_equal(b.get(), a.get())


def _run(tmp_path, name):
    """``train.train`` on synthetic images on backend ``name``, stopped after epoch 1 and resumed
    for epoch 2: the history, the test result and an evaluation of best.npz on the same backend."""
    out = str(tmp_path / name)
    config = dict(dataset="synthetic", epochs=2, warmup=1, batch_size=32, backend=name)
    train.train(config, out, stop_after=1, quiet=True, log=lambda *a: None)
    last = checkpoint.load(os.path.join(out, "last.npz"))
    history, test = train.train(last["config"], out, resume=last, quiet=True, log=lambda *a: None)
    report = train.evaluate(os.path.join(out, "best.npz"), backend_name=name, plot=out)
    with open(os.path.join(out, "test.json")) as f:
        assert json.load(f) == test
    return np.array(history), test, report


@pytest.mark.slow
def test_the_training_run_on_the_device_matches_numpy(device, tmp_path):
    (h_host, t_host, r_host), (h_dev, t_dev, r_dev) = on_both(lambda: _run(tmp_path, backend.name()))
    loss_acc = [train.COLUMNS.index(c) for c in ("train_loss", "train_acc", "val_loss", "val_acc")]
    # float32, kernels on: the exact GELU's Phi is a fast polynomial on the host (kernels.erf) and the
    # library's ndtr on the device, within 1e-7 of each other; the losses agree to float32 rounding
    np.testing.assert_allclose(h_dev[:, loss_acc], h_host[:, loss_acc], rtol=1e-6)
    assert t_dev["test_acc"] == t_host["test_acc"] and r_dev["accuracy"] == r_host["accuracy"]
