"""Wrong backward passes of chapter 5's layers, as students write them.

Each is a drop-in for the function (or method) that holds a marked region in minissd/nn,
with its parameters, wrong in one way: a copy of the loop a student writes with one slip.
The compiled ones are compiled as the reference is (a student keeps the ``@njit``).
"""

import numpy as np
from numba import njit

from minissd.nn import conv

# ---- conv: nn.conv.scatter_cols (col2im) ----------------------------------------------------


@njit
def scatter_cols_from_the_first_output(dcols, m0, Ho, Wo, k, s, p, d, dx):
    """Row r taken for output r, not m0 + r: right while the layer fits in one chunk."""
    N, H, W, C_in = dx.shape
    for r in range(dcols.shape[0]):
        n, ij = r // (Ho * Wo), r % (Ho * Wo)
        i, j = ij // Wo, ij % Wo
        for u in range(k):
            y = i * s - p + u * d
            if y < 0 or y >= H:
                continue
            for v in range(k):
                x = j * s - p + v * d
                if x < 0 or x >= W:
                    continue
                for c in range(C_in):
                    dx[n, y, x, c] += dcols[r, (u * k + v) * C_in + c]


@njit
def scatter_cols_without_padding(dcols, m0, Ho, Wo, k, s, p, d, dx):
    """Positions in the padded input used as positions in dx: everything shifted by p."""
    N, H, W, C_in = dx.shape
    for r in range(dcols.shape[0]):
        n, ij = (m0 + r) // (Ho * Wo), (m0 + r) % (Ho * Wo)
        i, j = ij // Wo, ij % Wo
        for u in range(k):
            y = i * s + u * d
            if y >= H:
                continue
            for v in range(k):
                x = j * s + v * d
                if x >= W:
                    continue
                for c in range(C_in):
                    dx[n, y, x, c] += dcols[r, (u * k + v) * C_in + c]


@njit
def scatter_cols_ignoring_stride(dcols, m0, Ho, Wo, k, s, p, d, dx):
    """Window (i, j) starts at (i - p, j - p): the stride is forgotten."""
    N, H, W, C_in = dx.shape
    for r in range(dcols.shape[0]):
        n, ij = (m0 + r) // (Ho * Wo), (m0 + r) % (Ho * Wo)
        i, j = ij // Wo, ij % Wo
        for u in range(k):
            y = i - p + u * d
            if y < 0 or y >= H:
                continue
            for v in range(k):
                x = j - p + v * d
                if x < 0 or x >= W:
                    continue
                for c in range(C_in):
                    dx[n, y, x, c] += dcols[r, (u * k + v) * C_in + c]


@njit
def scatter_cols_ignoring_dilation(dcols, m0, Ho, Wo, k, s, p, d, dx):
    """Taps one pixel apart whatever the dilation."""
    N, H, W, C_in = dx.shape
    for r in range(dcols.shape[0]):
        n, ij = (m0 + r) // (Ho * Wo), (m0 + r) % (Ho * Wo)
        i, j = ij // Wo, ij % Wo
        for u in range(k):
            y = i * s - p + u
            if y < 0 or y >= H:
                continue
            for v in range(k):
                x = j * s - p + v
                if x < 0 or x >= W:
                    continue
                for c in range(C_in):
                    dx[n, y, x, c] += dcols[r, (u * k + v) * C_in + c]


@njit
def scatter_cols_overwriting(dcols, m0, Ho, Wo, k, s, p, d, dx):
    """``=`` for ``+=``: an input read by several windows keeps only the last one's gradient."""
    N, H, W, C_in = dx.shape
    for r in range(dcols.shape[0]):
        n, ij = (m0 + r) // (Ho * Wo), (m0 + r) % (Ho * Wo)
        i, j = ij // Wo, ij % Wo
        for u in range(k):
            y = i * s - p + u * d
            if y < 0 or y >= H:
                continue
            for v in range(k):
                x = j * s - p + v * d
                if x < 0 or x >= W:
                    continue
                for c in range(C_in):
                    dx[n, y, x, c] = dcols[r, (u * k + v) * C_in + c]


@njit
def scatter_cols_taps_column_first(dcols, m0, Ho, Wo, k, s, p, d, dx):
    """Tap (u, v) read from column block v*k + u: the kernel transposed."""
    N, H, W, C_in = dx.shape
    for r in range(dcols.shape[0]):
        n, ij = (m0 + r) // (Ho * Wo), (m0 + r) % (Ho * Wo)
        i, j = ij // Wo, ij % Wo
        for u in range(k):
            y = i * s - p + u * d
            if y < 0 or y >= H:
                continue
            for v in range(k):
                x = j * s - p + v * d
                if x < 0 or x >= W:
                    continue
                for c in range(C_in):
                    dx[n, y, x, c] += dcols[r, (v * k + u) * C_in + c]


# ---- conv: nn.conv.conv2d_backward (the chunk loop) -----------------------------------------


def conv_backward_keeping_the_last_chunks_dw(X, w_mat, dY, geo, needs_input_grad=True):
    """dW of each chunk assigned, not added: the weight gradient of the last chunk only."""
    dx = np.zeros((geo.N, geo.H, geo.W, X.shape[1]), X.dtype) if needs_input_grad else None
    R = conv._chunk_rows(w_mat.shape[0], X.itemsize)
    args = geo.kernel_args()
    cols = np.empty((R, w_mat.shape[0]), dtype=X.dtype)
    for m0 in range(0, geo.M, R):
        m1 = min(m0 + R, geo.M)
        g = dY[m0:m1]
        dw_mat = conv.gather_cols(X, *args, m0, m1, cols).T @ g
        if needs_input_grad:
            conv.scatter_cols(g @ w_mat.T, m0, geo.Ho, geo.Wo, geo.k, geo.s, geo.p, geo.d, dx)
    return dw_mat, dx


def conv_backward_in_float64(X, w_mat, dY, geo, needs_input_grad=True):
    """The gradients allocated with NumPy's default dtype: float64 in a float32 network."""
    dw_mat = np.zeros(w_mat.shape)
    dx = np.zeros((geo.N, geo.H, geo.W, X.shape[1])) if needs_input_grad else None
    R = conv._chunk_rows(w_mat.shape[0], X.itemsize)
    args = geo.kernel_args()
    cols = np.empty((R, w_mat.shape[0]), dtype=X.dtype)
    for m0 in range(0, geo.M, R):
        m1 = min(m0 + R, geo.M)
        g = dY[m0:m1]
        dw_mat += conv.gather_cols(X, *args, m0, m1, cols).T @ g
        if needs_input_grad:
            conv.scatter_cols(g @ w_mat.T, m0, geo.Ho, geo.Wo, geo.k, geo.s, geo.p, geo.d, dx)
    return dw_mat, dx
