"""Training and evaluation: what ``python -m minivit train`` and ``evaluate`` run.

One epoch: shuffled, augmented batches (random shifts, flips where they suit the data, mixup if
asked for); forward, loss, backward, AdamW step with the warmup + cosine learning rate; then the
validation split in eval mode. After every epoch the run folder gets last.npz, best.npz (when the
validation accuracy improved), metrics.csv, and curves.png every 25 epochs and at the end. At the
end the chosen model, best.npz, is scored once on the test split (test.json): the epoch was chosen
on validation images, so the test accuracy is not bent by the choice.

What a run guarantees:

* Every setting is checked before anything runs (``check_config``); the data is loaded and checked,
  the model and the teacher built and the run folder proven writable before the first step.
* A new run never writes into a folder that holds anything unless asked to (``overwrite``);
  ``resume`` continues a run in its own folder.
* A loss or a weight that stops being finite ends the run at once with ``TrainingDiverged``;
  nothing non-finite is ever saved.
* Every file is written atomically (checkpoint.write_atomic), last.npz before best.npz, so a
  SIGKILL at any instant leaves a run that ``resume`` completes: it restores best.npz from
  last.npz when the kill fell between the two, rewrites metrics.csv and removes stale
  temporaries. Weights, optimizer state, epoch and both random generators (model: dropout and
  drop-path; data: shuffling and augmentation) are in the checkpoint, so the resumed run is
  bit-identical to an uninterrupted one.

With a teacher (DeiT), the loss is a distillation loss of the student's two heads and the
teacher's logits; a student with one head uses its logits for both.
"""

import csv
import io
import json
import math
import os
import shutil
import time

import numpy as np
from tqdm import tqdm

from . import backend, checkpoint, data, validate, viz
from .losses import CrossEntropyLoss, HardDistillationLoss, SoftDistillationLoss
from .models import create_model
from .nn import log_softmax
from .optim import AdamW, ModelEMA, WarmupCosine, clip_grad_norm

# The defaults train vit_digits on digits from scratch (see the README for what they reach).
DEFAULTS = dict(
    model="vit_digits", dataset="digits", data_dir=None, val_fraction=0.1, epochs=200, batch_size=64,
    lr=3e-3, weight_decay=0.05, warmup=5, label_smoothing=0.1, drop_path=0.0, mixup=0.0, clip_grad=None,
    ema=None, seed=0, backend="numpy", teacher=None, distill=None, alpha=None, tau=3.0,
)
DISTILL_ALPHA = {"soft": 0.1, "hard": 0.5}  # DeiT's values (and tau = 3 for soft)
COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s", "seconds")
RUN_FILES = ("last.npz", "best.npz", "metrics.csv", "curves.png", "test.json")


class TrainingDiverged(RuntimeError):
    """The loss or the weights stopped being finite."""


def ema_decay(config, total_steps):
    """The weight EMA's decay d: ``config["ema"]``, or by default 1 - 8 / total_steps, an average
    over about the last eighth of the run's steps (0.9981 for the digits recipe's 4,200 steps).
    On digits the models chosen on validation scored 98.05-98.33% on test over seeds 0-4 with
    it, 97.77-98.05% with d = 0.995 (a twentieth, seeds 0-3). 0: off."""
    if config["ema"] is not None:
        return config["ema"]
    horizon = total_steps / 8
    return 1.0 - 1.0 / horizon if horizon > 1 else 0.0


def check_config(config):
    """Check every training setting (named as its command-line flag) before anything runs: a
    ValueError names the setting, what it got and what it accepts. Returns the config."""
    c = config

    def flag(k):
        return "--" + k.replace("_", "-")

    for k in ("epochs", "batch_size"):
        validate.integer(flag(k), c[k], 1)
    validate.integer("--warmup", c["warmup"], 0, c["epochs"])
    validate.integer("--seed", c["seed"], 0)
    validate.number("--lr", c["lr"], 0.0, low_open=True)
    validate.number("--weight-decay", c["weight_decay"], 0.0)
    validate.number("--val-fraction", c["val_fraction"], 0.0, 0.5, low_open=True)
    validate.probability("--label-smoothing", c["label_smoothing"])
    validate.probability("--drop-path", c["drop_path"])
    validate.number("--mixup", c["mixup"], 0.0)  # 0: off
    if c["ema"] is not None:  # None: the last eighth of the run (ema_decay); 0: off
        validate.number("--ema", c["ema"], 0.0, 1.0, high_open=True)
    if c["clip_grad"] is not None:  # None: off
        validate.number("--clip-grad", c["clip_grad"], 0.0, low_open=True)
    validate.choice("--dataset", c["dataset"], data.DATASETS)
    validate.choice("--backend", c["backend"], ("numpy", "cupy"))
    if c["teacher"]:
        validate.choice("--distill", c["distill"], tuple(DISTILL_ALPHA))
        validate.number("--alpha", c["alpha"], 0.0, 1.0)
        validate.number("--tau", c["tau"], 0.0, low_open=True)
    return config


