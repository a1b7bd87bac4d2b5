"""GPU twins of ``nn.BatchNorm2d`` (training and evaluation) and ``nn.L2Norm``.

BatchNorm2d. The CPU kernels (``norm.batchnorm_forward``, ``batchnorm_backward``) loop over
channels, and for each channel make 2-3 passes over its N*H*W values, adding in float64.
Here block c of the grid is channel c (``for c in range(C)`` handed to the blocks) and
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

The BatchNorm group (``BatchNorm2d.group``, images per normalisation; ghost batch norm):
the batch is viewed as (Q, N/Q, C, H*W), and block c walks the Q groups one after the other,
each group with its own statistics, as the CPU layer does; the running statistics move by
the mean of the groups' statistics.

A block per channel gives 16-1024 blocks for minissd's layers: enough to keep a GPU busy
on the large maps, a little short on the 1x1 maps, which hold few values anyway.

L2Norm (SSD300's conv4_3): every location (n, h, w) is normalised over the channels, so one
thread per location loops over the channels, the CPU's ``sum(axis=1)`` written out. The
weight's gradient sums over (n, h, w) per channel: a block per channel, as in BatchNorm.
"""

import math

import numpy as np

from minissd import nn
from minissd.cuda import launch_1d, on_device, require
from minissd.cuda import reduce
from minissd.cuda.module import Parameter
from minissd.cuda.reduce import SUM_SCRATCH, block_sum_float
from minissd.errors import ConfigError

cuda = require()


# ---- BatchNorm2d -------------------------------------------------------------------------

