"""Normalisation layers: BatchNorm2d and SSD's L2Norm.

BatchNorm2d (Ioffe & Szegedy 2015) normalises each channel by statistics of the batch in
training and by running averages in evaluation, with PyTorch's conventions:
  running = (1 - momentum) * running + momentum * batch_statistic
where the batch mean/variance are over (N, H, W); the variance used to NORMALISE is the
biased one (divide by M = N*H*W) and the one put in running_var is the unbiased one
(divide by M - 1).

L2Norm (Liu et al. 2016, sec. 3.1 / ParseNet, Liu, Rabinovich & Berg 2015) rescales the
feature vector at every location of conv4_3 to unit L2 norm over channels and multiplies it
by a learned per-channel scale initialised to 20: conv4_3's activations are much larger than
those of deeper layers, and this puts them on a comparable scale.
"""

import numpy as np
from numba import njit

from .module import Module, Parameter
from .threads import run_pieces, split_batch


# ---- BatchNorm2d's two kernels: one channel at a time, every value read as few times as possible
# NumPy would spend ~10 passes over the activations on what follows (mean, var, x - mean, the
# scale, the shift, ... each a temporary array); these loops make 2-3 passes in forward and 2 in
# backward. Channels are independent, so threads.run_pieces shares out ranges of channels.

@njit(nogil=True, cache=True)
def batchnorm_forward(x, weight, bias, mean, var, c0, c1, batch_stats, eps, y):
    """y = weight * (x - mean) / sqrt(var + eps) + bias for channels c0..c1-1.

    - x, y: (N, C, H*W); weight, bias: (C,)
    - mean, var: (C,) float64; with batch_stats they are OUTPUTS (the channel's mean and biased
      variance over N*H*W, computed in two passes in float64), else the running statistics
    """
    N, _, L = x.shape
    M = N * L
    for c in range(c0, c1):
        if batch_stats:
            total = 0.0
            for n in range(N):
                for i in range(L):
                    total += x[n, c, i]
            mu = total / M
            squares = 0.0  # second pass around the mean: no cancellation as in E[x^2] - E[x]^2
            for n in range(N):
                for i in range(L):
                    squares += (x[n, c, i] - mu) ** 2
            mean[c], var[c] = mu, squares / M
        scale = weight[c] / np.sqrt(var[c] + eps)  # the layer is y = scale * x + shift
        shift = bias[c] - mean[c] * scale
        for n in range(N):
            for i in range(L):
                y[n, c, i] = x[n, c, i] * scale + shift


@njit(nogil=True, cache=True)
def batchnorm_backward(x, grad_out, weight, mean, inv_std, c0, c1, batch_stats, dweight, dbias, dx):
    """Gradients for channels c0..c1-1; x_hat = (x - mean) * inv_std is recomputed, not kept.

    - x, grad_out, dx: (N, C, H*W); weight: (C,); mean, inv_std: (C,) float64
    - dweight[c] = sum(grad * x_hat), dbias[c] = sum(grad) (overwritten, not added)
    - with batch_stats, mean and var depend on every x of the channel:
      dx = weight * inv_std * (grad - mean(grad) - x_hat * mean(grad * x_hat)), means over
      the M = N*H*W values; without, they are constants and dx = weight * inv_std * grad
    """
    N, _, L = x.shape
    M = N * L
    for c in range(c0, c1):
        sum_g, sum_gx = 0.0, 0.0
        for n in range(N):
            for i in range(L):
                g = grad_out[n, c, i]
                sum_g += g
                sum_gx += g * (x[n, c, i] - mean[c]) * inv_std[c]
        dweight[c], dbias[c] = sum_gx, sum_g
        k = weight[c] * inv_std[c]
        mean_g, mean_gx = (sum_g / M, sum_gx / M) if batch_stats else (0.0, 0.0)
        for n in range(N):
            for i in range(L):
                x_hat = (x[n, c, i] - mean[c]) * inv_std[c]
                dx[n, c, i] = k * (grad_out[n, c, i] - mean_g - x_hat * mean_gx)




