"""Slow, obvious oracles: plain Python loops that the fast functions are pinned to.

Each oracle follows the paper (and DESIGN.md) as literally as possible and is never used
by the package itself. Tests compare the NumPy/Numba/CUDA versions against these.
"""

import math

import numpy as np

# ---- boxes, matching, mining, NMS (core) --------------------------------------------------

# ---- layers (nn) ---------------------------------------------------------------------------


def conv2d(x, weight, bias, stride=1, padding=0, dilation=1):
    """Convolution as the definition reads (PyTorch's cross-correlation), one output at a time.

    out[n, o, i, j] = bias[o] + sum over c, u, v of
        weight[o, c, u, v] * x[n, c, i*stride + u*dilation - padding, j*stride + v*dilation - padding]
    where positions outside the input read 0.
    """
    N, C, H, W = x.shape
    O, _, K, _ = weight.shape
    Ho = (H + 2 * padding - dilation * (K - 1) - 1) // stride + 1
    Wo = (W + 2 * padding - dilation * (K - 1) - 1) // stride + 1
    out = np.zeros((N, O, Ho, Wo), dtype=np.float64)
    for n in range(N):
        for o in range(O):
            for i in range(Ho):
                for j in range(Wo):
                    total = 0.0 if bias is None else float(bias[o])
                    for c in range(C):
                        for u in range(K):
                            for v in range(K):
                                y = i * stride + u * dilation - padding
                                xx = j * stride + v * dilation - padding
                                if 0 <= y < H and 0 <= xx < W:
                                    total += float(weight[o, c, u, v]) * float(x[n, c, y, xx])
                    out[n, o, i, j] = total
    return out


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """Max pooling as PyTorch defines it: windows over the -inf-padded input.

    The output size is floor (or ceil) of (H + 2p - k) / s, plus 1; in ceil mode a last
    window that would start beyond the input and left padding is dropped.
    """
    stride = kernel_size if stride is None else stride
    N, C, H, W = x.shape

    def out_size(size):
        span = size + 2 * padding - kernel_size
        n = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
        if ceil_mode and (n - 1) * stride >= size + padding:
            n -= 1
        return n

    Ho, Wo = out_size(H), out_size(W)
    out = np.full((N, C, Ho, Wo), -np.inf)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    for u in range(kernel_size):
                        for v in range(kernel_size):
                            y, xx = i * stride + u - padding, j * stride + v - padding
                            if 0 <= y < H and 0 <= xx < W:
                                out[n, c, i, j] = max(out[n, c, i, j], float(x[n, c, y, xx]))
    return out

# ---- evaluation (AP) -----------------------------------------------------------------------
