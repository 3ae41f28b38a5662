"""Checkpoints: round trip, atomic writes, no pickle, and a clear error for every bad file."""

import json
import os

import numpy as np
import pytest

from minivit import checkpoint, create_model
from minivit.optim import AdamW
from minivit.train import model_from_checkpoint

COLUMNS = ("epoch", "acc")


def save_example(path, model=None, epoch=3):
    model = model or create_model("vit_digits", depth=1, embed_dim=16, num_heads=2)
    opt = AdamW(model.named_parameters())
    for p in opt.params:
        p.grad[...] = 1.0
    opt.step()
    gen = np.random.default_rng(5)
    gen.random(3)
    config = {"model": model.model_name, "model_config": model.config, "lr": 0.1}
    checkpoint.save(path, config=config, model_state=model.state_dict(), optim_state=opt.state_dict(),
                    epoch=epoch, rng_states={"data": gen}, history=[[1, 0.5], [2, 0.75]],
                    history_columns=COLUMNS)
    return model, opt, gen


def test_round_trip(tmp_path):
    path = str(tmp_path / "c.npz")
    model, opt, gen = save_example(path)
    ck = checkpoint.load(path)
    assert ck["epoch"] == 3 and ck["config"]["lr"] == 0.1 and ck["history_columns"] == list(COLUMNS)
    np.testing.assert_array_equal(ck["history"], [[1, 0.5], [2, 0.75]])
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(ck["model"][name], value)
    assert set(ck["optim"]) == set(opt.state_dict())
    restored = np.random.default_rng(0)
    restored.bit_generator.state = ck["rng"]["data"]
    np.testing.assert_array_equal(restored.random(4), gen.random(4))
    rebuilt = model_from_checkpoint(ck)
    assert rebuilt.config == model.config
    x = np.random.default_rng(0).random((2, 1, 8, 8))
    np.testing.assert_array_equal(rebuilt.eval().forward(x), model.eval().forward(x))
    assert os.listdir(tmp_path) == ["c.npz"]  # no temporary file left behind


def test_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "c.npz")
    save_example(path, epoch=1)
    before = open(path, "rb").read()

    def broken_savez(f, **arrays):
        f.write(b"PK half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_example(path, epoch=2)
    assert open(path, "rb").read() == before  # the old checkpoint is untouched
    assert os.listdir(tmp_path) == ["c.npz"]
    monkeypatch.undo()
    assert checkpoint.load(path)["epoch"] == 1


def test_missing_truncated_and_foreign_files(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint file"):
        checkpoint.load(str(tmp_path / "nope.npz"))
    path = str(tmp_path / "c.npz")
    save_example(path)
    raw = open(path, "rb").read()
    cut = str(tmp_path / "cut.npz")
    with open(cut, "wb") as f:
        f.write(raw[: len(raw) // 2])
    with pytest.raises(checkpoint.CheckpointError, match=r"cut.npz: not a readable .npz checkpoint \(trunc"):
        checkpoint.load(cut)
    text = str(tmp_path / "notes.txt")
    with open(text, "w") as f:
        f.write("hello")
    with pytest.raises(checkpoint.CheckpointError, match=r"notes.txt: not a minivit checkpoint \(expected"):
        checkpoint.load(text)
    noise = str(tmp_path / "noise.npz")  # random bytes: numpy would suggest unpickling them
    with open(noise, "wb") as f:
        f.write(np.random.default_rng(0).bytes(1000))
    with pytest.raises(checkpoint.CheckpointError, match="not a minivit checkpoint") as e:
        checkpoint.load(noise)
    assert "allow_pickle" not in str(e.value)
    other = str(tmp_path / "other.npz")
    np.savez(other, weights=np.zeros(3))
    with pytest.raises(checkpoint.CheckpointError, match="other.npz: not a minivit checkpoint"):
        checkpoint.load(other)


def test_never_unpickles(tmp_path):
    path = str(tmp_path / "pickled.npz")
    np.savez(path, format=np.array(checkpoint.FORMAT), config=np.array([{"a": 1}], dtype=object))
    with pytest.raises(checkpoint.CheckpointError, match="pickled.npz: not a readable .npz.*pickle"):
        checkpoint.load(path)


def test_damaged_checkpoint_and_wrong_model(tmp_path):
    path = str(tmp_path / "c.npz")
    save_example(path)
    with np.load(path) as z:
        arrays = dict(z)
    del arrays["history"]
    damaged = str(tmp_path / "damaged.npz")
    np.savez(damaged, **arrays)
    with pytest.raises(checkpoint.CheckpointError, match="damaged.npz: damaged minivit checkpoint"):
        checkpoint.load(damaged)

    with np.load(path) as z:
        arrays = dict(z)
    config = json.loads(str(arrays["config"]))
    config["model_config"]["embed_dim"] = 32  # weights of a D=16 model under a D=32 configuration
    arrays["config"] = np.array(json.dumps(config))
    wrong = str(tmp_path / "wrong.npz")
    np.savez(wrong, **arrays)
    with pytest.raises(checkpoint.CheckpointError, match="wrong.npz: its weights do not fit .*shape"):
        model_from_checkpoint(checkpoint.load(wrong))
    config["model"] = "no_such_model"
    arrays["config"] = np.array(json.dumps(config))
    np.savez(wrong, **arrays)
    with pytest.raises(checkpoint.CheckpointError, match="wrong.npz: .*unknown model 'no_such_model'"):
        model_from_checkpoint(checkpoint.load(wrong))
