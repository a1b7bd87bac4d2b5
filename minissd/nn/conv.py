"""Conv2d: 2-D convolution (a cross-correlation, as in every DL framework) and its backward.

The definition, for one image, with the input zero-padded by p (tests/naive.py keeps this
loop as the oracle):

    for o, i, j:                                   # output channel, row, column
        y[o, i, j] = b[o] + sum over c, u, v of    # input channel, kernel row, kernel column
                     w[o, c, u, v] * x_pad[c, i*s + u*d, j*s + v*d]

Read it tap by tap: for one kernel offset (u, v) ("tap"), the sum over c is a matrix
product of the input pixels that tap reads, one row per output, with w[:, :, u, v].T. So a
convolution is a sum of k*k matrix products, and its backward is the same products turned
around (dW_t = X_t.T @ dY, dX_t = dY @ W_t.T, added back where X_t was read).

The fast path: shifted views of one channels-last buffer.
1. Store the padded input channels-last, flattened to a matrix X (N*Hg*Wg, C_in): row
   q = (n*Hg + y)*Wg + x holds pixel (y, x) of image n, its C_in channels contiguous.
2. Then the input read by tap (u, v) for output (n, i, j) is row
       s*m + off_t,   with m = (n*Hg/s + i)*Wg + j  and  off_t = (u*Wg + v)*d,
   as long as the grid's sides Hg, Wg are multiples of s (extra zero rows/columns are added
   at the bottom/right when they are not). For ALL outputs at once, the rows a tap reads are
   the slice X[off_t : off_t + s*M : s]: a plain strided view, no copy, that BLAS reads
   directly (its row stride s*C_in is a valid "leading dimension"). Hence:
       Y[m]  = sum_t X[s*m + off_t] @ W_t              forward
       dW_t  = sum_m X[s*m + off_t].T @ dY[m]          backward, weights
       dX[s*m + off_t] += dY[m] @ W_t.T                backward, input (the adjoint)
   with W_t = w[:, :, u, v].T (C_in, C_out). Nothing is copied k*k times (plain im2col
   writes 9 copies of the input for a 3x3 kernel and reads them back).
3. The price: m runs over the whole grid (n, i < Hg/s, j < Wg), not only over the valid
   outputs (i < Ho, j < Wo); the extra rows are computed and dropped. For a 3x3 conv with
   padding 1 that is (H+2)(W+2)/(HW) - 1: 6% at 64x64, 56% at 8x8; about s times for a
   stride s.
4. The rows are processed in chunks of R (a few hundred to a few thousand) so that the
   chunk's running sum stays in cache while the k*k products add into it.
The layout change NCHW <-> channels-last happens once per call, in parallel Numba loops.
"""

import numpy as np
from numba import njit, prange

from . import init
from .module import Module, Parameter

CHUNK_BYTES = 1 << 20  # bytes of one chunk of the running sum: it must stay in the L2 cache


def conv_output_size(size, kernel_size, stride, padding, dilation):
    """floor((size + 2p - d(k-1) - 1) / s) + 1, as in PyTorch."""
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


# ---- layout changes at the boundary (NCHW <-> channels-last grid) --------------------------

@njit(parallel=True, cache=True)
def to_grid(x, top, left, Hg, Wg):
    """(N, C, H, W) -> (N, Hg, Wg, C): x placed at (top, left), zeros around it."""
    N, C, H, W = x.shape
    out = np.zeros((N, Hg, Wg, C), dtype=x.dtype)
    for nh in prange(N * H):
        n, h = nh // H, nh % H
        for w in range(W):
            for c in range(C):
                out[n, h + top, w + left, c] = x[n, c, h, w]
    return out


@njit(parallel=True, cache=True)
def from_grid(grid, top, left, H, W):
    """(N, Hg, Wg, C) -> (N, C, H, W): the block at (top, left), channels first."""
    N, C = grid.shape[0], grid.shape[3]
    out = np.empty((N, C, H, W), dtype=grid.dtype)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for h in range(H):
            for w in range(W):
                out[n, c, h, w] = grid[n, h + top, w + left, c]
    return out


