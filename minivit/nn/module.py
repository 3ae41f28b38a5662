"""Module and Parameter: the contract every layer follows.

A layer computes ``y = f(x; theta)`` in ``forward`` and keeps what its backward needs. Given the
upstream gradient ``dout = dL/dy``, ``backward`` returns ``dL/dx`` and *adds* ``dL/dtheta`` into
each ``Parameter.grad`` (so two backward passes without ``zero_grad`` add up, as in PyTorch).

Assigning a Parameter or a Module to an attribute registers it, in assignment order; names are
dotted paths such as ``blocks.0.attn.qkv.weight``. Arrays that are state but not learned
(BatchNorm's running statistics, Swin's relative-position index and shift mask) are buffers:
``register_buffer(name, array, persistent=True)``, read and reassigned as ``self.name``. A
persistent buffer is saved in ``state_dict`` and restored by ``load_state_dict``; a
non-persistent one is rebuilt from the configuration and never saved.

Errors are all-or-nothing: a rejected ``backward`` or ``load_state_dict`` has changed nothing.

* ``backward(dout)`` takes what ``forward`` returned: an array of the output's shape (any
  floating dtype, on the output's device), or a tuple of such arrays where forward returned a
  tuple (DeiT in training mode). Module checks this once for every layer and model: each
  subclass's ``forward`` and ``backward`` are wrapped (``__init_subclass__``) so that the
  outermost forward call on an instance records what it returned, and the outermost backward
  call checks ``dout`` against that before the body runs. A wrong ``dout`` raises a ValueError,
  with no gradient touched and the saved state kept, so a correct backward can follow. Nested
  calls on the same instance (``super().forward(...)``) are neither recorded nor checked; further
  arguments (``out=``) pass through. A backward before any forward runs the body unchecked,
  which raises its "called before forward()" RuntimeError from ``saved()``.
* Several inputs: ``backward`` returns one gradient per floating-point array that ``forward``
  takes, in forward's argument order. A layer of one input returns the array; a layer whose
  forward takes several (attention's q, k, v and bias) always returns a tuple of the same length,
  with None for an optional input that was not given, so its type never depends on the
  arguments. Inputs that are not differentiated (boolean masks) get no entry.
* Fast paths: the bodies in ``minivit.nn`` are the plain equations. Where ``minivit.kernels``
  registers a fast path for a class and kernels are on, the outermost forward on an instance of
  exactly that class (a subclass may override either method) runs the fast forward instead, and
  the backward after it the fast backward (the same wrappers dispatch), so a forward and its
  backward always run the same way.
* ``load_state_dict(state)`` checks every entry (names, shapes, real finite numbers) and converts
  each to its parameter's dtype and device before it copies any.
"""

import functools

from .. import backend, kernels, validate


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


def _spec(out):
    """What backward must take for forward's output ``out``: (shape, on the GPU) for a float
    array, a list of specs for a tuple, None (anything) for other outputs."""
    if isinstance(out, (tuple, list)):
        return [_spec(o) for o in out]
    if isinstance(out, float):  # a Python or NumPy float scalar (a loss)
        return (), False
    if getattr(getattr(out, "dtype", None), "kind", None) == "f":
        return tuple(out.shape), backend.is_cupy(out)
    return None


def _fits(spec, dout):
    if spec is None:
        return True
    if type(spec) is list:
        return isinstance(dout, (tuple, list)) and len(dout) == len(spec) and all(map(_fits, spec, dout))
    shape, gpu = spec
    if isinstance(dout, float):  # a Python float works as the gradient of a scalar
        return shape == ()
    return (getattr(getattr(dout, "dtype", None), "kind", None) == "f" and tuple(dout.shape) == shape
            and backend.is_cupy(dout) == gpu)


def _expected(spec):
    if type(spec) is list:
        return f"a tuple ({', '.join(map(_expected, spec))})"
    if spec is None:
        return "anything"
    shape, gpu = spec
    return f"a floating-point {'CuPy ' if gpu else ''}array of shape {shape}"


def _got(x):
    if isinstance(x, (tuple, list)):
        return f"a tuple ({', '.join(map(_got, x))})"
    dtype = getattr(x, "dtype", None)
    if dtype is None or not hasattr(x, "shape"):
        return f"{type(x).__name__} {x!r:.40}"
    return f"{'a CuPy' if backend.is_cupy(x) else 'an'} array of shape {tuple(x.shape)}, dtype {dtype}"


def _recording(forward):
    """forward, recording what the outermost call on an instance returned (see the docstring);
    that call runs the fast path registered for the instance's class instead, if kernels are on."""

    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        d = self.__dict__
        if d.get("_in_forward"):
            return forward(self, *args, **kwargs)
        fast = kernels.fast_path(type(self))  # exact class: a subclass may override either method
        d["_in_forward"], d["_fast"] = True, fast  # backward runs the way this forward ran
        try:
            out = (fast.forward if fast and fast.forward else forward)(self, *args, **kwargs)
        finally:
            d["_in_forward"] = False
        d["_out_spec"] = _spec(out)
        return out

    return wrapper


