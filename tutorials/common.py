"""What every chapter shares: where its figures go, and a matplotlib that needs no screen.

A chapter calls ``out = figure_dir()`` once and ``save(fig, out, "name")`` per figure. The
directory is ``tutorials/figures/`` unless the command line says ``--out DIR``. Run as a
script, matplotlib draws with the Agg backend (PNG files, no window); opened as a notebook it
keeps the notebook's inline backend, so the figures also show under their cells (``save``
shows the ones that minivit.viz makes without pyplot).
"""

import argparse
import io
import os
import sys
import time

from minivit.kernels import tune_process

tune_process()  # a script opts in to process tuning (minivit.kernels.process), before NumPy loads

import matplotlib  # noqa: E402

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DEFAULT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures")


def figure_dir():
    """The folder for this run's figures (created): ``--out DIR``, else tutorials/figures."""
    parser = argparse.ArgumentParser(description="Run a minivit tutorial chapter.")
    parser.add_argument("--out", default=DEFAULT_DIR, help="folder for the PNG figures")
    args, _ = parser.parse_known_args()  # a notebook kernel passes arguments of its own
    os.makedirs(args.out, exist_ok=True)
    return args.out


def time_forward_backward(layer, x, most=5, budget=2.0):
    """(median seconds, runs) of ``layer.forward(x)`` then ``layer.backward(ones)``: at most ``most``
    runs, fewer once ``budget`` seconds are spent (at least one). Chapters 9 and 10 time layers so."""
    import numpy as np

    dout, times = np.ones_like(x), []
    while len(times) < most and sum(times) < budget:
        start = time.perf_counter()
        layer.forward(x)
        layer.backward(dout)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), len(times)


def save(fig, out, name):
    """Write ``fig`` as ``out/name.png`` and close it.

    Kept small for the docs: 80 dpi, colours reduced to a 256-entry palette.
    """
    from PIL import Image

    path = os.path.join(out, f"{name}.png")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    image = Image.open(buf).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    image.save(path, optimize=True)
    if "ipykernel" not in sys.modules:
        plt.close(fig)
    elif fig.canvas.manager is None:  # a minivit.viz figure, made without pyplot: show it here
        from IPython.display import display

        display(fig)
    print(f"wrote {path}")
    return path
