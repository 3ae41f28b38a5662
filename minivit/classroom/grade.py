"""Grade a student's folder task by task, each task alone.

For task T the grader takes the body the student wrote between T's markers and puts it into a
fresh copy of the library, where every other region keeps the library's own code; it imports
that copy as a package of its own, with the kernels off, and runs T's probe on it and on the
library with the same hidden inputs (a seed drawn per grading, printed, or ``--seed``). So one
task's failure can never cost another task its points, and a solution pasted into one task
gains exactly that task's points.

A task's points are split over its checks:

* runs: the code runs and returns arrays of the right shapes (1/4);
* matches: equal to the library's own on the hidden inputs, to 1e-7 of their scale (1/2; 3/4
  for a task with no third check);
* gradient check (backward tasks): the backward against central differences of the forward,
  worst relative error below 1e-6 (1/4); or properties (forward tasks): what must hold of any
  correct code (1/4).

A task that loses points is run again as each of its known mistakes (``mistakes.MISTAKES``);
when the student's code behaves exactly like one of them, its message says what the mistake is.
"""

import importlib.util
import itertools
import os
import shutil
import sys
import tempfile
import traceback
from collections import namedtuple

import numpy as np

from . import assignments, regions

TOL_VALUES, TOL_GRAD = 1e-7, 1e-6
Check = namedtuple("Check", "name score max_score output")
_counter = itertools.count()


