"""The assignments: their tasks, points, and what each task's check runs.

A task is a region of minivit's source (``minivit.classroom.regions``) with a ``probe``: a
function of a minivit package (the student's, or the library itself) and a random generator
that builds the task's layer at random sizes, runs it in float64 and returns a ``Probe``:

* ``outputs``: the arrays the task computes (``y``; or ``dx`` and the parameter gradients), which
  the grader compares with the library's own on the same hidden inputs;
* ``shapes``: the shapes they must have, from the inputs alone;
* ``properties``: {statement: holds?}, what must be true whatever the code (softmax's rows sum
  to 1, even for logits of 1000);
* ``grad_error``: for a backward task, the gradient check's worst relative error (backward
  against central differences of the forward).

A task without a region of its own (``uses``: the tasks whose code it runs) is graded on its
properties alone: a3.train trains the student's ViT and checks its accuracy.

The known mistakes of each task, which the grader recognises, are the teacher's: ``mistakes``.
"""

import importlib
import os
from collections import namedtuple

import numpy as np

Probe = namedtuple("Probe", "outputs shapes properties grad_error", defaults=({}, None))
Task = namedtuple("Task", "id title points hint probe uses", defaults=(None,))
# uses: None for a task with a region of its own; else the tasks whose student code it runs (a3.train
# trains the student's whole ViT), with nothing of the library's to compare against
Assignment = namedtuple("Assignment", "name title notebook tasks")


def _sizes(gen, *names):
    """Small random sizes for a probe: batch B, tokens N, widths D, ..., a fresh draw each time."""
    ranges = {"B": (2, 4), "N": (3, 7), "D": (4, 10), "h": (2, 4), "d": (2, 5)}
    return [int(gen.integers(*ranges[n[0]])) for n in names]


def _randomize(layer, gen):
    """Every parameter of ``layer`` drawn from N(0, 1): an init of zeros or ones hides mistakes."""
    for _, p in layer.named_parameters():
        p.data[...] = gen.standard_normal(p.shape)
    return layer


def _grad_error(mv, layer, *inputs):
    return importlib.import_module(f"{mv.__name__}.gradcheck").gradcheck(layer, *inputs).worst


def _backward_outputs(layer, dx):
    """{"dx": ..., "d<parameter>": ...}: what a backward returns and accumulates."""
    out = {"dx": dx}
    out.update({f"d{name}": p.grad.copy() for name, p in layer.named_parameters()})
    return out


# --- A1: the basic layers ---------------------------------------------------------------------

def linear_forward(mv, gen):
    B, N, D_in, D_out = _sizes(gen, "B", "N", "D", "D")
    layer = _randomize(mv.nn.Linear(D_in, D_out, dtype="float64"), gen)
    x = gen.standard_normal((B, N, D_in))
    return Probe({"y": layer.forward(x)}, {"y": (B, N, D_out)})


def linear_backward(mv, gen):
    B, N, D_in, D_out = _sizes(gen, "B", "N", "D", "D")
    D_out += D_in  # never square: a transposed gradient cannot pass for the right one
    layer = _randomize(mv.nn.Linear(D_in, D_out, dtype="float64"), gen)
    x = gen.standard_normal((B, N, D_in))
    layer.forward(x)
    dx = layer.backward(gen.standard_normal((B, N, D_out)))
    return Probe(_backward_outputs(layer, dx), {"dx": x.shape, "dweight": (D_in, D_out), "dbias": (D_out,)},
                grad_error=_grad_error(mv, layer, x))


def layernorm_forward(mv, gen):
    B, N, D = _sizes(gen, "B", "N", "D")
    layer = _randomize(mv.nn.LayerNorm(D, dtype="float64"), gen)
    x = 3.0 + 2.0 * gen.standard_normal((B, N, D))
    plain = mv.nn.LayerNorm(D, eps=0.0, dtype="float64").forward(x)  # gamma = 1, beta = 0
    return Probe({"y": layer.forward(x)}, {"y": x.shape}, {
        "with gamma = 1, beta = 0, eps = 0 every token has mean 0": bool(np.abs(plain.mean(-1)).max() < 1e-9),
        "with gamma = 1, beta = 0, eps = 0 every token has variance 1": bool(
           np.abs(plain.var(-1) - 1).max() < 1e-9),
    })


