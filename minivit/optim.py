"""Optimizers, the learning-rate schedule and gradient clipping.

An optimizer updates ``Parameter.data`` in place from ``Parameter.grad``. It takes one of:

* ``model.named_parameters()`` -- the recommended form: parameters are split into a group that is
  decayed and a group that is not, by ``no_weight_decay(name, p)`` (biases, norm weights,
  position embeddings and extra tokens are not decayed, as in ViT/DeiT training);
* ``model.parameters()`` -- one group, every parameter decayed by ``weight_decay`` (what
  torch.optim does with a plain list: names are needed to recognise embeddings and tokens);
* a list of groups ``[{"params": [...], "weight_decay": wd}, ...]``; a group without
  ``"weight_decay"`` gets the optimizer's.

The learning rate is ``opt.lr``, shared by all groups; a schedule sets it before each step:
``opt.lr = schedule(step)``. ``state_dict()`` holds plain numpy arrays (saved in a .npz).
"""

import math

import numpy as np

from . import backend, validate
from .nn.module import Parameter

_NO_DECAY_NAMES = ("pos_embed", "cls_token", "token", "relative_position_bias")


def no_weight_decay(name, p):
    """True for parameters that weight decay should leave alone: every parameter with ndim <= 1
    (biases, LayerNorm gamma and beta), the position embedding, extra tokens and Swin's relative
    position bias tables, by name (as timm's no_weight_decay)."""
    return p.data.ndim <= 1 or any(key in name for key in _NO_DECAY_NAMES)


def param_groups(named_parameters, weight_decay):
    """Split ``(name, Parameter)`` pairs into a decayed group and a not-decayed group."""
    decay, no_decay = [], []
    for name, p in named_parameters:
        (no_decay if no_weight_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _as_groups(params, weight_decay):
    params = list(params)
    if not params:
        raise ValueError("optimizer got no parameters")
    if all(isinstance(g, dict) for g in params):
        groups = []
        for g in params:
            if "params" not in g:
                raise ValueError(f"a parameter group needs a 'params' entry, got keys {sorted(g)}")
            groups.append({"params": list(g["params"]), "weight_decay": g.get("weight_decay", weight_decay)})
    elif all(isinstance(p, tuple) and len(p) == 2 for p in params):
        groups = param_groups(params, weight_decay)
    else:
        groups = [{"params": params, "weight_decay": weight_decay}]
    for g in groups:
        for p in g["params"]:
            if not isinstance(p, Parameter):
                raise ValueError(f"optimizer expected Parameters, got {type(p).__name__}")
    return groups


class Optimizer:
    """The shared part: groups, ``zero_grad``, the step counter and per-parameter state buffers."""

    state_names = ()  # the per-parameter buffers, e.g. ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr, weight_decay):
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"lr and weight_decay must be >= 0, got lr={lr}, weight_decay={weight_decay}")
        self.lr = lr
        self.groups = _as_groups(params, weight_decay)
        self.params = [p for g in self.groups for p in g["params"]]
        self.steps = 0  # number of step() calls so far
        self.state = {name: [None] * len(self.params) for name in self.state_names}

    def zero_grad(self):
        for p in self.params:
            p.grad[...] = 0

    def step(self):
        self.steps += 1
        i = 0
        for g in self.groups:
            for p in g["params"]:
                self.update(i, p, g["weight_decay"])
                i += 1

    def update(self, i, p, weight_decay):
        raise NotImplementedError

    def buffer(self, name, i, p):
        """The state buffer ``name`` of parameter i, created as zeros on first use."""
        buf = self.state[name][i]
        if buf is None:
            buf = self.state[name][i] = backend.xp_of(p.data).zeros_like(p.data)
        return buf

    def state_dict(self):
        """``{"steps": ..., "<buffer>.<i>": array}`` with host numpy arrays, for a .npz file."""
        sd = {"steps": np.array(self.steps, dtype=np.int64)}
        for name, bufs in self.state.items():
            for i, buf in enumerate(bufs):
                if buf is not None:
                    sd[f"{name}.{i}"] = backend.to_numpy(buf).copy()
        return sd

    def load_state_dict(self, sd):
        """Restore ``state_dict()``'s output, all or nothing: every entry is checked before any is
        used. ``steps`` must be an integer >= 0; each buffer ``<buffer>.<i>`` must be an array of
        real, finite numbers of parameter i's shape (a buffer left out starts again from zeros);
        no other keys. A rejected state leaves the optimizer as it was."""
        if not hasattr(sd, "keys"):
            raise ValueError(f"optimizer state must map names to arrays, got {type(sd).__name__}")
        expected = {f"{name}.{i}" for name in self.state for i in range(len(self.params))}
        unexpected = sorted(set(sd.keys()) - expected - {"steps"}, key=str)
        if "steps" not in sd or unexpected:
            raise ValueError(
                f"optimizer state does not match {type(self).__name__} with {len(self.params)} parameters: "
                f"expected 'steps' and buffers like '{self.state_names[0] if self.state_names else ''}.0', "
                f"unexpected keys {unexpected[:5]}"
            )
        steps = sd["steps"]
        if isinstance(steps, np.ndarray) and steps.shape == () and steps.dtype.kind in "iu":
            steps = steps.item()  # the 0-d integer array that state_dict() saves
        steps = validate.integer("optimizer state 'steps'", steps, 0)
        state = {}
        for name in self.state:
            state[name] = [None] * len(self.params)
            for i, p in enumerate(self.params):
                key = f"{name}.{i}"
                if key in sd:
                    value = validate.array(f"optimizer state {key!r}", sd[key], p.shape, p.dtype)
                    state[name][i] = backend.xp_of(p.data).asarray(value).copy()
        self.steps = steps
        self.state.update(state)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (torch.optim.SGD's update, dampening 0).

    g = grad + lambda theta  (weight decay as an L2 term);  b = mu b + g  (b = g at the first step);
    theta <- theta - lr (g + mu b)  with Nesterov,  theta <- theta - lr b  without.
    """

    def __init__(self, params, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0):
        if nesterov and momentum <= 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.state_names = ("momentum_buffer",) if momentum else ()
        super().__init__(params, lr, weight_decay)
        self.momentum, self.nesterov = momentum, nesterov

    def update(self, i, p, weight_decay):
        g = p.grad + weight_decay * p.data if weight_decay else p.grad
        if self.momentum:
            b = self.buffer("momentum_buffer", i, p)
            if self.steps == 1:
                b[...] = g
            else:
                b *= self.momentum
                b += g
            g = g + self.momentum * b if self.nesterov else b
        p.data -= self.lr * g


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov and Hutter, 2019).

    theta <- theta (1 - lr lambda);  m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2;
    theta <- theta - lr m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t).
    """

    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, weight_decay)
        self.betas, self.eps = betas, eps

    def update(self, i, p, weight_decay):
        beta1, beta2 = self.betas
        xp = backend.xp_of(p.data)
        m, v = self.buffer("exp_avg", i, p), self.buffer("exp_avg_sq", i, p)
        if weight_decay:
            p.data *= 1.0 - self.lr * weight_decay
        m *= beta1
        m += (1.0 - beta1) * p.grad
        v *= beta2
        v += (1.0 - beta2) * p.grad * p.grad
        bias1 = 1.0 - beta1**self.steps
        bias2 = 1.0 - beta2**self.steps
        p.data -= (self.lr / bias1) * m / (xp.sqrt(v) / math.sqrt(bias2) + self.eps)