# ----------------------------------------------------------------------------- models from checkpoints

def model_from_checkpoint(ckpt, averaged=True):
    """Rebuild the model a checkpoint (checkpoint.load) was trained as, with create_model and its
    stored configuration, and load its weights: the moving average where the run kept one (the
    weights it validated; ``averaged=False`` for the raw ones, to resume training); a clear
    CheckpointError when they do not fit."""
    cfg = ckpt["config"]
    try:
        model = create_model(cfg["model"], **cfg["model_config"])
        model.load_state_dict(ckpt["ema"] if averaged and ckpt.get("ema") else ckpt["model"])
    except (KeyError, ValueError, TypeError) as e:
        raise checkpoint.CheckpointError(
            f"{ckpt['path']}: its weights do not fit the model it names: {e}"
        ) from e
    return model


def check_fits(model, ds, what, batch_size=None):
    """The model must take the dataset's images and predict its classes; with ``batch_size``, every
    training batch must hold as many images as the model's BatchNorms need (``min_train_batch``:
    two where one normalises a 1x1 map, as cvt_digits' last keys)."""
    C, H, W = ds.image_shape
    if (model.in_chans, model.img_size, model.img_size) != (C, H, W) or model.num_classes != ds.num_classes:
        raise ValueError(
            f"{what} takes {model.in_chans}x{model.img_size}x{model.img_size} images and predicts "
            f"{model.num_classes} classes, but dataset {ds.name!r} has {C}x{H}x{W} images and "
            f"{ds.num_classes} classes"
        )
    need, n = getattr(model, "min_train_batch", 1), len(ds.y_train)
    if batch_size is not None and min(batch_size, n % batch_size or batch_size) < need:
        raise ValueError(f"--batch-size {batch_size} leaves a training batch of one image of the {n}, and "
                         f"{what} normalises 1x1 maps with BatchNorm, which needs at least {need} images per "
                         f"batch in training; choose another --batch-size")


# ----------------------------------------------------------------------------- the objective

class LabelLoss:
    """Training on the labels alone, in the distillation losses' interface: both heads learn y,
    L = (CE(z_cls, y) + CE(z_dist, y)) / 2. For a one-head student (z_cls = z_dist = z) this is
    CE(z), and the sum of the two gradients is CE's gradient. backward(dout) -> (dz_cls, dz_dist).
    """

    def __init__(self, label_smoothing=0.0):
        self.ce = (CrossEntropyLoss(label_smoothing), CrossEntropyLoss(label_smoothing))

    def forward(self, z_cls, z_dist, labels, z_teacher=None):
        return 0.5 * (self.ce[0].forward(z_cls, labels) + self.ce[1].forward(z_dist, labels))

    def backward(self, dout=1.0):
        return self.ce[0].backward(0.5 * dout), self.ce[1].backward(0.5 * dout)


def make_loss(config):
    """LabelLoss without a teacher, else DeiT's soft or hard distillation loss."""
    ls = config["label_smoothing"]
    if not config["teacher"]:
        return LabelLoss(ls)
    if config["distill"] == "soft":
        return SoftDistillationLoss(config["alpha"], config["tau"], label_smoothing=ls)
    return HardDistillationLoss(config["alpha"], label_smoothing=ls)


def loss_floor(config, num_classes):
    """A floor under the training loss of make_loss(config): the one label smoothing sets
    (CrossEntropyLoss.floor), on the share of the loss that learns the true labels (1 - alpha with
    a teacher; the distillation term alone can reach 0). A two-head student without mixup can
    reach it; a one-head student under distillation, or mixup, keeps the loss above it."""
    share = 1.0 - config["alpha"] if config["teacher"] else 1.0
    return share * CrossEntropyLoss(config["label_smoothing"]).floor(num_classes)


