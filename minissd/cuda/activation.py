"""GPU twin of ``nn.ReLU``: y = max(0, x), and the gradient passed where the input was positive.

The CPU layer keeps a boolean mask (x > 0) for backward; here the layer keeps its output y
instead (y > 0 exactly where x > 0), which is already on the GPU: no extra array. One
thread per entry, grid-stride loops over the flattened arrays.
"""

import numpy as np

from minissd import nn
from minissd.cuda import launch_1d, on_device, require

cuda = require()


@cuda.jit
def relu_forward_kernel(x, y):
    """y = max(0, x) for flat float32 arrays (twin of ``np.maximum(x, 0)``)."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for e in range(start, x.shape[0], stride):
        y[e] = x[e] if x[e] > 0 else 0.0


@cuda.jit
def relu_backward_kernel(y, grad_out, grad_in):
    """grad_in = grad_out where y > 0, else 0 (twin of ``grad_out * mask``); flat arrays."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for e in range(start, y.shape[0], stride):
        grad_in[e] = grad_out[e] if y[e] > 0 else 0.0


class ReLUGPU(nn.Module):
    """``nn.ReLU``'s forward and backward on device arrays (any shape, float32)."""

    def forward(self, x):
        x = on_device(x, np.float32)
        y = cuda.device_array(x.shape, dtype=np.float32)
        relu_forward_kernel[launch_1d(x.size)](x.reshape(x.size), y.reshape(y.size))
        self._y = y  # kept for backward: the gradient passes where y > 0
        return y

    def backward(self, grad_out):
        grad_out = on_device(grad_out, np.float32)
        grad_in = cuda.device_array(grad_out.shape, dtype=np.float32)
        n = grad_out.size
        relu_backward_kernel[launch_1d(n)](self._y.reshape(n), grad_out.reshape(n), grad_in.reshape(n))
        return grad_in
