"""GPU twin of the convolution's heavy part (``minissd.nn.conv``): im2col, col2im, tiled matmul.

Same layout as the CPU ``Conv2d`` (im2col + one matrix product):

- ``cols`` is (N*Ho*Wo, C_in*k*k): one row per output position (n, i, j), one column per
  weight tap (c, u, v), i.e. ``cols[(n*Ho + i)*Wo + j, (c*k + u)*k + v]`` =
  ``x[n, c, i*s + u*d - p, j*s + v*d - p]`` (0 outside the input);
- forward   y = cols @ W.T + b          (N*Ho*Wo, C_out), then to NCHW;
- backward  dW = g.T @ cols, db = column sums of g, dcols = g @ W, dx = col2im(dcols),
  with g = grad_out as (N*Ho*Wo, C_out) rows.

The kernels:

- ``im2col_kernel``  one thread per entry of ``cols`` (twin of ``nn.conv.im2col``, which
                     builds the same matrix with a strided NumPy view);
- ``col2im_kernel``  one thread per input pixel, which *gathers* the window entries that
                     read it. The CPU twin scatters (adds each kernel tap's slice back); on the
                     GPU a scatter would need atomic adds, in an order that changes per run;
                     the gather needs none and gives the same sum every time;
- ``matmul_kernel``  c = op(a) @ op(b), op = transpose or not, with shared-memory tiles: each
                     block computes a TILE x TILE piece of c; it walks along k one tile at a
                     time, its threads first copying a tile of op(a) and of op(b) from global
                     memory to shared memory (each entry read once per block instead of TILE
                     times), then multiplying them from there. The transposes of backward read
                     the same memory with swapped indices instead of copying.

Everything here is float32, the training dtype (shared-memory tiles have a fixed type);
the gradient checks in float64 are done on the CPU twin.
"""

import numpy as np

from minissd.cuda import THREADS_1D, blocks_for, is_device_array, require, to_device, to_host
from minissd.nn.conv import conv_output_size

cuda = require()

TILE = 16  # side of the square tiles of matmul_kernel: 16 x 16 = 256 threads per block
TILE_2D = (32, 8)  # threads per block of the element-wise 2-D kernels; x runs along columns


def _grid_2d(rows, cols, threads=TILE_2D):
    return (blocks_for(cols, threads[0]), blocks_for(rows, threads[1])), threads


# ---- im2col / col2im -----------------------------------------------------------------------

@cuda.jit
def im2col_kernel(x, k, s, p, d, Ho, Wo, cols):
    """One thread per entry: ``cols[r, q]`` = the input pixel that tap q of window r reads.

    - x: (N, C, H, W); cols: (N*Ho*Wo, C*k*k), written in place (0 where the tap is padding).
    - r = (n*Ho + i)*Wo + j is the output position, q = (c*k + u)*k + v the weight tap.
    """
    q, r = cuda.grid(2)
    if r < cols.shape[0] and q < cols.shape[1]:
        n, ij = r // (Ho * Wo), r % (Ho * Wo)
        i, j = ij // Wo, ij % Wo
        c, uv = q // (k * k), q % (k * k)
        u, v = uv // k, uv % k
        h = i * s + u * d - p  # the input row and column this tap reads
        w = j * s + v * d - p
        if 0 <= h < x.shape[2] and 0 <= w < x.shape[3]:
            cols[r, q] = x[n, c, h, w]
        else:
            cols[r, q] = 0.0


@cuda.jit
def col2im_kernel(cols, k, s, p, d, Ho, Wo, dx):
    """One thread per input pixel: ``dx[n, c, h, w]`` = sum of the ``cols`` entries that read it.

    - cols: (N*Ho*Wo, C*k*k), e.g. dcols = g @ W; dx: (N, C, H, W), written in place.
    Tap (u, v) of output (i, j) reads pixel (i*s + u*d - p, j*s + v*d - p), so pixel (h, w)
    is read by tap (u, v) of output i = (h + p - u*d) / s when that is a whole number in
    [0, Ho), and likewise j.
    """
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    N, C, H, W = dx.shape
    for e in range(start, N * C * H * W, stride):
        n, c, hw = e // (C * H * W), (e // (H * W)) % C, e % (H * W)
        h, w = hw // W, hw % W
        total = np.float32(0.0)
        for u in range(k):
            ti = h + p - u * d  # = i * s if tap u of some output row i reads row h
            if ti < 0 or ti % s != 0 or ti // s >= Ho:
                continue
            i = ti // s
            for v in range(k):
                tj = w + p - v * d
                if tj < 0 or tj % s != 0 or tj // s >= Wo:
                    continue
                j = tj // s
                total += cols[(n * Ho + i) * Wo + j, (c * k + u) * k + v]
        dx[n, c, h, w] = total


