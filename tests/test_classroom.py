"""The classroom: assignments built from the library's own marked regions, and their grader.

For every assignment: the teacher's version scores full marks; the student's imports cleanly,
runs without kernels, holds no solution line and scores zero; a solution pasted into one task
of it gains exactly that task's points; each known mistake loses points with its own message.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from minivit.classroom import assignments, build, grade, mistakes, notebook, regions

ROOT = grade.library_root()
OWN = regions.find_regions(ROOT)
NAMES = list(assignments.ASSIGNMENTS)
TASKS = [t for t, task in assignments.TASKS.items() if task.uses is None]  # those with a region
SEED = 7


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{(assignment, "student" | "teacher"): folder}, built once."""
    base = tmp_path_factory.mktemp("classroom")
    out = {}
    for name in NAMES:
        for kind in ("student", "teacher"):
            out[name, kind] = str(base / f"{name}-{kind}")
            build.build(name, out[name, kind], solution=kind == "teacher")
    return out


def total(folder, **kw):
    a, seed, checks, feedback = grade.grade(folder, seed=SEED, **kw)
    by_task = {t.id: sum(c.score for c in checks if c.name.startswith(t.id + ":")) for t in a.tasks
               if any(c.name.startswith(t.id + ":") for c in checks)}
    return by_task, feedback


def test_every_task_has_exactly_one_solution_region_and_known_mistakes():
    assert set(TASKS) <= set(OWN) and len(TASKS) >= 20
    for task in assignments.TASKS.values():
        assert set(task.uses or ()) <= set(TASKS)
    assert all(OWN[t].kind == "SOLUTION" for t in TASKS)
    assert set(mistakes.MISTAKES) == set(TASKS)
    for task_id, known in mistakes.MISTAKES.items():
        assert known, f"{task_id} has no known mistakes"
        body = regions.read_body(ROOT, OWN[task_id])
        for m in known:
            assert mistakes.mistaken_body(body, m) != body


@pytest.mark.parametrize("name", NAMES)
def test_teacher_version_scores_full_marks(folders, name):
    by_task, feedback = total(folders[name, "teacher"])
    assert by_task == {t.id: t.points for t in assignments.get(name).tasks}
    assert feedback == {}


@pytest.mark.parametrize("name", NAMES)
def test_student_version_scores_zero_and_names_each_task(folders, name):
    by_task, _ = total(folders[name, "student"])
    assert set(by_task.values()) == {0.0}
    a, _, checks, _ = grade.grade(folders[name, "student"], seed=SEED)
    for t in a.tasks:
        expected = [f"NotImplementedError: Task {u}" for u in t.uses or (t.id,)]
        assert any(e in c.output for e in expected for c in checks if c.name.startswith(t.id))


