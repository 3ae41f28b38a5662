"""Time one ViT, Swin or CvT training step in minivit and in PyTorch eager, each as a user runs it.

    python benchmarks/bench_step.py                   # all six configs, CPU, 3 rounds
    python benchmarks/bench_step.py --config swin224 --steps 20 --rounds 5
    python benchmarks/bench_step.py --kernels both    # minivit with and without its kernels
    python benchmarks/bench_step.py --quick           # CI: tiny32, one round of one timed step
    python benchmarks/bench_step.py --in-process      # both in one process, step by step
    python benchmarks/bench_step.py --backend cupy    # minivit on CuPy against torch on CUDA

A training step is forward, cross-entropy loss, backward and an AdamW update, in float32. Both
frameworks run the same model from the same weights on the same batch (``CONFIGS``: two ViTs, two
Swins and two CvTs, a small one on 32 px images and the reference size at 224 px of each); forward-only
(inference) steps are timed the same way. The PyTorch models are written as PyTorch users write
them (torch_vit.py, torch_swin.py, torch_cvt.py).

**Separate processes (the default).** Each framework is timed in its own fresh process at its own
defaults, as a user would run it: the script starts worker processes (``bench_step.py --worker
KIND --config NAME``, which prints its step times as JSON), one per framework in turn (minivit,
torch, minivit, torch, ...) for ``--rounds`` rounds, so that a change in the machine's load hits
both. Each worker takes ``--warmup`` untimed steps, then ``--steps`` timed ones. Reported per
framework: the median over the rounds of each round's median step time, the spread (min-max) of
the round medians (the figure's caps), and the ratio of the medians minivit / PyTorch. A minivit
worker tunes its process as the command line does (``minivit.kernels.tune_process()`` before
NumPy loads: OpenBLAS's idle threads sleep, malloc keeps freed memory); the torch worker builds a
minivit model only to copy its weights (importing minivit changes no process-wide setting), and
its process is not tuned: torch's own thread count and OMP_WAIT_POLICY. ``--threads N`` gives
both N threads, ``--torch-omp-wait`` sets torch's OMP_WAIT_POLICY. Each result records what its
worker had (threads, kernels, process tuning). Every worker writes its logits of the batch before
it trains; every round, each minivit worker's must agree with torch's, or the run stops: the same
model, or no comparison.

**Kernels.** ``--kernels off`` times minivit with its fast paths off (MINIVIT_KERNELS=0 in the
worker's environment: the plain equation bodies of minivit.nn), ``--kernels both`` times a third
worker kind, ``minivit-nokernels``, in the same rounds, reported beside ``minivit``.

**In one process (``--in-process``).** The earlier comparison: both frameworks in one tuned
process with the same thread count (default all cores), alternating step by step (the order flips
every step), one round unless ``--rounds`` says more. Idle threads sleep between
steps on both sides (OPENBLAS_THREAD_TIMEOUT for minivit, OMP_WAIT_POLICY=PASSIVE for torch unless
``--torch-omp-wait active``), so that neither framework's spinning workers slow the other's next
step; torch gets minivit's malloc tuning too. That setting slows torch: it is not the comparison a
user makes.

Reported per framework: ms/step, images/s, the ratios to PyTorch, peak memory, and the share of
the machine's float32 matmul peak that the step reaches. Model FLOPs count the matmuls only (2 x
multiply-adds of the forward, x3 for a training step: the backward does two matmuls per forward
matmul); the peak is the best of NumPy's and torch's sgemm on a large square product, measured in
the first worker of each kind (the one process, --in-process). Peak memory is measured per
framework in a fresh process set up as its worker (a process's peak resident memory cannot be
split between two frameworks): the growth of peak RSS from just before the model is built through
two training steps (the second with the optimizer state allocated), so it includes weights,
gradients, optimizer state, activations and temporaries. On CUDA it is the caching allocators'
peak reserved memory.

``--json PATH`` writes the results; ``--plot PATH`` draws the bar chart of docs/benchmarks.md;
``--from-json A.json B.json`` prints, plots and merges saved runs without measuring.
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata

CONFIGS = {
    "tiny32": dict(model="vit", batch=128, img_size=32, patch_size=4, in_chans=3, embed_dim=192, num_heads=3,
                   depth=6, num_classes=10),
    "ti224": dict(model="vit", batch=16, img_size=224, patch_size=16, in_chans=3, embed_dim=192, num_heads=3,
                  depth=12, num_classes=1000),
    # Swin on CIFAR-sized images: 16x16 tokens in 4x4 windows, then 8x8 and 4x4 (global)
    "swin32": dict(model="swin", batch=64, img_size=32, patch_size=2, in_chans=3, embed_dim=96,
                   depths=(2, 2, 2), num_heads=(3, 6, 12), window_size=4, num_classes=10),
    # swin_tiny_patch4_window7_224
    "swin224": dict(model="swin", batch=8, img_size=224, patch_size=4, in_chans=3, embed_dim=96,
                    depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, num_classes=1000),
    # CvT on CIFAR-sized images: stride-1 embedding to 32x32 tokens, then 16x16 and 8x8 (+ class token)
    "cvt32": dict(model="cvt", batch=32, img_size=32, in_chans=3, embed_dims=(64, 128, 256),
                  depths=(1, 2, 4), num_heads=(1, 2, 4), patch_sizes=(3, 3, 3), patch_strides=(1, 2, 2),
                  patch_paddings=(1, 1, 1), num_classes=10),
    # cvt_13
    "cvt224": dict(model="cvt", batch=8, img_size=224, in_chans=3, embed_dims=(64, 192, 384),
                   depths=(1, 2, 10), num_heads=(1, 3, 6), patch_sizes=(7, 3, 3), patch_strides=(4, 2, 2),
                   patch_paddings=(2, 1, 1), num_classes=1000),
}
MLP_RATIO = 4
KINDS = ("minivit", "minivit-nokernels", "torch")  # what a worker times
KERNELS_ENV = {"minivit": "1", "minivit-nokernels": "0"}  # MINIVIT_KERNELS of the minivit kinds
THREAD_VARS = ("MINIVIT_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=[*CONFIGS, "all"], help="default: all (tiny32 with --quick)")
    p.add_argument("--backend", choices=["numpy", "cupy"], default="numpy",
                   help="minivit's array module; cupy is compared with torch on CUDA")
    p.add_argument("--steps", type=int, help="timed steps per worker (median); default 10 (1 with --quick)")
    p.add_argument("--warmup", type=int, help="untimed steps first; default 2 (0 with --quick)")
    p.add_argument("--rounds", type=int, help="rounds of one worker per framework in turn (median of their "
                                              "medians); default 3 (1 with --quick or --in-process)")
    p.add_argument("--threads", type=int, help="CPU threads for both; default: each framework's own "
                                               "(all cores with --in-process)")
    p.add_argument("--kernels", choices=["on", "off", "both"], default="on",
                   help="minivit's fast paths (MINIVIT_KERNELS); both: a minivit-nokernels worker too")
    p.add_argument("--in-process", action="store_true",
                   help="both frameworks in one process, alternating step by step, torch's threads passive")
    p.add_argument("--torch-attention", choices=["math", "sdpa"], default="math",
                   help="torch attention as explicit matmuls + softmax (math, as minivit) or "
                        "F.scaled_dot_product_attention (sdpa)")
    p.add_argument("--torch-omp-wait", choices=["passive", "active"],
                   help="OMP_WAIT_POLICY for torch's OpenMP threads; default: torch's own (unset), passive "
                        "with --in-process, where spinning threads would steal the next minivit step's cores")
    p.add_argument("--quick", action="store_true", help="CI smoke run: tiny32, 1 round, 1 step, no warm-up")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--plot", metavar="PATH", help="draw the bar chart (PNG)")
    p.add_argument("--from-json", metavar="PATH", nargs="+",
                   help="measure nothing: print (and --plot, --json) the results saved by earlier runs")
    p.add_argument("--worker", choices=KINDS, help="time this one framework alone and print JSON "
                                                   "(what the default mode runs in each process)")
    p.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)  # with --worker
    p.add_argument("--logits", metavar="PATH", help=argparse.SUPPRESS)  # with --worker: .npy of the logits
    p.add_argument("--sgemm", type=int, metavar="N", help=argparse.SUPPRESS)  # with --worker: matmul peak
    args = p.parse_args(argv)
    quick = args.quick
    for name, default in (("config", "tiny32" if quick else "all"), ("steps", 1 if quick else 10),
                          ("warmup", 0 if quick else 2), ("rounds", 1 if quick or args.in_process else 3)):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if min(args.steps, args.rounds) < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        p.error("--steps, --rounds and --threads must be >= 1, --warmup >= 0")
    if args.in_process and args.kernels == "both":
        p.error("--kernels both needs separate processes (drop --in-process)")
    if args.worker and args.config == "all":
        p.error("--worker times one --config")
    if args.in_process and args.torch_omp_wait is None:
        args.torch_omp_wait = "passive"
    args.kinds = {"on": ["minivit"], "off": ["minivit-nokernels"],
                  "both": ["minivit", "minivit-nokernels"]}[args.kernels] + ["torch"]
    return args


ARGS = parse_args()
ROLE = ARGS.worker or ("in-process" if ARGS.in_process else "parent")  # the parent only starts workers
THREADS = ARGS.threads or (os.cpu_count() if ROLE == "in-process" else None)  # None: the library's own


def process_env(role):
    """What this process sets in its environment before NumPy and torch load (they read it once)."""
    env = dict.fromkeys(THREAD_VARS, str(THREADS)) if THREADS and role != "parent" else {}
    if role in ("torch", "in-process") and ARGS.torch_omp_wait:
        env["OMP_WAIT_POLICY"] = ARGS.torch_omp_wait.upper()
    for kind in ARGS.kinds if role == "in-process" else [role]:
        if kind in KERNELS_ENV:
            env["MINIVIT_KERNELS"] = KERNELS_ENV[kind]
    return env


os.environ.update(process_env(ROLE))
TUNED = ROLE == "in-process" or ROLE in KERNELS_ENV  # process tuning as the command line does; never torch's
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout
if TUNED:
    from minivit.kernels import tune_process  # the standard library only

    PROCESS = tune_process()  # before numpy
else:
    PROCESS = {"openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
               "malloc_keeps_freed_memory": False}
import numpy as np  # noqa: E402

import minivit  # noqa: E402
from minivit import backend, nn  # noqa: E402
from minivit.losses import CrossEntropyLoss  # noqa: E402
from minivit.models import ConvolutionalVisionTransformer, SwinTransformer, VisionTransformer  # noqa: E402
from minivit.optim import AdamW  # noqa: E402

LR, WEIGHT_DECAY = 1e-3, 0.05
DEVICE = "cuda" if ARGS.backend == "cupy" else "cpu"  # torch's device
SGEMM_N = 8192 if DEVICE == "cuda" else 1024 if ARGS.quick else 3072


# ----------------------------------------------------------------------------- FLOPs and peak

def forward_macs(cfg):
    """Multiply-adds of the matmuls in one forward pass (elementwise work is not counted)."""
    if cfg["model"] != "vit":
        return {"swin": swin_forward_macs, "cvt": cvt_forward_macs}[cfg["model"]](cfg)
    B, D, L = cfg["batch"], cfg["embed_dim"], cfg["depth"]
    n_patches = (cfg["img_size"] // cfg["patch_size"]) ** 2
    N = n_patches + 1
    patch = B * n_patches * cfg["in_chans"] * cfg["patch_size"] ** 2 * D
    linears = B * N * (3 * D * D + D * D + 2 * MLP_RATIO * D * D)  # qkv, proj, fc1, fc2
    attention = 2 * B * N * N * D  # q k^T and A v over all heads
    head = B * D * cfg["num_classes"]
    return patch + L * (linears + attention) + head


def cvt_forward_macs(cfg):
    """CvT's: per stage, the embedding convolution, then per block the depthwise 3x3 projections of q
    (stride 1) and k, v (stride 2), the Linear layers, q k^T and A v over N_q x N_kv, and the MLP."""
    B, r, c_in = cfg["batch"], cfg["img_size"], cfg["in_chans"]
    macs, last = 0, len(cfg["depths"]) - 1
    for i, (D, depth, k, s, p) in enumerate(zip(cfg["embed_dims"], cfg["depths"], cfg["patch_sizes"],
                                                cfg["patch_strides"], cfg["patch_paddings"], strict=True)):
        r = (r + 2 * p - k) // s + 1
        r_kv = (r + 2 - 3) // 2 + 1
        n, n_kv, cls = r * r, r_kv * r_kv, int(i == last)
        macs += B * n * c_in * k * k * D
        block = (n + 2 * n_kv) * D * 9 + (2 * (n + cls) + 2 * (n_kv + cls)) * D * D
        block += 2 * (n + cls) * (n_kv + cls) * D + 2 * MLP_RATIO * (n + cls) * D * D
        macs += depth * B * block
        c_in = D
    return macs + B * c_in * cfg["num_classes"]


def swin_forward_macs(cfg):
    """Swin's: per stage, patch merging (4C -> 2C per merged token), then per block the Linear layers
    and attention within M x M windows (q k^T and A v: 2 N M^2 C)."""
    B, C, P = cfg["batch"], cfg["embed_dim"], cfg["patch_size"]
    r = cfg["img_size"] // P
    macs = B * r * r * cfg["in_chans"] * P * P * C
    for i, depth in enumerate(cfg["depths"]):
        if i:
            r //= 2
            macs += B * r * r * 4 * C * 2 * C
            C *= 2
        M, N = min(cfg["window_size"], r), r * r
        macs += depth * (B * N * (4 * C * C + 2 * MLP_RATIO * C * C) + 2 * B * N * M * M * C)
    return macs + B * C * cfg["num_classes"]


def matmul_peak(kind, n, repeats=5):
    """Best float32 GFLOP/s of an n x n x n matmul: torch's for the torch kind, else NumPy's or CuPy's."""
    host = [np.random.default_rng(i).standard_normal((n, n), dtype=np.float32) for i in range(3)]
    if kind == "torch":
        import torch

        a, b, c = (torch.from_numpy(h).to(DEVICE) for h in host)
        matmul, sync = torch.matmul, torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)
    else:
        xp = backend.xp()
        a, b, c = (backend.asarray(h) for h in host)
        matmul, sync = xp.matmul, xp.cuda.Device().synchronize if DEVICE == "cuda" else (lambda: None)
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
    return {k: v for k, v in cfg.items() if k not in ("batch", "model")} | {"mlp_ratio": MLP_RATIO}


