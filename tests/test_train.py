"""What a training run guarantees (minivit/train.py's docstring): no run is overwritten by
accident, every setting is checked up front, a diverging run stops without saving, a kill at any
instant is repaired by --resume, best.npz is chosen on validation and scored once on test, and
every command-line failure is one line on stderr with a non-zero exit."""

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minivit import checkpoint, create_model, train
from minivit.__main__ import main
from minivit.losses import CrossEntropyLoss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--dataset", "synthetic", "--quiet", "--batch-size", "32"]


def run(out, *flags):
    return main(["train", "--out", str(out), *QUICK, *flags])


def digests(folder):
    return {n: hashlib.sha256(open(os.path.join(folder, n), "rb").read()).hexdigest()
            for n in sorted(os.listdir(folder))}


def metrics(out):
    with open(os.path.join(out, "metrics.csv")) as f:
        table = list(csv.reader(f))
    return table[0], np.array(table[1:], dtype=np.float64)


def assert_consistent(out, epochs):
    """The run in ``out`` is complete and its files agree with each other."""
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")], os.listdir(out)
    columns, rows = metrics(out)
    assert tuple(columns) == train.COLUMNS and len(rows) == epochs
    np.testing.assert_array_equal(rows[:, 0], np.arange(1, epochs + 1))
    last, best = (checkpoint.load(os.path.join(out, name)) for name in ("last.npz", "best.npz"))
    assert last["epoch"] == epochs
    np.testing.assert_allclose(rows, last["history"], rtol=1e-5)  # csv keeps 6 significant digits
    assert best["epoch"] == train.best_epoch(last["history"])
    np.testing.assert_array_equal(best["history"], last["history"][:best["epoch"]])
    with open(os.path.join(out, "test.json")) as f:
        assert json.load(f)["epoch"] == best["epoch"]
    for ck in (last, best):
        assert all(np.isfinite(v).all() for v in ck["model"].values())


@pytest.fixture(scope="module")
def run3(tmp_path_factory):
    out = tmp_path_factory.mktemp("run3")
    assert run(out, "--epochs", "3") == 0
    return out


# ----------------------------------------------------------------------------- 1. no run lost

def test_a_new_run_into_a_used_folder_is_refused_and_changes_nothing(run3, capsys):
    before = digests(run3)
    assert run(run3, "--epochs", "2", "--seed", "5") == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--overwrite" in err and "--resume" in err
    assert digests(run3) == before