class Objective:
    """The training loss of any student: L = lam L(y) + (1 - lam) L(y2), with L from make_loss.

    lam = 1 and no y2 without mixup. The student's output is (z_cls, z_dist) for DeiT, or one z,
    which goes in as both heads and gets the sum of the two gradients. The teacher, if any, sees
    the same (mixed) images in eval mode, once per batch. ``backward`` returns what the student's
    backward takes.
    """

    def __init__(self, config, teacher=None):
        self.teacher = teacher
        self.losses = (make_loss(config), make_loss(config))  # the second for mixup's partner labels

    def forward(self, out, x, y, y2=None, lam=1.0):
        """Loss and the logits to score accuracy with (the average of two heads)."""
        self.pair = isinstance(out, tuple)
        z_cls, z_dist = out if self.pair else (out, out)
        z_teacher = None if self.teacher is None else self.teacher.forward(x)
        self.weights = (lam,) if y2 is None else (lam, 1.0 - lam)
        loss = sum(w * f.forward(z_cls, z_dist, labels, z_teacher)
                   for f, w, labels in zip(self.losses, self.weights, (y, y2), strict=False))
        return loss, (z_cls + z_dist) / 2 if self.pair else z_cls

    def backward(self):
        grads = [f.backward(w) for f, w in zip(self.losses, self.weights, strict=False)]
        d_cls, d_dist = sum(g[0] for g in grads), sum(g[1] for g in grads)
        return (d_cls, d_dist) if self.pair else d_cls + d_dist


# ----------------------------------------------------------------------------- evaluation

def predict(model, ds, split="test", batch_size=256):
    """Eval-mode logits of a split ("val" or "test"), as a host (N, classes) array."""
    was_training = model.training
    model.eval()
    logits = [backend.to_numpy(model.forward(backend.asarray(x)))
              for x, _ in data.batches(ds, split, batch_size)]
    model.train(was_training)
    return np.concatenate(logits)


def score(logits, labels):
    """(mean cross-entropy, accuracy) of host logits."""
    logp = log_softmax(logits.astype(np.float64))
    return float(-logp[np.arange(len(labels)), labels].mean()), float((logits.argmax(1) == labels).mean())


# ----------------------------------------------------------------------------- files of a run

def write_metrics(out, history):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for row in history:
        w.writerow([int(row[0])] + [f"{v:.6g}" for v in row[1:]])
    checkpoint.write_atomic(os.path.join(out, "metrics.csv"), lambda f: f.write(buf.getvalue().encode()))


def write_curves(out, history, config, ds):
    """curves.png: the run's loss and accuracy per epoch, with the floor of its training loss."""
    h = np.asarray(history).reshape(-1, len(COLUMNS))
    checkpoint.write_atomic(os.path.join(out, "curves.png"), lambda f: viz.plot_curves(
        {c: h[:, i] for i, c in enumerate(COLUMNS)}, f, loss_floor(config, ds.num_classes),
        f"{config['model']} on {ds.name}"))


def selection_key(row):
    """What best.npz maximises: the validation accuracy, ties broken by the lower validation loss."""
    return row[COLUMNS.index("val_acc")], -row[COLUMNS.index("val_loss")]


def best_epoch(history):
    """The epoch whose weights best.npz holds (the earliest of equal keys); None before any."""
    if not len(history):
        return None
    return int(max(history, key=lambda r: (*selection_key(r), -r[0]))[0])


