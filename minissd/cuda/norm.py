"""GPU twins of ``nn.BatchNorm2d`` (training and evaluation) and ``nn.L2Norm``.

BatchNorm2d. The CPU kernels (``norm.batchnorm_forward``, ``batchnorm_backward``) loop over
channels, and for each channel make 2-3 passes over its N*H*W values, adding in float64.
Here block c of the grid is channel c (``for c in range(c0, c1)`` handed to the blocks) and
its threads share the passes: each adds up its stride of the values, ``reduce.block_sum_float``
combines the threads' sums (a fixed tree, so no atomics and the same bits on every run),
then every thread writes its stride of y. Same formulas, same float64 statistics:

- forward, training: mean, biased variance (second pass around the mean), then
  y = x * scale + shift with scale = weight / sqrt(var + eps), shift = bias - mean * scale;
- running statistics: running = (1 - momentum) * running + momentum * batch value, the
  variance taken unbiased (times M / (M - 1)), one thread per channel;
- backward: sum(g), sum(g * x_hat), then dx = weight * inv_std * (g - mean(g) - x_hat *
  mean(g * x_hat)) with x_hat recomputed from x; dweight, dbias ADDED to the parameters'
  gradients (the CPU layer adds its kernel's output into ``.grad``).

A block per channel gives 16-1024 blocks for minissd's layers: enough to keep a GPU busy
on the large maps, a little short on the 1x1 maps, which hold few values anyway.

L2Norm (SSD300's conv4_3): every location (n, h, w) is normalised over the channels, so one
thread per location loops over the channels, the CPU's ``sum(axis=1)`` written out. The
weight's gradient sums over (n, h, w) per channel: a block per channel, as in BatchNorm.
"""

import math

import numpy as np

from minissd.cuda import launch_1d, require, to_device
from minissd.cuda import reduce
from minissd.cuda.reduce import SUM_SCRATCH, block_sum_float

cuda = require()


# ---- BatchNorm2d -------------------------------------------------------------------------

