"""Time Conv2d's forward and backward in minivit and in PyTorch, each in its own process, on the
convolutions of CvT-13's first stage: the token embedding (3 -> 64 channels, kernel 7, stride 4,
padding 2, on 224 x 224 images) and the block's three depthwise projections of the 56 x 56 x 64
token grid (kernel 3, padding 1; stride 1 for q, 2 for k and v). The projections are timed twice:
on contiguous (B, C, H, W) arrays, and on the layout CvT hands them, a (B, C, H, W) view of
(B, N, C) tokens (channels last in memory; PyTorch then picks its channels-last kernels). The
stage row counts them as CvT runs them, on tokens.

    python benchmarks/bench_conv.py                    # 5 rounds, batch 16
    python benchmarks/bench_conv.py --rounds 3 --json benchmarks/conv_results.json

Each round starts one fresh process per framework in turn (minivit, PyTorch, ...); a process
times every shape: ``--warmup`` untimed calls, then the median of ``--steps`` calls of forward
then backward (the input gradient and the parameter gradients). minivit's process is tuned as
its command line tunes it (``minivit.kernels.tune_process``), PyTorch's is left at its defaults.
Reported: the median over the rounds of each round's median, the spread (min-max) of the round
medians, the ratio minivit / PyTorch per shape and for the stage (the embedding, q, k and v
once each, as one block of the stage runs them). Every worker saves its outputs on a fixed input
and weights, and the run stops unless the two frameworks agree.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SHAPES = {  # name: (in, out, kernel, stride, padding, groups, bias, input height = width, tokens layout)
    "embed 3->64 k7 s4 p2": (3, 64, 7, 4, 2, 1, True, 224, False),
    "q: depthwise 64 k3 s1": (64, 64, 3, 1, 1, 64, False, 56, False),
    "k, v: depthwise 64 k3 s2": (64, 64, 3, 2, 1, 64, False, 56, False),
    "q: the same, on tokens": (64, 64, 3, 1, 1, 64, False, 56, True),
    "k, v: the same, on tokens": (64, 64, 3, 2, 1, 64, False, 56, True),
}
STAGE = {"embed 3->64 k7 s4 p2": 1, "q: the same, on tokens": 1, "k, v: the same, on tokens": 2}  # per block


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16, help="images per call (default 16)")
    p.add_argument("--rounds", type=int, default=5, help="rounds of one process per framework (default 5)")
    p.add_argument("--steps", type=int, default=10, help="timed calls per shape and process (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--worker", choices=["minivit", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--outputs", metavar="PATH", help=argparse.SUPPRESS)  # with --worker: .npz of outputs
    return p.parse_args()


ARGS = parse_args()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout
if ARGS.worker == "minivit":
    from minivit.kernels import tune_process  # the standard library only

    tune_process()  # before numpy, as the command line does
import numpy as np  # noqa: E402


def inputs(shape_name, seed=0):
    """The input, the weights and the upstream gradient of one shape, the same in both workers.
    On tokens, x and g are (B, C, H, W) views of (B, H W, C) arrays, as CvT's ``to_grid`` makes."""
    cin, cout, k, s, p, groups, bias, size, tokens = SHAPES[shape_name]
    gen = np.random.default_rng(seed)
    out = (size + 2 * p - k) // s + 1

    def grid(channels, side):
        if not tokens:
            return gen.standard_normal((ARGS.batch, channels, side, side), dtype=np.float32)
        z = gen.standard_normal((ARGS.batch, side * side, channels), dtype=np.float32)  # (B, N, C)
        return z.reshape(ARGS.batch, side, side, channels).transpose(0, 3, 1, 2)  # (B, C, H, W), a view

    x = grid(cin, size)
    w = (0.1 * gen.standard_normal((cout, cin // groups, k, k))).astype(np.float32)
    b = (0.1 * gen.standard_normal(cout)).astype(np.float32) if bias else None
    g = grid(cout, out)
    return x, w, b, g


def minivit_call(shape_name):
    from minivit.nn import Conv2d

    cin, cout, k, s, p, groups, bias = SHAPES[shape_name][:7]
    x, w, b, g = inputs(shape_name)
    conv = Conv2d(cin, cout, k, s, p, groups=groups, bias=bias, dtype="float32")
    conv.weight.data[...] = w
    if b is not None:
        conv.bias.data[...] = b

    def call():
        y = conv.forward(x)
        conv.backward(g)
        return y

    return call


def torch_call(shape_name):
    import torch

    cin, cout, k, s, p, groups, bias = SHAPES[shape_name][:7]
    x, w, b, g = inputs(shape_name)  # on tokens: strided views, which torch.from_numpy keeps
    conv = torch.nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=bias)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
        if b is not None:
            conv.bias.copy_(torch.from_numpy(b))
    tx, tg = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(g)

    def call():
        tx.grad = None
        y = conv(tx)
        y.backward(tg)
        return y.detach()

    return call


def worker(kind):
    """Time every shape in this process; print {shape: [seconds]} as JSON, save the outputs."""
    result, outputs = {}, {}
    for name in SHAPES:
        call = (minivit_call if kind == "minivit" else torch_call)(name)
        outputs[name] = np.asarray(call())  # the first call: its output, for the agreement check
        for _ in range(ARGS.warmup):
            call()
        times = []
        for _ in range(ARGS.steps):
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        result[name] = statistics.median(times)
    np.savez(ARGS.outputs, **{f"o{i}": o for i, o in enumerate(outputs.values())})
    print(json.dumps(result))


def run_worker(kind, folder):
    path = os.path.join(folder, f"{kind}.npz")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--outputs", path,
           "--batch", str(ARGS.batch), "--steps", str(ARGS.steps), "--warmup", str(ARGS.warmup)]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1]), np.load(path)


