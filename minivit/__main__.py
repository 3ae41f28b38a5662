"""The command line: ``python -m minivit train | evaluate | predict | analyze ...``.

Every failure is one line on stderr, ``minivit: error: ...``, and a non-zero exit status: 2 for
bad input (flags, files, data), 1 for a run that failed (a diverged loss, an unexpected error).
``--debug`` shows the Python traceback instead.
"""

import argparse
import json
import os
import sys
import traceback

from .kernels import tune_process

PROCESS = tune_process()  # the command line opts in to process tuning, before NumPy loads

from . import backend, checkpoint, data  # noqa: E402
from .train import (  # noqa: E402
    DEFAULTS,
    DISTILL_ALPHA,
    TrainingDiverged,
    check_config,
    evaluate,
    format_report,
    train,
)

# flags that may accompany --resume (everything else comes from the checkpoint)
RESUME_FLAGS = {"resume", "out", "backend", "stop_after", "quiet", "overwrite", "debug"}


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (and the pointer to --help on it)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    p = Parser(prog="python -m minivit",
               description="Train, evaluate and run Vision Transformers written from scratch.")
    sub = p.add_subparsers(dest="command")

    d = DEFAULTS
    t = sub.add_parser("train", argument_default=argparse.SUPPRESS,
                       help="train a model; writes metrics.csv, curves.png, last.npz and best.npz into --out",
                       description="Train a model from scratch. Defaults: vit_digits on digits.")
    t.add_argument("--out", metavar="DIR", help="folder for metrics.csv, curves.png, last.npz, best.npz")
    t.add_argument("--model", help=f"a registered model name (default {d['model']})")
    t.add_argument("--dataset", choices=data.DATASETS, help=f"(default {d['dataset']})")
    t.add_argument("--data-dir", metavar="DIR", help="mnist IDX files or cifar-10-batches-bin folder")
    t.add_argument("--val-fraction", type=float, metavar="F",
                   help="share of each class of the training split held out to choose best.npz by "
                   f"(default {d['val_fraction']})")
    t.add_argument("--epochs", type=int, help=f"(default {d['epochs']})")
    t.add_argument("--batch-size", type=int, help=f"(default {d['batch_size']})")
    t.add_argument("--lr", type=float, help=f"peak AdamW learning rate (default {d['lr']})")
    t.add_argument("--weight-decay", type=float, help=f"decoupled weight decay (default {d['weight_decay']})")
    t.add_argument("--warmup", type=int,
                   help=f"epochs of linear warmup before the cosine decay (default {d['warmup']})")
    t.add_argument("--label-smoothing", type=float, help=f"(default {d['label_smoothing']})")
    t.add_argument("--drop-path", type=float,
                   help=f"stochastic depth rate of the last block (default {d['drop_path']})")
    t.add_argument("--mixup", type=float, metavar="ALPHA",
                   help=f"mixup with lambda ~ Beta(ALPHA, ALPHA); 0 is off (default {d['mixup']})")
    t.add_argument("--clip-grad", type=float, help="clip the global gradient norm to this (default: off)")
    t.add_argument("--ema", type=float, metavar="DECAY",
                   help="validate, keep and test a moving average of the weights, theta_avg <- DECAY "
                   "theta_avg + (1 - DECAY) theta after each step; 0 is off (default: 1 - 8 / the "
                   "number of steps, an average over the last eighth of the run)")
    t.add_argument("--seed", type=int,
                   help=f"seeds initialisation, dropout and data order (default {d['seed']})")
    t.add_argument("--backend", choices=("numpy", "cupy"), help=f"(default {d['backend']})")
    t.add_argument("--resume", metavar="CHECKPOINT",
                   help="continue the run saved in DIR/last.npz with its stored settings")
    t.add_argument("--stop-after", type=int, metavar="EPOCH",
                   help="stop after this epoch; continue later with --resume DIR/last.npz")
    t.add_argument("--overwrite", action="store_true",
                   help="allow --out to be a folder that is not empty (its run files are replaced)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    g = t.add_argument_group("distillation (DeiT)")
    g.add_argument("--teacher", metavar="CHECKPOINT",
                   help="a minivit checkpoint, run in eval mode as the teacher")
    g.add_argument("--distill", choices=("soft", "hard"), help="distillation loss (default hard)")
    g.add_argument("--alpha", type=float,
                   help="weight of the distillation term (default 0.5 hard, 0.1 soft, as DeiT)")
    g.add_argument("--tau", type=float, help=f"soft distillation temperature (default {d['tau']})")

    e = sub.add_parser("evaluate", help="accuracy and confusion matrix of a checkpoint on a test split",
                       description="Evaluate a checkpoint on a test split: accuracy and confusion matrix.")
    e.add_argument("checkpoint")
    e.add_argument("--dataset", choices=data.DATASETS, help="(default: the one it was trained on)")
    e.add_argument("--data-dir", metavar="DIR", help="(default: the one it was trained with)")
    e.add_argument("--split", choices=("test", "val"), default="test", help="(default test)")
    e.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    e.add_argument("--plot", metavar="PNG", help="where to save the confusion matrix: a .png file or "
                   "a folder (default: next to the checkpoint)")
    e.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    e.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")

    r = sub.add_parser("predict", help="classify image files with a checkpoint: top-k labels",
                       description="Classify image files: the top-k labels with their probabilities.")
    r.add_argument("images", nargs="+", metavar="IMAGE")
    r.add_argument("--model", required=True, metavar="PATH",
                   help="a transformers folder (config.json + model.safetensors) or a minivit "
                   "checkpoint (.npz)")
    r.add_argument("--top", type=int, default=5, help="how many labels per image (default 5)")
    r.add_argument("--explain", metavar="OUT.png", help="also draw each image with its attention rollout")
    r.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")

    a = sub.add_parser("analyze", help="attention rollout, attention distance and E_pos similarity figures",
                       description="Look inside a checkpoint: writes rollout.png, attention_distance.png "
                       "and pos_embed_similarity.png into --out.")
    a.add_argument("images", nargs="+", metavar="IMAGE")
    a.add_argument("--model", required=True, metavar="PATH",
                   help="a transformers folder or a minivit checkpoint (.npz)")
    a.add_argument("--out", required=True, metavar="DIR", help="folder for the three figures")
    a.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")

    c = sub.add_parser("assignment", help="classroom assignments: list, build a student's folder, grade one",
                       description="Assignments cut out of minivit's own layers (docs/teachers.md).")
    c_sub = c.add_subparsers(dest="action", required=True)
    c_sub.add_parser("list", help="the assignments, their tasks and points")
    cb = c_sub.add_parser("build", help="write an assignment's folder: package, notebook, public tests")
    cb.add_argument("name", help="the assignment (a1, a2, ...)")
    cb.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder")
    cb.add_argument("--solution", action="store_true", help="the teacher's version: every body kept")
    cg = c_sub.add_parser("grade", help="grade a student's folder task by task")
    cg.add_argument("folder", metavar="DIR", help="the student's folder, as build wrote it")
    cg.add_argument("--json", metavar="PATH", help="also write Gradescope's results.json format to PATH")
    cg.add_argument("--seed", type=int, help="the hidden inputs' seed (default: a fresh one, printed)")
    cg.add_argument("--task", action="append", metavar="ID", help="grade only this task (repeatable)")
    for q in (c, cb, cg):
        q.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")

    n = sub.add_parser("notebooks", help="write every tutorial chapter as a Jupyter notebook",
                       description="Write tutorials/NN_*.py as .ipynb notebooks, common.py beside them.")
    n.add_argument("--tutorials", default="tutorials", metavar="DIR",
                   help="the chapters' folder (default tutorials)")
    n.add_argument("--out", default="notebooks", metavar="DIR",
                   help="folder for the notebooks (default notebooks)")
    n.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    return p


def assignment(args):
    """``python -m minivit assignment list | build | grade``."""
    from .classroom import assignments, build, grade

    if args.action == "list":
        for a in assignments.ASSIGNMENTS.values():
            print(f"{a.name}  {a.title}  ({sum(t.points for t in a.tasks)} points)")
            for t in a.tasks:
                print(f"    {t.id:<24} {t.points:>2}  {t.title}")
        return 0
    if args.action == "build":
        files = build.build(args.name, args.out, solution=args.solution)
        print(f"wrote {args.out}: {len(files)} files ({'teacher' if args.solution else 'student'} version)")
        return 0
    result = grade.grade(args.folder, seed=args.seed, tasks=args.task)
    print(grade.report(*result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(grade.gradescope(*result), f, indent=1)
        print(f"wrote {args.json}")
    return 0


def train_config(parser, args):
    """The training settings: DEFAULTS with the given flags, or the checkpoint's for --resume."""
    given = vars(args)
    if "resume" in given:
        extra = sorted(k for k in given if k not in RESUME_FLAGS | {"command"})
        if extra:
            parser.error("--resume continues with the settings stored in the checkpoint; drop "
                         + ", ".join("--" + k.replace("_", "-") for k in extra))
        ckpt = checkpoint.load(given["resume"])
        config = dict(ckpt["config"], backend=given.get("backend", ckpt["config"]["backend"]))
        return config, ckpt
    if "out" not in given:
        parser.error("train needs --out DIR (or --resume DIR/last.npz)")
    config = {**DEFAULTS, **{k: v for k, v in given.items() if k in DEFAULTS}}
    if config["teacher"]:
        config["distill"] = config["distill"] or "hard"
        if config["alpha"] is None:
            config["alpha"] = DISTILL_ALPHA[config["distill"]]
    elif any(given.get(k) is not None for k in ("distill", "alpha", "tau")):
        parser.error("--distill, --alpha and --tau need --teacher CHECKPOINT")
    if "warmup" not in given:  # the default warmup shrinks to fit a short run
        config["warmup"] = min(config["warmup"], config["epochs"])
    return check_config(config), None


def _select_backend(name):
    try:
        backend.use(name)
    except RuntimeError as e:  # CuPy asked for but missing or without a GPU
        raise ValueError(str(e)) from e


def _interrupted(out):
    last = os.path.join(out, "last.npz") if out else None
    if last and os.path.isfile(last):
        return f"interrupted; continue with: python -m minivit train --resume {last}"
    return "interrupted before the first epoch was saved; nothing to resume"


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    out = None
    try:
        if args.command == "train":
            config, ckpt = train_config(parser, args)
            # a resumed run goes on in the checkpoint's folder unless --out says otherwise
            out = getattr(args, "out", None) or os.path.dirname(args.resume) or "."
            _select_backend(config["backend"])
            train(config, out, resume=ckpt, stop_after=getattr(args, "stop_after", None),
                  quiet=getattr(args, "quiet", False), overwrite=getattr(args, "overwrite", False))
        elif args.command == "predict":
            from .predict import classify, format_results

            print(format_results(classify(args.model, args.images, args.top, args.explain)))
        elif args.command == "analyze":
            from .predict import analyze

            print("wrote " + ", ".join(analyze(args.model, args.images, args.out)))
        elif args.command == "assignment":
            return assignment(args)
        elif args.command == "notebooks":
            from .classroom.notebook import write_chapters

            paths = write_chapters(args.tutorials, args.out)
            print(f"wrote {len(paths)} notebooks into {args.out}")
        else:
            _select_backend(args.backend)
            r = evaluate(args.checkpoint, args.dataset, args.data_dir, args.backend, args.plot, args.split)
            print(json.dumps(r) if args.json else format_report(r))
    except KeyboardInterrupt:
        print("\n" + _interrupted(out), file=sys.stderr)
        return 130
    except Exception as e:
        if getattr(args, "debug", False):
            traceback.print_exc()
        bad_input = isinstance(e, (ValueError, OSError))  # a message, not a traceback
        known = bad_input or isinstance(e, TrainingDiverged)
        text = str(e) if known else f"{type(e).__name__}: {e} (--debug shows where)"
        print(f"minivit: error: {text}", file=sys.stderr)
        return 2 if bad_input else 1
    return 0

if __name__ == "__main__":
    sys.exit(main())
