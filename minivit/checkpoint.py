"""Checkpoints: one .npz of plain arrays, written atomically, read without pickle.

Layout (every entry a numpy array; text is stored as a 0-d unicode array):

    format        "minivit-checkpoint-1"
    config        JSON text: the training settings, including the model name and its configuration
    epoch         epochs completed
    model/<name>  the weights, by the model's dotted parameter names
    ema/<name>    the moving average of the weights, for a run that keeps one (optim.ModelEMA)
    optim/<key>   the optimizer's state_dict()
    rng/<name>    JSON text of a numpy Generator's bit_generator.state
    history       (epochs, columns) float64 metrics, with history_columns the column names (JSON text)

Every file of a run (checkpoints, metrics.csv, curves.png, test.json) is written by
``write_atomic``: first to a temporary file ``<name>.<pid>.tmp`` in the same folder, flushed to
disk, then renamed over the target (``os.replace``), so a crash or a SIGKILL at any instant leaves
either the old file or the new one, never half of one. ``remove_stale_temporaries`` clears what a
killed process left behind.
"""

import json
import os

import numpy as np

FORMAT = "minivit-checkpoint-1"


class CheckpointError(ValueError):
    """A file that is not a readable minivit checkpoint."""


def _text(s):
    return np.array(str(s))


def write_atomic(path, write):
    """Call ``write(f)`` on a binary file that becomes ``path`` only once it is complete."""
    tmp = f"{path}.{os.getpid()}.tmp"  # same folder, so the rename is atomic
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remove_stale_temporaries(folder, names):
    """Delete the ``<name>.<pid>.tmp`` files that a killed writer of ``names`` left in ``folder``."""
    for entry in os.listdir(folder):
        stem, _, pid = entry[:-len(".tmp")].rpartition(".")
        if entry.endswith(".tmp") and stem in names and pid.isdigit():
            os.remove(os.path.join(folder, entry))


def save(path, *, config, model_state, optim_state, epoch, rng_states, history, history_columns,
         ema_state=None):
    arrays = {"format": _text(FORMAT), "config": _text(json.dumps(config)),
              "epoch": np.array(epoch, dtype=np.int64),
              "history": np.asarray(history, dtype=np.float64).reshape(-1, len(history_columns)),
              "history_columns": _text(json.dumps(list(history_columns)))}
    arrays.update({f"model/{k}": v for k, v in model_state.items()})
    arrays.update({f"optim/{k}": v for k, v in optim_state.items()})
    arrays.update({f"ema/{k}": v for k, v in (ema_state or {}).items()})
    arrays.update({f"rng/{k}": _text(json.dumps(gen.bit_generator.state)) for k, gen in rng_states.items()})
    write_atomic(path, lambda f: np.savez(f, **arrays))


def load(path):
    """Read a checkpoint into a dict: path, config, epoch, model, optim, ema, rng (state dicts),
    history, history_columns. Raises CheckpointError, naming the file, for anything else."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # a .npz is a zip; np.load would try pickle next
        raise CheckpointError(f"{path}: not a minivit checkpoint (expected a .npz file, "
                              "a zip archive of arrays, as train writes)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zlib, zipfile, OSError, ValueError (object arrays): all "damaged"
        why = ("it holds pickled Python objects, which minivit never loads" if "pickle" in str(e)
               else f"truncated or another format: {type(e).__name__}")
        raise CheckpointError(f"{path}: not a readable .npz checkpoint ({why})") from e
    fmt = arrays.get("format")
    if fmt is None or fmt.dtype.kind != "U" or str(fmt) != FORMAT:
        raise CheckpointError(f"{path}: not a minivit checkpoint (expected a 'format' entry {FORMAT!r})")
    try:
        ckpt = {
            "path": path,
            "config": json.loads(str(arrays["config"])),
            "epoch": int(arrays["epoch"]),
            "model": _prefixed(arrays, "model/"),
            "optim": _prefixed(arrays, "optim/"),
            "ema": _prefixed(arrays, "ema/"),
            "rng": {k: json.loads(str(v)) for k, v in _prefixed(arrays, "rng/").items()},
            "history": np.asarray(arrays["history"], dtype=np.float64),
            "history_columns": json.loads(str(arrays["history_columns"])),
        }
        _check(ckpt)
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: damaged minivit checkpoint ({type(e).__name__}: {e})") from e
    return ckpt


def _check(ckpt):
    """The structure every reader of a checkpoint relies on."""
    cfg = ckpt["config"]
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), str) \
            or not isinstance(cfg.get("model_config"), dict):
        raise ValueError("config must be a JSON object with a 'model' name and a 'model_config' object")
    columns, history = ckpt["history_columns"], ckpt["history"]
    if not isinstance(columns, list) or history.ndim != 2 or history.shape[1] != len(columns):
        raise ValueError(f"history of shape {history.shape} does not fit its {len(columns)} column names")
    if ckpt["epoch"] < 0:
        raise ValueError(f"epoch {ckpt['epoch']} is negative")


def _prefixed(arrays, prefix):
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

