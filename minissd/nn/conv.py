"""Conv2d: 2-D convolution (a cross-correlation, as in every DL framework) and its backward.

The definition, for one image, with the input zero-padded by p (tests/naive.py keeps this
loop as the oracle):

    for o, i, j:                                   # output channel, row, column
        y[o, i, j] = b[o] + sum over c, u, v of    # input channel, kernel row, kernel column
                     w[o, c, u, v] * x_pad[c, i*s + u*d, j*s + v*d]

Conv as a matrix product (im2col). Copy, for every output position, the k*k*C_in inputs
its window reads into one row of ``cols`` (rows: outputs; columns: taps (u, v) side by side,
C_in channels each). With the weight reshaped to ``w_mat`` (k*k*C_in, C_out), rows in the
same (u, v, c) order:

    Y = cols @ w_mat          dW = cols.T @ dY          dcols = dY @ w_mat.T

and every entry of ``dcols`` is added back onto the input it was copied from (col2im).

The fast path: im2col one cache-sized chunk at a time, from one channels-last buffer.
Plain im2col writes all of ``cols`` (9 copies of the input for a 3x3 kernel) to memory and
reads it back: on 32-64 channels that costs more than the product.
1. Store the padded input channels-last, flattened to a matrix X (N*Hp*Wp, C_in): row
   q = (n*Hp + y)*Wp + x holds pixel (y, x) of image n, its C_in channels contiguous.
2. Output (n, i, j) is row m = (n*Ho + i)*Wo + j of Y (N*Ho*Wo, C_out), channels-last too.
   Its window starts at input row base(m) = (n*Hp + i*s)*Wp + j*s, and tap t = (u, v) of the
   window is input row base(m) + off_t, off_t = (u*Wp + v)*d: the same offset for every
   output. So row r of a chunk of cols is k*k contiguous runs of C_in values, copied by one
   plain Numba loop (``gather_cols``).
3. Forward, per chunk of R output rows: cols = gather_cols(...); Y[chunk] = cols @ w_mat.
   Backward, per chunk: the same cols again (nothing but X is kept), dW += cols.T @ dY[chunk],
   dcols = dY[chunk] @ w_mat.T, and ``scatter_cols`` adds each entry of dcols back onto the
   input it was copied from (the adjoint of the copy, col2im), in the input's own coordinates
   (N, H, W, C_in): taps that read the padding add nothing. The chunk (about 2 MiB) stays in
   the L2 cache between the copy and the product, and one product per chunk gives BLAS a
   large matrix (inner size k*k*C_in).
4. Only valid outputs are rows of Y: no work on the padding, and a stride-2 conv costs a
   quarter of the stride-1 one, as it should.
"""

import numpy as np
from numba import njit

from . import init
from .module import Module, Parameter

CHUNK_BYTES = 2 << 20  # bytes of one chunk of cols: about the L2 cache of a core


def conv_output_size(size, kernel_size, stride, padding, dilation):
    """floor((size + 2p - d(k-1) - 1) / s) + 1, as in PyTorch."""
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


# ---- layout changes at the boundary (NCHW <-> channels-last grid) --------------------------
# Every Numba kernel here is a plain single-threaded loop. They release the GIL (nogil), so
# the data loader's threads go on preparing batches meanwhile.

