"""Conv2d: a 2-D convolution (cross-correlation, as in every DL framework) and its backward.

First version: im2col + one matrix product. A faster channels-last version replaces the
internals later; the public class stays the same.
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import init
from .module import Module, Parameter


def _pair(v, name):
    if isinstance(v, (tuple, list)):
        if len(v) != 2 or v[0] != v[1]:
            raise ValueError(f"Conv2d: {name} must be an int or a square pair, got {v}")
        v = v[0]
    return int(v)


def conv_output_size(size, kernel_size, stride, padding, dilation):
    """floor((size + 2p - d(k-1) - 1) / s) + 1, as in PyTorch."""
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def im2col(x, k, s, p, d):
    """(N, C, H, W) -> cols (N*Ho*Wo, C*k*k): row = one output position, columns = its window."""
    N, C, H, W = x.shape
    Ho, Wo = conv_output_size(H, k, s, p, d), conv_output_size(W, k, s, p, d)
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))  # (N, C, H+2p, W+2p)
    sn, sc, sh, sw = xp.strides
    windows = as_strided(xp, (N, Ho, Wo, C, k, k), (sn, sh * s, sw * s, sc, sh * d, sw * d))
    return windows.reshape(N * Ho * Wo, C * k * k), (Ho, Wo)


def col2im(cols, x_shape, k, s, p, d, Ho, Wo):
    """Adjoint of im2col: add every window's column back onto the input positions it read."""
    N, C, H, W = x_shape
    cols = cols.reshape(N, Ho, Wo, C, k, k)
    dxp = np.zeros((N, C, H + 2 * p, W + 2 * p), dtype=cols.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i * d:i * d + s * (Ho - 1) + 1:s, j * d:j * d + s * (Wo - 1) + 1:s] += \
                cols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return dxp[:, :, p:p + H, p:p + W]


class Conv2d(Module):
    """2-D convolution with PyTorch's arguments and weight layout.

    - x: (N, C_in, H, W) float32 (or float64 for gradient checks) -> (N, C_out, Ho, Wo),
      Ho = floor((H + 2p - d(k-1) - 1) / s) + 1
    - weight: (C_out, C_in, k, k) Parameter; bias: (C_out,) Parameter or None
    - needs_input_grad: set False on a network's first layer: backward then skips the
      gradient of the input (a third of the work) and returns None
    - rng, init: initialiser of the weight (``minissd.nn.init``; He normal by default), bias 0
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, rng=None, init_name="he_normal", dtype=np.float32):
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride, self.padding = _pair(stride, "stride"), _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        if min(self.kernel_size, self.stride, self.dilation) < 1 or self.padding < 0:
            raise ValueError(f"Conv2d: kernel_size, stride, dilation must be >= 1 and padding >= 0, "
                             f"got {kernel_size}, {stride}, {dilation}, {padding}")
        shape = (self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)
        self.weight = Parameter(init.initialise(shape, rng, init_name, dtype=dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype)) if bias else None
        self.needs_input_grad = True

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d({self.in_channels}, {self.out_channels}): input must be "
                             f"(N, {self.in_channels}, H, W), got shape {x.shape}")
        k, s, p, d = self.kernel_size, self.stride, self.padding, self.dilation
        N = x.shape[0]
        cols, (Ho, Wo) = im2col(x, k, s, p, d)  # (N*Ho*Wo, C_in*k*k)
        w = self.weight.data.reshape(self.out_channels, -1)  # (C_out, C_in*k*k)
        y = cols @ w.T  # (N*Ho*Wo, C_out)
        if self.bias is not None:
            y += self.bias.data
        self._cols, self._x_shape, self._out_hw = cols, x.shape, (Ho, Wo)  # kept for backward
        return np.ascontiguousarray(y.reshape(N, Ho, Wo, -1).transpose(0, 3, 1, 2))  # (N, C_out, Ho, Wo)

    def backward(self, grad_out):
        k, s, p, d = self.kernel_size, self.stride, self.padding, self.dilation
        Ho, Wo = self._out_hw
        g = grad_out.transpose(0, 2, 3, 1).reshape(-1, self.out_channels)  # (N*Ho*Wo, C_out)
        self.weight.grad += (g.T @ self._cols).reshape(self.weight.data.shape)
        if self.bias is not None:
            self.bias.grad += g.sum(axis=0)
        if not self.needs_input_grad:
            return None
        dcols = g @ self.weight.data.reshape(self.out_channels, -1)  # (N*Ho*Wo, C_in*k*k)
        return col2im(dcols, self._x_shape, k, s, p, d, Ho, Wo)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"bias={self.bias is not None}")
