"""Module and Parameter: the contract every layer follows.

A layer computes ``y = f(x; theta)`` in ``forward`` and keeps what its backward needs. Given the
upstream gradient ``dout = dL/dy``, ``backward`` returns ``dL/dx`` and *adds* ``dL/dtheta`` into
each ``Parameter.grad`` (so two backward passes without ``zero_grad`` add up, as in PyTorch).

Assigning a Parameter or a Module to an attribute registers it, in assignment order; names are
dotted paths such as ``blocks.0.attn.qkv.weight``.
"""

import numpy as np

from .. import backend


class Parameter:
    """A learnable tensor: ``data`` and its gradient ``grad`` (same shape, dtype and device)."""

    def __init__(self, data):
        self.data = data
        self.grad = backend.xp_of(data).zeros_like(data)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    def __repr__(self):
        return f"Parameter(shape={tuple(self.shape)}, dtype={self.dtype})"


class Module:
    """Base class of every layer and model (see the module docstring for the contract)."""

    training = True

    def __setattr__(self, name, value):
        d = self.__dict__
        if "_params" not in d:
            object.__setattr__(self, "_params", {})
            object.__setattr__(self, "_modules", {})
        self._params.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._params[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- computation -------------------------------------------------------------------------
    def forward(self, *args):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def save_for_backward(self, *arrays):
        """Keep what backward needs (freed again by ``saved()``)."""
        object.__setattr__(self, "_saved", arrays)

    def saved(self):
        """What forward saved; raises if forward has not run since the last backward."""
        s = self.__dict__.get("_saved")
        if s is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before forward(): "
                "run forward first (each forward allows one backward)"
            )
        object.__setattr__(self, "_saved", None)
        return s

    # -- parameters and children -------------------------------------------------------------
    def children(self):
        return list(self.__dict__.get("_modules", {}).values())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, m in self.__dict__.get("_modules", {}).items():
            yield from m.named_modules(f"{prefix}{name}.")

    def named_parameters(self, prefix=""):
        for name, p in self.__dict__.get("_params", {}).items():
            yield prefix + name, p
        for name, m in self.__dict__.get("_modules", {}).items():
            yield from m.named_parameters(f"{prefix}{name}.")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self):
        return sum(int(p.size) for p in self.parameters())

    def zero_grad(self):
        for p in self.parameters():
            p.grad[...] = 0

    def train(self, mode=True):
        for _, m in self.named_modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    # -- state -------------------------------------------------------------------------------
    def state_dict(self):
        """Plain dict: dotted name -> host numpy array (a copy)."""
        return {name: backend.to_numpy(p.data).copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy arrays into the parameters; every name and shape must match exactly."""
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"state dict does not match {type(self).__name__}: "
                f"missing keys {missing}, unexpected keys {unexpected}"
            )
        values = {name: np.asarray(backend.to_numpy(state[name])) for name in own}
        for name, p in own.items():  # check every shape before copying any, so a bad dict changes nothing
            if tuple(values[name].shape) != tuple(p.shape):
                raise ValueError(
                    f"state dict entry {name!r} has shape {tuple(values[name].shape)}, "
                    f"expected {tuple(p.shape)}"
                )
        for name, p in own.items():
            p.data[...] = backend.xp_of(p.data).asarray(values[name], dtype=p.dtype)

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()})"]
        for name, m in self.__dict__.get("_modules", {}).items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return "\n".join(lines)


class ModuleList(Module):
    """A list of modules registered as ``0``, ``1``, ... (no forward of its own)."""

    def __init__(self, modules=()):
        self._items = []
        for m in modules:
            self.append(m)

    def append(self, m):
        setattr(self, str(len(self._items)), m)
        self._items.append(m)

    def __getitem__(self, i):
        return self._items[i]

    def __len__(self):
        return len(self._items)

    def __iter__(self):
        return iter(self._items)


class Sequential(ModuleList):
    """Modules applied in order: forward left to right, backward right to left."""

    def __init__(self, *modules):
        super().__init__(modules)

    def forward(self, x):
        for m in self._items:
            x = m.forward(x)
        return x

    def backward(self, dout):
        for m in reversed(self._items):
            dout = m.backward(dout)
        return dout
