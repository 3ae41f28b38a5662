"""The benchmark script runs (quick mode) and prints what it promises, so that it cannot rot.

Speed is measured by the benchmark, never asserted here: these tests only check that it runs,
that minivit and torch computed the same model, that each framework's process was set up as
promised, and that the numbers it reports are there and consistent.
"""

import json
import os
import statistics
import subprocess
import sys

import pytest

pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_step.py")
SET_BY_THE_BENCHMARK = ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY", "MINIVIT_KERNELS")


def run(*args):
    """The script in a fresh process, without the settings it makes (a tuned test process has them)."""
    env = {k: v for k, v in os.environ.items() if k not in SET_BY_THE_BENCHMARK}
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)


def table_rows(stdout, config):
    """The printed table's rows of one config, by their framework column."""
    lines = stdout.splitlines()
    assert any(line.split()[:2] == ["config", "framework"] for line in lines)
    return {line.split()[1]: line.split() for line in lines if line.startswith(config + " ")}


@pytest.mark.slow
def test_quick_benchmark_times_each_framework_in_its_own_process(tmp_path):
    out = tmp_path / "bench.json"
    res = run("--quick", "--kernels", "both", "--json", str(out))
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    info, (r,) = data["info"], data["results"]
    assert not info["in_process"] and info["rounds"] == 1 and info["kernels"] == "both"
    assert info["threads"] is None  # each framework at its own default
    assert r["config"] == "tiny32" and r["batch"] == 128
    assert r["logits_max_abs_diff"] < 1e-3  # every minivit worker computed torch's model
    assert abs(r["train_gflop"] - 3 * r["forward_gflop"]) < 1e-6
    kinds = ("minivit", "minivit-nokernels", "torch")
    for kind in kinds:
        m = r[kind]
        for key in ("train_ms", "infer_ms", "train_img_s", "train_peak_pct", "peak_mem_mib"):
            assert m[key] > 0, (kind, key)
        assert m["train_ms_rounds"] == [m["train_ms"]] and m["infer_ms_rounds"] == [m["infer_ms"]]
        assert abs(m["train_img_s"] - 128 / (m["train_ms"] / 1e3)) < 1e-6 * m["train_img_s"]
        assert m["process"]["threads"] >= 1 and m["process"]["omp_wait_policy"] is None
    ratios = {"train_ratio": "train_ms", "infer_ratio": "infer_ms", "mem_ratio": "peak_mem_mib"}
    for kind in kinds[:2]:
        for ratio, key in ratios.items():
            assert r[kind][ratio] == pytest.approx(r[kind][key] / r["torch"][key])
    peaks = info["sgemm_gflops"]
    assert set(peaks) == {*kinds, "peak"} and peaks["peak"] == max(peaks[k] for k in kinds) > 0
    # minivit's workers tuned as the command line does, kernels as asked; torch's left at its defaults
    mv, nok, pt = (r[k]["process"] for k in kinds)
    assert mv["kernels"] is True and nok["kernels"] is False and "kernels" not in pt
    for p in (mv, nok):
        assert p["process_tuned"] and p["openblas_thread_timeout"] == "4"
        assert p["malloc_keeps_freed_memory"] in (True, False)
    assert not pt["process_tuned"] and pt["openblas_thread_timeout"] is None
    assert pt["malloc_keeps_freed_memory"] is False
    # the printed table: a row per framework, a ratio row per minivit kind
    rows = table_rows(res.stdout, "tiny32")
    assert set(rows) == {*kinds, "minivit/torch", "minivit-nokernels/torch"}
    assert float(rows["minivit/torch"][2]) == pytest.approx(r["minivit"]["train_ratio"], abs=0.006)
    assert float(rows["torch"][2]) == pytest.approx(r["torch"]["train_ms"], abs=0.06)