def layernorm_backward(mv, gen):
    B, N, D = _sizes(gen, "B", "N", "D")
    layer = _randomize(mv.nn.LayerNorm(D, dtype="float64"), gen)
    x = gen.standard_normal((B, N, D))
    layer.forward(x)
    dx = layer.backward(gen.standard_normal((B, N, D)))
    return Probe(_backward_outputs(layer, dx), {"dx": x.shape, "dweight": (D,), "dbias": (D,)},
                grad_error=_grad_error(mv, layer, x))


def normalize_backward(mv, gen):
    B, N, D = _sizes(gen, "B", "N", "D")
    x = gen.standard_normal((B, N, D))
    axis = -1 if gen.random() < 0.5 else (0, 1)  # LayerNorm's, or over the batch as BatchNorm's
    x_hat = (x - x.mean(axis=axis, keepdims=True)) / x.std(axis=axis, keepdims=True)
    g = gen.standard_normal(x.shape)
    d = importlib.import_module(f"{mv.__name__}.nn.norm").normalize_backward(g, x_hat, axis)
    layer = _randomize(mv.nn.LayerNorm(D, dtype="float64"), gen)  # its backward ends in normalize_backward
    return Probe({"d": d}, {"d": x.shape}, grad_error=_grad_error(mv, layer, x))


def gelu_forward(mv, gen):
    (B, N, D) = _sizes(gen, "B", "N", "D")
    x = 2.0 * gen.standard_normal((B, N, D))
    y = mv.nn.GELU().forward(x)
    ends = mv.nn.GELU().forward(np.array([-30.0, 0.0, 30.0]))
    return Probe({"y": y}, {"y": x.shape}, {
        "GELU(0) = 0, GELU(x) -> x for large x and -> 0 for very negative x": bool(
           np.allclose(ends, [0.0, 0.0, 30.0], atol=1e-12)),
    })


def gelu_backward(mv, gen):
    (B, N, D) = _sizes(gen, "B", "N", "D")
    layer = mv.nn.GELU()
    x = 2.0 * gen.standard_normal((B, N, D))
    layer.forward(x)
    dx = layer.backward(gen.standard_normal(x.shape))
    return Probe({"dx": dx}, {"dx": x.shape}, grad_error=_grad_error(mv, layer, x))


def softmax_forward(mv, gen):
    B, N, M = _sizes(gen, "B", "N", "N")
    x = gen.standard_normal((B, N, M))
    y = mv.nn.softmax(x)
    with np.errstate(all="ignore"):
        big = mv.nn.softmax(np.array([[1000.0, 999.0, -1000.0]]))
    return Probe({"y": y}, {"y": x.shape}, {
        "every row sums to 1": bool(np.abs(y.sum(-1) - 1).max() < 1e-12),
        "logits of 1000 give finite probabilities (stable for any shift)": bool(
           np.all(np.isfinite(big)) and np.allclose(big.sum(), 1.0)),
    })


def softmax_backward(mv, gen):
    B, N, M = _sizes(gen, "B", "N", "N")
    layer = mv.nn.Softmax()
    x = gen.standard_normal((B, N, M))
    layer.forward(x)
    dx = layer.backward(gen.standard_normal(x.shape))
    return Probe({"dx": dx}, {"dx": x.shape}, grad_error=_grad_error(mv, layer, x))