def prepare_folder(out, resume=None, overwrite=False):
    """Make ``out`` ready for a run, or raise a ValueError that says why it is not.

    A new run needs a folder that is new or empty; ``overwrite`` removes an earlier run's files
    (RUN_FILES) and leaves anything else alone. A resumed run continues in its checkpoint's
    folder (or in a new or empty one); resuming from an epoch before the folder's last.npz would
    discard epochs, so it too needs ``overwrite``. Stale temporaries of a killed run are removed.
    """
    entries = sorted(os.listdir(out)) if os.path.isdir(out) else []
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} is a file; expected a folder for the run")
    home = os.path.dirname(resume["path"]) or "." if resume is not None else None
    in_place = bool(entries) and home is not None and os.path.samefile(home, out)
    if entries and not in_place and not overwrite:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise ValueError(f"{out} is not empty (it holds {shown}): choose a new --out, continue its "
                         "run with --resume, or pass --overwrite to replace its run files")
    last = os.path.join(out, "last.npz")
    if in_place and not overwrite and os.path.isfile(last) and not os.path.samefile(last, resume["path"]):
        later = checkpoint.load(last)["epoch"]
        if later > resume["epoch"]:
            raise ValueError(f"{last} holds epoch {later}, later than {resume['path']} (epoch "
                             f"{resume['epoch']}): resuming from it would discard epochs "
                             f"{resume['epoch'] + 1}-{later}; resume from {last}, resume into a new "
                             "--out, or pass --overwrite")
    probe = os.path.join(out, f".minivit-write-test.{os.getpid()}")
    try:  # proven writable now, not after the first epoch
        os.makedirs(out, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.remove(probe)
    except OSError as e:
        raise OSError(f"cannot write into --out {out}: {e.strerror or e}") from e
    checkpoint.remove_stale_temporaries(out, RUN_FILES)
    if overwrite and not in_place:
        for name in RUN_FILES:
            if os.path.isfile(os.path.join(out, name)):
                os.remove(os.path.join(out, name))


def restore_run_files(out, resume):
    """Make the folder agree with the resumed checkpoint's history, as after a kill: metrics.csv
    rewritten, and best.npz found (in ``out`` or beside the checkpoint) or, when the best epoch is
    the checkpoint's own (a kill between writing last.npz and best.npz), copied from it."""
    history = resume["history"]
    write_metrics(out, history)
    best = best_epoch(history)
    if best is None:
        return
    target = os.path.join(out, "best.npz")
    for source in (target, os.path.join(os.path.dirname(resume["path"]), "best.npz"), resume["path"]):
        if os.path.isfile(source):
            ck = checkpoint.load(source)
            if ck["epoch"] == best and np.array_equal(ck["history"], history[:best]):
                if not (os.path.exists(target) and os.path.samefile(source, target)):
                    with open(source, "rb") as src:
                        checkpoint.write_atomic(target, lambda f: shutil.copyfileobj(src, f))
                return
    raise ValueError(f"no best.npz of epoch {best} (the best validation accuracy in {resume['path']}'s "
                     f"history) in {out} or beside {resume['path']}: it was deleted or replaced")


def check_finite(model, epoch, step, loss, out):
    """Stop at the first non-finite loss or weight, before anything is saved."""
    bad = None if math.isfinite(loss) else f"the loss is {loss}"
    if bad is None and step is None:
        bad = next((f"weight {n} is not finite" for n, p in model.named_parameters()
                    if not bool(backend.xp_of(p.data).isfinite(p.data).all())), None)
    if bad is not None:
        where = f"epoch {epoch}" + ("" if step is None else f", step {step}")
        kept = (f"{os.path.join(out, 'last.npz')} holds epoch {epoch - 1}" if epoch > 1
                else "no checkpoint was written")
        raise TrainingDiverged(f"training diverged at {where}: {bad}. Nothing of this epoch was saved "
                               f"({kept}). Try a smaller --lr, or --clip-grad")


def write_test_result(out, ds, history, log):
    """Score the chosen model (best.npz) once on the test split; write and return test.json."""
    best = checkpoint.load(os.path.join(out, "best.npz"))
    model = model_from_checkpoint(best)
    loss, acc = score(predict(model, ds, "test"), ds.y_test)
    row = history[best["epoch"] - 1]  # row i holds epoch i + 1
    result = {"checkpoint": "best.npz", "epoch": best["epoch"], "val_acc": row[COLUMNS.index("val_acc")],
              "test_acc": acc, "test_loss": loss, "test_correct": int(round(acc * len(ds.y_test))),
              "num_test": len(ds.y_test)}
    checkpoint.write_atomic(os.path.join(out, "test.json"),
                            lambda f: f.write((json.dumps(result, indent=1) + "\n").encode()))
    log(f"chosen on validation: epoch {best['epoch']} (val accuracy {result['val_acc']:.2%}); "
        f"its test accuracy {acc:.2%} ({result['test_correct']} of {len(ds.y_test)})")
    return result


# ----------------------------------------------------------------------------- training

@np.errstate(over="ignore", invalid="ignore")  # a blow-up is caught by check_finite instead
def train(config, out, resume=None, stop_after=None, quiet=False, overwrite=False, log=print):
    """Train as ``config`` says (DEFAULTS plus overrides), writing the run into folder ``out``.

    ``resume``: a loaded checkpoint (checkpoint.load) to continue from; pass its config.
    ``stop_after``: stop after this epoch (the run can be continued from last.npz).
    ``overwrite``: allow a new run into a folder that is not empty (see prepare_folder).
    Returns (history, test): the rows of COLUMNS, and test.json's content (None if stopped early).
    Raises ValueError for bad settings or data, TrainingDiverged if the loss or weights blow up.
    """
    config = check_config({**DEFAULTS, **config})  # settings added since an older checkpoint take defaults
    if resume is not None and tuple(resume["history_columns"]) != COLUMNS:
        raise ValueError(f"{resume['path']} was written by an older minivit (metrics "
                         f"{resume['history_columns']}) and cannot be resumed; evaluate still reads it")
    if stop_after is not None:
        validate.integer("--stop-after", stop_after, 1)
    backend.use(config["backend"])
    ds = data.load_dataset(config["dataset"], config["data_dir"], config["val_fraction"])
    if resume is None:
        model = create_model(config["model"], img_size=ds.image_shape[1], in_chans=ds.image_shape[0],
                             num_classes=ds.num_classes, drop_path_rate=config["drop_path"],
                             seed=config["seed"], dtype="float32")
        config = dict(config, model_config=model.config)
    else:
        model = model_from_checkpoint(resume, averaged=False)
    check_fits(model, ds, f"model {config['model']}", config["batch_size"])
    teacher = None
    if config["teacher"]:
        teacher = model_from_checkpoint(checkpoint.load(config["teacher"])).eval()
        check_fits(teacher, ds, f"teacher {config['teacher']}")
    objective = Objective(config, teacher)

    opt = AdamW(model.named_parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    steps_per_epoch = math.ceil(len(ds.y_train) / config["batch_size"])
    total_steps = config["epochs"] * steps_per_epoch
    schedule = WarmupCosine(config["lr"], total_steps=total_steps,
                            warmup_steps=config["warmup"] * steps_per_epoch)
    ema, decay = None, ema_decay(config, total_steps)
    if decay:  # validated, saved as best.npz and scored on test in place of the raw weights
        ema = ModelEMA(model, create_model(config["model"], **config["model_config"]), decay)
        if resume is not None:
            ema.averaged.load_state_dict(resume["ema"])
    data_rng = np.random.default_rng([config["seed"], 1])  # its own stream, apart from the model's
    rngs = {"model": model.rng, "data": data_rng}
    history, start = [], 0
    if resume is not None:
        opt.load_state_dict(resume["optim"])
        for name, gen in rngs.items():
            gen.bit_generator.state = resume["rng"][name]
        history, start = [list(r) for r in resume["history"]], resume["epoch"]
    prepare_folder(out, resume, overwrite)
    if resume is not None:
        restore_run_files(out, resume)

    best = best_epoch(history)
    model.train()
    last = config["epochs"] if stop_after is None else min(stop_after, config["epochs"])
    log(f"{'resuming after epoch ' + str(start) + ': ' if start else ''}{config['model']} "
        f"({model.num_parameters():,} parameters) on {ds.name}: {len(ds.y_train)} training, "
        f"{len(ds.y_val)} validation and {len(ds.y_test)} test images, {config['epochs']} epochs, "
        f"batch {config['batch_size']}"
        + (f", teacher {config['teacher']} ({config['distill']})" if teacher is not None else ""))
    for epoch in range(start + 1, last + 1):
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{config['epochs']}", disable=quiet,
                   leave=True, dynamic_ncols=True)
        for step, (x, y) in enumerate(data.batches(ds, "train", config["batch_size"], data_rng), 1):
            y2, lam = None, 1.0
            if config["mixup"]:
                x, perm, lam = data.mixup(x, config["mixup"], data_rng)
                y2 = y[perm]
            x = backend.asarray(x)
            loss, logits = objective.forward(model.forward(x), x, y, y2, lam)
            check_finite(model, epoch, step, float(loss), out)
            model.zero_grad()
            model.backward(objective.backward())
            if config["clip_grad"] is not None:
                clip_grad_norm(opt.params, config["clip_grad"])
            opt.lr = schedule(opt.steps)
            opt.step()
            if ema is not None:
                ema.update()
            loss_sum += float(loss) * len(y)
            pred = backend.to_numpy(logits.argmax(axis=1))
            correct += lam * (pred == y).sum() + (0.0 if y2 is None else (1.0 - lam) * (pred == y2).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.2%}", lr=f"{opt.lr:.2e}",
                            img_s=f"{seen / (time.perf_counter() - t0):.0f}", refresh=False)
            bar.update(1)
        train_seconds = time.perf_counter() - t0
        val_loss, val_acc = score(predict(model if ema is None else ema.averaged, ds, "val"), ds.y_val)
        check_finite(model, epoch, None, val_loss, out)
        row = [epoch, loss_sum / seen, correct / seen, val_loss, val_acc, opt.lr, seen / train_seconds,
               time.perf_counter() - t0]
        history.append(row)
        bar.set_postfix(loss=f"{row[1]:.4f}", acc=f"{row[2]:.2%}", lr=f"{opt.lr:.2e}", img_s=f"{row[6]:.0f}",
                        val_acc=f"{val_acc:.2%}")
        bar.close()

        # last.npz first, then best.npz: a kill between the two is repaired from last.npz on resume
        state = dict(config=config, model_state=model.state_dict(), optim_state=opt.state_dict(),
                     epoch=epoch, rng_states=rngs, history=history, history_columns=COLUMNS,
                     ema_state=None if ema is None else ema.averaged.state_dict())
        checkpoint.save(os.path.join(out, "last.npz"), **state)
        if best is None or selection_key(row) > selection_key(history[best - 1]):
            best = epoch
            checkpoint.save(os.path.join(out, "best.npz"), **state)
        write_metrics(out, history)
        if epoch % 25 == 0 or epoch == last:
            write_curves(out, history, config, ds)
    if last < config["epochs"]:
        log(f"stopped after epoch {last}: validation accuracy {history[-1][4]:.2%}; "
            f"continue with --resume {os.path.join(out, 'last.npz')}")
        return history, None
    test = write_test_result(out, ds, history, log)
    log(f"finished: {sum(r[7] for r in history[start:]):.1f} s of training; files in {out}")
    return history, test


