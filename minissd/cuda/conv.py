"""GPU twin of ``nn.Conv2d``: the convolution as im2col gathers and a shared-memory tiled matmul.

The CPU twin's algorithm (``minissd.nn.conv``: im2col one chunk of output rows at a time,
from a padded channels-last input, then a matrix product), every step a kernel a learner
can read. The maths is the CPU docstring's; the layout is channels-last too:

- the input is padded and stored channels-last, ``x_pad`` (N, H+2p, W+2p, C_in): the CPU's
  grid X (N*Hp*Wp, C_in) with its rows unflattened, so that a thread finds its input by
  (n, y, x) rather than by the CPU's row offsets;
- ``cols`` (R, k*k*C_in): one row per output position r = (n*Ho + i)*Wo + j, columns
  ordered (u, v, c): ``cols[r, (u*k + v)*C_in + c] = x_pad[n, i*s + u*d, j*s + v*d, c]``;
  ``w_mat`` (k*k*C_in, C_out) is the weight with its rows in the same order;
- forward  y = cols @ w_mat (N*Ho*Wo, C_out) + bias; backward dW = cols.T @ dY,
  db = column sums of dY, dcols = dY @ w_mat.T added back onto the inputs it was read from.

The kernels:

- ``gather_cols_kernel`` (im2col): a grid-stride loop over the entries of ``cols`` in
  row-major order, i.e. along the channels of one tap, so a warp reads 32 neighbouring
  channels of ``x_pad`` and writes 32 neighbouring entries of ``cols`` (coalesced both ways).
- ``scatter_cols_kernel`` (col2im): adding each ``dcols`` entry onto its input, as the CPU's
  ``scatter_cols`` loop does, means thousands of threads adding into the same input at once: atomic adds,
  in an order (and so a float rounding) that changes from run to run. It is turned around:
  one thread per input entry *gathers* the ``dcols`` entries that read it (tap (u, v) of
  output (i, j) reads input (i*s + u*d, j*s + v*d), so input (y, x) is read by output
  i = (y - u*d) / s when that is a whole number in range). No atomics, the same sum every run.
- ``matmul_kernel``: c = op(a) @ op(b) with shared-memory tiles (see its docstring), where
  the CPU calls BLAS; the transposes of backward read the same memory with swapped indices
  instead of copying.
- Chunks of output rows bound the memory of ``cols``: SSD300's first layer at batch 32 would
  need 6.6 GB for all of it; CHUNK_BYTES keeps it at 256 MiB.

Everything here is float32, the training dtype (shared-memory tiles have a fixed type); the
float64 gradient checks are done on the CPU twin. NumPy in -> NumPy out, device in -> device
out, as everywhere in ``minissd.cuda``. ``Conv2dGPU`` runs a ``nn.Conv2d``'s forward and
backward with these kernels.
"""

import numpy as np

from minissd import nn
from minissd.cuda import blocks_for, is_device_array, launch_1d, on_device, on_host, require
from minissd.cuda.module import Parameter
from minissd.nn.conv import conv_output_size

cuda = require()

TILE = 16  # side of the square tiles of matmul_kernel: 16 x 16 = 256 threads per block
TILE_ROW = TILE + 1  # a tile row in shared memory, one longer (see matmul_kernel's loads)
CHUNK_BYTES = 256 << 20  # one chunk of cols on the GPU (the CPU's is 2 MiB, its L2 cache)


# ---- layout changes at the boundary (NCHW <-> padded channels-last) ------------------------

@cuda.jit
def to_padded_nhwc_kernel(x, p, out):
    """out (N, H+2p, W+2p, C) = x (N, C, H, W) with a border of p zeros; one thread per entry of out."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    N, Hp, Wp, C = out.shape
    for e in range(start, N * Hp * Wp * C, stride):
        n, h, w, c = e // (Hp * Wp * C), (e // (Wp * C)) % Hp, (e // C) % Wp, e % C
        h, w = h - p, w - p  # the input pixel, or outside it in the border
        if 0 <= h < x.shape[2] and 0 <= w < x.shape[3]:
            out[n, h + p, w + p, c] = x[n, c, h, w]
        else:
            out[n, h + p, w + p, c] = 0.0


@cuda.jit
def to_nchw_kernel(a, p, out):
    """out (N, C, H, W) = a (N, H+2p, W+2p, C) without its border of p; one thread per entry of out."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    N, C, H, W = out.shape
    for e in range(start, N * C * H * W, stride):
        n, c, h, w = e // (C * H * W), (e // (H * W)) % C, (e // W) % H, e % W
        out[n, c, h, w] = a[n, h + p, w + p, c]