class BatchNorm2d(Module):
    """y = weight * (x - mean) / sqrt(var + eps) + bias, per channel.

    - x: (N, C, H, W) -> same shape
    - weight, bias: (C,) Parameters, initialised to 1 and 0
    - running_mean, running_var: (C,) buffers, initialised to 0 and 1
    - training mode: batch statistics over (N, H, W); updates the running buffers
    - eval mode: the running buffers; the layer is then a fixed per-channel affine map
    """

    def __init__(self, channels, eps=1e-5, momentum=0.1, dtype=np.float32):
        self.channels, self.eps, self.momentum = int(channels), float(eps), float(momentum)
        self.weight = Parameter(np.ones(channels, dtype=dtype))
        self.bias = Parameter(np.zeros(channels, dtype=dtype))
        self.register_buffer("running_mean", np.zeros(channels, dtype=dtype))
        self.register_buffer("running_var", np.ones(channels, dtype=dtype))

    def _channel_pieces(self, x):
        """Ranges of channels for the threads: about 256 Ki values each."""
        return split_batch(self.channels, x.shape[0] * x.shape[2] * x.shape[3], target_rows=1 << 18)

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"BatchNorm2d({self.channels}): input must be (N, {self.channels}, H, W), got {x.shape}")
        N, C, H, W = x.shape
        x = np.ascontiguousarray(x)
        batch_stats = self.training
        if batch_stats:
            M = N * H * W
            if M < 2:
                raise ValueError("BatchNorm2d: training needs more than one value per channel (N*H*W >= 2)")
            mean, var = np.empty(C), np.empty(C)  # float64, filled by the kernel
        else:
            mean, var = self.running_mean.astype(np.float64), self.running_var.astype(np.float64)
        y = np.empty_like(x)
        x3, y3 = x.reshape(N, C, H * W), y.reshape(N, C, H * W)
        run_pieces(lambda c: batchnorm_forward(x3, self.weight.data, self.bias.data, mean, var, c[0], c[1],
                                               batch_stats, self.eps, y3), self._channel_pieces(x))
        if batch_stats:
            m = self.momentum
            self.running_mean[...] = (1 - m) * self.running_mean + m * mean
            self.running_var[...] = (1 - m) * self.running_var + m * var * (M / (M - 1))  # unbiased
        # kept for backward: x itself (not a copy, as PyTorch saves its input), from which
        # backward recomputes x_hat; so the caller must not change x in place before backward
        self._x, self._mean, self._inv_std = x, mean, 1.0 / np.sqrt(var + self.eps)
        self._batch_stats = batch_stats
        return y

    def backward(self, grad_out):
        x = self._x
        N, C, H, W = x.shape
        grad_out = np.ascontiguousarray(grad_out, dtype=x.dtype)
        dweight, dbias = np.empty(C), np.empty(C)
        dx = np.empty_like(x)
        x3, g3, dx3 = x.reshape(N, C, -1), grad_out.reshape(N, C, -1), dx.reshape(N, C, -1)
        run_pieces(lambda c: batchnorm_backward(x3, g3, self.weight.data, self._mean, self._inv_std, c[0], c[1],
                                                self._batch_stats, dweight, dbias, dx3), self._channel_pieces(x))
        self.weight.grad += dweight
        self.bias.grad += dbias
        return dx

    def extra_repr(self):
        return f"{self.channels}, eps={self.eps}, momentum={self.momentum}"


class L2Norm(Module):
    """y[n, c, h, w] = weight[c] * x[n, c, h, w] / (||x[n, :, h, w]||_2 + eps).

    - x: (N, C, H, W) -> same shape
    - weight: (C,) Parameter, every entry initialised to ``scale`` (20 in SSD300)
    - eps: 1e-10 added to the norm, as in ssd.pytorch, so that an all-zero vector maps to 0
    """

    def __init__(self, channels, scale=20.0, eps=1e-10, dtype=np.float32):
        self.channels, self.scale, self.eps = int(channels), float(scale), float(eps)
        self.weight = Parameter(np.full(channels, scale, dtype=dtype))

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"L2Norm({self.channels}): input must be (N, {self.channels}, H, W), got {x.shape}")
        r = np.sqrt((x * x).sum(axis=1, keepdims=True))  # (N, 1, H, W) the L2 norm over channels
        norm = r + self.eps
        x_hat = x / norm  # (N, C, H, W) unit vectors
        self._x, self._r, self._norm, self._x_hat = x, r, norm, x_hat  # kept for backward
        return self.weight.data[:, None, None] * x_hat

    def backward(self, grad_out):
        # [assignment l2norm_backward] dweight sums grad*x_hat; dx = (g - x * <g, x> / (r * norm)) / norm, g = weight*grad.
        x, r, norm, x_hat = self._x, self._r, self._norm, self._x_hat
        self.weight.grad += (grad_out * x_hat).sum(axis=(0, 2, 3))
        g = grad_out * self.weight.data[:, None, None]  # dL/dx_hat
        # x_hat_c = x_c / (r + eps) with r = ||x||: d x_hat_c / d x_k = delta_ck / norm - x_c x_k / (r norm^2)
        dot = (g * x).sum(axis=1, keepdims=True)  # (N, 1, H, W)
        safe_r = np.where(r > 0, r, 1.0)  # where x = 0 the second term is 0 (x_k = 0)
        return (g - x * dot / (safe_r * norm)) / norm
        # [/assignment]

    def extra_repr(self):
        return f"{self.channels}, scale={self.scale}"
