"""Training and evaluation: what ``python -m minivit train`` and ``evaluate`` run.

One epoch: shuffled, augmented batches (random shifts, flips where they suit the data, mixup if
asked for); forward, loss, backward, AdamW step with the warmup + cosine learning rate; then the
whole test split in eval mode. After every epoch the run folder gets metrics.csv, last.npz (and
best.npz when test accuracy improved); curves.png every 25 epochs and at the end. A run can stop
after any epoch and go on with ``--resume``: weights, optimizer state, epoch and both random
generators (model: dropout/drop-path; data: shuffling/augmentation) are in the checkpoint, so
the resumed run is bit-identical to an uninterrupted one.

With a teacher (DeiT), the loss is a distillation loss of the student's two heads and the
teacher's logits; a student with one head uses its logits for both.
"""

import csv
import io
import math
import os
import time

import numpy as np
from tqdm import tqdm

from . import backend, checkpoint, data, viz
from .losses import CrossEntropyLoss, HardDistillationLoss, SoftDistillationLoss
from .models import create_model
from .optim import AdamW, WarmupCosine, clip_grad_norm

# The defaults train vit_digits on digits from scratch (see the README for what they reach).
DEFAULTS = dict(
    model="vit_digits", dataset="digits", data_dir=None, epochs=200, batch_size=64, lr=3e-3,
    weight_decay=0.05, warmup=5, label_smoothing=0.1, drop_path=0.0, mixup=0.0, clip_grad=None, seed=0,
    backend="numpy", teacher=None, distill=None, alpha=None, tau=3.0,
)
DISTILL_ALPHA = {"soft": 0.1, "hard": 0.5}  # DeiT's values (and tau = 3 for soft)
COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "images_per_s", "seconds")


# ----------------------------------------------------------------------------- models from checkpoints

def model_from_checkpoint(ckpt):
    """Rebuild the model a checkpoint (checkpoint.load) was trained as, with create_model and its
    stored configuration, and load its weights; a clear CheckpointError when they do not fit."""
    cfg = ckpt["config"]
    try:
        model = create_model(cfg["model"], **cfg["model_config"])
        model.load_state_dict(ckpt["model"])
    except (KeyError, ValueError, TypeError) as e:
        raise checkpoint.CheckpointError(
            f"{ckpt['path']}: its weights do not fit the model it names: {e}"
        ) from e
    return model


def check_fits(model, ds, what):
    """The model must take the dataset's images and predict its classes."""
    C, H, W = ds.image_shape
    if (model.in_chans, model.img_size, model.img_size) != (C, H, W) or model.num_classes != ds.num_classes:
        raise ValueError(
            f"{what} takes {model.in_chans}x{model.img_size}x{model.img_size} images and predicts "
            f"{model.num_classes} classes, but dataset {ds.name!r} has {C}x{H}x{W} images and "
            f"{ds.num_classes} classes"
        )


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

def predict(model, ds, batch_size=256):
    """Eval-mode logits of the test split, as a host (N, classes) array."""
    model.eval()
    logits = [backend.to_numpy(model.forward(backend.asarray(x))) for x, _ in data.batches(ds, batch_size)]
    model.train()
    return np.concatenate(logits)


