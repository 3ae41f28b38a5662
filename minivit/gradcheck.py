"""Numerical gradient checking: is a hand-written backward the derivative of its forward?

For a module with forward f, pick a random upstream gradient G (one per output) and the scalar
L = sum(f(x; theta) * G). backward(G) claims dL/dx and dL/dtheta. Central differences check each
claim entry by entry:

    dL/dw  ~=  (L(w + eps) - L(w - eps)) / (2 eps)      (error O(eps^2))

Every entry of small tensors is perturbed; large tensors get a seeded random sample. The error of
a tensor is max |analytic - numeric| / max |numeric|: relative to the gradient's own scale, so
entries near zero do not blow it up. Run in float64: in float32 the rounding error of L / eps
swamps the comparison. Every perturbed entry is restored afterwards.

A gradient can be exactly zero: CvT's key bias b_k adds q_i b_k to every score of row i, which
the softmax ignores. Its numeric gradient is then rounding noise, and a relative error means
nothing. So a tensor whose numeric entries are all below what central differences resolve (100
times the rounding of L, eps_mach sum |f G|, over 2 eps) is taken to have a zero gradient, and
its analytic gradient must be zero to rounding: its error is max |analytic| relative to the
largest numeric gradient of the whole check.

Use ``gradcheck(module, *inputs)``; it returns a ``GradcheckResult`` (``.worst``, per-tensor
``.errors``, printable). ``assert_gradcheck`` raises with that table when the worst error is over
the bar.
"""

import numpy as np

from . import backend
from .nn.module import Module


class GradcheckResult:
    """Worst relative error per checked tensor (inputs as ``input[i]``, parameters by name)."""

    def __init__(self, errors, counts):
        self.errors, self.counts = errors, counts

    @property
    def worst(self):
        return max(self.errors.values()) if self.errors else 0.0

    def __str__(self):
        width = max((len(k) for k in self.errors), default=5)
        rows = [f"{k:<{width}}  {v:.2e}  ({self.counts[k]} entries)" for k, v in self.errors.items()]
        return "\n".join(rows + [f"{'worst':<{width}}  {self.worst:.2e}"])


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _is_float(a):
    return hasattr(a, "dtype") and a.dtype.kind == "f"


def _entries(size, max_entries, gen):
    if size <= max_entries:
        return np.arange(size)
    return np.sort(gen.choice(size, max_entries, replace=False))


def rng_states(module):
    """[(generator, its state)] for every generator a module's layers draw from (dropout masks):
    setting each state back (``restore``) replays the same draws."""
    gens = {}
    if isinstance(module, Module):
        for _, m in module.named_modules():
            g = m.__dict__.get("rng")
            if isinstance(g, np.random.Generator):
                gens[id(g)] = g
    return [(g, g.bit_generator.state) for g in gens.values()]


def restore(states):
    """Put every generator back in the state ``rng_states`` recorded."""
    for g, state in states:
        g.bit_generator.state = state


def gradcheck(module, *inputs, wrt=None, params=True, eps=1e-5, max_entries=64, seed=0, **kwargs):
    """Check ``module.backward`` against central differences of ``module.forward``.

    inputs: the arrays passed to forward (and keyword ``kwargs``, not checked). wrt: indices of
    the inputs whose gradients backward returns, in order (default: every float input).
    params: also check every parameter's grad. Returns a GradcheckResult.
    """
    # a stream of its own, so the upstream gradient never equals inputs drawn with the same seed
    gen = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x6D76,)))
    if wrt is None:
        wrt = [i for i, a in enumerate(inputs) if _is_float(a)]
    for i in wrt:
        if inputs[i].dtype != np.float64:
            raise ValueError(f"gradcheck needs float64 inputs; input[{i}] is {inputs[i].dtype}")
    states = rng_states(module)
    named = list(module.named_parameters()) if params and isinstance(module, Module) else []
    for name, p in named:  # a float32 entry cannot hold w +- eps: the differences would be rounding
        if p.dtype != np.float64:
            raise ValueError(
                f"gradcheck needs float64 parameters; {name} is {p.dtype} (build with dtype='float64')"
            )

    def run_forward():
        restore(states)  # the same dropout masks on every call
        return _as_tuple(module.forward(*inputs, **kwargs))

    # analytic gradients
    outs = run_forward()
    upstream = tuple(backend.xp_of(o).asarray(gen.standard_normal(np.shape(o))) for o in outs)
    if isinstance(module, Module):
        module.zero_grad()
    # one gradient per float input given (None stands for an optional input not given)
    grads = [g for g in _as_tuple(module.backward(upstream if len(upstream) > 1 else upstream[0]))
             if g is not None]
    if len(grads) < len(wrt):
        raise ValueError(f"backward returned {len(grads)} gradients, expected {len(wrt)} (wrt={wrt})")
    checks = [(f"input[{i}]", inputs[i], grads[j]) for j, i in enumerate(wrt)]
    checks += [(name, p.data, p.grad.copy()) for name, p in named]

    def loss():
        return sum(float((o * u).sum()) for o, u in zip(run_forward(), upstream, strict=True))

    # what a central difference resolves: the rounding of L (eps_mach sum |f G|) over 2 eps, x100
    magnitude = sum(float(abs(o * u).sum()) for o, u in zip(outs, upstream, strict=True))
    resolution = 100 * np.finfo(np.float64).eps * magnitude / (2 * eps)

    found, counts = [], {}  # (name, analytic, numeric) of the sampled entries
    for name, array, analytic in checks:
        flat = array.reshape(-1)
        if flat.base is not array and flat.base is not array.base and not np.shares_memory(flat, array):
            raise ValueError(f"{name} must be contiguous to be perturbed in place")
        idx = _entries(flat.size, max_entries, gen)
        numeric = np.empty(len(idx))
        for n, i in enumerate(idx):
            i = int(i)
            old = float(flat[i])
            flat[i] = old + eps
            up = loss()
            flat[i] = old - eps
            down = loss()
            flat[i] = old
            numeric[n] = (up - down) / (2 * eps)
        found.append((name, backend.to_numpy(analytic).reshape(-1)[idx], numeric))
        counts[name] = len(idx)
    run_forward()  # leave the module as after a normal forward
    largest = max((np.abs(n).max(initial=0.0) for _, _, n in found), default=0.0)
    errors = {}
    for name, a, numeric in found:
        scale = np.abs(numeric).max(initial=0.0)
        if scale <= resolution:  # a zero gradient: the analytic one must be zero to rounding
            errors[name] = float(np.abs(a).max(initial=0.0) / max(largest, np.finfo(np.float64).tiny))
        else:
            errors[name] = float(np.abs(a - numeric).max() / scale)
    return GradcheckResult(errors, counts)


def assert_gradcheck(module, *inputs, tol=1e-7, **kwargs):
    """gradcheck, raising AssertionError with the per-tensor table if the worst error >= tol."""
    result = gradcheck(module, *inputs, **kwargs)
    if not result.worst < tol:
        raise AssertionError(f"gradient check failed (bar {tol:.0e}):\n{result}")
    return result