def test_any_non_empty_folder_is_refused_and_overwrite_replaces_only_run_files(tmp_path, run3, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert run(out, "--epochs", "1") == 2
    assert "notes.txt" in capsys.readouterr().err and os.listdir(out) == ["notes.txt"]
    shutil.copytree(run3, tmp_path / "again")
    (tmp_path / "again" / "notes.txt").write_text("keep me")
    assert run(tmp_path / "again", "--epochs", "2", "--stop-after", "1", "--overwrite") == 0
    left = sorted(os.listdir(tmp_path / "again"))
    assert left == ["best.npz", "curves.png", "last.npz", "metrics.csv", "notes.txt"]  # old test.json gone
    assert checkpoint.load(str(tmp_path / "again" / "last.npz"))["epoch"] == 1


def test_resume_continues_in_place_but_never_discards_later_epochs(tmp_path, capsys):
    out = tmp_path / "r"
    assert run(out, "--epochs", "3", "--stop-after", "1") == 0
    shutil.copy(out / "last.npz", out / "epoch1.npz")
    assert main(["train", "--resume", str(out / "last.npz"), "--quiet"]) == 0
    assert_consistent(out, 3)
    before = digests(out)
    assert main(["train", "--resume", str(out / "epoch1.npz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds epoch 3" in err and "discard epochs 2-3" in err
    assert digests(out) == before
    assert main(["train", "--resume", str(out / "epoch1.npz"), "--quiet", "--overwrite"]) == 0
    assert_consistent(out, 3)


def test_resume_into_a_new_folder_takes_best_along(tmp_path):
    home = tmp_path / "home"
    assert run(home, "--epochs", "4", "--stop-after", "2") == 0
    before = digests(home)
    assert main(["train", "--resume", str(home / "last.npz"), "--out", str(tmp_path / "new"), "--quiet"]) == 0
    assert_consistent(tmp_path / "new", 4)
    assert digests(home) == before  # the original run is left as it was


# ----------------------------------------------------------------------------- 2. settings, divergence

BAD_SETTINGS = [
    (["--lr", "nan"], "--lr must be a finite number > 0"), (["--lr", "0"], "--lr must be"),
    (["--lr", "-1"], "--lr must be"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number >= 0"),
    (["--weight-decay", "-0.1"], "--weight-decay"),
    (["--mixup", "inf"], "--mixup must be a finite number >= 0"),
    (["--mixup", "-1"], "--mixup"), (["--clip-grad", "-1"], "--clip-grad must be a finite number > 0"),
    (["--clip-grad", "0"], "--clip-grad must be a finite number > 0"),
    (["--clip-grad", "nan"], "--clip-grad"),
    (["--label-smoothing", "1"], r"--label-smoothing must be a finite number in [0, 1)"),
    (["--label-smoothing", "-0.1"], "--label-smoothing"), (["--drop-path", "1"], "--drop-path"),
    (["--val-fraction", "0"], r"--val-fraction must be a finite number in (0, 0.5]"),
    (["--val-fraction", "0.9"], "--val-fraction"), (["--val-fraction", "nan"], "--val-fraction"),
    (["--epochs", "0"], "--epochs must be an integer >= 1"), (["--batch-size", "0"], "--batch-size"),
    (["--warmup", "-1"], r"--warmup must be an integer in [0, 3]"), (["--warmup", "4"], "--warmup"),
    (["--seed", "-1"], "--seed must be an integer >= 0"), (["--stop-after", "0"], "--stop-after"),
]


@pytest.mark.parametrize("flags,message", BAD_SETTINGS, ids=[" ".join(f) for f, _ in BAD_SETTINGS])
def test_bad_settings_are_refused_before_anything_runs(tmp_path, capsys, flags, message):
    out = tmp_path / "never"
    assert run(out, "--epochs", "3", *flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("minivit: error:") and message in err and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.parametrize("flags,message", [(["--tau", "inf"], "--tau"), (["--tau", "0"], "--tau"),
                                           (["--alpha", "1.5"], "--alpha must be a finite number in [0, 1]"),
                                           (["--alpha", "nan"], "--alpha")])
def test_bad_distillation_settings(tmp_path, run3, capsys, flags, message):
    assert run(tmp_path / "s", "--epochs", "1", "--teacher", str(run3 / "best.npz"), *flags) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_the_library_checks_settings_too(tmp_path):
    with pytest.raises(ValueError, match="--lr must be a finite number > 0, got nan"):
        train.train(dict(dataset="synthetic", lr=float("nan")), str(tmp_path / "x"), quiet=True)
    assert not (tmp_path / "x").exists()


def test_a_diverging_run_stops_at_once_and_saves_nothing_non_finite(tmp_path, capsys):
    out = tmp_path / "boom"
    assert run(out, "--epochs", "5", "--lr", "1e6") == 1
    captured = capsys.readouterr()
    assert "training diverged at epoch" in captured.err and "finished" not in captured.out
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not (out / "test.json").exists()
    for name in ("last.npz", "best.npz"):
        if (out / name).exists():  # epochs before the blow-up were fine: their weights are finite
            assert all(np.isfinite(v).all() for v in checkpoint.load(str(out / name))["model"].values())


def test_non_finite_weights_are_caught_before_saving(tmp_path):
    model = create_model("vit_digits", depth=1)
    train.check_finite(model, 3, None, 1.0, str(tmp_path))  # all finite: no error
    model.blocks[0].mlp.fc1.weight.data[0, 0] = np.inf
    with pytest.raises(train.TrainingDiverged, match=r"epoch 3: weight blocks.0.mlp.fc1.weight is not fin"):
        train.check_finite(model, 3, None, 1.0, str(tmp_path))
    with pytest.raises(train.TrainingDiverged, match="epoch 1, step 7: the loss is nan.*no checkpoint"):
        train.check_finite(model, 1, 7, float("nan"), str(tmp_path))


# ----------------------------------------------------------------------------- 3. kills at any instant

class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs, no except clause catches it."""


def _kill_at(monkeypatch, module, name, when):
    real = getattr(module, name)

    def dying(*args, **kwargs):
        if when(*args, **kwargs):
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, dying)


@pytest.mark.parametrize("moment", ["between last.npz and best.npz", "before metrics.csv",
                                    "before test.json"])
def test_a_kill_between_two_writes_is_repaired_by_resume(tmp_path, monkeypatch, moment):
    out = tmp_path / "k"
    if moment == "between last.npz and best.npz":  # best.npz of an improving epoch >= 2 never written
        _kill_at(monkeypatch, checkpoint, "save",
                 lambda path, **kw: path.endswith("best.npz") and kw["epoch"] >= 2)
    elif moment == "before metrics.csv":
        _kill_at(monkeypatch, train, "write_metrics", lambda out, history: len(history) == 2)
    else:
        _kill_at(monkeypatch, train, "write_test_result", lambda *a: True)
    with pytest.raises(Killed):
        train.train(dict(dataset="synthetic", epochs=6, batch_size=32), str(out), quiet=True,
                    log=lambda *a: None)
    monkeypatch.undo()
    assert main(["train", "--resume", str(out / "last.npz"), "--quiet"]) == 0
    assert_consistent(out, 6)


def test_stale_temporaries_are_removed_on_resume(tmp_path):
    out = tmp_path / "t"
    assert run(out, "--epochs", "2", "--stop-after", "1") == 0
    for name in ("last.npz.4242.tmp", "best.npz.17.tmp", "metrics.csv.99.tmp"):
        (out / name).write_bytes(b"half a file")
    (out / "mine.tmp").write_bytes(b"not ours")
    assert main(["train", "--resume", str(out / "last.npz"), "--quiet"]) == 0
    assert sorted(n for n in os.listdir(out) if n.endswith(".tmp")) == ["mine.tmp"]


def _finished(out):
    return os.path.isfile(os.path.join(out, "test.json"))


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path):
    """Fault injection: a real process killed with SIGKILL at random instants, resumed each time
    (started afresh with --overwrite while no last.npz exists), ends bit-identical to a run that
    was never interrupted, with every file consistent and no temporary left."""
    flags = [*QUICK, "--epochs", "200", "--mixup", "0.4", "--drop-path", "0.2"]
    cmd = [sys.executable, "-m", "minivit", "train"]
    env = dict(os.environ, MINIVIT_NUM_THREADS="1")
    ref, out = str(tmp_path / "ref"), str(tmp_path / "killed")
    subprocess.run(cmd + ["--out", ref, *flags], check=True, cwd=REPO, env=env, timeout=300,
                   capture_output=True)
    gen = np.random.default_rng(2026)
    kills, attempts = 0, 0
    while not _finished(out):
        attempts += 1
        assert attempts < 20, "the run never finished"
        last = os.path.join(out, "last.npz")
        fresh = ["--out", out, *flags, "--overwrite"]
        args = ["--resume", last, "--quiet"] if os.path.isfile(last) else fresh
        p = subprocess.Popen(cmd + args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kills < 6:
            time.sleep(gen.uniform(1.5, 5.0))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                kills += 1
        _, err = p.communicate(timeout=300)
        assert p.returncode in (0, -signal.SIGKILL), err.decode()
    assert kills >= 3
    assert_consistent(out, 200)
    for name in ("last.npz", "best.npz"):
        a, b = checkpoint.load(os.path.join(ref, name)), checkpoint.load(os.path.join(out, name))
        assert a["epoch"] == b["epoch"]
        for k in a["model"]:
            np.testing.assert_array_equal(a["model"][k], b["model"][k], err_msg=f"{name}: {k}")
        np.testing.assert_array_equal(a["history"][:, :6], b["history"][:, :6])  # all but the timings


# ----------------------------------------------------------------------------- 5. one line, never a traceback

def test_data_and_folder_problems_surface_before_the_first_step(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert run(tmp_path / "file" / "sub", "--epochs", "1") == 2
    assert "cannot write into --out" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "m"), "--dataset", "mnist", "--data-dir", str(tmp_path),
                 "--quiet"]) == 2
    assert "file not found" in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_interrupt_names_the_real_run(tmp_path, run3, monkeypatch, capsys):
    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("minivit.__main__.train", interrupt)
    assert main(["train", "--resume", str(run3 / "last.npz"), "--quiet"]) == 130
    assert f"--resume {run3 / 'last.npz'}" in capsys.readouterr().err
    assert run(tmp_path / "new", "--epochs", "1") == 130
    assert "nothing to resume" in capsys.readouterr().err


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(run3, monkeypatch, capsys):
    def broken(*a, **k):
        raise KeyError("surprise")

    monkeypatch.setattr("minivit.__main__.evaluate", broken)
    assert main(["evaluate", str(run3 / "last.npz")]) == 1
    err = capsys.readouterr().err
    assert err == "minivit: error: KeyError: 'surprise' (--debug shows where)\n"
    assert main(["evaluate", str(run3 / "last.npz"), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["evaluate", "NOISE"], ["train", "--out", "OUT", "--lr", "nan"],
                                  ["train", "--out", "OUT", "--epochs", "x"], ["evaluate"]])
def test_failures_as_a_real_process_are_one_line(tmp_path, argv):
    noise = tmp_path / "noise.npz"
    noise.write_bytes(np.random.default_rng(1).bytes(500))
    argv = [a.replace("NOISE", str(noise)).replace("OUT", str(tmp_path / "o")) for a in argv]
    p = subprocess.run([sys.executable, "-m", "minivit", *argv], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "error:" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and "allow_pickle" not in p.stderr


def test_evaluate_plot_paths(run3, tmp_path, capsys):
    assert main(["evaluate", str(run3 / "last.npz"), "--plot", str(tmp_path / "cm")]) == 2
    assert "expected a .png file name or an existing folder" in capsys.readouterr().err
    assert main(["evaluate", str(run3 / "last.npz"), "--plot", str(tmp_path), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert os.path.dirname(r["confusion_png"]) == str(tmp_path) and os.path.isfile(r["confusion_png"])


def test_an_older_checkpoint_cannot_be_resumed_but_can_be_evaluated(tmp_path, run3, capsys):
    ck = checkpoint.load(str(run3 / "last.npz"))
    old = str(tmp_path / "old.npz")
    columns = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "images_per_s", "seconds")
    checkpoint.save(old, config=ck["config"], model_state=ck["model"], optim_state=ck["optim"], epoch=3,
                    rng_states={}, history=ck["history"], history_columns=columns)
    assert main(["train", "--resume", old, "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert "older minivit" in capsys.readouterr().err
    assert main(["evaluate", old]) == 0


# ----------------------------------------------------------------------------- 6. model selection

def test_best_is_chosen_on_validation_and_scored_once_on_test(run3, capsys):
    columns, rows = metrics(run3)
    assert "val_acc" in columns and "val_loss" in columns and not any(c.startswith("test") for c in columns)
    best = checkpoint.load(str(run3 / "best.npz"))
    i_acc, i_loss = columns.index("val_acc"), columns.index("val_loss")
    top = rows[:, i_acc].max()
    tied = rows[rows[:, i_acc] == top]
    assert best["epoch"] == int(tied[np.argmin(tied[:, i_loss]), 0])
    with open(run3 / "test.json") as f:
        result = json.load(f)
    assert main(["evaluate", str(run3 / "best.npz"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["split"], r["epoch"]) == ("test", result["epoch"])
    assert r["accuracy"] == pytest.approx(result["test_acc"], abs=1e-12) and r["num_images"] == 40
    assert main(["evaluate", str(run3 / "last.npz"), "--split", "val", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["accuracy"] == pytest.approx(rows[-1, i_acc], abs=1e-6) and r["num_images"] == 10


def test_with_ema_the_averaged_weights_are_validated_kept_and_tested(tmp_path, capsys):
    out = tmp_path / "ema"
    assert run(out, "--epochs", "3", "--ema", "0.8") == 0
    last = checkpoint.load(str(out / "last.npz"))
    assert last["ema"].keys() == last["model"].keys()
    assert any(not np.array_equal(last["ema"][k], last["model"][k]) for k in last["model"])
    _, rows = metrics(out)
    capsys.readouterr()
    assert main(["evaluate", str(out / "last.npz"), "--split", "val", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)  # evaluate scores what training validated: the average
    assert r["accuracy"] == pytest.approx(rows[-1, train.COLUMNS.index("val_acc")], abs=1e-6)
    assert r["loss"] == pytest.approx(rows[-1, train.COLUMNS.index("val_loss")], rel=1e-5)
    raw = train.model_from_checkpoint(last, averaged=False)
    np.testing.assert_array_equal(raw.state_dict()["head.weight"], last["model"]["head.weight"])
    assert_consistent(out, 3)


def test_ema_decay_averages_the_last_eighth_of_the_run_by_default(tmp_path):
    assert train.ema_decay(dict(ema=None), 4200) == pytest.approx(1 - 8 / 4200)  # the digits recipe
    assert train.ema_decay(dict(ema=None), 8) == 0.0  # too short to average: off
    assert train.ema_decay(dict(ema=0.0), 4200) == 0.0 and train.ema_decay(dict(ema=0.9), 10) == 0.9
    assert run(tmp_path / "off", "--epochs", "1", "--ema", "0") == 0
    assert checkpoint.load(str(tmp_path / "off" / "last.npz"))["ema"] == {}


def test_best_epoch_breaks_ties_by_validation_loss_then_by_the_earlier_epoch():
    def row(epoch, loss, acc):
        return [epoch, 1.0, 0.5, loss, acc, 1e-3, 100.0, 1.0]

    assert train.best_epoch([]) is None
    assert train.best_epoch([row(1, 0.5, 0.8), row(2, 0.4, 0.9), row(3, 0.3, 0.9), row(4, 0.3, 0.9)]) == 3
    assert train.best_epoch([row(1, 0.1, 0.7), row(2, 0.9, 0.8)]) == 2


def test_loss_floor_is_the_least_training_loss_label_smoothing_leaves():
    """curves.png marks it: the loss of logits log q (and, with a soft teacher, its own logits)."""
    K, labels = 10, np.arange(10)
    config = dict(train.DEFAULTS, label_smoothing=0.1)
    z = np.log(CrossEntropyLoss(0.1).targets(labels, K, np.float64, np))
    floor = train.loss_floor(config, K)
    assert floor > 0.5 and train.make_loss(config).forward(z, z, labels) == pytest.approx(floor, rel=1e-12)
    soft = dict(config, teacher="teacher.npz", distill="soft", alpha=0.1)
    z_teacher = np.random.default_rng(0).standard_normal((K, K))
    reached = train.make_loss(soft).forward(z, z_teacher, labels, z_teacher)  # KL 0 at the teacher's
    assert reached == pytest.approx(train.loss_floor(soft, K), rel=1e-12) == pytest.approx(0.9 * floor)
    assert train.loss_floor(dict(config, label_smoothing=0.0), K) == 0.0