def _checking(backward):
    """backward, whose outermost call on an instance first checks dout against forward's output,
    then runs the fast path if its forward did."""

    @functools.wraps(backward)
    def wrapper(self, dout, *args, **kwargs):
        d = self.__dict__
        if d.get("_in_backward"):
            return backward(self, dout, *args, **kwargs)
        spec = d.get("_out_spec")
        if spec is not None and not _fits(spec, dout):
            raise ValueError(
                f"{type(self).__name__}.backward expected dout to be {_expected(spec)} "
                f"(what forward returned), got {_got(dout)}"
            )
        fast = d.get("_fast")
        d["_in_backward"] = True
        try:
            return (fast.backward if fast and fast.backward else backward)(self, dout, *args, **kwargs)
        finally:
            d["_in_backward"] = False

    return wrapper


class Module:
    """Base class of every layer and model (see the module docstring for the contract)."""

    training = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            cls.forward = _recording(cls.__dict__["forward"])
        if "backward" in cls.__dict__:
            cls.backward = _checking(cls.__dict__["backward"])

    def __setattr__(self, name, value):
        d = self.__dict__
        if "_params" not in d:
            object.__setattr__(self, "_params", {})
            object.__setattr__(self, "_modules", {})
            object.__setattr__(self, "_buffers", {})  # name -> persistent
        if name in self._buffers and isinstance(value, (Parameter, Module)):
            raise ValueError(f"{name!r} is a buffer; it holds arrays, not {type(value).__name__}s")
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
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, m in self.__dict__.get("_modules", {}).items():
            yield from m.named_modules(f"{prefix}{name}.")

    def register_buffer(self, name, array, persistent=True):
        """Keep ``array`` as state that is not learned, read and reassigned as ``self.<name>``."""
        d = self.__dict__
        if "." in name or name in d.get("_params", {}) or name in d.get("_modules", {}):
            raise ValueError(f"buffer name {name!r} is taken by a parameter or module, or has a dot")
        self.__setattr__(name, array)  # sets up the registries on first use
        self._buffers[name] = bool(persistent)

    def named_buffers(self, prefix="", persistent_only=False):
        for name, persistent in self.__dict__.get("_buffers", {}).items():
            if persistent or not persistent_only:
                yield prefix + name, self.__dict__[name]
        for name, m in self.__dict__.get("_modules", {}).items():
            yield from m.named_buffers(f"{prefix}{name}.", persistent_only)

    def _set_buffer(self, dotted, value):
        *path, name = dotted.split(".")
        owner = self
        for part in path:
            owner = owner._modules[part]
        setattr(owner, name, value)

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
        """Plain dict: dotted name -> host numpy array (a copy), of the parameters and the
        persistent buffers."""
        state = {name: backend.to_numpy(p.data).copy() for name, p in self.named_parameters()}
        buffers = self.named_buffers(persistent_only=True)
        state.update((name, backend.to_numpy(b).copy()) for name, b in buffers)
        return state

    def load_state_dict(self, state):
        """Copy arrays into the parameters, all or nothing: every entry is checked before any is
        copied. The names must match exactly (none missing, none unexpected): the parameters
        and the persistent buffers. Each value must be an array of real numbers (not bool,
        complex, strings or objects) of its entry's shape, finite in the entry's dtype. Each is
        converted to that dtype and device first, so a rejected state dict leaves the model as it
        was."""
        if not hasattr(state, "keys"):
            raise ValueError(f"state dict must map names to arrays, got {type(state).__name__}")
        params = dict(self.named_parameters())
        buffers = dict(self.named_buffers(persistent_only=True))
        own = {**{n: p.data for n, p in params.items()}, **buffers}
        missing = sorted(set(own) - set(state.keys()), key=str)
        unexpected = sorted(set(state.keys()) - set(own), key=str)
        if missing or unexpected:
            raise ValueError(
                f"state dict does not match {type(self).__name__}: "
                f"missing keys {missing}, unexpected keys {unexpected}"
            )
        values, problems = {}, []
        for name, a in own.items():
            try:
                values[name] = validate.array(f"state dict entry {name!r}", state[name], a.shape, a.dtype)
            except ValueError as e:
                problems.append(str(e))
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            shown = "; ".join(problems[:5]) + more
            raise ValueError(f"state dict does not fit {type(self).__name__}: {shown}")
        on_device = {name: backend.xp_of(a).array(values[name]) for name, a in own.items()}  # copies: a
        # buffer never shares memory with the caller's state dict
        for name, p in params.items():
            p.data[...] = on_device[name]
        for name in buffers:
            self._set_buffer(name, on_device[name])

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