def main():
    rounds = {"minivit": [], "torch": []}
    worst = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for r in range(ARGS.rounds):
            outs = {}
            for kind in rounds if r % 2 == 0 else list(rounds)[::-1]:  # alternate which goes first
                times, outs[kind] = run_worker(kind, folder)
                rounds[kind].append(times)
            for key in outs["torch"].files:
                a, b = outs["minivit"][key], outs["torch"][key]
                worst = max(worst, float(np.abs(a - b).max() / np.abs(b).max()))
    if worst > 1e-4:
        sys.exit(f"minivit's and PyTorch's convolutions disagree: max |difference| / max |output| = "
                 f"{worst:.1e}")
    print(f"Conv2d forward + backward, batch {ARGS.batch}, float32, each framework in its own process: "
          f"median of {ARGS.rounds} rounds (each the median of {ARGS.steps} calls); outputs agree to "
          f"{worst:.1e}")
    print(f"{'shape':40s} {'minivit ms':>12s} {'min-max':>13s} {'PyTorch ms':>12s} {'min-max':>13s} "
          f"{'ratio':>6s}")
    table = {}
    for name in list(SHAPES) + ["stage 1 (embed + q + k + v, on tokens)"]:
        per_round = {kind: [sum(STAGE[s] * t[s] for s in STAGE) if name not in SHAPES else t[name]
                            for t in runs] for kind, runs in rounds.items()}
        med = {kind: statistics.median(v) * 1e3 for kind, v in per_round.items()}
        spread = {kind: f"{min(v) * 1e3:.1f}-{max(v) * 1e3:.1f}" for kind, v in per_round.items()}
        table[name] = {"minivit_ms": med["minivit"], "torch_ms": med["torch"],
                       "ratio": med["minivit"] / med["torch"],
                       "minivit_rounds_ms": [t * 1e3 for t in per_round["minivit"]],
                       "torch_rounds_ms": [t * 1e3 for t in per_round["torch"]]}
        print(f"{name:40s} {med['minivit']:12.1f} {spread['minivit']:>13s} {med['torch']:12.1f} "
              f"{spread['torch']:>13s} {med['minivit'] / med['torch']:6.2f}")
    if ARGS.json:
        import torch

        import minivit

        info = {"batch": ARGS.batch, "rounds": ARGS.rounds, "steps": ARGS.steps, "warmup": ARGS.warmup,
                "max_relative_output_difference": worst, "numpy": np.__version__, "torch": torch.__version__,
                "minivit": minivit.__version__, "date": time.strftime("%Y-%m-%d")}
        with open(ARGS.json, "w") as f:
            json.dump({"info": info, "results": table}, f, indent=1)


if __name__ == "__main__":
    if ARGS.worker:
        worker(ARGS.worker)
    else:
        main()