@pytest.mark.parametrize("name", NAMES)
def test_student_version_imports_cleanly_with_kernels_off(folders, name):
    code = ("import minivit, minivit.nn, minivit.models, minivit.train; from minivit import kernels; "
            "print(kernels.enabled(), len(kernels.fast_paths()))")
    env = {k: v for k, v in os.environ.items() if k != "MINIVIT_KERNELS"}
    res = subprocess.run([sys.executable, "-c", code], cwd=folders[name, "student"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "0"]


@pytest.mark.parametrize("name", NAMES)
def test_no_solution_line_remains_in_the_student_version(folders, name):
    """Each code line of the assignment's regions occurs in the student's package only as often as
    the library has it outside those regions (``if bias is not None:`` is everywhere)."""

    def code_lines(package, files=None):
        lines = []
        for f in files or regions.package_files(package):
            text = open(os.path.join(package, f)).read()
            lines += [line.split("#")[0].strip() for line in text.split("\n")]
        return [line for line in lines if line]

    package = os.path.join(folders[name, "student"], "minivit")
    theirs, library = code_lines(package), code_lines(ROOT)
    in_regions = [line.split("#")[0].strip() for t in assignments.get(name).tasks if t.uses is None
                  for line in regions.read_body(ROOT, OWN[t.id]) if line.split("#")[0].strip()]
    kept = set(os.listdir(os.path.join(package, "kernels"))) | {"mistakes.py"}
    shipped = code_lines(ROOT, [f for f in regions.package_files(ROOT)
                                if not (f.startswith("kernels") and os.path.basename(f) not in kept)
                                and f != os.path.join("classroom", "mistakes.py")])
    for line in set(in_regions):
        assert theirs.count(line) == shipped.count(line) - in_regions.count(line), line
    assert library.count(in_regions[0]) > theirs.count(in_regions[0])
    assert not os.path.exists(os.path.join(package, "classroom", "mistakes.py"))


@pytest.mark.parametrize("task_id", TASKS)
def test_pasting_one_solution_gains_exactly_that_tasks_points(folders, tmp_path, task_id):
    name = task_id.split(".")[0]
    folder = str(tmp_path / "submission")
    subprocess.run(["cp", "-r", folders[name, "student"], folder], check=True)
    regions.rewrite(os.path.join(folder, "minivit"), {task_id: regions.read_body(ROOT, OWN[task_id])},
                    markers="TASK")
    by_task, _ = total(folder)
    assert by_task[task_id] == assignments.TASKS[task_id].points
    assert sum(by_task.values()) == assignments.TASKS[task_id].points


@pytest.mark.parametrize("task_id, index", [(t, i) for t in TASKS for i in range(len(mistakes.MISTAKES[t]))])
def test_each_known_mistake_loses_points_with_its_message(folders, tmp_path, task_id, index):
    name = task_id.split(".")[0]
    folder = str(tmp_path / "submission")
    subprocess.run(["cp", "-r", folders[name, "teacher"], folder], check=True)
    m = mistakes.MISTAKES[task_id][index]
    regions.rewrite(os.path.join(folder, "minivit"),
                    {task_id: mistakes.mistaken_body(regions.read_body(ROOT, OWN[task_id]), m)})
    by_task, feedback = total(folder, tasks=[t for t in TASKS if t.startswith(name + ".")])  # no training
    assert by_task[task_id] < assignments.TASKS[task_id].points
    assert feedback == {task_id: m.message}
    assert all(points == assignments.TASKS[t].points for t, points in by_task.items() if t != task_id)


def test_gradescope_results_and_the_command_line(folders, tmp_path):
    out = tmp_path / "results.json"
    res = subprocess.run([sys.executable, "-m", "minivit", "assignment", "grade", folders["a1", "teacher"],
                          "--seed", "3", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    top = sum(t.points for t in assignments.get("a1").tasks)
    assert f"total {top:.2f} / {top}" in res.stdout
    r = json.loads(out.read_text())
    assert r["score"] == top and sum(t["max_score"] for t in r["tests"]) == top
    assert {"name", "score", "max_score", "output"} <= set(r["tests"][0])
    listed = subprocess.run([sys.executable, "-m", "minivit", "assignment", "list"], capture_output=True,
                            text=True, timeout=120)
    assert all(t in listed.stdout for t in TASKS)
    again = subprocess.run([sys.executable, "-m", "minivit", "assignment", "build", "a1", "--out",
                            folders["a1", "teacher"]], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "is not empty" in again.stderr


def test_a_students_copy_cannot_grade(folders):
    res = subprocess.run([sys.executable, "-m", "minivit", "assignment", "grade", "."],
                         cwd=folders["a1", "student"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "is a student's copy" in res.stderr


def test_region_markers_must_pair(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n    ### BEGIN SOLUTION x.y\n    return 1\n")
    with pytest.raises(ValueError, match=r"m.py:2: region x.y has no END marker"):
        regions.find_regions(str(tmp_path))
    (tmp_path / "m.py").write_text("    ### END SOLUTION\n")
    with pytest.raises(ValueError, match=r"m.py:1: END marker without a BEGIN"):
        regions.find_regions(str(tmp_path))


@pytest.mark.parametrize("name", NAMES)
def test_public_tests_pass_for_the_teacher_and_fail_for_the_student(folders, name):
    results = {}
    for kind in ("teacher", "student"):
        res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", "-k",
                              "not train"],  # a3.train's run is the teacher-version grade's
                             cwd=folders[name, kind], capture_output=True, text=True, timeout=300)
        results[kind] = res
    n = len([t for t in assignments.get(name).tasks if not t.id.endswith(".train")])
    assert results["teacher"].returncode == 0 and f"{n} passed" in results["teacher"].stdout
    assert f"{n} failed" in results["student"].stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_teachers_notebook_runs_top_to_bottom(folders, name):
    """The solution folder's notebook, its code cells run in order as one script."""
    folder = folders[name, "teacher"]
    nb = json.load(open(os.path.join(folder, assignments.get(name).notebook.replace(".py", ".ipynb"))))
    code = "\n\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    res = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "MPLBACKEND": "Agg"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("shapes right") == len([t for t in assignments.get(name).tasks if t.uses is None])


def test_notebooks_have_the_cells_jupytext_finds(tmp_path):
    """Every chapter and assignment script becomes a notebook with jupytext's cells, valid nbformat 4."""
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")  # installed with jupytext
    tutorials = os.path.join(os.path.dirname(ROOT), "tutorials")
    written = notebook.write_chapters(tutorials, str(tmp_path))
    assert (tmp_path / "common.py").exists() and len(written) >= 10
    scripts = [os.path.join(tutorials, os.path.basename(p)[:-6] + ".py") for p in written]
    scripts += [os.path.join(ROOT, "classroom", "notebooks", a.notebook)
                for a in assignments.ASSIGNMENTS.values()]
    for script in scripts:
        ours = notebook.to_notebook(open(script).read())
        theirs = jupytext.reads(open(script).read(), fmt="py:percent")
        assert [c["cell_type"] for c in ours["cells"]] == [c.cell_type for c in theirs.cells], script
        assert ["".join(c["source"]).strip() for c in ours["cells"]] == [c.source.strip()
                                                                           for c in theirs.cells]
        nbformat.validate(nbformat.from_dict(ours))


def test_teachers_page_lists_every_task_with_its_points():
    page = open(os.path.join(os.path.dirname(ROOT), "docs", "teachers.md")).read()
    listed = {}
    for row in page.split("\n"):
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("a") and cells[2][:1].isdigit():
            ids = re.findall(r"\b(a\d\.[a-z_.]*[a-z])", cells[1])
            listed.update(zip(ids, (int(p) for p in cells[2].split(", ")), strict=True))
    assert listed == {t.id: t.points for t in assignments.TASKS.values()}


def test_the_chapters_as_notebooks_from_the_command_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "minivit", "notebooks", "--out", str(tmp_path)],
                         cwd=os.path.dirname(ROOT), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    chapters = sorted(p.name for p in tmp_path.glob("*.ipynb"))
    assert chapters[0] == "01_patch_embedding.ipynb" and len(chapters) >= 10
    nb = json.loads((tmp_path / chapters[0]).read_text())
    assert nb["nbformat"] == 4 and nb["cells"][0]["cell_type"] == "markdown"
    assert (tmp_path / "common.py").exists()