A1 = Assignment("a1", "The basic layers: Linear, LayerNorm, GELU and softmax, forward and backward",
                "a1_layers.py", [
    Task("a1.linear.forward", "Linear, forward: y = x W + b", 2,
         "y = x W + b, with x folded to x2 (M, D_in)", linear_forward),
    Task("a1.linear.backward", "Linear, backward: dW = x^T g, db = sum of g's rows, dx = g W^T", 3,
         "dL/dW = x2^T g, dL/db = the rows of g summed, dx2 = g W^T", linear_backward),
    Task("a1.layernorm.forward", "LayerNorm, forward: y = gamma (x - mu) / sqrt(sigma^2 + eps) + beta", 2,
         "mu, var (biased), rstd = 1 / sqrt(var + eps), x_hat, y = gamma x_hat + beta", layernorm_forward),
    Task("a1.normalize.backward", "Normalisation, backward: through mu and sigma", 3,
         "sigma dL/dx = g - mean(g) - x_hat mean(g x_hat), means over axis", normalize_backward),
    Task("a1.layernorm.backward", "LayerNorm, backward", 2,
         "dgamma, dbeta, g = gamma dy (dL/dx_hat), dx = rstd * normalize_backward(g, x_hat, axis=-1)",
         layernorm_backward),
    Task("a1.gelu.forward", "GELU, forward: x Phi(x)", 1,
         "y = x Phi(x), Phi the standard normal CDF", gelu_forward),
    Task("a1.gelu.backward", "GELU, backward: Phi(x) + x phi(x)", 2,
         "dx = dy (Phi(x) + x phi(x))", gelu_backward),
    Task("a1.softmax.forward", "softmax, stable", 2,
         "y = exp(x - max x) / sum exp(x - max x) along axis", softmax_forward),
    Task("a1.softmax.backward", "softmax, backward without the Jacobian", 3,
         "dx = y (dy - sum(dy y)) along axis", softmax_backward),
])


# --- A2: attention ----------------------------------------------------------------------------

def _attention_inputs(gen):
    B, h, N, M, d = _sizes(gen, "B", "h", "N", "N", "d")
    q, k, v = (gen.standard_normal((B, h, n, d)) for n in (N, M, M))
    bias = gen.standard_normal((h, N, M))
    mask = gen.random((N, M)) < 0.7
    mask[:, 0] = True  # every query sees a key
    return q, k, v, bias, mask


def attention_forward(mv, gen):
    q, k, v, bias, mask = _attention_inputs(gen)
    layer = mv.nn.ScaledDotProductAttention()
    out = layer.forward(q, k, v, bias=bias, mask=mask)
    a = layer.attn_probs
    plain = mv.nn.ScaledDotProductAttention().forward(q, k, v)
    return Probe({"out": out, "out_plain": plain, "A": a},
                {"out": q.shape, "out_plain": q.shape, "A": q.shape[:3] + (k.shape[2],)}, {
                    "every row of A sums to 1": bool(np.abs(a.sum(-1) - 1).max() < 1e-12),
                    "masked keys get probability 0": bool(np.all(a[..., ~mask] == 0)),
                })


def attention_backward(mv, gen):
    q, k, v, bias, mask = _attention_inputs(gen)
    layer = mv.nn.ScaledDotProductAttention()
    out = layer.forward(q, k, v, bias=bias, mask=mask)
    dq, dk, dv, dbias = layer.backward(gen.standard_normal(out.shape))
    return Probe({"dq": dq, "dk": dk, "dv": dv, "dbias": dbias},
                {"dq": q.shape, "dk": k.shape, "dv": v.shape, "dbias": bias.shape},
                grad_error=_grad_error(mv, layer, q, k, v, bias))


def _msa(mv, gen):
    B, N, h, d = _sizes(gen, "B", "N", "h", "d")
    layer = _randomize(mv.nn.MultiHeadSelfAttention(h * d, h, dtype="float64"), gen)
    return layer, gen.standard_normal((B, N, h * d))


def heads_forward(mv, gen):
    layer, z = _msa(mv, gen)
    return Probe({"y": layer.forward(z)}, {"y": z.shape})