@cuda.jit
def batchnorm_forward_kernel(x, weight, bias, mean, var, batch_stats, eps, y):
    """y = weight * (x - mean) / sqrt(var + eps) + bias for channel c = ``cuda.blockIdx.x``.

    - x, y: (Q, N, C, H*W) float32: Q groups of N images, each group normalised on its own
      (the BatchNorm group; Q = 1 for the whole batch); weight, bias: (C,) float32
    - mean, var: (Q, C) float64; with batch_stats they are OUTPUTS (each group's mean and biased
      variance over its N*H*W values, two passes in float64), else the running statistics (Q = 1)
    Twin of ``norm.batchnorm_forward``, the threads of a block sharing each pass.
    """
    scratch = cuda.shared.array(SUM_SCRATCH, np.float64)
    c, t, T = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    Q, N, _, L = x.shape
    M = N * L
    for q in range(Q):
        if batch_stats:
            total = 0.0
            for e in range(t, M, T):  # e = n * L + i: neighbouring threads read neighbouring values
                total += x[q, e // L, c, e % L]
            mu = block_sum_float(total, scratch) / M
            squares = 0.0  # second pass around the mean: no cancellation as in E[x^2] - E[x]^2
            for e in range(t, M, T):
                squares += (x[q, e // L, c, e % L] - mu) ** 2
            v = block_sum_float(squares, scratch) / M
            if t == 0:
                mean[q, c], var[q, c] = mu, v
        else:
            mu, v = mean[q, c], var[q, c]
        scale = weight[c] / math.sqrt(v + eps)  # the layer is y = scale * x + shift
        shift = bias[c] - mu * scale
        for e in range(t, M, T):
            y[q, e // L, c, e % L] = x[q, e // L, c, e % L] * scale + shift


@cuda.jit
def running_stats_kernel(running_mean, running_var, mean, var, momentum, M):
    """running = (1 - momentum) * running + momentum * (the groups' mean statistic); a thread per channel.

    - mean, var: (Q, C) float64 from the forward, M values per group; the variance enters
      unbiased, var * M / (M - 1), as in PyTorch and ``BatchNorm2d.forward``.
    """
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    Q = mean.shape[0]
    for c in range(start, running_mean.shape[0], stride):
        mu, v = 0.0, 0.0
        for q in range(Q):  # the mean over the groups
            mu += mean[q, c]
            v += var[q, c]
        mu, v = mu / Q, v / Q
        running_mean[c] = (1 - momentum) * running_mean[c] + momentum * mu
        running_var[c] = (1 - momentum) * running_var[c] + momentum * v * (M / (M - 1))


@cuda.jit
def batchnorm_backward_kernel(x, grad_out, weight, mean, var, eps, batch_stats, dweight, dbias, dx):
    """Gradients for channel c = ``cuda.blockIdx.x``; x_hat = (x - mean) * inv_std is recomputed.

    - x, grad_out, dx: (Q, N, C, H*W) float32 (Q groups); weight: (C,); mean, var: (Q, C)
      float64 from forward
    - dweight[c] += sum(grad * x_hat), dbias[c] += sum(grad), over every group
    - with batch_stats, per group: dx = weight * inv_std * (grad - mean(grad) - x_hat *
      mean(grad * x_hat)), the means over the group's N*H*W values; else dx = weight * inv_std * grad
    Twin of ``norm.batchnorm_backward`` (which writes dweight, dbias; its layer adds them).
    """
    scratch = cuda.shared.array(SUM_SCRATCH, np.float64)
    c, t, T = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    Q, N, _, L = x.shape
    M = N * L
    dw, db = 0.0, 0.0
    for q in range(Q):
        mu = mean[q, c]
        inv_std = 1.0 / math.sqrt(var[q, c] + eps)
        sum_g, sum_gx = 0.0, 0.0
        for e in range(t, M, T):
            g = grad_out[q, e // L, c, e % L]
            sum_g += g
            sum_gx += g * (x[q, e // L, c, e % L] - mu) * inv_std
        sum_g = block_sum_float(sum_g, scratch)
        sum_gx = block_sum_float(sum_gx, scratch)
        dw += sum_gx
        db += sum_g
        k = weight[c] * inv_std
        mean_g, mean_gx = (sum_g / M, sum_gx / M) if batch_stats else (0.0, 0.0)
        for e in range(t, M, T):
            n, i = e // L, e % L
            x_hat = (x[q, n, c, i] - mu) * inv_std
            dx[q, n, c, i] = k * (grad_out[q, n, c, i] - mean_g - x_hat * mean_gx)
    if t == 0:
        dweight[c] += dw
        dbias[c] += db


class BatchNorm2dGPU(nn.Module):
    """``nn.BatchNorm2d``'s forward and backward on the GPU, training or evaluation mode.

    - bn: an ``nn.BatchNorm2d``; its channels, eps, momentum, ``group`` (images per
      normalisation; None or 0: the whole batch) and ``training`` flag are copied here
    - parameter: makes the GPU ``Parameter`` of ``bn.weight`` and ``bn.bias`` (default: a copy)
    - running_mean, running_var: device copies of the layer's buffers, updated by a
      training forward; ``to_host(bn)`` writes them back into a CPU layer
    """

    def __init__(self, bn, parameter=Parameter.copy_of):
        self.channels, self.eps, self.momentum = bn.channels, bn.eps, bn.momentum
        self.group = getattr(bn, "group", None)
        self.training = bn.training
        self.weight = parameter(bn.weight)
        self.bias = parameter(bn.bias)
        self.running_mean = on_device(bn.running_mean, np.float32)  # device arrays, not buffers:
        self.running_var = on_device(bn.running_var, np.float32)    # to_host() brings them back

    def _groups(self, N):
        """How many groups the N images of a batch form (the CPU layer's rule and error)."""
        group = self.group or N
        if N % group:
            raise ConfigError(f"BatchNorm group: a batch of {N} images cannot be cut into groups of "
                              f"{group}; the batch size must be a multiple of the group")
        return N // group

    def forward(self, x):
        x = on_device(x, np.float32)
        N, C, H, W = x.shape
        batch_stats = self.training
        Q = self._groups(N) if batch_stats else 1  # evaluation: one affine map for every image
        M = N // Q * H * W  # values per channel in a group
        if batch_stats and M < 2:
            raise ValueError("BatchNorm2d: training needs more than one value per channel and group "
                             "(images per group * H * W >= 2)")
        mean = cuda.device_array((Q, C), dtype=np.float64)  # batch_stats: filled by the kernel
        var = cuda.device_array((Q, C), dtype=np.float64)
        if not batch_stats:
            _copy_kernel[launch_1d(C)](self.running_mean, mean.reshape(C))
            _copy_kernel[launch_1d(C)](self.running_var, var.reshape(C))
        y = cuda.device_array(x.shape, dtype=np.float32)
        x4, y4 = x.reshape(Q, N // Q, C, H * W), y.reshape(Q, N // Q, C, H * W)  # (Q, N/Q, C, H*W)
        batchnorm_forward_kernel[C, reduce.SUM_THREADS](x4, self.weight.data, self.bias.data, mean, var,
                                                        batch_stats, self.eps, y4)  # a block per channel
        if batch_stats:
            running_stats_kernel[launch_1d(C)](self.running_mean, self.running_var, mean, var,
                                               self.momentum, M)
        self._x4, self._mean, self._var, self._batch_stats = x4, mean, var, batch_stats  # kept for backward
        return y

    def backward(self, grad_out):
        x4 = self._x4
        grad_out = on_device(grad_out, np.float32)
        dx = cuda.device_array(grad_out.shape, dtype=np.float32)
        batchnorm_backward_kernel[x4.shape[2], reduce.SUM_THREADS](
            x4, grad_out.reshape(x4.shape), self.weight.data, self._mean, self._var, self.eps,
            self._batch_stats, self.weight.grad, self.bias.grad, dx.reshape(x4.shape))
        return dx

    def to_host(self, bn):
        """Copy the running statistics into CPU layer ``bn``'s buffers (in place)."""
        bn.running_mean[...] = self.running_mean.copy_to_host()
        bn.running_var[...] = self.running_var.copy_to_host()


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


class L2NormGPU(nn.Module):
    """``nn.L2Norm``'s forward and backward on the GPU.

    - l2: an ``nn.L2Norm``; parameter: makes the GPU ``Parameter`` of its weight (default: a copy)
    """

    def __init__(self, l2, parameter=Parameter.copy_of):
        self.channels, self.eps = l2.channels, np.float32(l2.eps)
        self.weight = parameter(l2.weight)

    def forward(self, x):
        x = on_device(x, np.float32)
        N, C, H, W = x.shape
        r = cuda.device_array((N, H * W), dtype=np.float32)
        y = cuda.device_array(x.shape, dtype=np.float32)
        l2norm_forward_kernel[launch_1d(N * H * W)](x.reshape(N, C, H * W), self.weight.data, self.eps, r,
                                                    y.reshape(N, C, H * W))
        self._x, self._r = x, r  # kept for backward
        return y

    def backward(self, grad_out):
        x, r = self._x, self._r
        N, C, H, W = x.shape
        grad_out = on_device(grad_out, np.float32)
        x3, g3 = x.reshape(N, C, H * W), grad_out.reshape(N, C, H * W)
        l2norm_weight_grad_kernel[C, reduce.SUM_THREADS](x3, g3, r, self.eps, self.weight.grad)
        dx = cuda.device_array(x.shape, dtype=np.float32)
        l2norm_backward_kernel[launch_1d(N * H * W)](x3, g3, self.weight.data, r, self.eps, dx.reshape(N, C, H * W))
        return dx
