"""The bodies a student writes, marked in minivit's own source: one source of truth.

A region is the lines between two marker comments, nbgrader's convention with a task id: a
line ``### BEGIN SOLUTION <task>`` (``a1.layernorm.backward``, say), the library's own code, a
line ``### END SOLUTION``. In a student's copy the same lines read ``### BEGIN TASK <task>`` ...
``### END TASK`` around ``raise NotImplementedError("Task <task>: ...")``, and the student
writes the body there. The grader reads each region's body out of the student's copy by its id
and puts it into a fresh copy of the library, one task at a time (``minivit.classroom.grade``).
"""

import os
import re
from collections import namedtuple

_BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN (?P<kind>SOLUTION|TASK) (?P<task>[a-z0-9_.]+)[ \t]*$")
_END = re.compile(r"^[ \t]*### END (?:SOLUTION|TASK)[ \t]*$")

Region = namedtuple("Region", "task path begin end indent kind")  # path relative to the package;
# lines[begin] is the BEGIN marker, lines[end] the END marker, the body between; kind SOLUTION or TASK


def package_files(root):
    """Every .py file of the package folder ``root``, as paths relative to it, sorted."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found += [os.path.relpath(os.path.join(folder, f), root) for f in files if f.endswith(".py")]
    return sorted(found)


def find_regions(root):
    """{task id: Region} over the package folder ``root``. A marker without its partner, a nested
    region or a task id used twice is a ValueError naming the file and line."""
    regions = {}
    for rel in package_files(root):
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            lines = f.read().split("\n")
        open_at = None
        for i, line in enumerate(lines):
            begin, end = _BEGIN.match(line), _END.match(line)
            where = f"{rel}:{i + 1}"
            if begin:
                if open_at is not None:
                    raise ValueError(f"{where}: a region begins inside region {open_at.group('task')}")
                open_at, open_line = begin, i
            elif end:
                if open_at is None:
                    raise ValueError(f"{where}: END marker without a BEGIN")
                task = open_at.group("task")
                if task in regions:
                    raise ValueError(f"{where}: task {task} is marked twice ({regions[task].path} too)")
                regions[task] = Region(task, rel, open_line, i, *open_at.group("indent", "kind"))
                open_at = None
        if open_at is not None:
            raise ValueError(f"{rel}:{open_line + 1}: region {open_at.group('task')} has no END marker")
    return regions


def read_body(root, region):
    """The lines between a region's markers, in the file under ``root``."""
    with open(os.path.join(root, region.path), encoding="utf-8") as f:
        return f.read().split("\n")[region.begin + 1:region.end]


def rewrite(root, bodies, markers="SOLUTION"):
    """Replace the bodies of the regions ``bodies`` ({task id: list of lines}) in the package
    folder ``root``, in place, with markers of the given kind ("SOLUTION" or "TASK")."""
    regions = find_regions(root)
    by_file = {}
    for task in bodies:
        by_file.setdefault(regions[task].path, []).append(regions[task])
    for rel, in_file in by_file.items():
        path = os.path.join(root, rel)
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        for r in sorted(in_file, key=lambda r: r.begin, reverse=True):  # from the bottom: lines stay put
            lines[r.begin:r.end + 1] = ([f"{r.indent}### BEGIN {markers} {r.task}"] + list(bodies[r.task])
                                        + [f"{r.indent}### END {markers}"])
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))


def stub(region, hint):
    """The student's starting body: one line that says which task this is and what it computes."""
    return [f"{region.indent}raise NotImplementedError({f'Task {region.task}: {hint}'!r})"]
