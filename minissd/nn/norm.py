"""Normalisation layers: BatchNorm2d and SSD's L2Norm.

BatchNorm2d (Ioffe & Szegedy 2015) normalises each channel by statistics of the batch in
training and by running averages in evaluation, with PyTorch's conventions:
  running = (1 - momentum) * running + momentum * batch_statistic
where the batch mean/variance are over (N, H, W); the variance used to NORMALISE is the
biased one (divide by M = N*H*W) and the one put in running_var is the unbiased one
(divide by M - 1).

The BatchNorm group. With ``group = g`` the batch is cut into groups of g consecutive images,
and each group is normalised with its own statistics ("ghost batch norm", Hoffer et al. 2017):
the batch statistic above is then the mean over the groups of each group's statistic (M =
g*H*W). The group is part of the maths (it changes the loss and the gradient), so it is a
named setting of a run, the same on every device and for any number of worker processes;
``set_batchnorm_group(model, g)`` sets it on every BatchNorm2d of a model. None means one group:
the whole batch.

L2Norm (Liu et al. 2016, sec. 3.1 / ParseNet, Liu, Rabinovich & Berg 2015) rescales the
feature vector at every location of conv4_3 to unit L2 norm over channels and multiplies it
by a learned per-channel scale initialised to 20: conv4_3's activations are much larger than
those of deeper layers, and this puts them on a comparable scale.
"""

import numpy as np
from numba import njit

from ..errors import ConfigError
from .module import Module, Parameter


# ---- BatchNorm2d's two kernels: one channel at a time, every value read as few times as possible
# NumPy would spend ~10 passes over the activations on what follows (mean, var, x - mean, the
# scale, the shift, ... each a temporary array); these loops make 2-3 passes in forward and 2 in
# backward. The layer calls them once per group of images. They release the GIL (nogil), so
# the data loader's threads go on preparing batches meanwhile.