@pytest.mark.slow
def test_in_process_mode_alternates_in_one_tuned_process(tmp_path):
    out = tmp_path / "bench.json"
    res = run("--in-process", "--quick", "--rounds", "2", "--threads", "1", "--kernels", "off",
              "--no-memory", "--json", str(out))
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    info, (r,) = data["info"], data["results"]
    assert info["in_process"] and info["rounds"] == 2 and info["threads"] == 1
    assert set(r) >= {"minivit-nokernels", "torch"} and "minivit" not in r
    assert r["logits_max_abs_diff"] < 1e-3
    for kind in ("minivit-nokernels", "torch"):
        m, p = r[kind], r[kind]["process"]
        # one process for both: tuned, torch's idle threads passive, the thread count given
        assert p["process_tuned"] and p["omp_wait_policy"] == "PASSIVE" and p["threads"] == 1
        assert p["openblas_thread_timeout"] == "4"
        assert len(m["train_ms_rounds"]) == 2 and "peak_mem_mib" not in m
        assert m["train_ms"] == pytest.approx(statistics.median(m["train_ms_rounds"]))
    assert r["minivit-nokernels"]["process"]["kernels"] is False
    assert "mem_ratio" not in r["minivit-nokernels"]
    rows = table_rows(res.stdout, "tiny32")
    assert set(rows) == {"minivit-nokernels", "torch", "minivit-nokernels/torch"}


def test_cupy_backend_without_a_gpu_fails_clearly():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("a GPU is present: the CuPy path runs for real")
    except Exception:
        pass
    res = run("--backend", "cupy", "--quick", "--no-memory")
    assert res.returncode != 0
    assert "--backend cupy needs CuPy" in res.stderr and "worker failed" in res.stderr
    assert "Traceback" not in res.stderr


def test_in_process_cannot_time_kernels_both():
    res = run("--in-process", "--kernels", "both")
    assert res.returncode == 2 and "--kernels both needs separate processes" in res.stderr


@pytest.mark.parametrize("sdpa", [False, True])
def test_the_benchmarks_torch_swin_is_minivits_model(sdpa):
    """The PyTorch Swin the benchmark times computes minivit's SwinTransformer from its weights: shifted
    and unshifted windows, patch merging, a stage no larger than a window (float64, both attentions)."""
    import numpy as np
    import torch

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        from torch_swin import TorchSwin, load_from_minivit
    finally:
        sys.path.remove(os.path.join(ROOT, "benchmarks"))
    from minivit.models import SwinTransformer

    cfg = dict(img_size=32, patch_size=2, in_chans=3, num_classes=5, embed_dim=12, depths=(2, 2, 1),
               num_heads=(2, 3, 4), window_size=4, mlp_ratio=2.0)
    ours = SwinTransformer(**cfg, drop_path_rate=0.0, dtype="float64", seed=0).eval()
    theirs = load_from_minivit(TorchSwin(**cfg, sdpa=sdpa).double().eval(), ours)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    with torch.no_grad():
        ref = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours.forward(x), ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_conv_benchmark_times_both_frameworks_on_cvt_stage_1_shapes(tmp_path):
    out = tmp_path / "conv.json"
    res = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_conv.py"), "--batch", "2",
                          "--rounds", "1", "--steps", "1", "--warmup", "0", "--json", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["info"]["max_relative_output_difference"] < 1e-4  # the same convolutions
    rows = data["results"]
    stage = "stage 1 (embed + q + k + v, on tokens)"
    assert set(rows) == {"embed 3->64 k7 s4 p2", "q: depthwise 64 k3 s1", "k, v: depthwise 64 k3 s2",
                         "q: the same, on tokens", "k, v: the same, on tokens", stage}
    parts = [rows[n]["minivit_ms"] for n in ("embed 3->64 k7 s4 p2", "q: the same, on tokens",
                                            "k, v: the same, on tokens")]
    assert rows[stage]["minivit_ms"] == pytest.approx(parts[0] + parts[1] + 2 * parts[2])  # k, v: twice
    for row in rows.values():
        assert row["ratio"] == pytest.approx(row["minivit_ms"] / row["torch_ms"]) and row["torch_ms"] > 0