def library_root():
    """The folder of the minivit package that is grading (the teacher's, with every solution)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Variants:
    """Copies of the library with some region bodies replaced, each imported as its own package
    (kernels off), cleaned up on ``close``."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="minivit-grade-")
        self.names = []

    def load(self, bodies):
        """The library with ``bodies`` ({task id: lines}) in place of its own, as a module."""
        name = f"_minivit_variant_{next(_counter)}"
        root = os.path.join(self.folder, name)
        shutil.copytree(library_root(), root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        regions.rewrite(root, bodies)
        spec = importlib.util.spec_from_file_location(name, os.path.join(root, "__init__.py"),
                                                      submodule_search_locations=[root])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        self.names.append(name)
        spec.loader.exec_module(module)
        importlib.import_module(f"{name}.kernels").use(False)  # the student's code is the code that runs
        return module

    def close(self):
        for name in self.names:
            for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
                del sys.modules[key]
        shutil.rmtree(self.folder, ignore_errors=True)


def _error(exc):
    """One line for an exception: its type and message, as a student needs it."""
    return "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]


def probe(task, load, seed):
    """Run ``task``'s probe on the package that ``load()`` returns; a Probe, or the error as a string."""
    try:
        with np.errstate(all="ignore"):
            return task.probe(load(), np.random.default_rng(seed))
    except Exception as exc:  # the student's code may raise anything; the grade says what
        return _error(exc)


def _same(a, b):
    """Whether two probe results are the same behaviour: the same error, or equal outputs and
    properties."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if a.outputs.keys() != b.outputs.keys() or a.properties != b.properties:
        return False
    return all(np.shape(a.outputs[k]) == np.shape(b.outputs[k])
               and _distance(a.outputs[k], b.outputs[k]) <= TOL_VALUES for k in a.outputs)


def _distance(got, want):
    """max |got - want| relative to the scale of ``want``; inf where either is not finite."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if not (np.all(np.isfinite(got)) and np.all(np.isfinite(want))):
        return np.inf if not np.array_equal(got, want, equal_nan=True) else 0.0
    return float(np.abs(got - want).max(initial=0.0) / max(np.abs(want).max(initial=0.0), 1e-12))


def score(task, got, want):
    """The checks of one task: the student's probe ``got`` against the library's ``want`` (None
    for a task with nothing to compare, graded on its properties: runs 1/4, properties 3/4)."""
    if want is None:
        third, shares = "properties", {"runs": 0.25, "properties": 0.75}
    else:
        third = "gradient check" if want.grad_error is not None else "properties" if want.properties else None
        shares = {"runs": 0.25, "matches": 0.5 if third else 0.75} | ({third: 0.25} if third else {})
    checks = []

    def add(name, ok, output):
        checks.append(Check(f"{task.id}: {name}", task.points * shares[name] if ok else 0.0,
                            task.points * shares[name], output))

    if isinstance(got, str):
        for name in shares:
            add(name, False, f"raised {got}")
        return checks
    wrong = {k: (np.shape(got.outputs.get(k)), s) for k, s in got.shapes.items()
             if np.shape(got.outputs.get(k)) != tuple(s)}
    add("runs", not wrong, "ran; shapes as expected" if not wrong else "; ".join(
        f"{k} has shape {g}, expected {tuple(s)}" for k, (g, s) in wrong.items()))
    if want is not None:
        far = {k: _distance(got.outputs[k], want.outputs[k]) for k in want.outputs
               if k in got.outputs and np.shape(got.outputs[k]) == np.shape(want.outputs[k])}
        bad = sorted(k for k in want.outputs if far.get(k, np.inf) > TOL_VALUES)
        add("matches", not bad, "equal to the library's on the hidden inputs" if not bad else "; ".join(
            f"{k} differs from the library's by {far[k]:.1e} of its scale" if k in far
            else f"{k} has the wrong shape" for k in bad))
    if third == "gradient check":
        ok = got.grad_error is not None and got.grad_error < TOL_GRAD
        add(third, ok, f"worst relative error {got.grad_error:.1e} (bar {TOL_GRAD:.0e})")
    elif third == "properties":
        failed = [p for p, holds in got.properties.items() if not holds]
        add(third, not failed, ("all hold: " if not failed else "does not hold: ") + "; ".join(
            failed or got.properties))
    return checks


def grade(folder, assignment=None, seed=None, tasks=None):
    """Grade the student's ``folder`` (as ``build`` wrote it), every task of its assignment or the
    ``tasks`` named. Returns (assignment, seed, checks, feedback): the Check list of the tasks, and
    {task id: message} for recognised mistakes."""
    info = read_info(folder)
    a = assignments.get(assignment or info["assignment"])
    chosen = [t for t in a.tasks if tasks is None or t.id in tasks]
    unknown = sorted(set(tasks or ()) - {t.id for t in a.tasks})
    if unknown:
        raise ValueError(f"no task {', '.join(unknown)} in {a.name}; its tasks: "
                         f"{', '.join(t.id for t in a.tasks)}")
    seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else seed
    student_root = os.path.join(folder, "minivit")
    theirs = regions.find_regions(student_root)
    own = regions.find_regions(library_root())
    unsolved = [r.task for r in own.values() if r.kind != "SOLUTION"]
    if unsolved:
        raise ValueError(f"the minivit that is grading ({library_root()}) is a student's copy (tasks "
                         f"{', '.join(unsolved)}): grade with the library itself, from outside the folder")
    from . import mistakes  # the teacher's: a student's copy has none

    variants = Variants()
    try:
        solution = []

        def library():
            if not solution:
                solution.append(variants.load({}))
            return solution[0]

        checks, feedback = [], {}
        for task in chosen:
            want = None
            if task.uses is None:
                want = probe(task, library, seed)
                if isinstance(want, str):
                    raise RuntimeError(f"the library's own {task.id} failed its probe: {want}")
            missing = [t for t in task.uses or (task.id,) if t not in theirs]
            if missing:
                checks += score(task, f"the markers of task {', '.join(missing)} are missing from the "
                                      "submission", want)
                continue
            bodies = {t: regions.read_body(student_root, theirs[t]) for t in task.uses or (task.id,)}
            got = probe(task, lambda b=bodies: variants.load(b), seed)
            task_checks = score(task, got, want)
            checks += task_checks
            if sum(c.score for c in task_checks) < task.points:
                for m in mistakes.MISTAKES.get(task.id, []):
                    wrong = mistakes.mistaken_body(regions.read_body(library_root(), own[task.id]), m)
                    if _same(got, probe(task, lambda w=wrong, t=task: variants.load({t.id: w}), seed)):
                        feedback[task.id] = m.message
                        break
        return a, seed, checks, feedback
    finally:
        variants.close()


def read_info(folder):
    """The assignment.json that ``build`` wrote into a student's folder."""
    import json

    path = os.path.join(folder, "assignment.json")
    if not os.path.isdir(os.path.join(folder, "minivit")) or not os.path.isfile(path):
        raise ValueError(f"{folder} is not an assignment folder: expected minivit/ and assignment.json in it "
                         "(as python -m minivit assignment build writes them)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def gradescope(a, seed, checks, feedback):
    """The grade in Gradescope's autograder format (results.json): score, and a test per check."""
    tests = []
    for c in checks:
        task = c.name.split(":")[0]
        note = f" Likely mistake: {feedback[task]}." if task in feedback and c.score < c.max_score else ""
        tests.append({"name": c.name, "score": round(c.score, 4), "max_score": c.max_score,
                      "output": c.output + note})
    return {"score": round(sum(c.score for c in checks), 4), "tests": tests,
            "output": f"{a.name}: {a.title} (hidden inputs from seed {seed})"}


def report(a, seed, checks, feedback):
    """The grade as text: a line per task with its points, then what each lost point was for."""
    lines = [f"{a.name}: {a.title}", f"hidden inputs from seed {seed}", ""]
    graded = [t for t in a.tasks if any(c.name.startswith(t.id + ":") for c in checks)]
    for task in graded:
        mine = [c for c in checks if c.name.startswith(task.id + ":")]
        got = sum(c.score for c in mine)
        lines.append(f"{task.id:<24} {got:5.2f} / {task.points}  {task.title}")
        lost = {}  # output -> the checks that lost points with it (an error is one line, not three)
        for c in mine:
            if c.score < c.max_score:
                lost.setdefault(c.output, []).append(c.name.split(": ", 1)[1])
        lines += [f"    {', '.join(names)}: {output}" for output, names in lost.items()]
        if task.id in feedback:
            lines.append(f"    likely mistake: {feedback[task.id]}")
    total, top = sum(c.score for c in checks), sum(t.points for t in graded)
    lines += ["", f"total {total:.2f} / {top}"]
    return "\n".join(lines)