def minivit_model(cfg):
    if cfg["model"] == "vit":
        return VisionTransformer(**model_kwargs(cfg), dtype="float32", seed=0)
    cls = {"swin": SwinTransformer, "cvt": ConvolutionalVisionTransformer}[cfg["model"]]
    # no drop-path: both frameworks compute the same step
    return cls(**model_kwargs(cfg), drop_path_rate=0.0, dtype="float32", seed=0)


class MinivitRunner:
    def __init__(self, cfg):
        self.model = minivit_model(cfg)
        x, y = make_batch(cfg)
        self.x, self.y = backend.asarray(x), backend.asarray(y)
        self.loss = CrossEntropyLoss()
        self.opt = AdamW(self.model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        self.sync = backend.xp().cuda.Device().synchronize if DEVICE == "cuda" else (lambda: None)

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
    def __init__(self, cfg, init_from):
        import torch

        if cfg["model"] == "swin":
            from torch_swin import TorchSwin as Model
            from torch_swin import load_from_minivit
        elif cfg["model"] == "cvt":
            from torch_cvt import TorchCvT as Model
            from torch_cvt import load_from_minivit
        else:
            from torch_vit import TorchViT as Model
            from torch_vit import load_from_minivit
        self.torch = torch
        self.model = Model(**model_kwargs(cfg), sdpa=ARGS.torch_attention == "sdpa").to(DEVICE)
        load_from_minivit(self.model, init_from)
        x, y = make_batch(cfg)
        self.x, self.y = torch.from_numpy(x).to(DEVICE), torch.from_numpy(y).to(DEVICE)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        self.sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)

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


