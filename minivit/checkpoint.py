"""Checkpoints: one .npz of plain arrays, written atomically, read without pickle.

Layout (every entry a numpy array; text is stored as a 0-d unicode array):

    format        "minivit-checkpoint-1"
    config        JSON text: the training settings, including the model name and its configuration
    epoch         epochs completed
    model/<name>  the weights, by the model's dotted parameter names
    optim/<key>   the optimizer's state_dict()
    rng/<name>    JSON text of a numpy Generator's bit_generator.state
    history       (epochs, columns) float64 metrics, with history_columns the column names (JSON text)

The file is first written to a temporary file in the same folder and then renamed over the
target (``os.replace``), so a crash never leaves a half-written checkpoint behind.
"""

import json
import os
import zipfile

import numpy as np

FORMAT = "minivit-checkpoint-1"


class CheckpointError(ValueError):
    """A file that is not a readable minivit checkpoint."""


def _text(s):
    return np.array(str(s))


def save_npz_atomic(path, arrays):
    """np.savez to a temporary file next to ``path``, then rename it to ``path``."""
    tmp = f"{path}.{os.getpid()}.tmp"  # same folder, so the rename is atomic
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save(path, *, config, model_state, optim_state, epoch, rng_states, history, history_columns):
    arrays = {"format": _text(FORMAT), "config": _text(json.dumps(config)),
              "epoch": np.array(epoch, dtype=np.int64),
              "history": np.asarray(history, dtype=np.float64).reshape(-1, len(history_columns)),
              "history_columns": _text(json.dumps(list(history_columns)))}
    arrays.update({f"model/{k}": v for k, v in model_state.items()})
    arrays.update({f"optim/{k}": v for k, v in optim_state.items()})
    arrays.update({f"rng/{k}": _text(json.dumps(gen.bit_generator.state)) for k, gen in rng_states.items()})
    save_npz_atomic(path, arrays)


def load(path):
    """Read a checkpoint into a dict: path, config, epoch, model, optim, rng (state dicts), history,
    history_columns. Raises CheckpointError, naming the file, for anything else."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(
            f"{path}: not a readable .npz checkpoint (truncated or another format: {e})"
        ) from e
    fmt = arrays.get("format")
    if fmt is None or fmt.dtype.kind != "U" or str(fmt) != FORMAT:
        raise CheckpointError(f"{path}: not a minivit checkpoint (expected a 'format' entry {FORMAT!r})")
    try:
        return {
            "path": path,
            "config": json.loads(str(arrays["config"])),
            "epoch": int(arrays["epoch"]),
            "model": _prefixed(arrays, "model/"),
            "optim": _prefixed(arrays, "optim/"),
            "rng": {k: json.loads(str(v)) for k, v in _prefixed(arrays, "rng/").items()},
            "history": arrays["history"],
            "history_columns": json.loads(str(arrays["history_columns"])),
        }
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: damaged minivit checkpoint ({type(e).__name__}: {e})") from e


def _prefixed(arrays, prefix):
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

