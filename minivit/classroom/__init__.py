"""Classroom assignments cut out of minivit's own code, and their autograder.

* ``regions``: the marked bodies in the layer files (``### BEGIN SOLUTION <task>``);
* ``assignments``: the assignments, their tasks, points, checks and known mistakes;
* ``build``: a student's (or the teacher's) folder: package, notebook, public tests;
* ``grade``: grading a folder task by task, as text or as Gradescope's results.json;
* ``notebook``: percent-format scripts (chapters, assignments) as .ipynb.

``python -m minivit assignment list | build | grade`` is the command line; docs/teachers.md the
guide. ``check(task)`` is what a student's notebook and public tests call; ``start_notebook()``
is the first call of each assignment's notebook.
"""

import sys

import numpy as np

from . import assignments

__all__ = ["check", "start_notebook"]


def start_notebook():
    """Set up an assignment's notebook: under Jupyter, reload minivit's files whenever the student
    edits them (IPython's autoreload); everywhere, pyplot draws in minivit's one figure style."""
    import matplotlib.pyplot as plt

    from .. import viz

    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    if shell is not None:
        shell.run_line_magic("load_ext", "autoreload")
        shell.run_line_magic("autoreload", "2")
    plt.rcParams.update(viz.STYLE)


def check(task_id, seed=0):
    """Run a task's public checks on this minivit (the student's own copy): shapes, properties,
    and for a backward task the gradient check of the student's forward and backward together.
    Prints what passed; raises AssertionError saying what did not. The grade also compares with
    the library's own code on hidden inputs, which this cannot."""
    from .. import kernels
    from .grade import TOL_GRAD

    if task_id not in assignments.TASKS:
        raise ValueError(f"unknown task {task_id!r}; expected one of {', '.join(assignments.TASKS)}")
    task = assignments.TASKS[task_id]
    package = sys.modules[__name__.rsplit(".", 1)[0]]  # this minivit, whichever folder it is in
    previous = kernels.use(False)
    try:
        with np.errstate(all="ignore"):
            p = task.probe(package, np.random.default_rng(seed))
    finally:
        kernels.use(previous)
    problems = [f"{k} has shape {np.shape(p.outputs.get(k))}, expected {tuple(s)}"
                for k, s in p.shapes.items() if np.shape(p.outputs.get(k)) != tuple(s)]
    problems += [f"does not hold: {name}" for name, holds in p.properties.items() if not holds]
    if p.grad_error is not None and not p.grad_error < TOL_GRAD:
        problems.append(f"gradient check: worst relative error {p.grad_error:.1e} (bar {TOL_GRAD:.0e})")
    if problems:
        raise AssertionError(f"{task_id}: " + "; ".join(problems))
    extra = f", gradient check {p.grad_error:.1e}" if p.grad_error is not None else ""
    print(f"{task_id}: shapes right{', properties hold' if p.properties else ''}{extra}")
