"""What every chapter shares: its command line, where its figures go, and a matplotlib that needs
no screen and draws in minivit's one style (``minivit.viz.STYLE``).

A chapter calls ``args = chapter_args(FIGURES)`` once, naming every figure it draws with one line
on what it shows, and ``save(fig, name)`` per figure. ``--help`` prints the chapter's title and
that list; the figures go to ``tutorials/figures/`` unless the command line says ``--out DIR``,
and ``save`` refuses a name the chapter did not declare, so the list cannot drift from what it
draws. Run as a script, matplotlib draws with the Agg backend (PNG files, no window); opened as a
notebook it keeps the notebook's inline backend, so the figures also show under their cells
(``save`` shows the ones that minivit.viz makes without pyplot).
"""

import argparse
import os
import sys
import time

from minivit.kernels import tune_process

tune_process()  # a script opts in to process tuning (minivit.kernels.process), before NumPy loads

import matplotlib  # noqa: E402

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from minivit import viz  # noqa: E402

matplotlib.rcParams.update(viz.STYLE)  # a script opts in to the style of minivit's figures too

DEFAULT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures")
_chapter = {}  # what chapter_args parsed: the folder and the declared figures


def _title():
    """The chapter's title, from the first markdown cell of the script being run."""
    path = getattr(sys.modules["__main__"], "__file__", None)
    if path and path.endswith(".py"):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("# # "):
                    return line[4:].strip()
    return "A minivit tutorial chapter"


def chapter_args(figures, **options):
    """Parse the chapter's command line: ``--out DIR``, the folder for its figures (created), and
    ``options``, each a name and the keywords of its ``add_argument`` (``grids=dict(type=int)``
    is ``--grids``). ``figures``: {name: what it shows}, every PNG the chapter writes."""
    width = max(len(name) for name in figures) + 6
    listing = "\n".join(f"  {name + '.png':{width}} {what}" for name, what in figures.items())
    where = os.path.join(os.path.basename(os.path.dirname(DEFAULT_DIR)), "figures", "")  # tutorials/figures/
    parser = argparse.ArgumentParser(
        description=f"{_title()}\n\nRuns the chapter top to bottom and draws these figures, PNG files\n"
                    f"in the --out folder (default {where}):\n\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_DIR, metavar="DIR",
                        help=f"folder for the figures (default {where})")
    for name, keywords in options.items():
        parser.add_argument("--" + name.replace("_", "-"), **keywords)
    args, _ = parser.parse_known_args()  # a notebook kernel passes arguments of its own
    os.makedirs(args.out, exist_ok=True)
    _chapter.update(out=args.out, figures=figures)
    return args


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


def save(fig, name):
    """Write ``fig`` as ``name.png`` into the chapter's folder (``minivit.viz.save_figure``: the
    PNG of every minivit figure) and close it. ``name`` must be one the chapter declared."""
    if name not in _chapter.get("figures", ()):
        raise ValueError(f"{name!r} is not among the figures the chapter declared in chapter_args: "
                         f"{sorted(_chapter.get('figures', ()))}")
    path = os.path.join(_chapter["out"], f"{name}.png")
    viz.save_figure(fig, path)
    if "ipykernel" not in sys.modules:
        plt.close(fig)
    elif fig.canvas.manager is None:  # a minivit.viz figure, made without pyplot: show it here
        from IPython.display import display

        display(fig)
    print(f"wrote {path}")
    return path
