"""GPU twins of the optimizer step: ``step.clip_grad_norm``, ``nn.optim.sgd_update`` and ``nn.SGD``.

A model on the GPU keeps every parameter in one flat float32 buffer (and their gradients
and momentum buffers in two more, laid out alike: ``minissd.cuda.module.FlatParameters``),
so the clip and the whole update are one launch each over all parameters, not one per layer.

- ``sum_squares_kernel`` + ``clip_coef_kernel``: the global L2 norm of the gradient
  (``minissd.step.clip_grad_norm``), added up without atomics: each block sums its part of the
  buffer (``reduce.block_sum_float``, float64), then one thread adds the blocks' partial sums
  in order, so the norm is the same on every run. It also computes the clip factor
  ``max_norm / norm`` (1 when there is no clipping), left on the GPU for ``scale_kernel``:
  the host never waits for the norm.
- ``sgd_update_kernel``: PyTorch's SGD rule, one thread per parameter entry, in float32
  like the CPU (the hyper-parameters are passed as float32, as NumPy rounds a Python
  float scalar to the array's float32). The momentum buffer starts at zeros: the first
  step's momentum * 0 + g is exactly the CPU's ``buf = g.copy()``.
"""

import math

import numpy as np

from minissd.cuda import launch_1d, require
from minissd.cuda import reduce
from minissd.cuda.module import flat_of
from minissd.cuda.reduce import SUM_SCRATCH, block_sum_float
from minissd.nn.optim import Optimizer

cuda = require()

NORM_BLOCKS = 256  # blocks that share the sum of squares (a fixed number: a fixed sum order)


@cuda.jit
def sum_squares_kernel(x, partials):
    """partials[b] = the sum of x[e]^2 over block b's part of the flat array x (float64)."""
    scratch = cuda.shared.array(SUM_SCRATCH, np.float64)
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    total = 0.0
    for e in range(start, x.shape[0], stride):
        total += x[e] * x[e]
    total = block_sum_float(total, scratch)
    if cuda.threadIdx.x == 0:
        partials[cuda.blockIdx.x] = total


@cuda.jit
def clip_coef_kernel(partials, max_norm, out):
    """out[0] = sqrt(sum of partials), the gradient norm; out[1] = the factor to scale by.

    The factor is max_norm / norm when max_norm > 0 and norm > max_norm, else 1, as in
    ``minissd.step.clip_grad_norm``: ``if max_norm > 0 and norm > max_norm: p.grad *= max_norm / norm``.
    One thread, adding the partial sums in order.
    """
    if cuda.grid(1) == 0:
        total = 0.0
        for b in range(partials.shape[0]):
            total += partials[b]
        norm = math.sqrt(total)
        out[0] = norm
        out[1] = max_norm / norm if max_norm > 0 and norm > max_norm else 1.0


@cuda.jit
def scale_kernel(grad, coef):
    """grad *= coef[1] (in float32) for a flat array; nothing to do when coef[1] is 1."""
    factor = np.float32(coef[1])
    if factor == 1:
        return
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for e in range(start, grad.shape[0], stride):
        grad[e] *= factor


@cuda.jit
def sgd_update_kernel(data, grad, buf, lr, momentum, weight_decay, nesterov):
    """One SGD step on flat float32 arrays, in place (twin of ``nn.optim.sgd_update``).

    - data, grad, buf: (n,) float32 parameters, gradients, momentum buffer (zeros at first)
    - lr, momentum, weight_decay: float32; nesterov: bool
    """
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for e in range(start, data.shape[0], stride):
        g = grad[e] + weight_decay * data[e]  # L2 regularisation
        if momentum != 0:
            buf[e] = momentum * buf[e] + g
            g = g + momentum * buf[e] if nesterov else buf[e]
        data[e] -= lr * g


def clip_grad_norm(params, max_norm):
    """Scale the gradients down so that their global L2 norm is at most ``max_norm`` (twin of
    ``minissd.step.clip_grad_norm``, same arguments).

    - params: the GPU Parameters of one ``minissd.cuda.to_device`` model, all of them
      (``gpu.parameters()``): their flat gradient buffer is scaled in place, in one launch
    - max_norm: 0 or less turns clipping off (the norm is still returned)
    - returns the global norm BEFORE clipping, a Python float (8 bytes copied back)
    """
    grad = flat_of(params).grad
    partials = cuda.device_array(NORM_BLOCKS, dtype=np.float64)
    sum_squares_kernel[NORM_BLOCKS, reduce.SUM_THREADS](grad, partials)
    coef = cuda.device_array(2, dtype=np.float64)  # [norm, factor]: the factor stays on the GPU
    clip_coef_kernel[1, 1](partials, float(max_norm), coef)
    scale_kernel[launch_1d(grad.shape[0])](grad, coef)
    return float(coef[:1].copy_to_host()[0])


def sgd_update(data, grad, buf, lr, momentum, weight_decay, nesterov):
    """One SGD step on flat device arrays, in place (twin of ``nn.optim.sgd_update``); returns buf.

    The buffer is never None here: zeros before the first step give the CPU's ``buf = g``.
    """
    f4 = np.float32
    sgd_update_kernel[launch_1d(data.shape[0])](data, grad, buf, f4(lr), f4(momentum), f4(weight_decay),
                                                bool(nesterov))
    return buf


class SGD(Optimizer):
    """SGD over a GPU model's flat buffers (twin of ``nn.SGD``: same arguments, PyTorch's rule).

    - params: ``gpu.parameters()`` of one ``minissd.cuda.to_device`` model, all of them
    - lr (the plain attribute ``opt.lr``, set by the schedule), momentum, weight_decay, nesterov
      as in ``nn.SGD``
    - momentum_buffers: ``nn.SGD.buffers`` to start from (one array or None per parameter, in
      ``model.parameters()`` order), e.g. from a resumed checkpoint; None: none yet
    ``step()`` is one launch over every parameter. ``buffers`` copies the momentum back to the
    host in the CPU's convention (None for a parameter before its first step or with momentum 0),
    so ``state_dict()`` is the CPU optimizer's.
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False, momentum_buffers=None):
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        self.flat = flat_of(self.params)
        self.momentum, self.weight_decay, self.nesterov = float(momentum), float(weight_decay), bool(nesterov)
        buffers = [None] * len(self.params) if momentum_buffers is None else list(momentum_buffers)
        if len(buffers) != len(self.params):
            raise ValueError(f"momentum_buffers: {len(buffers)} buffers for {len(self.params)} parameters")
        self._has_buffer = [self.momentum != 0 and b is not None for b in buffers]  # the CPU's "not None"
        self.buf = cuda.to_device(np.concatenate(
            [np.zeros(p.data.size, np.float32) if b is None else np.asarray(b, np.float32).ravel()
             for p, b in zip(self.params, buffers)]))

    def zero_grad(self):
        self.flat.zero_grad()

    def step(self):
        sgd_update(self.flat.data, self.flat.grad, self.buf, self.lr, self.momentum, self.weight_decay,
                   self.nesterov)
        self._has_buffer = [self.momentum != 0] * len(self.params)

    @property
    def buffers(self):
        """The momentum buffers on the host: one float32 array or None per parameter."""
        host = self.flat.split(self.buf.copy_to_host())
        return [b.copy() if has else None for b, has in zip(host, self._has_buffer)]

    def state_dict(self):
        return {f"momentum.{i}": b for i, b in enumerate(self.buffers) if b is not None}