def heads_backward(mv, gen):
    layer, z = _msa(mv, gen)
    layer.forward(z)
    dz, _ = layer.backward(gen.standard_normal(z.shape))
    shapes = {"dx": z.shape} | {f"d{n}": p.shape for n, p in layer.named_parameters()}
    return Probe(_backward_outputs(layer, dz), shapes, grad_error=_grad_error(mv, layer, z))


A2 = Assignment("a2", "Attention: scaled dot-product and multi-head self-attention, with bias and mask",
                "a2_attention.py", [
    Task("a2.attention.forward", "Scaled dot-product attention, forward: A = softmax(s q k^T + bias)", 3,
         "scale, scores s (B, h, N, M), + bias, masked scores to -inf, a = softmax(s)", attention_forward),
    Task("a2.attention.backward", "Scaled dot-product attention, backward", 4,
         "dv = A^T g, dA = g v^T (through dropout), dS by softmax_backward, dq = s dS k, dk = s dS^T q",
         attention_backward),
    Task("a2.heads.forward", "Multi-head self-attention, forward: split into heads, attend, merge", 2,
         "qkv (B, N, 3D) -> q, k, v (B, h, N, d); attend; merge the heads back to (B, N, D)", heads_forward),
    Task("a2.heads.backward", "Multi-head self-attention, backward", 3,
         "back through proj, split g into heads, attention's backward, stack d[q, k, v] as qkv's output",
         heads_backward),
])


# --- A3: the ViT ------------------------------------------------------------------------------

def patchify_forward(mv, gen):
    B, C, P, g, h = _sizes(gen, "B", "h", "h", "h", "h")  # channels, patch size, grid rows, columns
    x = gen.standard_normal((B, C, g * P, h * P))
    return Probe({"x_p": mv.nn.Patchify(P).forward(x)}, {"x_p": (B, g * h, C * P * P)})


def patchify_backward(mv, gen):
    B, C, P, g, h = _sizes(gen, "B", "h", "h", "h", "h")
    layer, x = mv.nn.Patchify(P), gen.standard_normal((B, C, g * P, h * P))
    dx = layer.backward(gen.standard_normal(layer.forward(x).shape))
    return Probe({"dx": dx}, {"dx": x.shape}, grad_error=_grad_error(mv, layer, x))


def class_token_forward(mv, gen):
    B, N, D, k = _sizes(gen, "B", "N", "D", "h")
    layer = _randomize(mv.nn.ClassToken(D, num_tokens=k - 1, dtype="float64"), gen)
    z = gen.standard_normal((B, N, D))
    return Probe({"y": layer.forward(z)}, {"y": (B, N + k - 1, D)})


def class_token_backward(mv, gen):
    B, N, D, k = _sizes(gen, "B", "N", "D", "h")
    layer = _randomize(mv.nn.ClassToken(D, num_tokens=k - 1, dtype="float64"), gen)
    z = gen.standard_normal((B, N, D))
    dz = layer.backward(gen.standard_normal(layer.forward(z).shape))
    return Probe(_backward_outputs(layer, dz), {"dx": z.shape, "dweight": (1, k - 1, D)},
                 grad_error=_grad_error(mv, layer, z))


def position_backward(mv, gen):
    B, N, D = _sizes(gen, "B", "N", "D")
    layer = _randomize(mv.nn.PositionEmbedding(N, D, dtype="float64"), gen)
    z = gen.standard_normal((B, N, D))
    dz = layer.backward(gen.standard_normal(layer.forward(z).shape))
    return Probe(_backward_outputs(layer, dz), {"dx": z.shape, "dweight": (1, N, D)},
                 grad_error=_grad_error(mv, layer, z))


def _block(mv, gen):
    B, N, h, d = _sizes(gen, "B", "N", "h", "d")
    layer = _randomize(mv.nn.Block(h * d, h, mlp_ratio=2.0, dtype="float64"), gen)
    return layer, gen.standard_normal((B, N, h * d))


def block_forward(mv, gen):
    layer, z = _block(mv, gen)
    return Probe({"y": layer.forward(z)}, {"y": z.shape})


