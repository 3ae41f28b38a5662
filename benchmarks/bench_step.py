"""Time one ViT training step in minivit and in PyTorch eager, side by side.

    python benchmarks/bench_step.py                   # both configs, CPU, all cores
    python benchmarks/bench_step.py --config ti224 --steps 20
    python benchmarks/bench_step.py --quick           # CI: tiny32 only, two timed steps
    python benchmarks/bench_step.py --backend cupy    # minivit on CuPy against torch on CUDA

A training step is forward, cross-entropy loss, backward and an AdamW update, in float32. Both
frameworks run the same ViT from the same weights on the same batch (checked: their logits must
agree) with the same thread count, in one process, alternating step by step so that a busy machine
slows both alike; each timing is the median over the timed steps after warm-up. Forward-only
(inference) steps are timed the same way. Idle threads sleep between steps on both sides
(OPENBLAS_THREAD_TIMEOUT for minivit, OMP_WAIT_POLICY=PASSIVE for torch), so that neither
framework's spinning workers slow the other's next step. Importing minivit also makes glibc's
malloc keep freed memory for reuse (minivit.kernels, 3.); torch, in the same process, gets that too.

Reported per framework: ms/step, images/s, the ratio minivit / PyTorch, peak memory, and the
share of the machine's float32 matmul peak that the step reaches. Model FLOPs count the matmuls
only (2 x multiply-adds of the forward, x3 for a training step: the backward does two matmuls per
forward matmul); the peak is the best of NumPy's and torch's sgemm on a large square product,
measured here. Peak memory is measured per framework in a fresh subprocess (a process's peak
resident memory cannot be split between two frameworks): the growth of peak RSS from just before
the model is built through two training steps (the second with the optimizer state allocated),
so it includes weights, gradients, optimizer state, activations and temporaries. On CUDA it is
the caching allocators' peak reserved memory.

``--json PATH`` writes the results; ``--plot PATH`` draws the bar chart of docs/benchmarks.md;
``--from-json A.json B.json`` prints, plots and merges saved runs without measuring.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "tiny32": dict(batch=128, img_size=32, patch_size=4, in_chans=3, embed_dim=192, num_heads=3,
                   depth=6, num_classes=10),
    "ti224": dict(batch=16, img_size=224, patch_size=16, in_chans=3, embed_dim=192, num_heads=3,
                  depth=12, num_classes=1000),
}
MLP_RATIO = 4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    p.add_argument("--backend", choices=["numpy", "cupy"], default="numpy",
                   help="minivit's array module; cupy is compared with torch on CUDA")
    p.add_argument("--steps", type=int, default=10, help="timed steps per framework (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for both")
    p.add_argument("--torch-attention", choices=["math", "sdpa"], default="math",
                   help="torch attention as explicit matmuls + softmax (math, as minivit) or "
                        "F.scaled_dot_product_attention (sdpa)")
    p.add_argument("--torch-omp-wait", choices=["passive", "active"], default="passive",
                   help="OMP_WAIT_POLICY for torch's OpenMP threads: passive (default) puts them to sleep "
                        "after each parallel region, as minivit does with OpenBLAS's threads; active keeps "
                        "torch's default spinning, which steals the cores from the next minivit step")
    p.add_argument("--quick", action="store_true", help="CI smoke run: tiny32, 2 steps, no warm-up")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--plot", metavar="PATH", help="draw the bar chart (PNG)")
    p.add_argument("--from-json", metavar="PATH", nargs="+",
                   help="measure nothing: print (and --plot, --json) the results saved by earlier runs")
    p.add_argument("--memory-probe", choices=["minivit", "torch"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.config, args.steps, args.warmup = "tiny32", 2, 0
    if args.steps < 1 or args.warmup < 0 or args.threads < 1:
        p.error("--steps and --threads must be >= 1, --warmup >= 0")
    return args


ARGS = parse_args()
# thread counts must be fixed before NumPy (OpenBLAS) and torch start their thread pools, and
# the process tuned (minivit.kernels.process) before NumPy loads, so that OPENBLAS_THREAD_TIMEOUT applies
for var in ("MINIVIT_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)
# idle threads of either framework must not spin into the other's step (alternating steps)
if ARGS.torch_omp_wait == "passive":
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout
# isort: off
from minivit.kernels import tune_process  # noqa: E402  (the standard library only)

PROCESS = tune_process()  # before numpy
import numpy as np  # noqa: E402
# isort: on
import minivit  # noqa: E402
from minivit import backend  # noqa: E402
from minivit.losses import CrossEntropyLoss  # noqa: E402
from minivit.models import VisionTransformer  # noqa: E402
from minivit.optim import AdamW  # noqa: E402

LR, WEIGHT_DECAY = 1e-3, 0.05


# ----------------------------------------------------------------------------- FLOPs and peak

def forward_macs(cfg):
    """Multiply-adds of the matmuls in one forward pass (elementwise work is not counted)."""
    B, D, L = cfg["batch"], cfg["embed_dim"], cfg["depth"]
    n_patches = (cfg["img_size"] // cfg["patch_size"]) ** 2
    N = n_patches + 1
    patch = B * n_patches * cfg["in_chans"] * cfg["patch_size"] ** 2 * D
    linears = B * N * (3 * D * D + D * D + 2 * MLP_RATIO * D * D)  # qkv, proj, fc1, fc2
    attention = 2 * B * N * N * D  # q k^T and A v over all heads
    head = B * D * cfg["num_classes"]
    return patch + L * (linears + attention) + head


def sgemm_peak(matmul, make, sync, n, repeats=5):
    """Best float32 GFLOP/s of an n x n x n matmul."""
    a, b, c = make(n), make(n), make(n)
    best = float("inf")
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        matmul(a, b, out=c)
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


# ----------------------------------------------------------------------------- the two frameworks

def make_batch(cfg, seed=0):
    gen = np.random.default_rng(seed)
    s = cfg["img_size"]
    x = gen.standard_normal((cfg["batch"], cfg["in_chans"], s, s), dtype=np.float32)
    y = gen.integers(0, cfg["num_classes"], cfg["batch"])
    return x, y


def model_kwargs(cfg):
    return {k: v for k, v in cfg.items() if k != "batch"} | {"mlp_ratio": MLP_RATIO}


class MinivitRunner:
    def __init__(self, cfg, device):
        self.device = device
        self.model = VisionTransformer(**model_kwargs(cfg), dtype="float32", seed=0)
        x, y = make_batch(cfg)
        self.x, self.y = backend.asarray(x), backend.asarray(y)
        self.loss = CrossEntropyLoss()
        self.opt = AdamW(self.model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        if device == "cuda":
            import cupy

            self.sync = cupy.cuda.Device().synchronize
        else:
            self.sync = lambda: None

    def train_step(self):
        self.model.train()
        self.model.zero_grad()
        loss = self.loss.forward(self.model.forward(self.x), self.y)
        self.model.backward(self.loss.backward())
        self.opt.step()
        self.sync()
        return float(loss)

    def forward(self):
        self.model.eval()
        logits = self.model.forward(self.x)
        self.sync()
        return logits

    def logits(self):
        return backend.to_numpy(self.forward())


class TorchRunner:
    def __init__(self, cfg, device, attention, init_from=None):
        import torch
        from torch_vit import TorchViT, load_from_minivit

        self.torch, self.device = torch, device
        self.model = TorchViT(**model_kwargs(cfg), sdpa=attention == "sdpa").to(device)
        if init_from is None:  # the CUDA memory probe: a minivit model for the weights, then dropped
            init_from = VisionTransformer(**model_kwargs(cfg), dtype="float32", seed=0)
        load_from_minivit(self.model, init_from)
        x, y = make_batch(cfg)
        self.x, self.y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        self.sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def train_step(self):
        F = self.torch.nn.functional
        self.model.train()
        self.opt.zero_grad()
        loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        self.sync()
        return loss.item()

    def forward(self):
        self.model.eval()
        with self.torch.inference_mode():
            logits = self.model(self.x)
        self.sync()
        return logits

    def logits(self):
        return self.forward().cpu().numpy()


def setup_backend(kind):
    """Select minivit's backend and torch's device; a clear error when CUDA is not there."""
    import torch

    torch.set_num_threads(ARGS.threads)
    if kind == "numpy":
        backend.use("numpy")
        return "cpu"
    try:
        backend.use("cupy")
    except RuntimeError as e:
        sys.exit(f"--backend cupy needs CuPy and a CUDA GPU: {e}")
    if not torch.cuda.is_available():
        sys.exit("--backend cupy compares with torch on CUDA, but this torch build sees no CUDA GPU "
                 f"(torch {torch.__version__}); install a CUDA build of torch")
    return "cuda"


# ----------------------------------------------------------------------------- measurements

def rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_probe(framework, cfg_name):
    """In a fresh process: peak memory of building the model and two training steps (MiB)."""
    cfg = CONFIGS[cfg_name]
    device = setup_backend(ARGS.backend)
    import torch  # noqa: F401  (both probes load torch, so library pages count alike)

    if device == "cuda":
        runner = (MinivitRunner(cfg, device) if framework == "minivit"
                  else TorchRunner(cfg, device, ARGS.torch_attention))
        for _ in range(2):
            runner.train_step()
        if framework == "minivit":
            import cupy

            peak = cupy.get_default_memory_pool().total_bytes()
        else:
            peak = torch.cuda.max_memory_reserved()
        print(json.dumps({"peak_mib": peak / 2**20}))
        return
    if framework == "torch":  # the weights to copy in come from a minivit model built first
        init = VisionTransformer(**model_kwargs(cfg), dtype="float32", seed=0)
    base = rss_kib("VmRSS")
    try:  # reset the peak-RSS counter (Linux); otherwise VmHWM is the lifetime peak
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    runner = MinivitRunner(cfg, device) if framework == "minivit" else \
        TorchRunner(cfg, device, ARGS.torch_attention, init_from=init)
    for _ in range(2):
        runner.train_step()
    print(json.dumps({"peak_mib": (rss_kib("VmHWM") - base) / 1024}))


def measure_memory(cfg_name, framework):
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-probe", framework, "--config", cfg_name,
           "--backend", ARGS.backend, "--threads", str(ARGS.threads),
           "--torch-attention", ARGS.torch_attention]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


def alternate(fns, warmup, steps):
    """Time each function ``steps`` times after ``warmup`` calls, alternating which goes first."""
    times = {name: [] for name in fns}
    names = list(fns)
    for i in range(warmup + steps):
        for name in names if i % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            fns[name]()
            dt = time.perf_counter() - t
            if i >= warmup:
                times[name].append(dt)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_config(cfg_name, device, peak_gflops):
    cfg = CONFIGS[cfg_name]
    mv = MinivitRunner(cfg, device)
    pt = TorchRunner(cfg, device, ARGS.torch_attention, init_from=mv.model)
    diff = float(np.abs(mv.logits() - pt.logits()).max())
    if not diff < 1e-3:
        raise RuntimeError(f"{cfg_name}: minivit and torch logits differ by {diff:.2e}: not the same model")
    train = alternate({"minivit": mv.train_step, "torch": pt.train_step}, ARGS.warmup, ARGS.steps)
    infer = alternate({"minivit": mv.forward, "torch": pt.forward}, ARGS.warmup, ARGS.steps)
    fwd_flops = 2 * forward_macs(cfg)
    res = {"config": cfg_name, "batch": cfg["batch"], "logits_max_abs_diff": diff,
           "train_gflop": 3 * fwd_flops / 1e9, "forward_gflop": fwd_flops / 1e9}
    for fw in ("minivit", "torch"):
        res[fw] = {
            "train_ms": 1e3 * train[fw], "train_img_s": cfg["batch"] / train[fw],
            "train_peak_pct": 100 * 3 * fwd_flops / train[fw] / 1e9 / peak_gflops,
            "infer_ms": 1e3 * infer[fw], "infer_img_s": cfg["batch"] / infer[fw],
            "infer_peak_pct": 100 * fwd_flops / infer[fw] / 1e9 / peak_gflops,
        }
    res["train_ratio"] = train["minivit"] / train["torch"]
    res["infer_ratio"] = infer["minivit"] / infer["torch"]
    del mv, pt
    if not ARGS.no_memory:
        for fw in ("minivit", "torch"):
            res[fw]["peak_mem_mib"] = measure_memory(cfg_name, fw)
        res["mem_ratio"] = res["minivit"]["peak_mem_mib"] / res["torch"]["peak_mem_mib"]
    return res


def print_table(results):
    head = (f"{'config':<7} {'framework':<8} {'train ms':>9} {'img/s':>7} {'%peak':>6} {'infer ms':>9} "
            f"{'img/s':>7} {'%peak':>6} {'peak MiB':>9}")
    print(head)
    print("-" * len(head))
    for r in results:
        for fw in ("minivit", "torch"):
            m = r[fw]
            mem = f"{m['peak_mem_mib']:9.0f}" if "peak_mem_mib" in m else f"{'-':>9}"
            print(f"{r['config']:<7} {fw:<8} {m['train_ms']:9.1f} {m['train_img_s']:7.1f} "
                  f"{m['train_peak_pct']:6.1f} {m['infer_ms']:9.1f} {m['infer_img_s']:7.1f} "
                  f"{m['infer_peak_pct']:6.1f} {mem}")
        mem = f"{r['mem_ratio']:9.2f}" if "mem_ratio" in r else f"{'-':>9}"
        print(f"{r['config']:<7} {'ratio':<8} {r['train_ratio']:9.2f} {'':>7} {'':>6} "
              f"{r['infer_ratio']:9.2f} {'':>7} {'':>6} {mem}")


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.0))
    labels = [r["config"] for r in results]
    x = np.arange(len(results))
    for ax, key, title in ((axes[0], "train_ms", "training step"), (axes[1], "infer_ms", "forward only")):
        for j, (fw, color) in enumerate((("minivit", "#3b75af"), ("torch", "#ef8636"))):
            vals = [r[fw][key] for r in results]
            bars = ax.bar(x + (j - 0.5) * 0.38, vals, 0.38, label=fw, color=color)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(x, labels)
        ax.set_ylabel("ms per step (lower is better)")
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.15)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def report(info, results):
    print(f"minivit {info['minivit']} ({info['backend']}) vs torch {info['torch']} ({info['device']}), "
          f"{info['threads']} threads, median of {info['steps']} steps after {info['warmup']} warm-up, "
          f"torch attention: {info['torch_attention']}, OMP_WAIT_POLICY {info.get('omp_wait_policy')}")
    pk = info["sgemm_gflops"]
    print(f"float32 matmul peak: {pk['peak']:.0f} GFLOP/s (numpy/cupy {pk['minivit_array_module']:.0f}, "
          f"torch {pk['torch']:.0f}); load average before {info['load_avg_before'][0]:.2f}, "
          f"after {info['load_avg_after'][0]:.2f}")
    print_table(results)
    for r in results:
        print(f"{r['config']}: {r['train_gflop']:.1f} GFLOP per training step, "
              f"logits agree to {r['logits_max_abs_diff']:.1e}")


def save(info, results):
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump({"info": info, "results": results}, f, indent=1)
    if ARGS.plot:
        plot(results, ARGS.plot)


def main():
    if ARGS.memory_probe:
        memory_probe(ARGS.memory_probe, ARGS.config)
        return
    if ARGS.from_json:  # e.g. one run per config, each in a quiet moment of a shared machine
        runs = []
        for path in ARGS.from_json:
            with open(path) as f:
                runs.append(json.load(f))
            report(runs[-1]["info"], runs[-1]["results"])
        save(runs[0]["info"] | {"runs": [run["info"] for run in runs]},
             [r for run in runs for r in run["results"]])
        return
    device = setup_backend(ARGS.backend)
    import torch

    load_before = os.getloadavg()
    if device == "cuda":
        import cupy

        np_peak = sgemm_peak(cupy.matmul, lambda n: cupy.ones((n, n), cupy.float32),
                             cupy.cuda.Device().synchronize, 8192)
        t_peak = sgemm_peak(torch.matmul, lambda n: torch.ones(n, n, device="cuda"),
                            torch.cuda.synchronize, 8192)
    else:
        make = lambda n: np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)  # noqa: E731
        n = 1024 if ARGS.quick else 3072
        np_peak = sgemm_peak(np.matmul, make, lambda: None, n)
        t_peak = sgemm_peak(torch.matmul, lambda n: torch.from_numpy(make(n)), lambda: None, n)
    peak = max(np_peak, t_peak)
    configs = list(CONFIGS) if ARGS.config == "all" else [ARGS.config]
    results = [bench_config(c, device, peak) for c in configs]
    info = {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
        "backend": ARGS.backend, "device": device, "threads": ARGS.threads,
        "torch_attention": ARGS.torch_attention, "steps": ARGS.steps, "warmup": ARGS.warmup,
        "numpy": np.__version__, "torch": torch.__version__, "minivit": minivit.__version__,
        "python": platform.python_version(),
        "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "malloc_keeps_freed_memory": PROCESS["malloc_keeps_freed_memory"],
        "sgemm_gflops": {"minivit_array_module": np_peak, "torch": t_peak, "peak": peak},
        "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
    }
    report(info, results)
    save(info, results)


if __name__ == "__main__":
    main()