def _round_up(v, s):
    return -(-v // s) * s


def _chunk_rows(channels, itemsize):
    """Rows per chunk: CHUNK_BYTES of running sum, within [512, 16384].

    Large enough that each BLAS call has work for both cores (a call costs microseconds of
    thread start-up), small enough that the running sum is read back from cache.
    """
    return int(min(16384, max(512, CHUNK_BYTES // (channels * itemsize))))


class ConvGeometry:
    """Where everything lies in the flattened channels-last grid (see the module docstring).

    - Hg, Wg: the grid, the padded input rounded up to multiples of the stride
    - M: rows of the output grid (N, Hg/s, Wg); rows < rows_used hold every valid output
    - offsets: off_t = (u*Wg + v)*d for the k*k taps, in (u, v) order
    """

    def __init__(self, N, H, W, k, s, p, d):
        self.Ho, self.Wo = conv_output_size(H, k, s, p, d), conv_output_size(W, k, s, p, d)
        self.Hg, self.Wg = _round_up(H + 2 * p, s), _round_up(W + 2 * p, s)
        self.N, self.s, self.p = N, s, p
        self.M = N * (self.Hg // s) * self.Wg
        # the last valid output is (N-1, Ho-1, Wo-1); every row after it is never needed
        self.rows_used = ((N - 1) * (self.Hg // s) + self.Ho - 1) * self.Wg + self.Wo
        self.offsets = [(u * self.Wg + v) * d for u in range(k) for v in range(k)]

    def tap_rows(self, t, m0, m1):
        """The slice of grid rows that tap t reads for output rows m0..m1-1."""
        start = self.offsets[t] + self.s * m0
        return slice(start, start + self.s * (m1 - m0), self.s)


def conv2d_forward(X, W_taps, geo):
    """Y[m] = sum_t X[s*m + off_t] @ W_taps[t], chunk by chunk.

    - X: (N*Hg*Wg, C_in) the flattened channels-last input grid
    - W_taps: (k*k, C_in, C_out), tap t = w[:, :, u, v].T
    - returns Y: (M, C_out); only rows of valid outputs are meaningful

    Two ways to sum over the taps, the same arithmetic: add the k*k products (moves k*k
    chunks of C_out numbers through the cache), or first copy the k*k views side by side
    into one chunk of im2col and multiply once by all taps' weights stacked (moves k*k
    chunks of C_in numbers). The narrower side wins; the copy serves a first layer (C_in = 3).
    """
    T, C_in, C_out = W_taps.shape
    Y = np.empty((geo.M, C_out), dtype=np.result_type(X, W_taps))
    R = _chunk_rows(max(C_in, C_out), Y.itemsize)
    gather = C_in < C_out
    if gather:
        cols = np.empty((R, T * C_in), dtype=Y.dtype)  # one chunk of im2col, taps side by side
        W_stacked = W_taps.reshape(T * C_in, C_out)  # (k*k*C_in, C_out)
    else:
        tmp = np.empty((R, C_out), dtype=Y.dtype)
    for m0 in range(0, geo.rows_used, R):
        m1 = min(m0 + R, geo.rows_used)
        acc = Y[m0:m1]  # (R, C_out)
        if gather:
            for t in range(T):
                cols[:m1 - m0, t * C_in:(t + 1) * C_in] = X[geo.tap_rows(t, m0, m1)]
            np.matmul(cols[:m1 - m0], W_stacked, out=acc)
            continue
        np.matmul(X[geo.tap_rows(0, m0, m1)], W_taps[0], out=acc)
        for t in range(1, T):
            part = np.matmul(X[geo.tap_rows(t, m0, m1)], W_taps[t], out=tmp[:m1 - m0])
            acc += part  # the running sum stays in cache
    return Y


def conv2d_backward(X, W_taps, dY, geo, needs_input_grad=True):
    """Gradients of conv2d_forward, chunk by chunk: the same products turned around.

    - X: (N*Hg*Wg, C_in) the input grid kept by forward; W_taps: (k*k, C_in, C_out)
    - dY: (M, C_out) the output gradient on the output grid, ZERO outside valid outputs
    - returns (dW_taps (k*k, C_in, C_out), dX (N*Hg*Wg, C_in) or None)
    """
    # [assignment conv_backward] For each chunk of output rows and each tap t: dW_t += X_t.T @ dY; X_t's rows of dX += dY @ W_t.T.
    C_in, C_out = W_taps.shape[1:]
    dW = np.zeros_like(W_taps)
    dX = np.zeros_like(X) if needs_input_grad else None
    R = _chunk_rows(max(C_in, C_out), X.itemsize)
    tmp = np.empty((R, C_in), dtype=X.dtype)
    for m0 in range(0, geo.rows_used, R):
        m1 = min(m0 + R, geo.rows_used)
        g = dY[m0:m1]  # (R, C_out), reused from cache by every tap
        for t in range(len(W_taps)):
            rows = geo.tap_rows(t, m0, m1)
            dW[t] += X[rows].T @ g  # (C_in, R) @ (R, C_out)
            if needs_input_grad:
                part = np.matmul(g, W_taps[t].T, out=tmp[:m1 - m0])  # (R, C_out) @ (C_out, C_in)
                dX[rows] += part  # added back where X_t was read
    return dW, dX
    # [/assignment]


def _int(v, name):
    if isinstance(v, (tuple, list)):
        if len(v) != 2 or v[0] != v[1]:
            raise ValueError(f"Conv2d: {name} must be an int or a square pair, got {v}")
        v = v[0]
    return int(v)


class Conv2d(Module):
    """2-D convolution with PyTorch's arguments and weight layout.

    - x: (N, C_in, H, W) float32 (float64 for gradient checks) -> (N, C_out, Ho, Wo),
      Ho = floor((H + 2p - d(k-1) - 1) / s) + 1 (same for Wo)
    - weight: (C_out, C_in, k, k) Parameter; bias: (C_out,) Parameter, or None (bias=False)
    - needs_input_grad: set it to False on a network's first layer (whose input is the
      image): backward then skips the input gradient, a third of the work, and returns None
    - rng, init_name: the weight's initialiser (``minissd.nn.init``, He normal by default,
      seeded by the Generator ``rng``); the bias starts at 0
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, rng=None, init_name="he_normal", dtype=np.float32):
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _int(kernel_size, "kernel_size")
        self.stride, self.padding = _int(stride, "stride"), _int(padding, "padding")
        self.dilation = _int(dilation, "dilation")
        if min(self.kernel_size, self.stride, self.dilation) < 1 or self.padding < 0:
            raise ValueError(f"Conv2d: kernel_size, stride, dilation must be >= 1 and padding >= 0, "
                             f"got {kernel_size}, {stride}, {dilation}, {padding}")
        shape = (self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)
        self.weight = Parameter(init.initialise(shape, rng, init_name, dtype=dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype)) if bias else None
        self.needs_input_grad = True

    def output_size(self, H, W):
        k, s, p, d = self.kernel_size, self.stride, self.padding, self.dilation
        Ho, Wo = conv_output_size(H, k, s, p, d), conv_output_size(W, k, s, p, d)
        if Ho < 1 or Wo < 1:
            raise ValueError(f"{self!r}: input {H}x{W} is smaller than the (dilated) kernel")
        return Ho, Wo

    def _w_taps(self):
        """(C_out, C_in, k, k) -> (k*k, C_in, C_out): tap t = u*k + v is w[:, :, u, v].T."""
        return np.ascontiguousarray(self.weight.data.transpose(2, 3, 1, 0)).reshape(-1, self.in_channels, self.out_channels)

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d({self.in_channels}, {self.out_channels}): input must be "
                             f"(N, {self.in_channels}, H, W), got shape {x.shape}")
        N, _, H, W = x.shape
        self.output_size(H, W)  # raises if the kernel does not fit
        geo = ConvGeometry(N, H, W, self.kernel_size, self.stride, self.padding, self.dilation)
        p = self.padding
        X = to_grid(np.ascontiguousarray(x), p, p, geo.Hg, geo.Wg).reshape(-1, self.in_channels)  # (N*Hg*Wg, C_in)
        Y = conv2d_forward(X, self._w_taps(), geo)  # (M, C_out) on the output grid
        self._X, self._geo, self._in_hw = X, geo, (H, W)  # kept for backward: dW_t = X_t.T @ dY
        y = from_grid(Y.reshape(N, geo.Hg // self.stride, geo.Wg, -1), 0, 0, geo.Ho, geo.Wo)  # (N, C_out, Ho, Wo)
        if self.bias is not None:
            y += self.bias.data[:, None, None]
        return y

    def backward(self, grad_out):
        geo, k = self._geo, self.kernel_size
        N = grad_out.shape[0]
        dY = to_grid(np.ascontiguousarray(grad_out), 0, 0, geo.Hg // self.stride, geo.Wg)  # zeros off the outputs
        dW, dX = conv2d_backward(self._X, self._w_taps(), dY.reshape(geo.M, -1), geo, self.needs_input_grad)
        self.weight.grad += dW.reshape(k, k, self.in_channels, -1).transpose(3, 2, 0, 1)  # (C_out, C_in, k, k)
        if self.bias is not None:
            self.bias.grad += grad_out.sum(axis=(0, 2, 3))
        if dX is None:
            return None
        H, W = self._in_hw
        return from_grid(dX.reshape(N, geo.Hg, geo.Wg, -1), self.padding, self.padding, H, W)  # (N, C_in, H, W)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"bias={self.bias is not None}")