@njit(nogil=True, cache=True)
def batchnorm_forward(x, weight, bias, mean, var, batch_stats, eps, y):
    """y = weight * (x - mean) / sqrt(var + eps) + bias, channel by channel.

    - x, y: (N, C, H*W); weight, bias: (C,)
    - mean, var: (C,) float64; with batch_stats they are OUTPUTS (the channel's mean and biased
      variance over N*H*W, computed in two passes in float64), else the running statistics
    """
    N, C, L = x.shape
    M = N * L
    for c in range(C):
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
def batchnorm_backward(x, grad_out, weight, mean, inv_std, batch_stats, dweight, dbias, dx):
    """Gradients, channel by channel; x_hat = (x - mean) * inv_std is recomputed, not kept.

    - x, grad_out, dx: (N, C, H*W); weight: (C,); mean, inv_std: (C,) float64
    - dweight[c] = sum(grad * x_hat), dbias[c] = sum(grad) (overwritten, not added)
    - with batch_stats, mean and var depend on every x of the channel:
      dx = weight * inv_std * (grad - mean(grad) - x_hat * mean(grad * x_hat)), means over
      the M = N*H*W values; without, they are constants and dx = weight * inv_std * grad
    """
    N, C, L = x.shape
    M = N * L
    for c in range(C):
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
    """y = weight * (x - mean) / sqrt(var + eps) + bias, per channel (and per group of images).

    - x: (N, C, H, W) -> same shape
    - weight, bias: (C,) Parameters, initialised to 1 and 0
    - running_mean, running_var: (C,) buffers, initialised to 0 and 1
    - group: images per normalisation in training (None: the whole batch); N must be a
      multiple of it (ConfigError otherwise)
    - training mode: each group's statistics over (g, H, W); the running buffers move
      towards the mean over the groups
    - eval mode: the running buffers; the layer is then a fixed per-channel affine map
    """

    def __init__(self, channels, eps=1e-5, momentum=0.1, dtype=np.float32, group=None):
        self.channels, self.eps, self.momentum = int(channels), float(eps), float(momentum)
        self.group = check_group(group)
        self.weight = Parameter(np.ones(channels, dtype=dtype))
        self.bias = Parameter(np.zeros(channels, dtype=dtype))
        self.register_buffer("running_mean", np.zeros(channels, dtype=dtype))
        self.register_buffer("running_var", np.ones(channels, dtype=dtype))

    def _groups(self, N):
        """The image ranges [(n0, n1), ...] normalised together."""
        g = self.group or N
        if N % g:
            raise ConfigError(f"BatchNorm group: a batch of {N} images cannot be cut into groups of "
                              f"{g}; the batch size must be a multiple of the group")
        return [(n0, n0 + g) for n0 in range(0, N, g)]

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"BatchNorm2d({self.channels}): input must be (N, {self.channels}, H, W), got {x.shape}")
        N, C, H, W = x.shape
        x = np.ascontiguousarray(x)
        x3 = x.reshape(N, C, H * W)
        y = np.empty_like(x)
        y3 = y.reshape(N, C, H * W)
        batch_stats = self.training
        if batch_stats:
            groups = self._groups(N)
            M = (groups[0][1] - groups[0][0]) * H * W  # values per channel in one group
            if M < 2:
                raise ValueError("BatchNorm2d: training needs more than one value per channel and group "
                                 "(images per group * H * W >= 2)")
            mean, var = np.empty((len(groups), C)), np.empty((len(groups), C))  # float64, per group
            for k, (n0, n1) in enumerate(groups):
                batchnorm_forward(x3[n0:n1], self.weight.data, self.bias.data, mean[k], var[k],
                                  True, self.eps, y3[n0:n1])
            m = self.momentum  # the running statistics move towards the mean over the groups
            self.running_mean[...] = (1 - m) * self.running_mean + m * mean.mean(axis=0)
            self.running_var[...] = (1 - m) * self.running_var + m * var.mean(axis=0) * (M / (M - 1))  # unbiased
        else:
            groups = [(0, N)]  # one affine map for every image
            mean = self.running_mean.astype(np.float64)[None]  # (1, C)
            var = self.running_var.astype(np.float64)[None]
            batchnorm_forward(x3, self.weight.data, self.bias.data, mean[0], var[0], False, self.eps, y3)
        # kept for backward: x itself (not a copy, as PyTorch saves its input), from which
        # backward recomputes x_hat; so the caller must not change x in place before backward
        self._x, self._groups_used, self._mean, self._inv_std = x, groups, mean, 1.0 / np.sqrt(var + self.eps)
        self._batch_stats = batch_stats
        return y

    def backward(self, grad_out):
        x = self._x
        N, C, H, W = x.shape
        grad_out = np.ascontiguousarray(grad_out, dtype=x.dtype)
        x3, g3 = x.reshape(N, C, -1), grad_out.reshape(N, C, -1)
        dx = np.empty_like(x)
        dx3 = dx.reshape(N, C, -1)
        dweight, dbias = np.empty(C), np.empty(C)  # one group's, float64
        for k, (n0, n1) in enumerate(self._groups_used):
            batchnorm_backward(x3[n0:n1], g3[n0:n1], self.weight.data, self._mean[k], self._inv_std[k],
                               self._batch_stats, dweight, dbias, dx3[n0:n1])
            self.weight.grad += dweight
            self.bias.grad += dbias
        return dx

    def extra_repr(self):
        group = f", group={self.group}" if self.group else ""
        return f"{self.channels}, eps={self.eps}, momentum={self.momentum}{group}"


def check_group(group):
    """None (or 0) for the whole batch, else a positive int; ConfigError otherwise."""
    if group is None or (isinstance(group, (int, np.integer)) and not isinstance(group, bool) and group == 0):
        return None
    if not isinstance(group, (int, np.integer)) or isinstance(group, bool) or group < 0:
        raise ConfigError(f"BatchNorm group: expected a positive number of images (or None / 0 for the "
                          f"whole batch), got {group!r}")
    return int(group)


def set_batchnorm_group(model, group):
    """Normalise every ``group`` consecutive images together in every BatchNorm2d of ``model``.

    - group: images per normalisation; None or 0: the whole batch
    - returns the number of BatchNorm2d layers set (0 for a network without BatchNorm)
    """
    group = check_group(group)
    layers = [m for m in model.modules() if isinstance(m, BatchNorm2d)]
    for m in layers:
        m.group = group
    return len(layers)


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
        # [assignment l2norm_backward] Differentiate y_c = weight_c * x_c / (r + eps), r = sqrt(sum_k x_k^2) over channels at each (n, h, w), eps outside the root: add dL/dweight into weight.grad, return dL/dx (finite where x = 0).
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