def block_backward(mv, gen):
    layer, z = _block(mv, gen)
    dz = layer.backward(gen.standard_normal(layer.forward(z).shape))
    shapes = {"dx": z.shape} | {f"d{n}": p.shape for n, p in layer.named_parameters()}
    return Probe(_backward_outputs(layer, dz), shapes, grad_error=_grad_error(mv, layer, z))


TRAIN_EPOCHS, TRAIN_BAR = 30, 0.85  # vit_digits, warmup 3: 92-95% on the 2-core VM of the README


def train_digits(mv, gen):
    """Train the student's vit_digits on the digits for TRAIN_EPOCHS epochs (kernels off, float32)."""
    import tempfile

    train = importlib.import_module(f"{mv.__name__}.train")
    config = dict(train.DEFAULTS, epochs=TRAIN_EPOCHS, warmup=3, seed=int(gen.integers(1000)))
    with tempfile.TemporaryDirectory() as out:
        _, test = train.train(train.check_config(config), os.path.join(out, "run"), quiet=True,
                              log=lambda *a: None)
    return Probe({}, {}, {f"trained {TRAIN_EPOCHS} epochs on the digits, the chosen model scores at least "
                          f"{TRAIN_BAR:.0%} on the test split (it scored {test['test_acc']:.1%})":
                          bool(test["test_acc"] >= TRAIN_BAR)})


A3 = Assignment("a3", "The ViT: patches, tokens, positions and the block, then training it on digits",
                "a3_vit.py", [
    Task("a3.patchify.forward", "Patchify, forward: the image as a sequence of flattened patches", 2,
         "x (B, C, H, W) -> x_p (B, N', C P P), patches row-major, each flattened in (c, i, j) order",
         patchify_forward),
    Task("a3.patchify.backward", "Patchify, backward: the inverse reshape and transpose", 2,
         "dx (B, C, H, W): dout moved back where each entry came from", patchify_backward),
    Task("a3.class_token.forward", "Class token, forward: [x_class; z]", 1,
         "out (B, k + N, D): the k learned tokens first, then z", class_token_forward),
    Task("a3.class_token.backward", "Class token, backward", 2,
         "dweight: the tokens' rows of dout summed over the batch; dz: the other rows", class_token_backward),
    Task("a3.position.backward", "Position embedding, backward", 1,
         "dE_pos: dout summed over the batch", position_backward),
    Task("a3.block.forward", "The pre-norm block, forward: two residual branches", 2,
         "z' = z + DropPath(MSA(LN1(z))), then z = z' + DropPath(MLP(LN2(z')))", block_forward),
    Task("a3.block.backward", "The pre-norm block, backward", 4,
         "through the MLP branch plus the residual, then the attention branch plus the residual",
         block_backward),
    Task("a3.train", f"Train your ViT on the digits: at least {TRAIN_BAR:.0%} test accuracy", 4,
         "", train_digits, uses=("a3.patchify.forward", "a3.patchify.backward", "a3.class_token.forward",
                                 "a3.class_token.backward", "a3.position.backward", "a3.block.forward",
                                 "a3.block.backward")),
])


# --- A4: Swin's windows -----------------------------------------------------------------------

def _window(mv):
    return importlib.import_module(f"{mv.__name__}.nn.window")


def _grid(gen):
    B, M, a, b, C = _sizes(gen, "B", "h", "h", "h", "h")  # windows of M x M, a x b of them
    return B, M, gen.standard_normal((B, a * M, b * M, C))


