"""The command line: train writes every file, resume is bit-identical, evaluate, bad input, DeiT."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from minivit import checkpoint, create_model, list_models
from minivit.__main__ import main
from minivit.losses import CrossEntropyLoss
from minivit.train import COLUMNS, DEFAULTS, Objective
from minivit.train import train as train_in_process

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--dataset", "synthetic", "--quiet", "--batch-size", "32"]


def train(out, *flags):
    return main(["train", "--out", str(out), *QUICK, *flags])


def rows(out):
    with open(os.path.join(out, "metrics.csv")) as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def run1(tmp_path_factory):
    """A 1-epoch run on the synthetic set (used as a checkpoint and as a teacher below)."""
    out = tmp_path_factory.mktemp("run1")
    assert train(out, "--epochs", "1") == 0
    return out


def test_no_arguments_prints_help(capsys):
    assert main([]) == 0
    text = capsys.readouterr().out
    assert "usage: python -m minivit" in text and "train" in text and "evaluate" in text


def test_one_epoch_writes_every_file(run1):
    assert sorted(os.listdir(run1)) == ["best.npz", "curves.png", "last.npz", "metrics.csv", "test.json"]
    table = rows(run1)
    assert tuple(table[0]) == COLUMNS and len(table) == 2 and table[1][0] == "1"
    assert 0.0 <= float(table[1][4]) <= 1.0 and float(table[1][6]) > 0  # test accuracy, images/s
    with open(run1 / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    for name in ("last.npz", "best.npz"):
        ck = checkpoint.load(str(run1 / name))
        assert ck["epoch"] == 1 and ck["config"]["model"] == "vit_digits"
        assert ck["config"]["dataset"] == "synthetic" and set(ck["rng"]) == {"model", "data"}
        assert "exp_avg.0" in ck["optim"] and int(ck["optim"]["steps"]) == 3  # 80 images, batch 32
    with np.load(run1 / "last.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_resume_equals_an_uninterrupted_run_bit_for_bit(tmp_path):
    flags = ["--epochs", "3", "--drop-path", "0.3", "--seed", "4", "--warmup", "1", "--mixup", "0.5",
             "--ema", "0.9"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert train(full, *flags) == 0
    assert train(part, *flags, "--stop-after", "1") == 0
    assert checkpoint.load(str(part / "last.npz"))["epoch"] == 1 and len(rows(part)) == 2
    assert main(["train", "--resume", str(part / "last.npz"), "--quiet"]) == 0
    a, b = checkpoint.load(str(full / "last.npz")), checkpoint.load(str(part / "last.npz"))
    assert a["epoch"] == b["epoch"] == 3
    for name in a["model"]:
        np.testing.assert_array_equal(a["model"][name], b["model"][name], err_msg=name)
    for key in a["optim"]:
        np.testing.assert_array_equal(a["optim"][key], b["optim"][key], err_msg=key)
    assert a["ema"].keys() == a["model"].keys()
    for name in a["ema"]:
        np.testing.assert_array_equal(a["ema"][name], b["ema"][name], err_msg=name)
    assert a["rng"] == b["rng"]
    # the metrics agree too, except the timing columns
    np.testing.assert_array_equal(a["history"][:, :6], b["history"][:, :6])
    assert [r[:6] for r in rows(full)] == [r[:6] for r in rows(part)]


@pytest.mark.parametrize("pair", [False, True])
def test_objective_mixes_two_label_sets(pair):
    """Mixup's loss lam CE(z, y) + (1 - lam) CE(z, y2) and its gradient, for one- and two-head students."""
    gen = np.random.default_rng(0)
    z, z2 = gen.standard_normal((2, 6, 4))
    y, y2 = gen.integers(0, 4, 6), gen.integers(0, 4, 6)
    objective = Objective(dict(DEFAULTS, label_smoothing=0.1))
    loss, logits = objective.forward((z, z2) if pair else z, None, y, y2, lam=0.3)
    ces = [CrossEntropyLoss(0.1) for _ in range(4)]
    heads = (z, z2) if pair else (z, z)
    terms = [(0.3, y, heads[0]), (0.3, y, heads[1]), (0.7, y2, heads[0]), (0.7, y2, heads[1])]
    expected = sum(0.5 * w * ce.forward(h, labels) for ce, (w, labels, h) in zip(ces, terms, strict=True))
    assert loss == pytest.approx(expected, rel=1e-12)
    grads = [0.5 * w * ce.backward() for ce, w in zip(ces, (0.3, 0.3, 0.7, 0.7), strict=True)]
    d = objective.backward()
    if pair:
        np.testing.assert_allclose(d[0], grads[0] + grads[2], rtol=1e-12)
        np.testing.assert_allclose(d[1], grads[1] + grads[3], rtol=1e-12)
        np.testing.assert_allclose(logits, (z + z2) / 2)
    else:
        np.testing.assert_allclose(d, sum(grads), rtol=1e-12)


