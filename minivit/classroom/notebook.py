"""Percent-format scripts (``# %%`` cells, jupytext's "percent" format) as Jupyter notebooks.

The chapters in tutorials/ and the assignments' notebooks are plain Python files that run top to
bottom; ``write_notebook`` turns one into an .ipynb (nbformat 4) whose cells are its ``# %%``
cells: ``# %% [markdown]`` cells become markdown, with the leading ``# `` of each line taken off.
``python -m minivit notebooks --out DIR`` writes every chapter.
"""

import json
import os
import re
import shutil

_CELL = re.compile(r"^# %%(?P<rest>.*)$")


def cells(text):
    """[(kind, source lines)] of a percent-format script; code before the first marker is a cell."""
    found, kind, lines = [], "code", []
    for line in text.split("\n"):
        m = _CELL.match(line)
        if m:
            found.append((kind, lines))
            kind, lines = ("markdown" if "[markdown]" in m.group("rest") else "code"), []
        else:
            lines.append(line)
    found.append((kind, lines))
    out = []
    for kind, lines in found:
        while lines and not lines[0].strip():
            lines = lines[1:]
        while lines and not lines[-1].strip():
            lines = lines[:-1]
        if kind == "markdown":
            lines = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines]
        if lines:
            out.append((kind, lines))
    return out


def to_notebook(text):
    """The nbformat-4 dict of a percent-format script."""
    nb_cells = []
    for kind, lines in cells(text):
        source = [line + "\n" for line in lines[:-1]] + [lines[-1]]
        cell = {"cell_type": kind, "id": f"cell-{len(nb_cells)}", "metadata": {}, "source": source}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        nb_cells.append(cell)
    return {"cells": nb_cells, "metadata": {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}


def write_notebook(script, path):
    """Write the notebook of the percent-format ``script`` to ``path``."""
    with open(script, encoding="utf-8") as f:
        nb = to_notebook(f.read())
    with open(path, "w", encoding="utf-8") as f:
        json.dump(nb, f, indent=1)
        f.write("\n")
    return path


def write_chapters(tutorials, out):
    """Every tutorials/NN_*.py chapter as out/NN_*.ipynb, with the chapters' common.py beside them
    (they import it); returns the notebooks written."""
    names = sorted(n for n in os.listdir(tutorials) if re.match(r"\d\d_.*\.py$", n))
    if not names:
        raise ValueError(f"no chapters (NN_name.py) in {tutorials}")
    os.makedirs(out, exist_ok=True)
    if os.path.abspath(out) != os.path.abspath(tutorials):
        shutil.copyfile(os.path.join(tutorials, "common.py"), os.path.join(out, "common.py"))
    return [write_notebook(os.path.join(tutorials, n), os.path.join(out, n[:-3] + ".ipynb")) for n in names]