@njit(nogil=True, cache=True)
def to_grid(x, top, left, Hg, Wg):
    """(N, C, H, W) -> (N, Hg, Wg, C): x placed at (top, left), zeros around it.

    Channel by channel, row by row: the innermost loop reads one row of x contiguously and
    writes every C-th value of out. (With c innermost the loop reads C planes at once and runs
    only C times per pixel: 3 for the image, which made the first convolution's layout change
    2x slower; python -m minissd.bench peer --profile, docs/benchmarks.md.)
    """
    N, C, H, W = x.shape
    out = np.zeros((N, Hg, Wg, C), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    out[n, h + top, w + left, c] = x[n, c, h, w]
    return out


@njit(nogil=True, cache=True)
def from_grid(grid, top, left, bias, out):
    """out (N, C, H, W) = the block of grid (N, Hg, Wg, C) at (top, left), channels first,
    plus bias (C,) (pass zeros for none)."""
    N, C, H, W = out.shape
    for n in range(N):
        for c in range(C):
            b = bias[c]
            for h in range(H):
                for w in range(W):
                    out[n, c, h, w] = grid[n, h + top, w + left, c] + b
    return out


def _chunk_rows(row_width, itemsize):
    """Output rows per chunk: about CHUNK_BYTES of cols, within [256, 8192].

    Small enough to stay in cache between the copy and the product, large enough that the
    product runs at BLAS speed.
    """
    return int(min(8192, max(256, CHUNK_BYTES // (row_width * itemsize))))


class ConvGeometry:
    """Where everything lies in the flattened channels-last buffers (see the module docstring).

    - N, H, W: the input; k, s, p, d: kernel size, stride, padding, dilation
    - Hp, Wp: the padded input; X is (N*Hp*Wp, C_in)
    - Ho, Wo: the output; Y is (M, C_out) with M = N*Ho*Wo
    - s: the stride; offsets: off_t = (u*Wp + v)*d for the k*k taps, in (u, v) order
    """

    def __init__(self, N, H, W, k, s, p, d):
        self.Ho, self.Wo = conv_output_size(H, k, s, p, d), conv_output_size(W, k, s, p, d)
        self.Hp, self.Wp = H + 2 * p, W + 2 * p
        self.N, self.H, self.W, self.k, self.s, self.p, self.d = N, H, W, k, s, p, d
        self.M = N * self.Ho * self.Wo
        self.offsets = [(u * self.Wp + v) * d for u in range(k) for v in range(k)]

    def kernel_args(self):
        """What gather_cols needs to find base(m): (offsets, s, Ho, Wo, Hp, Wp)."""
        return np.asarray(self.offsets, dtype=np.int64), self.s, self.Ho, self.Wo, self.Hp, self.Wp


@njit(nogil=True, cache=True)
def window_start(m, s, Ho, Wo, Hp, Wp):
    """Input row where output row m = (n*Ho + i)*Wo + j's window starts: (n*Hp + i*s)*Wp + j*s."""
    n, ij = m // (Ho * Wo), m % (Ho * Wo)
    i, j = ij // Wo, ij % Wo
    return (n * Hp + i * s) * Wp + j * s


@njit(nogil=True, cache=True)
def gather_cols(X, offsets, s, Ho, Wo, Hp, Wp, m0, m1, cols):
    """cols[r, t*C_in + c] = X[window_start(m0 + r) + offsets[t], c]: output rows m0..m1-1.

    The plain loop of im2col on the grid: row r of cols is output m0 + r's window, tap after
    tap, C_in channels each (contiguous in X and in cols). Returns the filled cols[:m1-m0].
    """
    C_in = X.shape[1]
    for r in range(m1 - m0):
        base = window_start(m0 + r, s, Ho, Wo, Hp, Wp)
        for t in range(offsets.shape[0]):
            q = base + offsets[t]
            for c in range(C_in):
                cols[r, t * C_in + c] = X[q, c]
    return cols[:m1 - m0]


@njit(nogil=True, cache=True)
def scatter_cols(dcols, m0, Ho, Wo, k, s, p, d, dx):
    """Add every entry of dcols onto the input its copy in gather_cols came from (col2im).

    - dcols: (R, k*k*C_in), row r for output m0 + r = (n*Ho + i)*Wo + j, columns ordered as
      gather_cols writes them: tap t = u*k + v (kernel row u, column v), C_in channels each
    - k, s, p, d: kernel size, stride, padding, dilation (the definition in the module
      docstring: tap (u, v) of output (i, j) reads the padded input at (i*s + u*d, j*s + v*d))
    - dx: (N, H, W, C_in) the input's gradient, channels-last and unpadded, added into in place
    An input read by several windows receives the sum of their gradients; the loop is
    sequential, so no two additions race.
    """
    # [assignment col2im] Add dcols[r, t*C_in + c] onto the input that output m0 + r's tap t read: with stride, dilation, and the padding (dx is unpadded: taps in the padding add nothing).
    N, H, W, C_in = dx.shape
    for r in range(dcols.shape[0]):
        n, ij = (m0 + r) // (Ho * Wo), (m0 + r) % (Ho * Wo)
        i, j = ij // Wo, ij % Wo
        for u in range(k):
            y = i * s - p + u * d  # the input row tap (u, .) read
            if y < 0 or y >= H:
                continue  # the padding: nothing to add
            for v in range(k):
                x = j * s - p + v * d
                if x < 0 or x >= W:
                    continue
                t = (u * k + v) * C_in
                for c in range(C_in):
                    dx[n, y, x, c] += dcols[r, t + c]
    # [/assignment]


def conv2d_forward(X, w_mat, geo):
    """Y = im2col(X) @ w_mat, one chunk of output rows at a time.

    - X: (N*Hp*Wp, C_in) the flattened channels-last padded input
    - w_mat: (k*k*C_in, C_out), rows ordered (u, v, c)
    - returns Y: (M, C_out), M = N*Ho*Wo, the output channels-last
    """
    Y = np.empty((geo.M, w_mat.shape[1]), dtype=np.result_type(X, w_mat))
    R = _chunk_rows(w_mat.shape[0], X.itemsize)
    args = geo.kernel_args()
    cols = np.empty((R, w_mat.shape[0]), dtype=X.dtype)  # one chunk of im2col, reused
    for m0 in range(0, geo.M, R):
        m1 = min(m0 + R, geo.M)
        np.matmul(gather_cols(X, *args, m0, m1, cols), w_mat, out=Y[m0:m1])  # (R, kkC) @ (kkC, C_out)
    return Y


def conv2d_backward(X, w_mat, dY, geo, needs_input_grad=True):
    """Gradients of conv2d_forward, chunk by chunk: the same products turned around.

    - X: (N*Hp*Wp, C_in) the padded input kept by forward; w_mat: (k*k*C_in, C_out)
    - dY: (M, C_out) the output gradient, channels-last
    - returns (dw_mat (k*k*C_in, C_out), dx (N, H, W, C_in) channels-last and unpadded, or
      None), both in the dtype of X
    """
    # [assignment conv_backward] Per chunk of R output rows (as in forward): dW += cols.T @ dY; dcols = dY @ w_mat.T, added onto dx (N, H, W, C_in) by scatter_cols; gradients in X's dtype.
    dw_mat = np.zeros_like(w_mat)
    dx = np.zeros((geo.N, geo.H, geo.W, X.shape[1]), X.dtype) if needs_input_grad else None
    R = _chunk_rows(w_mat.shape[0], X.itemsize)
    args = geo.kernel_args()
    cols = np.empty((R, w_mat.shape[0]), dtype=X.dtype)
    dcols = np.empty_like(cols)
    for m0 in range(0, geo.M, R):
        m1 = min(m0 + R, geo.M)
        g = dY[m0:m1]  # (R, C_out)
        dw_mat += gather_cols(X, *args, m0, m1, cols).T @ g  # (kkC, R) @ (R, C_out)
        if needs_input_grad:
            np.matmul(g, w_mat.T, out=dcols[:m1 - m0])  # (R, C_out) @ (C_out, kkC)
            scatter_cols(dcols[:m1 - m0], m0, geo.Ho, geo.Wo, geo.k, geo.s, geo.p, geo.d, dx)  # col2im
    return dw_mat, dx
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

    def _w_mat(self):
        """(C_out, C_in, k, k) -> (k*k*C_in, C_out), rows ordered (u, v, c) like cols."""
        return np.ascontiguousarray(self.weight.data.transpose(2, 3, 1, 0)).reshape(-1, self.out_channels)

    def _geometry(self, n, H, W):
        return ConvGeometry(n, H, W, self.kernel_size, self.stride, self.padding, self.dilation)

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d({self.in_channels}, {self.out_channels}): input must be "
                             f"(N, {self.in_channels}, H, W), got shape {x.shape}")
        N, _, H, W = x.shape
        Ho, Wo = self.output_size(H, W)  # raises if the kernel does not fit
        x = np.ascontiguousarray(x)
        w_mat = self._w_mat()  # (k*k*C_in, C_out)
        bias = self.bias.data if self.bias is not None else np.zeros(self.out_channels, w_mat.dtype)
        geo = self._geometry(N, H, W)
        p = self.padding
        X = to_grid(x, p, p, geo.Hp, geo.Wp).reshape(-1, self.in_channels)  # (N*Hp*Wp, C_in)
        Y = conv2d_forward(X, w_mat, geo)  # (N*Ho*Wo, C_out)
        y = np.empty((N, self.out_channels, Ho, Wo), dtype=Y.dtype)
        from_grid(Y.reshape(N, Ho, Wo, -1), 0, 0, bias, y)  # (N, C_out, Ho, Wo)
        self._X, self._geo = X, geo  # kept for backward: cols are gathered again from X
        return y

    def backward(self, grad_out):
        k, geo = self.kernel_size, self._geo
        grad_out = np.ascontiguousarray(grad_out)
        dY = to_grid(grad_out, 0, 0, geo.Ho, geo.Wo).reshape(geo.M, -1)  # (N*Ho*Wo, C_out)
        dW, dx = conv2d_backward(self._X, self._w_mat(), dY, geo, self.needs_input_grad)
        self.weight.grad += dW.reshape(k, k, self.in_channels, -1).transpose(3, 2, 0, 1)  # (C_out, C_in, k, k)
        if self.bias is not None:
            self.bias.grad += dY.sum(axis=0)  # (C_out,)
        if dx is None:
            return None  # the first layer: nobody needs the image's gradient
        grad_in = np.empty((geo.N, self.in_channels, geo.H, geo.W), dx.dtype)
        return from_grid(dx, 0, 0, np.zeros(self.in_channels, dx.dtype), grad_in)  # (N, C_in, H, W)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"bias={self.bias is not None}")