def evaluate(path, dataset=None, data_dir=None, backend_name="numpy", plot=None, split="test"):
    """Accuracy and confusion matrix of checkpoint ``path`` on a split (by default the test split of
    the dataset it was trained on). Saves the confusion matrix as PNG at ``plot`` (a .png path or a
    folder; default: next to the checkpoint)."""
    validate.choice("--split", split, ("val", "test"))
    if plot is not None and not os.path.isdir(plot) and not plot.lower().endswith(".png"):
        raise ValueError(f"--plot {plot}: expected a .png file name or an existing folder")
    backend.use(backend_name)
    ckpt = checkpoint.load(path)
    cfg = {**DEFAULTS, **ckpt["config"]}
    name = dataset or cfg["dataset"]
    ds = data.load_dataset(name, data_dir if data_dir is not None else cfg["data_dir"], cfg["val_fraction"])
    model = model_from_checkpoint(ckpt)
    check_fits(model, ds, f"checkpoint {path}")
    x, y = ds.split(split)
    logits = predict(model, ds, split)
    loss, acc = score(logits, y)
    cm = viz.confusion_matrix(y, logits.argmax(axis=1), ds.num_classes)
    default = os.path.splitext(os.path.basename(path))[0] + f"_confusion_{name}_{split}.png"
    if plot is None:
        plot = os.path.join(os.path.dirname(path), default)
    elif os.path.isdir(plot):
        plot = os.path.join(plot, default)
    viz.plot_confusion(cm, plot, title=f"{cfg['model']} on {name} {split}: {acc:.2%}")
    return {"accuracy": acc, "loss": loss, "correct": int(np.trace(cm)), "num_images": len(y),
            "dataset": name, "split": split, "model": cfg["model"], "epoch": ckpt["epoch"],
            "checkpoint": path, "confusion_matrix": cm.tolist(), "confusion_png": plot}


def format_report(r):
    """Human-readable evaluation: accuracy, then the confusion matrix (rows true, columns predicted)."""
    cm = np.asarray(r["confusion_matrix"])
    width = max(3, len(str(cm.max())) + 1)
    lines = [f"{r['model']} (epoch {r['epoch']}) on {r['dataset']} {r['split']}: "
             f"accuracy {r['accuracy']:.2%} ({r['correct']}/{r['num_images']}), loss {r['loss']:.4f}",
             "confusion matrix (rows: true class, columns: predicted class):",
             " " * 4 + "".join(f"{j:>{width}}" for j in range(len(cm)))]
    lines += [f"{i:>3} " + "".join(f"{v:>{width}}" for v in row) for i, row in enumerate(cm)]
    lines.append(f"saved {r['confusion_png']}")
    return "\n".join(lines)

