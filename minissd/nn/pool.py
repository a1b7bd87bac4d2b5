"""MaxPool2d: the largest value of each window; backward routes the gradient to that value.

Forward records, for every output, the flat index ``y * W + x`` of the input that won
(its argmax); backward adds each output gradient into that one input. Both are plain
single-threaded Numba loops over the (image, channel) planes, like every layer of minissd.nn
(several cores are used by running whole steps in worker processes: minissd.workers).
"""

import numpy as np
from numba import njit

from .module import Module


def pool_output_size(size, kernel_size, stride, padding, ceil_mode):
    """Output length along one axis, PyTorch's rule.

    floor((size + 2p - k) / s) + 1, or ceil(...) + 1 with ceil_mode; in ceil mode the last
    window must still start inside the input or the left padding, else it is dropped.
    Example (SSD300's pool3): size 75, k 2, s 2, ceil -> 38 (floor would give 37).
    """
    span = size + 2 * padding - kernel_size
    if span < 0:
        raise ValueError(f"MaxPool2d: kernel {kernel_size} larger than padded input {size + 2 * padding}")
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


@njit(nogil=True, cache=True)
def _maxpool_forward(x, k, s, p, Ho, Wo):
    """Max over each k x k window of every plane; returns (out, argmax flat index y*W+x)."""
    N, C, H, W = x.shape
    out = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    argmax = np.empty((N, C, Ho, Wo), dtype=np.int32)
    for nc in range(N * C):
        n, c = nc // C, nc % C
        for oy in range(Ho):
            y0 = max(oy * s - p, 0)  # padding is -inf: clip the window to the input
            y1 = min(oy * s - p + k, H)
            for ox in range(Wo):
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
    return out, argmax


@njit(nogil=True, cache=True)
def maxpool_backward(grad_out, argmax, H, W):
    """Scatter each output gradient onto the input that won its window.

    - grad_out: (N, C, Ho, Wo); argmax: (N, C, Ho, Wo) int32, flat index y * W + x
    - returns grad_in: (N, C, H, W); overlapping windows that share a winner add up
    """
    # [assignment maxpool_backward] Add each output gradient into the input at its argmax; the rest get 0.
    N, C, Ho, Wo = grad_out.shape
    grad_in = np.zeros((N, C, H * W), dtype=grad_out.dtype)
    for nc in range(N * C):
        n, c = nc // C, nc % C
        for oy in range(Ho):
            for ox in range(Wo):
                grad_in[n, c, argmax[n, c, oy, ox]] += grad_out[n, c, oy, ox]
    return grad_in.reshape(N, C, H, W)
    # [/assignment]


class MaxPool2d(Module):
    """Max pooling over k x k windows (PyTorch's arguments and output sizes).

    - x: (N, C, H, W) -> (N, C, Ho, Wo), see ``pool_output_size``
    - kernel_size, stride (default: kernel_size), padding (implicit -inf, at most k // 2)
    - ceil_mode: round the output size up (SSD300's pool3: 75 -> 38)
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        self.kernel_size = int(kernel_size)
        self.stride = int(stride) if stride is not None else self.kernel_size
        self.padding = int(padding)
        self.ceil_mode = bool(ceil_mode)
        if self.padding > self.kernel_size // 2:
            raise ValueError(f"MaxPool2d: padding {padding} must be at most half the kernel size {kernel_size}")
        if self.kernel_size < 1 or self.stride < 1:
            raise ValueError(f"MaxPool2d: kernel_size {kernel_size} and stride {stride} must be >= 1")

    def output_size(self, H, W):
        k, s, p, c = self.kernel_size, self.stride, self.padding, self.ceil_mode
        return pool_output_size(H, k, s, p, c), pool_output_size(W, k, s, p, c)

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"MaxPool2d: input must be (N, C, H, W), got shape {x.shape}")
        H, W = x.shape[2:]
        Ho, Wo = self.output_size(H, W)
        out, self._argmax = _maxpool_forward(np.ascontiguousarray(x), self.kernel_size, self.stride,
                                             self.padding, Ho, Wo)
        self._input_hw = (H, W)  # kept for backward: argmax indexes planes of this size
        return out

    def backward(self, grad_out):
        H, W = self._input_hw
        if grad_out.shape != self._argmax.shape:
            raise ValueError(f"MaxPool2d.backward: grad_out has shape {grad_out.shape}, the last "
                             f"forward's output was {self._argmax.shape}")
        return maxpool_backward(np.ascontiguousarray(grad_out, dtype=grad_out.dtype), self._argmax, H, W)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}")
