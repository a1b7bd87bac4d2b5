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

from .module import Module, Parameter


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

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"BatchNorm2d({self.channels}): input must be (N, {self.channels}, H, W), got {x.shape}")
        if self.training:
            M = x.shape[0] * x.shape[2] * x.shape[3]
            if M < 2:
                raise ValueError("BatchNorm2d: training needs more than one value per channel (N*H*W >= 2)")
            mean = x.mean(axis=(0, 2, 3))  # (C,)
            var = x.var(axis=(0, 2, 3))  # (C,) biased: used to normalise
            m = self.momentum
            self.running_mean[...] = (1 - m) * self.running_mean + m * mean
            self.running_var[...] = (1 - m) * self.running_var + m * var * (M / (M - 1))  # unbiased
        else:
            mean, var = self.running_mean, self.running_var
        inv_std = 1.0 / np.sqrt(var + self.eps)  # (C,)
        x_hat = (x - mean[:, None, None]) * inv_std[:, None, None]  # (N, C, H, W)
        self._x_hat, self._inv_std = x_hat, inv_std  # kept for backward
        self._batch_stats = self.training
        return self.weight.data[:, None, None] * x_hat + self.bias.data[:, None, None]

    def backward(self, grad_out):
        x_hat, inv_std = self._x_hat, self._inv_std
        self.weight.grad += (grad_out * x_hat).sum(axis=(0, 2, 3))
        self.bias.grad += grad_out.sum(axis=(0, 2, 3))
        g = grad_out * self.weight.data[:, None, None]  # dL/dx_hat
        if not self._batch_stats:
            return g * inv_std[:, None, None]  # running statistics are constants
        # mean and var depend on every x of the channel: with M = N*H*W,
        # dx = inv_std * (g - mean(g) - x_hat * mean(g * x_hat)), means over (N, H, W).
        g_mean = g.mean(axis=(0, 2, 3))[:, None, None]
        gx_mean = (g * x_hat).mean(axis=(0, 2, 3))[:, None, None]
        return inv_std[:, None, None] * (g - g_mean - x_hat * gx_mean)

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