def to_padded_nhwc(x, p):
    """(N, C, H, W) -> (N, H + 2p, W + 2p, C) with a border of p zeros."""
    host = not is_device_array(x)
    x_d = on_device(x, np.float32)
    N, C, H, W = x_d.shape
    out = cuda.device_array((N, H + 2 * p, W + 2 * p, C), dtype=np.float32)
    to_padded_nhwc_kernel[launch_1d(out.size)](x_d, p, out)
    return on_host(out, host)


def to_nchw(a, p, H, W):
    """(N, H + 2p, W + 2p, C) -> (N, C, H, W): drop a border of p."""
    host = not is_device_array(a)
    a_d = on_device(a, np.float32)
    out = cuda.device_array((a_d.shape[0], a_d.shape[3], H, W), dtype=np.float32)
    to_nchw_kernel[launch_1d(out.size)](a_d, p, out)
    return on_host(out, host)


# ---- one chunk of im2col / col2im, channels-last -------------------------------------------

@cuda.jit
def gather_cols_kernel(x_pad, r0, r1, Ho, Wo, k, s, d, cols):
    """cols[r - r0] = the window of output position r, for r in [r0, r1); twin of ``nn.conv.gather_cols``.

    The same rows and columns as the CPU's cols (taps (u, v) side by side, C_in channels
    each), read from the padded input (N, Hp, Wp, C_in) by (n, i, j, u, v) instead of the
    CPU's flat rows and offsets; one thread per entry (grid-stride).

    - x_pad: (N, Hp, Wp, C) padded input; r = (n * Ho + i) * Wo + j indexes outputs
    - cols: (>= r1 - r0, k*k*C), row layout (u, v, c): tap t = u*k + v at columns t*C ...
    """
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    C = x_pad.shape[3]
    width = k * k * C  # entries of a row of cols
    for e in range(start, (r1 - r0) * width, stride):
        row, col = e // width, e % width
        r = r0 + row
        n, ij = r // (Ho * Wo), r % (Ho * Wo)
        i, j = ij // Wo, ij % Wo
        t, c = col // C, col % C  # tap t = u*k + v, channel c
        u, v = t // k, t % k
        y, x = i * s + u * d, j * s + v * d  # the input this tap reads
        cols[row, col] = x_pad[n, y, x, c]