def test_resume_refuses_other_settings(tmp_path, run1, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--resume", str(run1 / "last.npz"), "--lr", "0.1"])
    assert e.value.code == 2 and "drop --lr" in capsys.readouterr().err


def test_evaluate_json_and_text(run1, capsys):
    assert main(["evaluate", str(run1 / "last.npz"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["accuracy"] == pytest.approx(float(rows(run1)[1][4]), abs=1e-6)  # what training measured
    cm = np.array(r["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == r["num_images"] == 40 and np.trace(cm) == r["correct"]
    assert os.path.isfile(r["confusion_png"]) and r["dataset"] == "synthetic"
    png = run1 / "cm.png"
    assert main(["evaluate", str(run1 / "best.npz"), "--dataset", "synthetic", "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "confusion matrix" in text and png.is_file()


def bad_checkpoints(folder, good):
    raw = open(good, "rb").read()
    files = {"truncated": raw[: len(raw) // 3]}
    for name, content in files.items():
        with open(folder / f"{name}.npz", "wb") as f:
            f.write(content)
    np.savez(folder / "foreign.npz", weights=np.zeros(4))
    with np.load(good) as z:
        arrays = dict(z)
    config = json.loads(str(arrays["config"]))
    config["model_config"]["depth"] = 2  # a checkpoint whose weights are not the model it names
    arrays["config"] = np.array(json.dumps(config))
    np.savez(folder / "wrong_model.npz", **arrays)
    return {"truncated": "not a readable .npz", "foreign": "not a minivit checkpoint",
            "wrong_model": "weights do not fit the model"}


def test_bad_checkpoints_give_a_message_not_a_traceback(tmp_path, run1, capsys):
    expected = bad_checkpoints(tmp_path, run1 / "last.npz")
    for name, message in expected.items():
        assert main(["evaluate", str(tmp_path / f"{name}.npz")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("minivit: error:") and message in err, err
        assert main(["train", "--resume", str(tmp_path / f"{name}.npz"), "--quiet"]) == 2
        assert message in capsys.readouterr().err
    # and as a real process: a non-zero exit status and no traceback
    p = subprocess.run([sys.executable, "-m", "minivit", "evaluate", str(tmp_path / "truncated.npz")],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "not a readable .npz" in p.stderr


def test_bad_flags(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--epochs", "2"])  # no --out
    assert "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path), "--alpha", "0.5"])
    assert "--teacher" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path), "--dataset", "mnist", "--quiet"]) == 2
    assert "--data-dir" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path), "--model", "vit_nonsense", "--quiet", *QUICK]) == 2
    assert "unknown model 'vit_nonsense'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- distillation (DeiT)

@pytest.mark.parametrize("student,distill", [("vit_digits", "soft"), ("deit_digits", "hard"),
                                             ("deit_digits", "soft")])
def test_distillation_run(tmp_path, run1, student, distill):
    if student not in list_models():
        pytest.skip(f"{student} is not registered yet")
    out = tmp_path / "student"
    assert train(out, "--epochs", "1", "--model", student, "--teacher", str(run1 / "best.npz"),
                 "--distill", distill, "--tau", "2.0") == 0
    ck = checkpoint.load(str(out / "last.npz"))
    cfg = ck["config"]
    assert (cfg["model"], cfg["distill"], cfg["tau"]) == (student, distill, 2.0)
    assert cfg["alpha"] == {"soft": 0.1, "hard": 0.5}[distill]  # DeiT's defaults
    assert sorted(os.listdir(out)) == ["best.npz", "curves.png", "last.npz", "metrics.csv", "test.json"]
    if student == "deit_digits":
        assert "head_dist.weight" in ck["model"]


def test_distillation_changes_the_update(tmp_path, run1):
    """The teacher really enters the loss: alpha = 0 equals plain training, alpha = 0.9 does not."""
    base = ["--epochs", "1", "--label-smoothing", "0", "--drop-path", "0"]
    assert train(tmp_path / "plain", *base) == 0
    assert train(tmp_path / "a0", *base, "--teacher", str(run1 / "last.npz"), "--alpha", "0") == 0
    assert train(tmp_path / "a9", *base, "--teacher", str(run1 / "last.npz"), "--alpha", "0.9",
                 "--distill", "soft") == 0
    w = {k: checkpoint.load(str(tmp_path / k / "last.npz"))["model"]["head.weight"]
         for k in ("plain", "a0", "a9")}
    np.testing.assert_allclose(w["a0"], w["plain"], rtol=1e-5, atol=1e-7)
    assert np.abs(w["a9"] - w["plain"]).max() > 1e-4


def test_teacher_with_other_classes_is_a_clear_error(tmp_path, capsys):
    teacher = create_model("vit_digits", num_classes=5, depth=1)
    path = str(tmp_path / "teacher5.npz")
    checkpoint.save(path, config={"model": "vit_digits", "model_config": teacher.config},
                    model_state=teacher.state_dict(), optim_state={}, epoch=0, rng_states={},
                    history=[], history_columns=COLUMNS)
    assert train(tmp_path / "s", "--epochs", "1", "--teacher", path) == 2
    err = capsys.readouterr().err
    assert "teacher" in err and "predicts 5 classes" in err and "10 classes" in err


@pytest.mark.slow
def test_default_recipe_learns_the_digits_quickly(tmp_path):
    """The default recipe cut to 15 epochs: the model chosen on validation reaches 85% test
    accuracy (measured 2026-12-02: 88.86% for seed 0, the seed tested, and 86.63 and 85.24% for
    seeds 1 and 2)."""
    history, test = train_in_process(dict(epochs=15), str(tmp_path), quiet=True, log=lambda *a: None)
    assert len(history) == 15 and test["test_acc"] >= 0.85