def im2col(x, k, s, p, d):
    """(N, C, H, W) -> (cols (N*Ho*Wo, C*k*k) float32, (Ho, Wo)); twin of ``nn.conv.im2col``."""
    host = not is_device_array(x)
    x_d = to_device(x, np.float32)
    N, C, H, W = x_d.shape
    Ho, Wo = conv_output_size(H, k, s, p, d), conv_output_size(W, k, s, p, d)
    cols = cuda.device_array((N * Ho * Wo, C * k * k), dtype=np.float32)
    blocks, threads = _grid_2d(*cols.shape)
    im2col_kernel[blocks, threads](x_d, k, s, p, d, Ho, Wo, cols)
    return to_host(cols, host), (Ho, Wo)


def col2im(cols, x_shape, k, s, p, d, Ho, Wo):
    """Adjoint of ``im2col``: (N*Ho*Wo, C*k*k) -> (N, C, H, W); twin of ``nn.conv.col2im``."""
    host = not is_device_array(cols)
    dx = cuda.device_array(tuple(x_shape), dtype=np.float32)
    col2im_kernel[blocks_for(dx.size), THREADS_1D](to_device(cols, np.float32), k, s, p, d, Ho, Wo, dx)
    return to_host(dx, host)


# ---- the tiled matrix product --------------------------------------------------------------

@cuda.jit
def matmul_kernel(a, b, c, transpose_a, transpose_b):
    """c = op(a) @ op(b) with op(x) = x.T where asked; blocks of TILE x TILE threads.

    - op(a): (M, K); op(b): (K, N); c: (M, N) float32, written in place.
    Thread (ty, tx) of block (by, bx) computes c[by*TILE + ty, bx*TILE + tx]. The plain
    loop would be ``for kk in range(K): acc += op(a)[row, kk] * op(b)[kk, col]``; here the
    block walks K one tile at a time and reads both tiles from shared memory.
    """
    sa = cuda.shared.array((TILE, TILE), np.float32)  # a TILE x TILE piece of op(a)
    sb = cuda.shared.array((TILE, TILE), np.float32)  # ... and of op(b)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    row = cuda.blockIdx.y * TILE + ty
    col = cuda.blockIdx.x * TILE + tx
    M, N = c.shape
    K = a.shape[0] if transpose_a else a.shape[1]
    acc = np.float32(0.0)
    for t in range(0, K, TILE):
        # 1. every thread copies one entry of each tile (0 past the edges of the matrices)
        ka, kb = t + tx, t + ty
        if row < M and ka < K:
            sa[ty, tx] = a[ka, row] if transpose_a else a[row, ka]
        else:
            sa[ty, tx] = 0.0
        if kb < K and col < N:
            sb[ty, tx] = b[col, kb] if transpose_b else b[kb, col]
        else:
            sb[ty, tx] = 0.0
        cuda.syncthreads()  # 2. wait until both tiles are complete ...
        for kk in range(TILE):
            acc += sa[ty, kk] * sb[kk, tx]
        cuda.syncthreads()  # 3. ... and until everyone has used them before overwriting
    if row < M and col < N:
        c[row, col] = acc


def matmul(a, b, transpose_a=False, transpose_b=False):
    """op(a) @ op(b) in float32 on the GPU; NumPy in -> NumPy out, device in -> device out."""
    host = not (is_device_array(a) or is_device_array(b))
    a_d, b_d = to_device(a, np.float32), to_device(b, np.float32)
    M, K = (a_d.shape[1], a_d.shape[0]) if transpose_a else a_d.shape
    Kb, N = (b_d.shape[1], b_d.shape[0]) if transpose_b else b_d.shape
    if K != Kb:
        raise ValueError(f"matmul: inner sizes differ, op(a) is {(M, K)} and op(b) is {(Kb, N)}")
    c = cuda.device_array((M, N), dtype=np.float32)
    blocks = (blocks_for(N, TILE), blocks_for(M, TILE))
    matmul_kernel[blocks, (TILE, TILE)](a_d, b_d, c, transpose_a, transpose_b)
    return to_host(c, host)


# ---- the rest of a convolution: NCHW <-> rows, bias ------------------------------------------