def score(logits, labels):
    """(mean cross-entropy, accuracy) of host logits."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean()), float((logits.argmax(1) == labels).mean())


# ----------------------------------------------------------------------------- files of a run

def _write_text_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def write_metrics(out, history):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for row in history:
        w.writerow([int(row[0])] + [f"{v:.6g}" for v in row[1:]])
    _write_text_atomic(os.path.join(out, "metrics.csv"), buf.getvalue())


def write_curves(out, history):
    h = np.asarray(history).reshape(-1, len(COLUMNS))
    viz.plot_curves({c: h[:, i] for i, c in enumerate(COLUMNS)}, os.path.join(out, "curves.png"))


# ----------------------------------------------------------------------------- training

def train(config, out, resume=None, stop_after=None, quiet=False, log=print):
    """Train as ``config`` says (DEFAULTS plus overrides), writing the run into folder ``out``.

    ``resume``: a loaded checkpoint (checkpoint.load) to continue from; pass its config.
    ``stop_after``: stop after this epoch (the run can be continued from last.npz).
    Returns the history, a list of rows with the COLUMNS.
    """
    config = {**DEFAULTS, **config}  # settings added since an older checkpoint take their defaults
    backend.use(config["backend"])
    ds = data.load_dataset(config["dataset"], config["data_dir"])
    if resume is None:
        model = create_model(config["model"], img_size=ds.image_shape[1], in_chans=ds.image_shape[0],
                             num_classes=ds.num_classes, drop_path_rate=config["drop_path"],
                             seed=config["seed"], dtype="float32")
        config = dict(config, model_config=model.config)
    else:
        model = model_from_checkpoint(resume)
    check_fits(model, ds, f"model {config['model']}")
    teacher = None
    if config["teacher"]:
        teacher = model_from_checkpoint(checkpoint.load(config["teacher"])).eval()
        check_fits(teacher, ds, f"teacher {config['teacher']}")
    objective = Objective(config, teacher)

    opt = AdamW(model.named_parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    steps_per_epoch = math.ceil(len(ds.y_train) / config["batch_size"])
    schedule = WarmupCosine(config["lr"], total_steps=config["epochs"] * steps_per_epoch,
                            warmup_steps=config["warmup"] * steps_per_epoch)
    data_rng = np.random.default_rng([config["seed"], 1])  # its own stream, apart from the model's
    rngs = {"model": model.rng, "data": data_rng}
    history, start = [], 0
    if resume is not None:
        opt.load_state_dict(resume["optim"])
        for name, gen in rngs.items():
            gen.bit_generator.state = resume["rng"][name]
        history, start = [list(r) for r in resume["history"]], resume["epoch"]
    best = max((r[4] for r in history), default=-1.0)
    os.makedirs(out, exist_ok=True)

    model.train()
    last = config["epochs"] if stop_after is None else min(stop_after, config["epochs"])
    log(f"{'resuming after epoch ' + str(start) + ': ' if start else ''}{config['model']} "
        f"({model.num_parameters():,} parameters) on {ds.name}: {len(ds.y_train)} training and "
        f"{len(ds.y_test)} test images, {config['epochs']} epochs, batch {config['batch_size']}"
        + (f", teacher {config['teacher']} ({config['distill']})" if teacher is not None else ""))
    for epoch in range(start + 1, last + 1):
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{config['epochs']}", disable=quiet,
                   leave=True, dynamic_ncols=True)
        for x, y in data.batches(ds, config["batch_size"], data_rng, train=True):
            y2, lam = None, 1.0
            if config["mixup"]:
                x, perm, lam = data.mixup(x, config["mixup"], data_rng)
                y2 = y[perm]
            x = backend.asarray(x)
            loss, logits = objective.forward(model.forward(x), x, y, y2, lam)
            model.zero_grad()
            model.backward(objective.backward())
            if config["clip_grad"]:
                clip_grad_norm(opt.params, config["clip_grad"])
            opt.lr = schedule(opt.steps)
            opt.step()
            loss_sum += float(loss) * len(y)
            pred = backend.to_numpy(logits.argmax(axis=1))
            correct += lam * (pred == y).sum() + (0.0 if y2 is None else (1.0 - lam) * (pred == y2).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.2%}", lr=f"{opt.lr:.2e}",
                            img_s=f"{seen / (time.perf_counter() - t0):.0f}", refresh=False)
            bar.update(1)
        train_seconds = time.perf_counter() - t0
        test_loss, test_acc = score(predict(model, ds), ds.y_test)
        row = [epoch, loss_sum / seen, correct / seen, test_loss, test_acc, opt.lr, seen / train_seconds,
               time.perf_counter() - t0]
        history.append(row)
        bar.set_postfix(loss=f"{row[1]:.4f}", acc=f"{row[2]:.2%}", lr=f"{opt.lr:.2e}", img_s=f"{row[6]:.0f}",
                        test_acc=f"{test_acc:.2%}")
        bar.close()

        write_metrics(out, history)
        state = dict(config=config, model_state=model.state_dict(), optim_state=opt.state_dict(),
                     epoch=epoch, rng_states=rngs, history=history, history_columns=COLUMNS)
        checkpoint.save(os.path.join(out, "last.npz"), **state)
        if test_acc > best:
            best = test_acc
            checkpoint.save(os.path.join(out, "best.npz"), **state)
        if epoch % 25 == 0 or epoch == last:
            write_curves(out, history)
    if history:
        done = "finished" if last == config["epochs"] else f"stopped after epoch {last}"
        log(f"{done}: test accuracy {history[-1][4]:.2%} (best {best:.2%}); "
            f"{sum(r[7] for r in history[start:]):.1f} s of training; files in {out}")
    return history


def evaluate(path, dataset=None, data_dir=None, backend_name="numpy", plot=None):
    """Accuracy and confusion matrix of checkpoint ``path`` on a test split (by default the one it
    was trained on). Saves the confusion matrix as PNG at ``plot`` (default: next to the checkpoint)."""
    backend.use(backend_name)
    ckpt = checkpoint.load(path)
    cfg = ckpt["config"]
    name = dataset or cfg.get("dataset")
    ds = data.load_dataset(name, data_dir if data_dir is not None else cfg.get("data_dir"))
    model = model_from_checkpoint(ckpt)
    check_fits(model, ds, f"checkpoint {path}")
    logits = predict(model, ds)
    loss, acc = score(logits, ds.y_test)
    cm = viz.confusion_matrix(ds.y_test, logits.argmax(axis=1), ds.num_classes)
    if plot is None:
        plot = os.path.splitext(path)[0] + f"_confusion_{name}.png"
    viz.plot_confusion(cm, plot, title=f"{cfg['model']} on {name}: {acc:.2%}")
    return {"accuracy": acc, "loss": loss, "correct": int(np.trace(cm)), "num_images": len(ds.y_test),
            "dataset": name, "model": cfg["model"], "epoch": ckpt["epoch"], "checkpoint": path,
            "confusion_matrix": cm.tolist(), "confusion_png": plot}


def format_report(r):
    """Human-readable evaluation: accuracy, then the confusion matrix (rows true, columns predicted)."""
    cm = np.asarray(r["confusion_matrix"])
    width = max(3, len(str(cm.max())) + 1)
    lines = [f"{r['model']} (epoch {r['epoch']}) on {r['dataset']} test: accuracy {r['accuracy']:.2%} "
             f"({r['correct']}/{r['num_images']}), loss {r['loss']:.4f}",
             "confusion matrix (rows: true class, columns: predicted class):",
             " " * 4 + "".join(f"{j:>{width}}" for j in range(len(cm)))]
    lines += [f"{i:>3} " + "".join(f"{v:>{width}}" for v in row) for i, row in enumerate(cm)]
    lines.append(f"saved {r['confusion_png']}")
    return "\n".join(lines)

