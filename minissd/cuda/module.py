"""GPU twin of ``nn.Parameter``, and the flat buffers that hold a whole model's parameters.

A GPU layer is an ``nn.Module`` like its CPU twin (forward, backward, ``parameters()``,
``train()``/``eval()``), and its learnable arrays are ``Parameter`` objects as on the CPU;
only ``.data`` and ``.grad`` are device arrays. ``minissd.cuda.to_device(model)`` puts every
parameter of a model in one flat float32 device buffer (``FlatParameters``; each parameter's
``.data`` a view of it, its ``.grad`` a view of a second buffer laid out alike), so that
zeroing the gradients, their global norm, the clip and SGD are one launch each over the
whole model instead of one per layer.
"""

import numpy as np

from minissd import nn
from minissd.cuda import launch_1d, require

cuda = require()


class Parameter(nn.Parameter):
    """A learnable device array and its gradient (twin of ``nn.Parameter``).

    - data, grad: device arrays of one shape, float32 (views of ``flat`` when it is given)
    - flat: the ``FlatParameters`` they belong to, or None
    """

    def __init__(self, data, grad, flat=None):  # nn.Parameter's __init__ would copy to the host
        self.data, self.grad, self.flat = data, grad, flat

    @classmethod
    def copy_of(cls, p):
        """A fresh device copy of CPU Parameter ``p``, its gradient zeroed."""
        data = cuda.to_device(np.ascontiguousarray(p.data, np.float32))
        return cls(data, cuda.to_device(np.zeros(p.data.shape, np.float32)))

    def __repr__(self):
        return f"cuda.Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class FlatParameters:
    """Every parameter of a CPU model in one flat device buffer, and the gradients in another.

    - params: the CPU model's Parameters, in ``model.parameters()`` order; parameter i
      occupies entries [offsets[i], offsets[i + 1]) of ``data`` and of ``grad``
    - ``parameter(p)``: the GPU ``Parameter`` of CPU parameter p (views of both buffers)
    """

    def __init__(self, params):
        self.cpu_params = list(params)
        sizes = [p.data.size for p in self.cpu_params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.data = cuda.to_device(np.concatenate([p.data.ravel() for p in self.cpu_params]).astype(np.float32))
        self.grad = cuda.device_array(self.data.shape[0], dtype=np.float32)
        self.zero_grad()
        self._index = {id(p): i for i, p in enumerate(self.cpu_params)}
        self.params = [Parameter(self._view(self.data, i), self._view(self.grad, i), self)
                       for i in range(len(self.cpu_params))]

    def _view(self, buffer, i):
        return buffer[self.offsets[i]:self.offsets[i + 1]].reshape(self.cpu_params[i].data.shape)

    def parameter(self, p):
        """The GPU Parameter that mirrors CPU Parameter ``p``."""
        return self.params[self._index[id(p)]]

    def zero_grad(self):
        """Every gradient to 0: one launch over the flat buffer."""
        from minissd.cuda.conv import fill_kernel

        fill_kernel[launch_1d(self.grad.shape[0])](self.grad, np.float32(0.0))

    def split(self, flat_host):
        """A host copy of one flat buffer -> one array per parameter, in the CPU params' shapes."""
        return [flat_host[self.offsets[i]:self.offsets[i + 1]].reshape(p.data.shape)
                for i, p in enumerate(self.cpu_params)]


def flat_of(params):
    """The one ``FlatParameters`` that ``params`` are all of, exactly; ValueError otherwise.

    The optimizer and the clip work on the flat buffers in one launch, so they take the
    parameters of one ``minissd.cuda.to_device`` model, all of them, as the CPU calls take
    ``model.parameters()``.
    """
    params = list(params)
    flat = params[0].flat if params and isinstance(params[0], Parameter) else None
    if flat is None or len(params) != len(flat.params) or any(p is not q for p, q in zip(params, flat.params)):
        raise ValueError("expected the parameters of one minissd.cuda.to_device(model), all of them, "
                         "in gpu.parameters() order")
    return flat