@cuda.jit
def batchnorm_forward_kernel(x, weight, bias, mean, var, batch_stats, eps, y):
    """y = weight * (x - mean) / sqrt(var + eps) + bias for channel c = ``cuda.blockIdx.x``.

    - x, y: (N, C, H*W) float32; weight, bias: (C,) float32
    - mean, var: (C,) float64; with batch_stats they are OUTPUTS (the channel's mean and biased
      variance over N*H*W, two passes in float64), else the running statistics
    Twin of ``norm.batchnorm_forward``, the threads of a block sharing each pass.
    """
    scratch = cuda.shared.array(SUM_SCRATCH, np.float64)
    c, t, T = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    N, _, L = x.shape
    M = N * L
    if batch_stats:
        total = 0.0
        for e in range(t, M, T):  # e = n * L + i: neighbouring threads read neighbouring values
            total += x[e // L, c, e % L]
        mu = block_sum_float(total, scratch) / M
        squares = 0.0  # second pass around the mean: no cancellation as in E[x^2] - E[x]^2
        for e in range(t, M, T):
            squares += (x[e // L, c, e % L] - mu) ** 2
        v = block_sum_float(squares, scratch) / M
        if t == 0:
            mean[c], var[c] = mu, v
    else:
        mu, v = mean[c], var[c]
    scale = weight[c] / math.sqrt(v + eps)  # the layer is y = scale * x + shift
    shift = bias[c] - mu * scale
    for e in range(t, M, T):
        y[e // L, c, e % L] = x[e // L, c, e % L] * scale + shift


@cuda.jit
def running_stats_kernel(running_mean, running_var, mean, var, momentum, M):
    """running = (1 - momentum) * running + momentum * batch statistic; one thread per channel.

    The variance enters unbiased, var * M / (M - 1), as in PyTorch and ``BatchNorm2d.forward``.
    """
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for c in range(start, running_mean.shape[0], stride):
        running_mean[c] = (1 - momentum) * running_mean[c] + momentum * mean[c]
        running_var[c] = (1 - momentum) * running_var[c] + momentum * var[c] * (M / (M - 1))


@cuda.jit
def batchnorm_backward_kernel(x, grad_out, weight, mean, var, eps, batch_stats, dweight, dbias, dx):
    """Gradients for channel c = ``cuda.blockIdx.x``; x_hat = (x - mean) * inv_std is recomputed.

    - x, grad_out, dx: (N, C, H*W) float32; weight: (C,); mean, var: (C,) float64 from forward
    - dweight[c] += sum(grad * x_hat), dbias[c] += sum(grad) (the parameters' gradients)
    - with batch_stats dx = weight * inv_std * (grad - mean(grad) - x_hat * mean(grad * x_hat)),
      else dx = weight * inv_std * grad
    Twin of ``norm.batchnorm_backward`` (which writes dweight, dbias; its layer adds them).
    """
    scratch = cuda.shared.array(SUM_SCRATCH, np.float64)
    c, t, T = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    N, _, L = x.shape
    M = N * L
    inv_std = 1.0 / math.sqrt(var[c] + eps)
    sum_g, sum_gx = 0.0, 0.0
    for e in range(t, M, T):
        g = grad_out[e // L, c, e % L]
        sum_g += g
        sum_gx += g * (x[e // L, c, e % L] - mean[c]) * inv_std
    sum_g = block_sum_float(sum_g, scratch)
    sum_gx = block_sum_float(sum_gx, scratch)
    if t == 0:
        dweight[c] += sum_gx
        dbias[c] += sum_g
    k = weight[c] * inv_std
    mean_g, mean_gx = (sum_g / M, sum_gx / M) if batch_stats else (0.0, 0.0)
    for e in range(t, M, T):
        n, i = e // L, e % L
        x_hat = (x[n, c, i] - mean[c]) * inv_std
        dx[n, c, i] = k * (grad_out[n, c, i] - mean_g - x_hat * mean_gx)


class BatchNorm2dGPU:
    """``nn.BatchNorm2d``'s forward and backward on the GPU, training or evaluation mode.

    - bn: an ``nn.BatchNorm2d``; its eps, momentum and ``training`` flag are read at each call.
    - weight, bias, weight_grad, bias_grad: device arrays (C,) float32 to use as the
      parameters and their gradients (a training step passes views of its flat buffers);
      None: fresh device copies of the layer's (gradients zeroed).
    - running_mean, running_var: device copies of the layer's buffers, updated by a
      training forward; ``to_host()`` writes them back into ``bn``.
    """

    def __init__(self, bn, weight=None, bias=None, weight_grad=None, bias_grad=None):
        self.bn = bn
        C = bn.channels
        self.weight = to_device(bn.weight.data, np.float32) if weight is None else weight
        self.bias = to_device(bn.bias.data, np.float32) if bias is None else bias
        self.weight_grad = cuda.to_device(np.zeros(C, np.float32)) if weight_grad is None else weight_grad
        self.bias_grad = cuda.to_device(np.zeros(C, np.float32)) if bias_grad is None else bias_grad
        self.running_mean = to_device(bn.running_mean, np.float32)
        self.running_var = to_device(bn.running_var, np.float32)

    def forward(self, x):
        x = to_device(x, np.float32)
        N, C, H, W = x.shape
        M = N * H * W
        batch_stats = self.bn.training
        if batch_stats:
            if M < 2:
                raise ValueError("BatchNorm2d: training needs more than one value per channel (N*H*W >= 2)")
            mean = cuda.device_array(C, dtype=np.float64)  # filled by the kernel
            var = cuda.device_array(C, dtype=np.float64)
        else:
            mean = cuda.device_array(C, dtype=np.float64)
            var = cuda.device_array(C, dtype=np.float64)
            _copy_kernel[launch_1d(C)](self.running_mean, mean)
            _copy_kernel[launch_1d(C)](self.running_var, var)
        y = cuda.device_array(x.shape, dtype=np.float32)
        x3, y3 = x.reshape(N, C, H * W), y.reshape(N, C, H * W)
        batchnorm_forward_kernel[C, reduce.SUM_THREADS](x3, self.weight, self.bias, mean, var, batch_stats,
                                                        self.bn.eps, y3)  # a block per channel
        if batch_stats:
            running_stats_kernel[launch_1d(C)](self.running_mean, self.running_var, mean, var,
                                               self.bn.momentum, M)
        self._x, self._mean, self._var, self._batch_stats = x, mean, var, batch_stats  # kept for backward
        return y

    def backward(self, grad_out):
        x = self._x
        N, C, H, W = x.shape
        grad_out = to_device(grad_out, np.float32)
        dx = cuda.device_array(x.shape, dtype=np.float32)
        batchnorm_backward_kernel[C, reduce.SUM_THREADS](
            x.reshape(N, C, H * W), grad_out.reshape(N, C, H * W), self.weight, self._mean, self._var,
            self.bn.eps, self._batch_stats, self.weight_grad, self.bias_grad, dx.reshape(N, C, H * W))
        return dx

    def to_host(self):
        """Copy the running statistics back into the CPU layer's buffers (in place)."""
        self.bn.running_mean[...] = self.running_mean.copy_to_host()
        self.bn.running_var[...] = self.running_var.copy_to_host()


@cuda.jit
def _copy_kernel(src, dst):
    """dst = src for flat arrays (float32 -> float64 for the running statistics of eval mode)."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for e in range(start, src.shape[0], stride):
        dst[e] = src[e]


# ---- L2Norm ------------------------------------------------------------------------------

@cuda.jit
def l2norm_forward_kernel(x, weight, eps, r, y):
    """y[n, c, h, w] = weight[c] * x[n, c, h, w] / (r[n, h, w] + eps); one thread per location.

    - x, y: (N, C, H*W) float32; weight: (C,); r: (N, H*W) float32, written: the L2 norm of
      the channels at each location (kept for backward, like the CPU layer's ``_r``).
    """
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    N, C, L = x.shape
    for e in range(start, N * L, stride):
        n, i = e // L, e % L
        squares = 0.0
        for c in range(C):
            squares += x[n, c, i] * x[n, c, i]
        r[n, i] = math.sqrt(squares)
        norm = r[n, i] + eps
        for c in range(C):
            y[n, c, i] = weight[c] * (x[n, c, i] / norm)  # weight * x_hat


@cuda.jit
def l2norm_backward_kernel(x, grad_out, weight, r, eps, dx):
    """dx = (g - x * <g, x> / (r * norm)) / norm with g = weight * grad; one thread per location.

    The CPU layer's formula (``L2Norm.backward``): where r = 0 (x = 0) the second term is 0.
    """
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    N, C, L = x.shape
    for e in range(start, N * L, stride):
        n, i = e // L, e % L
        norm = r[n, i] + eps
        dot = np.float32(0.0)
        for c in range(C):
            dot += grad_out[n, c, i] * weight[c] * x[n, c, i]
        safe_r = r[n, i] if r[n, i] > 0 else np.float32(1.0)
        for c in range(C):
            g = grad_out[n, c, i] * weight[c]
            dx[n, c, i] = (g - x[n, c, i] * dot / (safe_r * norm)) / norm


@cuda.jit
def l2norm_weight_grad_kernel(x, grad_out, r, eps, dweight):
    """dweight[c] += sum over (n, h, w) of grad * x_hat, for channel c = ``cuda.blockIdx.x``."""
    scratch = cuda.shared.array(SUM_SCRATCH, np.float64)
    c, t, T = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    N, _, L = x.shape
    total = 0.0
    for e in range(t, N * L, T):
        n, i = e // L, e % L
        total += grad_out[n, c, i] * (x[n, c, i] / (r[n, i] + eps))
    total = block_sum_float(total, scratch)
    if t == 0:
        dweight[c] += total


class L2NormGPU:
    """``nn.L2Norm``'s forward and backward on the GPU.

    - l2: an ``nn.L2Norm``; weight, weight_grad: device arrays (C,) float32 to use (a
      training step's views), or None for fresh copies.
    """

    def __init__(self, l2, weight=None, weight_grad=None):
        self.eps = np.float32(l2.eps)
        self.weight = to_device(l2.weight.data, np.float32) if weight is None else weight
        self.weight_grad = cuda.to_device(np.zeros(l2.channels, np.float32)) if weight_grad is None else weight_grad

    def forward(self, x):
        x = to_device(x, np.float32)
        N, C, H, W = x.shape
        r = cuda.device_array((N, H * W), dtype=np.float32)
        y = cuda.device_array(x.shape, dtype=np.float32)
        l2norm_forward_kernel[launch_1d(N * H * W)](x.reshape(N, C, H * W), self.weight, self.eps, r,
                                                    y.reshape(N, C, H * W))
        self._x, self._r = x, r  # kept for backward
        return y

    def backward(self, grad_out):
        x, r = self._x, self._r
        N, C, H, W = x.shape
        grad_out = to_device(grad_out, np.float32)
        x3, g3 = x.reshape(N, C, H * W), grad_out.reshape(N, C, H * W)
        l2norm_weight_grad_kernel[C, reduce.SUM_THREADS](x3, g3, r, self.eps, self.weight_grad)
        dx = cuda.device_array(x.shape, dtype=np.float32)
        l2norm_backward_kernel[launch_1d(N * H * W)](x3, g3, self.weight, r, self.eps, dx.reshape(N, C, H * W))
        return dx
