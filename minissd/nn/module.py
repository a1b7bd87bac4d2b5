"""Parameter, Module and Sequential: the skeleton every layer hangs on.

A layer is an object with ``forward(x) -> y`` and ``backward(grad_y) -> grad_x``. Forward keeps
exactly what backward reads (``self._x``, ``self._mask`` ...); backward ADDS the gradient of
the loss with respect to each parameter into ``param.grad`` (so gradients of two losses, or
of several uses of one layer, sum up) and returns the gradient with respect to its input.

Names follow PyTorch so that what learners know carries over: ``parameters()``,
``named_parameters()``, ``state_dict()`` with dotted names such as ``"features.0.weight"``,
``train()`` / ``eval()``, ``zero_grad()``.
"""

import os

import numpy as np


class Parameter:
    """A learnable array and the gradient accumulated for it.

    - data: ndarray (float32 for training, float64 for gradient checks)
    - grad: ndarray of the same shape and dtype, zeros until a backward adds into it
    """

    def __init__(self, data):
        self.data = np.asarray(data)
        self.grad = np.zeros_like(self.data)

    @property
    def shape(self):
        return self.data.shape

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of every layer and network.

    Children are found by looking at the attributes: a ``Parameter`` attribute is a
    parameter, a ``Module`` attribute is a child, and a list/tuple of Modules is a list of
    children named ``name.0``, ``name.1`` ... (like PyTorch's ModuleList). Buffers (state that
    is saved but not learned, e.g. BatchNorm's running statistics) are attributes named in
    ``self._buffers`` (see ``register_buffer``).
    """

    training = True

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, grad_out):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    # ---- walking the tree ------------------------------------------------------------------

    def register_buffer(self, name, array):
        """Store ``array`` as attribute ``name`` and include it in ``state_dict()``."""
        self.__dict__.setdefault("_buffers", [])
        if name not in self._buffers:
            self._buffers.append(name)
        setattr(self, name, np.asarray(array))

    def named_children(self):
        """Yield ``(name, module)`` for the direct children, in the order they were set."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Module) for v in value):
                for i, child in enumerate(value):
                    yield f"{name}.{i}", child

    def modules(self):
        """Yield this module and every module below it (depth first)."""
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def named_parameters(self, prefix=""):
        """Yield ``(dotted name, Parameter)`` for every parameter in the tree."""
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_parameters(prefix + name + ".")

    def parameters(self):
        """Yield every Parameter in the tree (what an optimizer steps)."""
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix=""):
        """Yield ``(dotted name, ndarray)`` for every buffer in the tree."""
        for name in getattr(self, "_buffers", ()):
            yield prefix + name, getattr(self, name)
        for name, child in self.named_children():
            yield from child.named_buffers(prefix + name + ".")

    # ---- modes and gradients ---------------------------------------------------------------

    def train(self, mode=True):
        """Training mode (BatchNorm uses batch statistics). Returns self."""
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        """Evaluation mode (BatchNorm uses its running statistics). Returns self."""
        return self.train(False)

    def zero_grad(self):
        """Set every parameter's ``.grad`` to zero (backward adds into it)."""
        for p in self.parameters():
            p.grad[...] = 0

    def to(self, dtype):
        """Convert every parameter (and its grad) and float buffer to ``dtype``; returns self.

        ``model.to(np.float64)`` is how gradient checks run; training runs in float32.
        """
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = p.grad.astype(dtype)
        for m in self.modules():
            for name in getattr(m, "_buffers", ()):
                value = getattr(m, name)
                if np.issubdtype(value.dtype, np.floating):
                    setattr(m, name, value.astype(dtype))
        return self

    # ---- saving and loading ----------------------------------------------------------------

    def state_dict(self):
        """Every parameter and buffer as ``{dotted name: ndarray copy}``."""
        state = {name: p.data.copy() for name, p in self.named_parameters()}
        state.update({name: b.copy() for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state):
        """Copy arrays into the parameters and buffers, in place.

        - state: a mapping ``{dotted name: array}`` or the path of an ``.npz`` file, read by
          ``checkpoint.read_npz``: no pickles (a checkpoint can never run code), and every
          entry's header is checked before its data is read (a wrong shape or an entry that
          declares far more bytes than the file holds is refused without reading it)

        Raises ValueError (a CheckpointError for a file) naming every missing or unexpected
        key, or the first key whose shape differs. Values are cast to each parameter's dtype.
        """
        own = dict(self.named_parameters())
        buffers = dict(self.named_buffers())
        source = str(state) if isinstance(state, (str, os.PathLike)) else "state"
        if isinstance(state, (str, os.PathLike)):
            from ..checkpoint import read_npz  # the one guarded reader of .npz files

            shapes = {k: p.data.shape for k, p in own.items()} | {k: b.shape for k, b in buffers.items()}
            state = read_npz(state, expected=shapes)
        expected = list(own) + list(buffers)
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in own and k not in buffers]
        if missing or unexpected:
            raise ValueError(f"{source} does not match {type(self).__name__}: "
                             f"missing keys {missing}, unexpected keys {unexpected}")
        for name in expected:
            value = np.asarray(state[name])
            target = own[name].data if name in own else buffers[name]
            if value.shape != target.shape:
                raise ValueError(f"{source}: key {name!r} has shape {value.shape}, "
                                 f"the model expects {target.shape}")
        for name in expected:
            target = own[name].data if name in own else buffers[name]
            target[...] = state[name]

    def save(self, path):
        """Write ``state_dict()`` to an ``.npz`` file atomically (temporary file, then rename)."""
        from ..checkpoint import savez_atomic  # one atomic writer for every .npz we save

        savez_atomic(path, self.state_dict())

    def __repr__(self):
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in children]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"

    def extra_repr(self):
        return ""


class Sequential(Module):
    """Layers applied one after the other; backward runs them in reverse.

    Children are named ``"0"``, ``"1"`` ..., so a Sequential stored as ``self.features``
    gives parameter names like ``"features.0.weight"`` (as in PyTorch).
    """

    def __init__(self, *layers):
        self.layers = list(layers)

    def named_children(self):
        for i, layer in enumerate(self.layers):
            yield str(i), layer

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def append(self, layer):
        self.layers.append(layer)
        return self

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad_out):
        grad = grad_out
        for i in range(len(self.layers) - 1, -1, -1):
            if grad is None:
                # A layer with needs_input_grad=False returned None: only the first layer may.
                raise RuntimeError(f"Sequential layer {i + 1} returned no input gradient "
                                   f"(needs_input_grad=False) but layer {i} before it needs one")
            grad = self.layers[i].backward(grad)
        return grad
