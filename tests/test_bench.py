"""The benchmark script runs (quick mode) and prints what it promises, so that it cannot rot.

Speed is measured by the benchmark, never asserted here: these tests only check that it runs,
that minivit and torch computed the same model, and that the numbers it reports are there.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_step.py")


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


@pytest.mark.slow
def test_quick_benchmark_runs_and_reports(tmp_path):
    out = tmp_path / "bench.json"
    res = run("--quick", "--json", str(out))
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    (r,) = data["results"]
    assert r["config"] == "tiny32" and r["batch"] == 128
    assert r["logits_max_abs_diff"] < 1e-3  # the same model in both frameworks
    assert abs(r["train_gflop"] - 3 * r["forward_gflop"]) < 1e-6
    for fw in ("minivit", "torch"):
        m = r[fw]
        for key in ("train_ms", "infer_ms", "train_img_s", "train_peak_pct", "peak_mem_mib"):
            assert m[key] > 0, (fw, key)
        assert abs(m["train_img_s"] - 128 / (m["train_ms"] / 1e3)) < 1e-6 * m["train_img_s"]
    assert r["train_ratio"] == pytest.approx(r["minivit"]["train_ms"] / r["torch"]["train_ms"])
    assert data["info"]["sgemm_gflops"]["peak"] > 0
    # idle threads sleep on both sides: neither framework's workers spin into the other's step
    assert data["info"]["omp_wait_policy"] == "PASSIVE" and data["info"]["openblas_thread_timeout"] == "4"
    assert data["info"]["malloc_keeps_freed_memory"] in (True, False)
    # the printed table: a header, one row per framework and the ratio row
    lines = res.stdout.splitlines()
    assert any(line.split()[:2] == ["config", "framework"] for line in lines)
    rows = {line.split()[1]: line.split() for line in lines if line.startswith("tiny32 ")}
    assert set(rows) == {"minivit", "torch", "ratio"}
    assert float(rows["ratio"][2]) == pytest.approx(r["train_ratio"], abs=0.006)


def test_cupy_backend_without_a_gpu_fails_clearly():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("a GPU is present: the CuPy path runs for real")
    except Exception:
        pass
    res = run("--backend", "cupy", "--quick", "--no-memory")
    assert res.returncode != 0
    assert "--backend cupy" in res.stderr and ("CuPy" in res.stderr or "CUDA" in res.stderr)
    assert "Traceback" not in res.stderr