def setup(kind):
    """Select minivit's backend, or torch's threads, for ``kind``; a clear error where CUDA is not there."""
    if kind == "torch":
        import torch

        if THREADS:
            torch.set_num_threads(THREADS)
        if DEVICE == "cuda" and not torch.cuda.is_available():
            sys.exit("--backend cupy compares with torch on CUDA, but this torch build sees no CUDA GPU "
                     f"(torch {torch.__version__}); install a CUDA build of torch")
    elif DEVICE == "cuda":
        try:
            backend.use("cupy")
        except RuntimeError as e:
            sys.exit(f"--backend cupy needs CuPy and a CUDA GPU: {e}")


def process_info(kind):
    """What a framework's process had: its threads, minivit's kernels, the process tuning."""
    info = {"process_tuned": TUNED, **PROCESS, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    if kind == "torch":
        import torch

        return info | {"threads": torch.get_num_threads()}
    from minivit import kernels
    from minivit.kernels import threads

    return info | {"threads": threads.NUM_THREADS, "kernels": kernels.enabled()}


# ----------------------------------------------------------------------------- measurements

def rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_probe(kind, cfg_name):
    """In a fresh process: peak memory of building the model and two training steps (MiB)."""
    cfg = CONFIGS[cfg_name]
    setup(kind)
    import torch  # noqa: F401  (both probes load torch, so library pages count alike)

    if kind != "torch" and DEVICE == "cpu":  # likewise Numba and minivit's compiled loops (kernels on)
        conv = nn.Conv2d(4, 4, 3, padding=1, groups=4, dtype="float32")
        conv.backward(conv.forward(np.ones((1, 4, 4, 4), dtype=np.float32)))

    init = minivit_model(cfg) if kind == "torch" else None  # the weights torch copies, built first
    if DEVICE == "cpu":
        base = rss_kib("VmRSS")
        try:  # reset the peak-RSS counter (Linux); otherwise VmHWM is the lifetime peak
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
    runner = TorchRunner(cfg, init) if kind == "torch" else MinivitRunner(cfg)
    for _ in range(2):
        runner.train_step()
    if DEVICE == "cpu":
        peak = (rss_kib("VmHWM") - base) * 1024
    elif kind == "torch":
        peak = torch.cuda.max_memory_reserved()
    else:
        peak = backend.xp().get_default_memory_pool().total_bytes()
    print(json.dumps({"peak_mib": peak / 2**20}))


def alternate(fns, warmup, steps):
    """Time each function ``steps`` times after ``warmup`` calls, alternating which goes first:
    {name: [seconds per call]}."""
    times = {name: [] for name in fns}
    names = list(fns)
    for i in range(warmup + steps):
        for name in names if i % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            fns[name]()
            dt = time.perf_counter() - t
            if i >= warmup:
                times[name].append(dt)
    return times


def worker(kind, cfg_name):
    """One framework alone in this process: its step times (and logits, matmul peak) as JSON."""
    setup(kind)
    out = {"kind": kind, "process": process_info(kind)}
    if ARGS.sgemm:
        out["sgemm_gflops"] = matmul_peak(kind, ARGS.sgemm)
    cfg = CONFIGS[cfg_name]
    runner = TorchRunner(cfg, minivit_model(cfg)) if kind == "torch" else MinivitRunner(cfg)
    if ARGS.logits:
        np.save(ARGS.logits, runner.logits())
    out["train_s"] = alternate({kind: runner.train_step}, ARGS.warmup, ARGS.steps)[kind]
    out["infer_s"] = alternate({kind: runner.forward}, ARGS.warmup, ARGS.steps)[kind]
    print(json.dumps(out))


def run_worker(kind, cfg_name, *extra):
    """Run ``bench_step.py --worker kind`` in a fresh process; the JSON it printed."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--config", cfg_name,
           "--backend", ARGS.backend, "--steps", str(ARGS.steps), "--warmup", str(ARGS.warmup),
           "--torch-attention", ARGS.torch_attention, *extra]
    for opt, value in (("--threads", ARGS.threads), ("--torch-omp-wait", ARGS.torch_omp_wait)):
        if value:
            cmd += [opt, str(value)]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # its stderr passes through
    if res.returncode != 0:
        sys.exit(f"the {kind} worker failed (exit status {res.returncode}): {shlex.join(cmd)}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def logits_diff(logits, cfg_name):
    """The largest |minivit - torch| logit over the minivit kinds; an error unless they agree."""
    diff = max(float(np.abs(v - logits["torch"]).max()) for k, v in logits.items() if k != "torch")
    if not diff < 1e-3:
        raise RuntimeError(f"{cfg_name}: minivit and torch logits differ by {diff:.2e}: not the same model")
    return diff


def bench_workers(cfg_name, peaks):
    """Rounds of one worker per kind in turn: ({kind: [each worker's output]}, max logits diff)."""
    runs, diff = {kind: [] for kind in ARGS.kinds}, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(ARGS.rounds):
            logits = {}
            for kind in ARGS.kinds:
                path = os.path.join(tmp, f"{kind}.npy")
                sgemm = [] if kind in peaks else ["--sgemm", str(SGEMM_N)]
                runs[kind].append(run_worker(kind, cfg_name, "--logits", path, *sgemm))
                if sgemm:
                    peaks[kind] = runs[kind][-1]["sgemm_gflops"]
                logits[kind] = np.load(path)
            diff = max(diff, logits_diff(logits, cfg_name))
    return runs, diff


def bench_in_process(cfg_name, peaks):
    """Both frameworks in this process, alternating step by step: the same shape as bench_workers."""
    for kind in ARGS.kinds:
        setup(kind)
        if kind not in peaks:
            peaks[kind] = matmul_peak(kind, SGEMM_N)
    cfg = CONFIGS[cfg_name]
    mv = MinivitRunner(cfg)
    runners = {ARGS.kinds[0]: mv, "torch": TorchRunner(cfg, mv.model)}
    diff = logits_diff({kind: r.logits() for kind, r in runners.items()}, cfg_name)
    runs = {kind: [] for kind in runners}
    for _ in range(ARGS.rounds):
        train = alternate({kind: r.train_step for kind, r in runners.items()}, ARGS.warmup, ARGS.steps)
        infer = alternate({kind: r.forward for kind, r in runners.items()}, ARGS.warmup, ARGS.steps)
        for kind in runners:
            runs[kind].append({"process": process_info(kind), "train_s": train[kind], "infer_s": infer[kind]})
    return runs, diff


def summarize(cfg_name, runs, diff, peak_gflops, memory):
    """The result of one config: per kind, the median over rounds of each round's median step, the
    peak memory (MiB, where measured) and the ratios to torch."""
    cfg = CONFIGS[cfg_name]
    fwd_flops = 2 * forward_macs(cfg)
    res = {"config": cfg_name, "batch": cfg["batch"], "logits_max_abs_diff": diff,
           "train_gflop": 3 * fwd_flops / 1e9, "forward_gflop": fwd_flops / 1e9}
    for kind, outs in runs.items():
        res[kind] = {"process": outs[0]["process"]}
        for step, flops in (("train", 3 * fwd_flops), ("infer", fwd_flops)):
            rounds = [statistics.median(out[f"{step}_s"]) for out in outs]
            s = statistics.median(rounds)
            res[kind] |= {f"{step}_ms": 1e3 * s, f"{step}_ms_rounds": [1e3 * t for t in rounds],
                          f"{step}_img_s": cfg["batch"] / s,
                          f"{step}_peak_pct": 100 * flops / s / 1e9 / peak_gflops}
    for kind, mib in memory.items():
        res[kind]["peak_mem_mib"] = mib
    for kind in runs:
        for ratio, key in (("train_ratio", "train_ms"), ("infer_ratio", "infer_ms"),
                           ("mem_ratio", "peak_mem_mib")):
            if kind != "torch" and key in res[kind]:
                res[kind][ratio] = res[kind][key] / res["torch"][key]
    return res


def kinds_of(results):
    """The kinds every result has (runs merged by --from-json may differ), torch last."""
    return [k for k in KINDS if all(k in r for r in results)]


def print_table(results):
    kinds = kinds_of(results)
    w = max(len(f"{k}/torch") for k in kinds)
    head = (f"{'config':<7} {'framework':<{w}} {'train ms':>9} {'min-max':>11} {'img/s':>7} {'%peak':>6} "
            f"{'infer ms':>9} {'img/s':>7} {'%peak':>6} {'peak MiB':>9}")
    print(head)
    print("-" * len(head))
    for r in results:
        for kind in kinds:
            m = r[kind]
            spread = f"{min(m['train_ms_rounds']):.0f}-{max(m['train_ms_rounds']):.0f}"
            mem = f"{m['peak_mem_mib']:9.0f}" if "peak_mem_mib" in m else f"{'-':>9}"
            print(f"{r['config']:<7} {kind:<{w}} {m['train_ms']:9.1f} {spread:>11} {m['train_img_s']:7.1f} "
                  f"{m['train_peak_pct']:6.1f} {m['infer_ms']:9.1f} {m['infer_img_s']:7.1f} "
                  f"{m['infer_peak_pct']:6.1f} {mem}")
        for kind in kinds[:-1]:
            m = r[kind]
            mem = f"{m['mem_ratio']:9.2f}" if "mem_ratio" in m else f"{'-':>9}"
            print(f"{r['config']:<7} {kind + '/torch':<{w}} {m['train_ratio']:9.2f} {'':>11} {'':>7} {'':>6} "
                  f"{m['infer_ratio']:9.2f} {'':>7} {'':>6} {mem}")


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = kinds_of(results)
    colors = {"minivit": "#3b75af", "minivit-nokernels": "#9cbbd9", "torch": "#ef8636"}
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 1.3 * len(results) + 1.5), 6.2))  # one row each
    x, width = np.arange(len(results)), 0.76 / len(kinds)
    for ax, step, title in ((axes[0], "train", "training step"), (axes[1], "infer", "forward only")):
        for j, kind in enumerate(kinds):
            vals = np.array([r[kind][f"{step}_ms"] for r in results])
            lo = vals - [min(r[kind][f"{step}_ms_rounds"]) for r in results]
            hi = [max(r[kind][f"{step}_ms_rounds"]) for r in results] - vals
            bars = ax.bar(x + (j - (len(kinds) - 1) / 2) * width, vals, width, yerr=[lo, hi], capsize=2,
                          label=kind, color=colors[kind])
            ax.bar_label(bars, fmt="%.0f", fontsize=7, label_type="center", rotation=90)  # caps: min-max
            # over the rounds
        ax.set_xticks(x, [r["config"] for r in results])
        ax.set_ylabel("ms per step (lower is better)")
        ax.set_title(title, fontsize=10)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", ncol=len(kinds), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=100)


def describe(kind, p):
    """One line on how a framework's process was set up."""
    kernels = f", kernels {'on' if p['kernels'] else 'off'}" if "kernels" in p else ""
    tuned = (f"tuned (OPENBLAS_THREAD_TIMEOUT {p['openblas_thread_timeout']}, malloc keeps freed memory: "
             f"{p['malloc_keeps_freed_memory']})" if p["process_tuned"] else "not tuned")
    return (f"  {kind}: {p['threads']} threads{kernels}, process {tuned}, "
            f"OMP_WAIT_POLICY {p['omp_wait_policy'] or 'unset'}")


def report(info, results):
    where = "both in one process, step by step" if info["in_process"] else "each in its own process"
    print(f"minivit {info['minivit']} ({info['backend']}) vs torch {info['torch']} ({info['device']}), "
          f"{where}: median over {info['rounds']} rounds of each round's median of {info['steps']} steps "
          f"after {info['warmup']} warm-up, torch attention: {info['torch_attention']}")
    for kind in kinds_of(results):
        print(describe(kind, results[0][kind]["process"]))
    pk = info["sgemm_gflops"]
    each = ", ".join(f"{k} {v:.0f}" for k, v in pk.items() if k != "peak")
    print(f"float32 matmul peak: {pk['peak']:.0f} GFLOP/s ({each}); load average before "
          f"{info['load_avg_before'][0]:.2f}, after {info['load_avg_after'][0]:.2f}")
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
    if ARGS.worker:
        (memory_probe if ARGS.memory_probe else worker)(ARGS.worker, ARGS.config)
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
    load_before, peaks = os.getloadavg(), {}
    configs = list(CONFIGS) if ARGS.config == "all" else [ARGS.config]
    bench = bench_in_process if ARGS.in_process else bench_workers
    results = []
    for c in configs:
        runs, diff = bench(c, peaks)
        memory = {} if ARGS.no_memory else {k: run_worker(k, c, "--memory-probe")["peak_mib"] for k in runs}
        results.append(summarize(c, runs, diff, max(peaks.values()), memory))
    info = {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
        "in_process": ARGS.in_process, "backend": ARGS.backend, "device": DEVICE, "threads": THREADS,
        "kernels": ARGS.kernels, "torch_attention": ARGS.torch_attention, "rounds": ARGS.rounds,
        "steps": ARGS.steps, "warmup": ARGS.warmup, "minivit": minivit.__version__, "numpy": np.__version__,
        "torch": metadata.version("torch"), "python": platform.python_version(),
        "sgemm_gflops": peaks | {"peak": max(peaks.values())},
        "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
    }
    report(info, results)
    save(info, results)


if __name__ == "__main__":
    main()
