"""The command line: ``python -m minivit train ...`` and ``python -m minivit evaluate ...``."""

import argparse
import json
import os
import sys

from . import backend, checkpoint, data
from .train import DEFAULTS, DISTILL_ALPHA, evaluate, format_report, train

# flags that may accompany --resume (everything else comes from the checkpoint)
RESUME_FLAGS = {"resume", "out", "backend", "stop_after", "quiet"}


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minivit",
                                description="Train and evaluate Vision Transformers written from scratch.")
    sub = p.add_subparsers(dest="command")

    d = DEFAULTS
    t = sub.add_parser("train", argument_default=argparse.SUPPRESS,
                       help="train a model; writes metrics.csv, curves.png, last.npz and best.npz into --out",
                       description="Train a model from scratch. Defaults: vit_digits on digits.")
    t.add_argument("--out", metavar="DIR", help="folder for metrics.csv, curves.png, last.npz, best.npz")
    t.add_argument("--model", help=f"a registered model name (default {d['model']})")
    t.add_argument("--dataset", choices=data.DATASETS, help=f"(default {d['dataset']})")
    t.add_argument("--data-dir", metavar="DIR", help="mnist IDX files or cifar-10-batches-bin folder")
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
    t.add_argument("--seed", type=int,
                   help=f"seeds initialisation, dropout and data order (default {d['seed']})")
    t.add_argument("--backend", choices=("numpy", "cupy"), help=f"(default {d['backend']})")
    t.add_argument("--resume", metavar="CHECKPOINT",
                   help="continue the run saved in DIR/last.npz with its stored settings")
    t.add_argument("--stop-after", type=int, metavar="EPOCH",
                   help="stop after this epoch; continue later with --resume DIR/last.npz")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
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
    e.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    e.add_argument("--plot", metavar="PNG", help="where to save the confusion matrix "
                   "(default: next to the checkpoint)")
    e.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    return p


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
    for k in ("epochs", "batch_size"):
        if config[k] < 1:
            parser.error(f"--{k.replace('_', '-')} must be at least 1, got {config[k]}")
    if "warmup" not in given:  # the default warmup shrinks to fit a short run
        config["warmup"] = min(config["warmup"], config["epochs"])
    if not 0 <= config["warmup"] <= config["epochs"]:
        parser.error(f"--warmup must be between 0 and --epochs ({config['epochs']}), got {config['warmup']}")
    return config, None


def _select_backend(name):
    try:
        backend.use(name)
    except RuntimeError as e:  # CuPy asked for but missing or without a GPU
        raise ValueError(str(e)) from e


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "train":
            config, ckpt = train_config(parser, args)
            # a resumed run goes on in the checkpoint's folder unless --out says otherwise
            out = getattr(args, "out", None) or os.path.dirname(args.resume) or "."
            _select_backend(config["backend"])
            train(config, out, resume=ckpt, stop_after=getattr(args, "stop_after", None),
                  quiet=getattr(args, "quiet", False))
        else:
            _select_backend(args.backend)
            r = evaluate(args.checkpoint, args.dataset, args.data_dir, args.backend, args.plot)
            print(json.dumps(r) if args.json else format_report(r))
    except (ValueError, OSError) as e:  # bad input: a message, not a traceback
        print(f"minivit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; continue with: python -m minivit train --resume DIR/last.npz", file=sys.stderr)
        return 130
    return 0

if __name__ == "__main__":
    sys.exit(main())