@cuda.jit
def rows_to_nchw_kernel(rows, bias, Ho, Wo, y):
    """``y[n, o, i, j]`` = ``rows[(n*Ho + i)*Wo + j, o]`` + ``bias[o]`` (the forward's last step)."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    N, O = y.shape[0], y.shape[1]
    for e in range(start, N * O * Ho * Wo, stride):
        n, o, ij = e // (O * Ho * Wo), (e // (Ho * Wo)) % O, e % (Ho * Wo)
        y[n, o, ij // Wo, ij % Wo] = rows[n * Ho * Wo + ij, o] + bias[o]


@cuda.jit
def nchw_to_rows_kernel(g_nchw, rows):
    """``rows[(n*Ho + i)*Wo + j, o]`` = ``g_nchw[n, o, i, j]`` (the backward's first step)."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    N, O, Ho, Wo = g_nchw.shape
    for e in range(start, N * O * Ho * Wo, stride):
        n, o, ij = e // (O * Ho * Wo), (e // (Ho * Wo)) % O, e % (Ho * Wo)
        rows[n * Ho * Wo + ij, o] = g_nchw[n, o, ij // Wo, ij % Wo]


@cuda.jit
def column_sums_kernel(rows, out):
    """``out[o]`` = sum over r of ``rows[r, o]``: one thread per column (the bias gradient).

    Neighbouring threads read neighbouring entries of each row (coalesced); C_out threads
    are few, but each only streams down its column once.
    """
    o = cuda.grid(1)
    if o < rows.shape[1]:
        total = np.float32(0.0)
        for r in range(rows.shape[0]):
            total += rows[r, o]
        out[o] = total


def conv2d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """Forward of ``nn.Conv2d`` on the GPU: returns (y, cols), cols kept for the backward.

    - x: (N, C_in, H, W); weight: (C_out, C_in, k, k); bias: (C_out,) or None; float32.
    - returns: y (N, C_out, Ho, Wo), cols (N*Ho*Wo, C_in*k*k) (device arrays, or NumPy for
      NumPy inputs).
    """
    host = not (is_device_array(x) or is_device_array(weight))
    C_out, k = weight.shape[0], weight.shape[2]
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"conv2d_forward: x has {x.shape[1]} channels, weight expects {weight.shape[1]}")
    cols, (Ho, Wo) = im2col(to_device(x, np.float32), k, stride, padding, dilation)  # (N*Ho*Wo, C_in*k*k)
    w = to_device(weight, np.float32).reshape(C_out, -1)  # (C_out, C_in*k*k)
    rows = matmul(cols, w, transpose_b=True)  # (N*Ho*Wo, C_out)
    b = to_device(np.zeros(C_out, np.float32) if bias is None else bias, np.float32)
    y = cuda.device_array((x.shape[0], C_out, Ho, Wo), dtype=np.float32)
    rows_to_nchw_kernel[blocks_for(y.size), THREADS_1D](rows, b, Ho, Wo, y)
    return to_host(y, host), to_host(cols, host)


def conv2d_backward(grad_out, cols, x_shape, weight, stride=1, padding=0, dilation=1,
                    needs_input_grad=True):
    """Backward of ``nn.Conv2d`` on the GPU: returns (dx or None, dweight, dbias).

    - grad_out: (N, C_out, Ho, Wo); cols: (N*Ho*Wo, C_in*k*k) from ``conv2d_forward``;
      x_shape: (N, C_in, H, W); weight: (C_out, C_in, k, k); float32.
    - returns: dx (N, C_in, H, W) (None unless needs_input_grad), dweight like weight,
      dbias (C_out,); the caller adds them into its ``.grad`` as ``nn.Conv2d`` does.
    """
    host = not (is_device_array(grad_out) or is_device_array(cols))
    N, C_out, Ho, Wo = grad_out.shape
    k = weight.shape[2]
    g = cuda.device_array((N * Ho * Wo, C_out), dtype=np.float32)
    nchw_to_rows_kernel[blocks_for(g.size), THREADS_1D](to_device(grad_out, np.float32), g)  # (N*Ho*Wo, C_out)
    cols_d = to_device(cols, np.float32)
    dw = matmul(g, cols_d, transpose_a=True).reshape(weight.shape)  # (C_out, C_in*k*k) -> (C_out, C_in, k, k)
    db = cuda.device_array(C_out, dtype=np.float32)
    column_sums_kernel[blocks_for(C_out), THREADS_1D](g, db)
    dx = None
    if needs_input_grad:
        dcols = matmul(g, to_device(weight, np.float32).reshape(C_out, -1))  # (N*Ho*Wo, C_in*k*k)
        dx = col2im(dcols, x_shape, k, stride, padding, dilation, Ho, Wo)  # (N, C_in, H, W)
        dx = to_host(dx, host)
    return dx, to_host(dw, host), to_host(db, host)
