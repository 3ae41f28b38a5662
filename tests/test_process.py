"""Process tuning is opt-in: importing minivit changes nothing; tune_process (the command line,
the benchmarks, the tutorials) sets OPENBLAS_THREAD_TIMEOUT before NumPy loads and makes glibc's
malloc keep freed memory, which stops a step's arrays from faulting their pages in afresh."""

import os
import platform
import subprocess
import sys

import pytest

from minivit.kernels import process

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_STEPS = """
import os, resource, sys
{prologue}
import minivit, numpy as np
minivit.create_model("vit_digits", depth=1).forward(np.zeros((2, 1, 8, 8), np.float32))  # use it
sizes = [3 << 20, 9 << 20, 7 << 20, 1 << 20, 5 << 20] * 4  # bytes: a step's arrays, 100 MiB
def step():
    arrays = [np.ones(n // 4, np.float32) for n in sizes]  # allocated, written, freed
    del arrays
step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) // 5
print(os.environ.get("OPENBLAS_THREAD_TIMEOUT"), faults)
"""


def _run(prologue="", **env):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "OPENBLAS_THREAD_TIMEOUT")} | env
    out = subprocess.run([sys.executable, "-c", _STEPS.format(prologue=prologue)], env=env,
                         capture_output=True, text=True, check=True, cwd=REPO, timeout=120)
    timeout, faults = out.stdout.split()
    return timeout, int(faults)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_import_changes_nothing_and_tune_process_stops_the_page_faults():
    """Steps that allocate and free the same arrays: glibc's defaults fault every page in afresh
    each step; tuned, the pages are reused. A MALLOC_* variable of the user's opts out."""
    timeout, n_default = _run()  # import minivit and use it: no setting changed
    assert timeout == "None" and n_default >= 20
    tune = "from minivit.kernels import tune_process; print(tune_process(), file=sys.stderr)"
    timeout, n_tuned = _run(tune)
    assert timeout == "4" and n_tuned * 10 <= n_default, (n_tuned, n_default)
    timeout, n_user = _run(tune, MALLOC_ARENA_MAX="8", OPENBLAS_THREAD_TIMEOUT="7")  # the user's wins
    assert timeout == "7" and n_user >= 20


def test_the_command_line_opts_in_before_numpy_loads():
    code = "import minivit.__main__ as m, sys; print(m.PROCESS['openblas_thread_timeout'])"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=REPO, timeout=120)
    assert out.stdout.strip() == "4"


def test_too_late_for_the_openblas_timeout_once_numpy_has_loaded(monkeypatch):
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    assert "numpy" in sys.modules
    monkeypatch.setattr(process, "keep_freed_memory", lambda: False)  # leave this process's malloc alone
    assert process.tune_process() == {"openblas_thread_timeout": None, "malloc_keeps_freed_memory": False}
    assert "OPENBLAS_THREAD_TIMEOUT" not in os.environ


def test_keep_freed_memory_leaves_other_platforms_and_user_settings_alone(monkeypatch):
    monkeypatch.setattr(process.sys, "platform", "darwin")
    assert process.keep_freed_memory() is False
    monkeypatch.setattr(process.sys, "platform", "linux")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert process.keep_freed_memory() is False