@cuda.jit
def scatter_cols_kernel(dcols, r0, r1, Ho, Wo, k, s, d, dx_pad):
    """The adjoint of gather_cols_kernel: dx_pad[input read by (r, tap)] += dcols[r - r0, tap].

    Twin of ``nn.conv.scatter_cols``, the scatter turned into a gather.

    One thread per entry of ``dx_pad`` adds up the ``dcols`` entries of rows [r0, r1) that
    read it (a gather: see the module docstring for why not a scatter).
    """
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    N, Hp, Wp, C = dx_pad.shape
    for e in range(start, N * Hp * Wp * C, stride):
        n, y, x, c = e // (Hp * Wp * C), (e // (Wp * C)) % Hp, (e // C) % Wp, e % C
        total = np.float32(0.0)
        for u in range(k):
            ti = y - u * d  # = i * s if tap u of output row i reads row y
            if ti < 0 or ti % s != 0 or ti // s >= Ho:
                continue
            for v in range(k):
                tj = x - v * d
                if tj < 0 or tj % s != 0 or tj // s >= Wo:
                    continue
                r = (n * Ho + ti // s) * Wo + tj // s
                if r0 <= r < r1:
                    total += dcols[r - r0, (u * k + v) * C + c]
        dx_pad[n, y, x, c] += total


# ---- the tiled matrix product --------------------------------------------------------------

@cuda.jit
def matmul_kernel(a, b, c, transpose_a, transpose_b, k_split):
    """c[z] = the z-th part of op(a) @ op(b), op(x) = x.T where asked; blocks of TILE x TILE threads.

    The ``np.matmul`` of ``nn.conv.conv2d_forward`` (and backward), another algorithm than BLAS.

    - op(a): (M, K); op(b): (K, N); c: (S, M, N) float32, written in place: block z =
      ``cuda.blockIdx.z`` multiplies only k in [z * k_split, (z + 1) * k_split) ("split-K",
      see ``matmul``); with S = 1 it is the whole product.
    Thread (ty, tx) of block (by, bx) computes c[z, by*TILE + ty, bx*TILE + tx]. The plain
    loop would be ``for kk in range(K): acc += op(a)[row, kk] * op(b)[kk, col]``, reading
    each entry of a and b from global memory TILE times per block. Here the block walks K
    one tile at a time: its threads first copy a TILE x TILE tile of op(a) and of op(b)
    into shared memory (one entry each), and then all multiply from there.
    """
    sa = cuda.shared.array((TILE, TILE_ROW), np.float32)  # a piece of op(a): sa[i, kk]
    sb = cuda.shared.array((TILE, TILE_ROW), np.float32)  # a piece of op(b): sb[kk, j]
    tx, ty, z = cuda.threadIdx.x, cuda.threadIdx.y, cuda.blockIdx.z
    by, bx = cuda.blockIdx.y * TILE, cuda.blockIdx.x * TILE
    M, N = c.shape[1], c.shape[2]
    k0 = z * k_split
    k1 = min(a.shape[0] if transpose_a else a.shape[1], k0 + k_split)
    acc = np.float32(0.0)
    for t in range(k0, k1, TILE):
        # 1. every thread copies one entry of each tile (0 past the edges). The threads of a
        #    warp differ in tx, so tx runs along the axis that is contiguous in memory: for a
        #    transposed operand, thread (ty, tx) copies the transposed entry. (The tile rows
        #    are TILE + 1 long so that those column-wise writes hit different memory banks.)
        if transpose_a:  # op(a)[i, kk] = a[kk, i]
            i, kk = by + tx, t + ty
            sa[tx, ty] = a[kk, i] if i < M and kk < k1 else 0.0
        else:
            i, kk = by + ty, t + tx
            sa[ty, tx] = a[i, kk] if i < M and kk < k1 else 0.0
        if transpose_b:  # op(b)[kk, j] = b[j, kk]
            kk, j = t + tx, bx + ty
            sb[tx, ty] = b[j, kk] if kk < k1 and j < N else 0.0
        else:
            kk, j = t + ty, bx + tx
            sb[ty, tx] = b[kk, j] if kk < k1 and j < N else 0.0
        cuda.syncthreads()  # 2. wait until both tiles are complete ...
        for kk in range(TILE):
            acc += sa[ty, kk] * sb[kk, tx]
        cuda.syncthreads()  # 3. ... and until everyone has used them, before overwriting
    if by + ty < M and bx + tx < N:
        c[z, by + ty, bx + tx] = acc


@cuda.jit
def sum_splits_kernel(parts, c):
    """c[i, j] = sum over z of parts[z, i, j], in order of z (the same sum on every run)."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    S, M, N = parts.shape
    for e in range(start, M * N, stride):
        i, j = e // N, e % N
        total = np.float32(0.0)
        for z in range(S):
            total += parts[z, i, j]
        c[i, j] = total


SPLIT_TARGET_BLOCKS = 1024  # split-K aims at about this many blocks ...
SPLIT_MIN_K = 512  # ... each walking at least this much of K


def _k_splits(M, N, K):
    """(S, k_split): into how many parts to split K, and each part's length (a multiple of TILE).

    A product with a small output and a long K, like the weight gradient (k*k*C_in x C_out,
    e.g. 288 x 32, with K = N*Ho*Wo = 131072 rows), has few output tiles: 36 blocks for a
    GPU with 132 multiprocessors, each walking 8192 tiles of K alone. Splitting K over S
    blocks per output tile, then adding the S partial products, keeps the GPU busy.
    """
    tiles = blocks_for(M, TILE) * blocks_for(N, TILE)
    S = max(1, min(-(-SPLIT_TARGET_BLOCKS // tiles), K // SPLIT_MIN_K))
    k_split = -(-K // S)  # ceil(K / S) ...
    k_split = TILE * blocks_for(k_split, TILE)  # ... rounded up to whole tiles
    return blocks_for(K, k_split), k_split


def matmul(a, b, transpose_a=False, transpose_b=False, out=None):
    """op(a) @ op(b) in float32 on the GPU; NumPy in -> NumPy out, device in -> device out.

    - out: an optional device array (M, N) to write into (a chunk's rows of a bigger result).
    """
    host = not (is_device_array(a) or is_device_array(b))
    a_d, b_d = on_device(a, np.float32), on_device(b, np.float32)
    M, K = (a_d.shape[1], a_d.shape[0]) if transpose_a else a_d.shape
    Kb, N = (b_d.shape[1], b_d.shape[0]) if transpose_b else b_d.shape
    if K != Kb:
        raise ValueError(f"matmul: inner sizes differ, op(a) is {(M, K)} and op(b) is {(Kb, N)}")
    c = cuda.device_array((M, N), dtype=np.float32) if out is None else out
    S, k_split = _k_splits(M, N, K)
    parts = c.reshape(1, M, N) if S == 1 else cuda.device_array((S, M, N), dtype=np.float32)
    blocks = (blocks_for(N, TILE), blocks_for(M, TILE), S)
    matmul_kernel[blocks, (TILE, TILE)](a_d, b_d, parts, transpose_a, transpose_b, k_split)
    if S > 1:
        sum_splits_kernel[launch_1d(M * N)](parts, c)
    return on_host(c, host)


@cuda.jit
def fill_kernel(a, value):
    """a[:] = value for a flat array."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for e in range(start, a.shape[0], stride):
        a[e] = value


def zeros(shape):
    """A float32 device array of zeros, filled on the GPU (a host array of zeros would cross
    the bus: 18 MB for the input gradient of a 32-channel 64x64 layer at batch 32)."""
    a = cuda.device_array(shape, dtype=np.float32)
    fill_kernel[launch_1d(a.size)](a.reshape(a.size), np.float32(0.0))
    return a


@cuda.jit
def add_kernel(a, b):
    """a += b (same shape, flattened views): accumulates a chunk's dW as the CPU's ``+=`` does."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for e in range(start, a.shape[0], stride):
        a[e] += b[e]


# ---- forward and backward, chunk by chunk --------------------------------------------------

def _chunk_rows(row_width, itemsize):
    """Rows per chunk so that one chunk of cols fills about CHUNK_BYTES (at least 32 rows)."""
    return max(32, CHUNK_BYTES // (row_width * itemsize))


def gather_windows(x_pad, r0, r1, Ho, Wo, k, s, d, cols):
    """Launch ``gather_cols_kernel`` on device arrays (cols written in place)."""
    gather_cols_kernel[launch_1d((r1 - r0) * cols.shape[1])](x_pad, r0, r1, Ho, Wo, k, s, d, cols)


def scatter_windows(dcols, r0, r1, Ho, Wo, k, s, d, dx_pad):
    """Launch ``scatter_cols_kernel`` on device arrays (dx_pad accumulated in place)."""
    scatter_cols_kernel[launch_1d(dx_pad.size)](dcols, r0, r1, Ho, Wo, k, s, d, dx_pad)


def im2col_matmul(x_pad, w_mat, out_hw, k, s, d):
    """Y = im2col(x_pad) @ w_mat, chunk by chunk.

    - x_pad: (N, Hp, Wp, C_in) padded channels-last input
    - w_mat: (k*k*C_in, C_out), rows ordered (u, v, c)
    - returns y: (N*Ho*Wo, C_out), rows ordered (n, i, j)
    """
    host = not (is_device_array(x_pad) or is_device_array(w_mat))
    x_pad, w_mat = on_device(x_pad, np.float32), on_device(w_mat, np.float32)
    N, Ho, Wo = x_pad.shape[0], out_hw[0], out_hw[1]
    rows = N * Ho * Wo
    R = _chunk_rows(w_mat.shape[0], 4)
    cols = cuda.device_array((min(R, rows), w_mat.shape[0]), dtype=np.float32)  # one chunk of im2col
    y = cuda.device_array((rows, w_mat.shape[1]), dtype=np.float32)
    for r0 in range(0, rows, R):
        r1 = min(r0 + R, rows)
        gather_windows(x_pad, r0, r1, Ho, Wo, k, s, d, cols)
        matmul(cols[:r1 - r0], w_mat, out=y[r0:r1])  # (R, kkC) @ (kkC, C_out)
    return on_host(y, host)


def im2col_matmul_backward(x_pad, w_mat, grad_y, out_hw, k, s, d, needs_input_grad=True):
    """Gradients of a convolution, chunk by chunk, from what forward kept (x_pad).

    - x_pad: (N, Hp, Wp, C_in) the padded channels-last input of forward
    - w_mat: (k*k*C_in, C_out); grad_y: (N*Ho*Wo, C_out), rows ordered (n, i, j)
    - returns (grad_w_mat (k*k*C_in, C_out), grad_x_pad (N, Hp, Wp, C_in) or None)
    """
    host = not (is_device_array(x_pad) or is_device_array(grad_y))
    x_pad, w_mat, grad_y = (on_device(a, np.float32) for a in (x_pad, w_mat, grad_y))
    N, Ho, Wo = x_pad.shape[0], out_hw[0], out_hw[1]
    rows = N * Ho * Wo
    R = _chunk_rows(w_mat.shape[0], 4)
    cols = cuda.device_array((min(R, rows), w_mat.shape[0]), dtype=np.float32)
    dcols = cuda.device_array_like(cols)
    grad_w = zeros(w_mat.shape)
    grad_w_chunk = cuda.device_array_like(grad_w)
    grad_x_pad = zeros(x_pad.shape) if needs_input_grad else None
    for r0 in range(0, rows, R):
        r1 = min(r0 + R, rows)
        gather_windows(x_pad, r0, r1, Ho, Wo, k, s, d, cols)
        matmul(cols[:r1 - r0], grad_y[r0:r1], transpose_a=True, out=grad_w_chunk)  # (kkC, R) @ (R, C_out)
        add_kernel[launch_1d(grad_w.size)](grad_w.reshape(-1), grad_w_chunk.reshape(-1))
        if needs_input_grad:
            matmul(grad_y[r0:r1], w_mat, transpose_b=True, out=dcols[:r1 - r0])  # (R, C_out) @ (C_out, kkC)
            scatter_windows(dcols, r0, r1, Ho, Wo, k, s, d, grad_x_pad)
    return on_host(grad_w, host), (None if grad_x_pad is None else on_host(grad_x_pad, host))


# ---- the layer's remaining steps: weight layout, bias ----------------------------------------

@cuda.jit
def _w_mat_kernel(weight, w_mat):
    """w_mat[(u*k + v)*C_in + c, o] = weight[o, c, u, v]: (C_out, C_in, k, k) -> (k*k*C_in, C_out).

    Twin of ``Conv2d._w_mat`` (its transpose and reshape, one thread per entry)."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    O, C, k = weight.shape[0], weight.shape[1], weight.shape[2]
    for e in range(start, O * C * k * k, stride):
        o, c, u, v = e // (C * k * k), (e // (k * k)) % C, (e // k) % k, e % k
        w_mat[(u * k + v) * C + c, o] = weight[o, c, u, v]


@cuda.jit
def w_grad_kernel(grad_w_mat, weight_grad):
    """weight_grad[o, c, u, v] += grad_w_mat[(u*k + v)*C_in + c, o] (the inverse layout change)."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    O, C, k = weight_grad.shape[0], weight_grad.shape[1], weight_grad.shape[2]
    for e in range(start, O * C * k * k, stride):
        o, c, u, v = e // (C * k * k), (e // (k * k)) % C, (e // k) % k, e % k
        weight_grad[o, c, u, v] += grad_w_mat[(u * k + v) * C + c, o]


@cuda.jit
def add_bias_kernel(y, bias):
    """y[r, o] += bias[o] for y (N*Ho*Wo, C_out); grid-stride over the entries, row-major."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    R, O = y.shape
    for e in range(start, R * O, stride):
        y[e // O, e % O] += bias[e % O]


class Conv2dGPU(nn.Module):
    """``nn.Conv2d``'s forward and backward on the GPU (an ``nn.Module`` like its twin).

    - conv: an ``nn.Conv2d``; its sizes and ``needs_input_grad`` are read here
    - parameter: makes the GPU ``Parameter`` of each CPU one; default: a fresh device copy
      (``minissd.cuda.to_device`` passes views of the model's flat buffers)
    - ``.weight``, ``.bias`` (or None): GPU Parameters, ``.data`` and ``.grad`` device arrays
    - forward(x (N, C_in, H, W) device) -> (N, C_out, Ho, Wo) device, float32;
      backward(grad_out) -> grad of x (or None), ADDING into the parameters' ``.grad``
    The public behaviour is ``nn.Conv2d``'s (tests pin it to it and to tests/naive.py).
    """

    def __init__(self, conv, parameter=Parameter.copy_of):
        self.k, self.s, self.p, self.d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
        self.needs_input_grad = conv.needs_input_grad
        self.weight = parameter(conv.weight)
        self.bias = parameter(conv.bias) if conv.bias is not None else None
        O, C, k = self.weight.data.shape[0], self.weight.data.shape[1], self.k
        self._w_mat = cuda.device_array((k * k * C, O), dtype=np.float32)  # (k*k*C_in, C_out)

    def forward(self, x):
        # w_mat is laid out again at every forward: an optimizer may have changed the weight
        weight = self.weight.data
        _w_mat_kernel[launch_1d(weight.size)](weight, self._w_mat)
        x = on_device(x, np.float32)
        N, _, H, W = x.shape
        Ho, Wo = (conv_output_size(n, self.k, self.s, self.p, self.d) for n in (H, W))
        x_pad = to_padded_nhwc(x, self.p)  # (N, H+2p, W+2p, C_in)
        y = im2col_matmul(x_pad, self._w_mat, (Ho, Wo), self.k, self.s, self.d)  # (N*Ho*Wo, C_out)
        if self.bias is not None:
            add_bias_kernel[launch_1d(y.size)](y, self.bias.data)
        self._x_pad, self._in_hw = x_pad, (H, W)  # kept for backward
        return to_nchw(y.reshape(N, Ho, Wo, y.shape[1]), 0, Ho, Wo)  # (N, C_out, Ho, Wo)

    def backward(self, grad_out):
        grad_out = on_device(grad_out, np.float32)
        N, C_out, Ho, Wo = grad_out.shape
        grad_y = to_padded_nhwc(grad_out, 0).reshape(N * Ho * Wo, C_out)  # (N*Ho*Wo, C_out)
        grad_w, grad_x_pad = im2col_matmul_backward(self._x_pad, self._w_mat, grad_y, (Ho, Wo), self.k,
                                             self.s, self.d, self.needs_input_grad)
        w_grad_kernel[launch_1d(grad_w.size)](grad_w, self.weight.grad)
        if self.bias is not None:  # db = the column sums of dY = a row of ones @ dY (split-K spreads it)
            ones = cuda.device_array((1, grad_y.shape[0]), dtype=np.float32)
            fill_kernel[launch_1d(ones.size)](ones.reshape(ones.size), np.float32(1.0))
            db = matmul(ones, grad_y)  # (1, C_out)
            add_kernel[launch_1d(C_out)](self.bias.grad, db.reshape(C_out))
        if grad_x_pad is None:
            return None
        H, W = self._in_hw
        return to_nchw(grad_x_pad, self.p, H, W)  # (N, C_in, H, W)
