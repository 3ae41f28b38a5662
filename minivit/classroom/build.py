"""Write an assignment's folder: the package with the assignment's regions turned into tasks,
its notebook, its public tests and ``assignment.json``.

The student version replaces each region of the assignment with a one-line
``raise NotImplementedError("Task <id>: ...")`` between ``### BEGIN TASK`` / ``### END TASK``
markers; regions of other assignments keep the library's code, so earlier work is given. Its
kernels are off by default and its fast paths left out (they compute the same math), so that
the student's code is the code that runs; so is the grader's list of known mistakes, whose
edits quote the solutions. ``solution=True`` keeps every body and file: the teacher's version.
"""

import json
import os
import shutil

from . import assignments, regions
from .grade import library_root
from .notebook import write_notebook

KERNELS_DEFAULT = 'os.environ.get("MINIVIT_KERNELS", "1")'  # in minivit/kernels/__init__.py
KEPT_KERNELS = {"__init__.py", "process.py", "threads.py"}  # the switch and the process tuning
TEACHERS_ONLY = ["classroom/mistakes.py"] + sorted(
    os.path.join("kernels", f) for f in os.listdir(os.path.join(library_root(), "kernels"))
    if f.endswith(".py") and f not in KEPT_KERNELS)  # the fast paths: the same math, written fast
PUBLIC_TESTS = '''"""Public checks of {name} (shapes, properties, the gradient check of your own forward and
backward): python -m pytest -q tests. The grade also compares with the solution on hidden inputs."""

import pytest

from minivit.classroom import check

TASKS = {tasks!r}


@pytest.mark.parametrize("task", TASKS)
def test_task(task):
    check(task)
'''


def build(name, out, solution=False):
    """Write assignment ``name`` into the new folder ``out``; returns the files written."""
    a = assignments.get(name)
    if os.path.exists(out) and os.listdir(out):
        raise ValueError(f"{out} exists and is not empty: choose a new folder (nothing is overwritten)")
    staging = out.rstrip(os.sep) + ".partial"
    if os.path.exists(staging):
        shutil.rmtree(staging)
    package = os.path.join(staging, "minivit")
    shutil.copytree(library_root(), package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    marked = regions.find_regions(package)
    written = [t for t in a.tasks if t.uses is None]  # the tasks with a region of their own
    missing = [t.id for t in written if t.id not in marked]
    if missing:
        raise RuntimeError(f"tasks without a region in the source: {', '.join(missing)}")
    if solution:
        regions.rewrite(package, {t.id: regions.read_body(package, marked[t.id]) for t in written})
    else:
        regions.rewrite(package, {t.id: regions.stub(marked[t.id], t.hint) for t in written}, markers="TASK")
        _kernels_off(package)
        for path in TEACHERS_ONLY:  # they spell out the solutions
            os.remove(os.path.join(package, path))
    write_notebook(os.path.join(os.path.dirname(__file__), "notebooks", a.notebook),
                   os.path.join(staging, a.notebook.replace(".py", ".ipynb")))
    os.makedirs(os.path.join(staging, "tests"))
    with open(os.path.join(staging, "tests", f"test_{a.name}.py"), "w", encoding="utf-8") as f:
        f.write(PUBLIC_TESTS.format(name=a.name, tasks=[t.id for t in a.tasks]))
    with open(os.path.join(staging, "assignment.json"), "w", encoding="utf-8") as f:
        json.dump({"assignment": a.name, "title": a.title, "solution": solution,
                   "tasks": {t.id: t.points for t in a.tasks}}, f, indent=1)
    if os.path.exists(out):
        os.rmdir(out)  # empty, checked above
    os.replace(staging, out)  # all or nothing: the folder appears complete
    return sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)


def _kernels_off(package):
    path = os.path.join(package, "kernels", "__init__.py")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.count(KERNELS_DEFAULT) != 1:
        raise RuntimeError(f"expected {KERNELS_DEFAULT} once in minivit/kernels/__init__.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(KERNELS_DEFAULT, KERNELS_DEFAULT.replace('"1"', '"0"')))
