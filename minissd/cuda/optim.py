"""GPU twins of the optimizer step: the global gradient-norm clip and ``nn.optim.sgd_update``.

A training step on the GPU keeps every parameter in one flat float32 buffer (and their
gradients and momentum buffers in two more, laid out alike: ``minissd.cuda.step``), so the
whole update is one launch over all parameters instead of one per layer.

- ``sum_squares_kernel`` + ``clip_coef_kernel``: the global L2 norm of the gradient
  (``train.global_grad_norm``), added up without atomics: each block sums its part of the
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
from minissd.cuda.reduce import SUM_SCRATCH, block_sum_float

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
    ``train.py``: ``if cfg.grad_clip > 0 and norm > cfg.grad_clip: p.grad *= cfg.grad_clip / norm``.
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


def clip_grad_norm(grad, max_norm):
    """Scale the flat gradient ``grad`` (device, float32) to norm ``max_norm`` if it is longer.

    - max_norm: float; <= 0 means no clipping (the norm is still computed).
    - returns: a device array (2,) float64: [the norm before clipping, the factor applied].
    """
    partials = cuda.device_array(NORM_BLOCKS, dtype=np.float64)
    sum_squares_kernel[NORM_BLOCKS, reduce.SUM_THREADS](grad, partials)
    coef = cuda.device_array(2, dtype=np.float64)
    clip_coef_kernel[1, 1](partials, float(max_norm), coef)
    scale_kernel[launch_1d(grad.shape[0])](grad, coef)
    return coef


def sgd_update(data, grad, buf, lr, momentum, weight_decay, nesterov=False):
    """Launch ``sgd_update_kernel`` on flat device arrays (updated in place)."""
    f4 = np.float32
    sgd_update_kernel[launch_1d(data.shape[0])](data, grad, buf, f4(lr), f4(momentum), f4(weight_decay),
                                                bool(nesterov))