class WarmupCosine:
    """Learning rate for optimizer step t = 0, 1, ..., total_steps - 1:

    linear warmup  lr_t = base_lr (t + 1) / warmup_steps              for t < warmup_steps,
    then cosine    lr_t = min_lr + (base_lr - min_lr) (1 + cos(pi s)) / 2,
                   s = (t - warmup_steps) / (total_steps - warmup_steps)  (from 0 towards 1).
    Steps past the end keep min_lr.
    """

    def __init__(self, base_lr, total_steps, warmup_steps=0, min_lr=0.0):
        if not 0 <= warmup_steps <= total_steps or total_steps < 1:
            raise ValueError(
                f"need 0 <= warmup_steps <= total_steps and total_steps >= 1, "
                f"got warmup_steps={warmup_steps}, total_steps={total_steps}"
            )
        self.base_lr, self.min_lr = base_lr, min_lr
        self.total_steps, self.warmup_steps = total_steps, warmup_steps

    def __call__(self, t):
        if t < self.warmup_steps:
            return self.base_lr * (t + 1) / self.warmup_steps
        if t >= self.total_steps:
            return self.min_lr
        s = (t - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * s))


class ModelEMA:
    """An exponential moving average of a model's weights (Polyak averaging), updated after
    every optimizer step:  theta_avg <- d theta_avg + (1 - d) theta.

    ``averaged`` is a second model of the same configuration that holds theta_avg (started at
    theta); evaluate it, save it (``averaged.state_dict()``), restore it (``load_state_dict``).
    It averages over the last ~1 / (1 - d) steps: at a high learning rate the raw weights jump
    from step to step and their accuracy with them, the average moves smoothly (DeiT trains with
    one, d = 0.99996 for ImageNet's 1.25k steps per epoch; timm's ModelEmaV2 is the same rule).
    The start theta weighs d^t after t steps: the run must be several times 1 / (1 - d) long.
    Persistent buffers (BatchNorm's running statistics) are averaged the same way, as timm's
    ModelEmaV2 averages the whole state dict: the average model's statistics then describe the
    activations of weights close to its own.
    """

    def __init__(self, model, averaged, decay):
        self.decay = validate.number("EMA decay", decay, 0.0, 1.0, low_open=True, high_open=True)
        self.model = model
        self.pairs = list(zip(averaged.parameters(), model.parameters(), strict=True))
        averaged.load_state_dict(model.state_dict())
        self.averaged = averaged.eval()

    def update(self):
        d = self.decay
        for avg, p in self.pairs:
            avg.data *= d
            avg.data += (1.0 - d) * p.data
        # buffers are reassigned by the layers that own them (BatchNorm): look them up each time
        ours = dict(self.model.named_buffers(persistent_only=True))
        for name, avg in self.averaged.named_buffers(persistent_only=True):
            avg *= d
            avg += (1.0 - d) * ours[name]


def clip_grad_norm(params, max_norm):
    """Scale all gradients by min(1, max_norm / ||g||), ||g|| the norm of all of them together.

    Returns ||g|| before clipping (torch.nn.utils.clip_grad_norm_'s rule, eps 1e-6).
    """
    validate.number("max_norm", max_norm, 0.0, low_open=True)
    params = list(params)
    total = math.sqrt(sum(float((p.grad.astype(np.float64) ** 2).sum()) for p in params))
    scale = max_norm / (total + 1e-6)
    if scale < 1.0:
        for p in params:
            p.grad *= scale
    return total