def window_partition(mv, gen):
    B, M, x = _grid(gen)
    windows = _window(mv).window_partition(x, M)
    n = B * (x.shape[1] // M) * (x.shape[2] // M)
    right = windows.shape == (n, M * M, x.shape[3])
    back = _window(mv).window_reverse(windows, M, x.shape) if right else None
    return Probe({"windows": windows}, {"windows": (n, M * M, x.shape[3])}, {
        "window_reverse (the library's) undoes it": back is not None and bool(np.array_equal(back, x))})


def window_reverse(mv, gen):
    B, M, x = _grid(gen)
    layer = mv.nn.WindowPartition(M)
    windows = layer.forward(x)
    return Probe({"x": _window(mv).window_reverse(windows, M, x.shape)}, {"x": x.shape},
                 grad_error=_grad_error(mv, layer, x))


def shift_mask(mv, gen):
    M, a, b = _sizes(gen, "h", "h", "h")
    M += 1  # a shift s in 1 .. M - 1
    s = int(gen.integers(1, M))
    mask = _window(mv).shift_window_mask(a * M, b * M, M, s)
    square = mask.ndim == 3 and mask.shape[1] == mask.shape[2]
    return Probe({"mask": mask}, {"mask": (a * b, M * M, M * M)}, {
        "every token may attend to itself (0 on the diagonal)": square and bool(
            np.all(np.diagonal(mask, axis1=1, axis2=2) == 0)),
        "symmetric, with values 0 and -100 only": square and bool(
            np.array_equal(mask, mask.transpose(0, 2, 1)) and np.all(np.isin(mask, (0.0, -100.0)))),
    })


def relative_index(mv, gen):
    (M,) = _sizes(gen, "h")
    index = _window(mv).relative_position_index(M)
    ok = index.shape == (M * M, M * M)
    return Probe({"index": index}, {"index": (M * M, M * M)}, {
        "the zero offset has one entry, the table's middle row": ok and bool(
            np.all(np.diagonal(index) == (2 * M - 1) * (M - 1) + M - 1)),
        "entries index the ((2M - 1)^2)-row table": ok and bool(
            index.min() >= 0 and index.max() < (2 * M - 1) ** 2),
    })


def _bias(mv, gen):
    M, h = _sizes(gen, "h", "h")
    return _randomize(mv.nn.RelativePositionBias(M, h, dtype="float64"), gen), M, h


def relative_bias_forward(mv, gen):
    layer, M, h = _bias(mv, gen)
    return Probe({"bias": layer.forward()}, {"bias": (h, M * M, M * M)})


def relative_bias_backward(mv, gen):
    layer, M, h = _bias(mv, gen)
    layer.forward()
    layer.backward(gen.standard_normal((h, M * M, M * M)))
    return Probe({"dtable": layer.table.grad.copy()}, {"dtable": ((2 * M - 1) ** 2, h)},
                 grad_error=_grad_error(mv, layer))


A4 = Assignment("a4", "Swin's windows: partition and reverse, the shift mask, the relative position bias",
                "a4_swin.py", [
    Task("a4.window.partition", "Window partition: the grid as M x M windows", 2,
         "(B, H, W, C) -> (B H/M W/M, M*M, C), windows and their tokens row-major", window_partition),
    Task("a4.window.reverse", "Window reverse: the windows back on the grid", 2,
         "(B H/M W/M, M*M, C) -> (B, H, W, C), the inverse of window_partition", window_reverse),
    Task("a4.shift_mask", "The shifted-window attention mask", 4,
         "label the grid's 3 x 3 regions (cut at -M and -s), partition the labels, 0 where equal else -100",
         shift_mask),
    Task("a4.relative_index", "The relative position index", 2,
         "index[i, j] = (r_i - r_j + M - 1)(2M - 1) + (c_i - c_j + M - 1)", relative_index),
    Task("a4.relative_bias.forward", "Relative position bias, forward: gather from the table", 2,
         "bias (heads, n, n): table rows at index, reshaped to (n, n, heads), heads first",
         relative_bias_forward),
    Task("a4.relative_bias.backward", "Relative position bias, backward: scatter-add into the table", 3,
         "dtable: every (i, j) of dout added to the row index[i, j] (backend.scatter_add)",
         relative_bias_backward),
])


# --- A5: distillation -------------------------------------------------------------------------

def _logits(gen):
    B, K = _sizes(gen, "B", "D")
    z_cls, z_dist, z_teacher = (2.0 * gen.standard_normal((B, K)) for _ in range(3))
    return z_cls, z_dist, gen.integers(0, K, size=B), z_teacher


def _loss_grad_error(make, z_cls, z_dist, labels, z_teacher, dz_cls, dz_dist, eps=1e-6):
    """The gradient check of a loss: (dz_cls, dz_dist) against central differences of forward."""
    worst = 0.0
    for z, dz in ((z_cls, dz_cls), (z_dist, dz_dist)):
        numeric = np.zeros_like(z)
        for i in np.ndindex(z.shape):
            old = z[i]
            z[i] = old + eps
            up = make().forward(z_cls, z_dist, labels, z_teacher)
            z[i] = old - eps
            down = make().forward(z_cls, z_dist, labels, z_teacher)
            z[i] = old
            numeric[i] = (up - down) / (2 * eps)
        worst = max(worst, float(np.abs(dz - numeric).max() / max(np.abs(numeric).max(), 1e-12)))
    return worst


def _distillation(mv, gen, kind):
    losses = importlib.import_module(f"{mv.__name__}.losses")
    alpha, tau = float(gen.uniform(0.2, 0.8)), float(gen.uniform(1.5, 4.0))
    if kind == "soft":
        return lambda: losses.SoftDistillationLoss(alpha=alpha, tau=tau)
    return lambda: losses.HardDistillationLoss(alpha=alpha)


def distillation_forward(kind):
    def probe(mv, gen):
        make, args = _distillation(mv, gen, kind), _logits(gen)
        return Probe({"loss": np.asarray(make().forward(*args))}, {"loss": ()})
    return probe


def distillation_backward(kind):
    def probe(mv, gen):
        make, args = _distillation(mv, gen, kind), _logits(gen)
        loss = make()
        loss.forward(*args)
        dz_cls, dz_dist = loss.backward()
        shapes = {"dz_cls": args[0].shape, "dz_dist": args[1].shape}
        return Probe({"dz_cls": dz_cls, "dz_dist": dz_dist}, shapes,
                     grad_error=_loss_grad_error(make, *args, dz_cls, dz_dist))
    return probe


A5 = Assignment("a5", "DeiT's distillation losses: soft (KL at a temperature), hard (the teacher's labels)",
                "a5_distillation.py", [
    Task("a5.soft.forward", "Soft distillation: tau^2 KL(p_T || p_S) at temperature tau", 3,
         "log p_S, log p_T at z / tau (log_softmax), p_S, p_T, loss = tau^2 sum p_T (log p_T - log p_S) / B",
         distillation_forward("soft")),
    Task("a5.soft.backward", "Soft distillation, backward", 3,
         "dz_dist = tau (p_S - p_T) / B, times dout", distillation_backward("soft")),
    Task("a5.hard.forward", "Hard distillation: the teacher's decision as a label", 1,
         "y_teacher = the argmax of each image's teacher logits", distillation_forward("hard")),
    Task("a5.combine.forward", "The two terms: (1 - alpha) CE(z_cls, y) + alpha L_distill(z_dist, z_T)", 2,
         "ce = CE(z_cls, labels); loss = (1 - alpha) ce + alpha distill(z_dist, z_teacher)",
         distillation_forward("soft")),
    Task("a5.combine.backward", "The two terms, backward", 2,
         "dz_cls = CE's backward of (1 - alpha) dout; dz_dist = distill_backward(alpha dout)",
         distillation_backward("hard")),
])

ASSIGNMENTS = {a.name: a for a in (A1, A2, A3, A4, A5)}
TASKS = {t.id: t for a in ASSIGNMENTS.values() for t in a.tasks}


def get(name):
    """The assignment called ``name`` (a1, a2, ...); a ValueError lists the others."""
    if name not in ASSIGNMENTS:
        raise ValueError(f"unknown assignment {name!r}; expected one of {', '.join(ASSIGNMENTS)}")
    return ASSIGNMENTS[name]

