"""GPU twin of ``nn.MaxPool2d``: the max of each window with its argmax, and the gradient routed back.

Forward is the CPU loop (``pool._maxpool_forward``) with one thread per output entry: the
same clipped window, the same strict ``>`` (the first maximum wins), the same flat argmax
``y * W + x``.

Backward is turned around. The CPU *scatters*: each output adds its gradient into the input
at its argmax; when windows overlap (SSD300's pool5 is 3x3 with stride 1) several outputs
add into one input, which on a GPU would be atomic float adds in a run-dependent order.
Here each input *gathers*: one thread per input entry visits the outputs whose windows
contain it (rows oy with oy*s - p <= y < oy*s - p + k, the same for columns) and adds the
gradients of those whose argmax is this input, in increasing (oy, ox) order: the order of
the CPU loop, so even the rounding is the same.
"""

import numpy as np

from minissd import nn
from minissd.cuda import launch_1d, on_device, require
from minissd.nn.pool import pool_output_size

cuda = require()


@cuda.jit
def _maxpool_forward_kernel(x, k, s, p, out, argmax):
    """out, argmax (N, C, Ho, Wo) from x (N, C, H, W); one thread per output (twin of ``_maxpool_forward``)."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    N, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    for e in range(start, N * C * Ho * Wo, stride):
        n, c, oy, ox = e // (C * Ho * Wo), (e // (Ho * Wo)) % C, (e // Wo) % Ho, e % Wo
        y0 = max(oy * s - p, 0)  # padding is -inf: clip the window to the input
        y1 = min(oy * s - p + k, H)
        x0 = max(ox * s - p, 0)
        x1 = min(ox * s - p + k, W)
        best = x[n, c, y0, x0]
        best_i = y0 * W + x0
        for y in range(y0, y1):
            for xx in range(x0, x1):
                v = x[n, c, y, xx]
                if v > best:  # strict: the first maximum wins, as in PyTorch
                    best = v
                    best_i = y * W + xx
        out[n, c, oy, ox] = best
        argmax[n, c, oy, ox] = best_i


@cuda.jit
def maxpool_backward_kernel(grad_out, argmax, k, s, p, grad_in):
    """grad_in (N, C, H, W): the sum of the output gradients whose argmax is each input.

    One thread per input entry gathers (see the module docstring); twin of ``maxpool_backward``.
    """
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    N, C, H, W = grad_in.shape
    Ho, Wo = grad_out.shape[2], grad_out.shape[3]
    for e in range(start, N * C * H * W, stride):
        n, c, y, x = e // (C * H * W), (e // (H * W)) % C, (e // W) % H, e % W
        # window oy covers rows oy*s - p .. oy*s - p + k - 1, so it holds y when
        # y + p - k < oy*s <= y + p (floor division, also for negative numbers)
        oy0, oy1 = max(0, (y + p - k) // s + 1), min(Ho - 1, (y + p) // s)
        ox0, ox1 = max(0, (x + p - k) // s + 1), min(Wo - 1, (x + p) // s)
        total = np.float32(0.0)
        for oy in range(oy0, oy1 + 1):
            for ox in range(ox0, ox1 + 1):
                if argmax[n, c, oy, ox] == y * W + x:
                    total += grad_out[n, c, oy, ox]
        grad_in[n, c, y, x] = total


class MaxPool2dGPU(nn.Module):
    """``nn.MaxPool2d``'s forward and backward on device arrays (the layer's k, s, p, ceil_mode)."""

    def __init__(self, pool):
        self.kernel_size, self.stride, self.padding = pool.kernel_size, pool.stride, pool.padding
        self.ceil_mode = pool.ceil_mode

    def forward(self, x):
        x = on_device(x, np.float32)
        N, C, H, W = x.shape
        k, s, p, c = self.kernel_size, self.stride, self.padding, self.ceil_mode
        Ho, Wo = pool_output_size(H, k, s, p, c), pool_output_size(W, k, s, p, c)
        out = cuda.device_array((N, C, Ho, Wo), dtype=np.float32)
        argmax = cuda.device_array((N, C, Ho, Wo), dtype=np.int32)
        _maxpool_forward_kernel[launch_1d(out.size)](x, k, s, p, out, argmax)
        self._argmax, self._input_shape = argmax, x.shape  # kept for backward
        return out

    def backward(self, grad_out):
        grad_out = on_device(grad_out, np.float32)
        grad_in = cuda.device_array(self._input_shape, dtype=np.float32)
        maxpool_backward_kernel[launch_1d(grad_in.size)](grad_out, self._argmax, self.kernel_size,
                                                         self.stride, self.padding, grad_in)
        return grad_in
