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


# ---- ReLU.backward ----------------------------------------------------------------------------


def relu_backward_of_the_gradient(self, grad_out):
    """ReLU applied to the gradient instead of the input's mask."""
    return np.maximum(grad_out, 0)


def relu_backward_without_the_chain_rule(self, grad_out):
    """The local derivative [x > 0] alone, grad_out never multiplied in."""
    return self._mask * 1.0


def relu_backward_in_float64(self, grad_out):
    """The mask turned into Python floats: float64 gradients in a float32 network."""
    return grad_out * self._mask.astype(float)


def relu_backward_in_place(self, grad_out):
    """Zeroes the caller's grad_out where x <= 0 and hands it back."""
    grad_out[~self._mask] = 0
    return grad_out


# ---- nn.pool.maxpool_backward -----------------------------------------------------------------


@njit
def maxpool_backward_overwriting_shared_winners(grad_out, argmax, H, W):
    """``=`` for ``+=``: an input that wins two overlapping windows keeps one gradient."""
    N, C, Ho, Wo = grad_out.shape
    grad_in = np.zeros((N, C, H * W), dtype=grad_out.dtype)
    for n in range(N):
        for c in range(C):
            for oy in range(Ho):
                for ox in range(Wo):
                    grad_in[n, c, argmax[n, c, oy, ox]] = grad_out[n, c, oy, ox]
    return grad_in.reshape(N, C, H, W)


@njit
def maxpool_backward_in_float64(grad_out, argmax, H, W):
    """np.zeros without a dtype: float64 gradients in a float32 network."""
    N, C, Ho, Wo = grad_out.shape
    grad_in = np.zeros((N, C, H * W))
    for n in range(N):
        for c in range(C):
            for oy in range(Ho):
                for ox in range(Wo):
                    grad_in[n, c, argmax[n, c, oy, ox]] += grad_out[n, c, oy, ox]
    return grad_in.reshape(N, C, H, W)


# ---- L2Norm.backward --------------------------------------------------------------------------


def l2norm_backward_without_the_projection(self, grad_out):
    """Treats the norm as a constant: dx = weight * grad / norm."""
    self.weight.grad += (grad_out * self._x_hat).sum(axis=(0, 2, 3))
    return grad_out * self.weight.data[:, None, None] / self._norm


def l2norm_backward_of_x_over_norm(self, grad_out):
    """The derivative of x / ||x|| (eps dropped from the chain rule), then divided by r + eps."""
    x_hat = self._x_hat
    self.weight.grad += (grad_out * x_hat).sum(axis=(0, 2, 3))
    g = grad_out * self.weight.data[:, None, None]
    return (g - x_hat * (g * x_hat).sum(axis=1, keepdims=True)) / self._norm


def l2norm_backward_nan_at_a_zero_vector(self, grad_out):
    """Divides by r itself: 0 / 0 where the vector is all zeros."""
    x, r, norm = self._x, self._r, self._norm
    self.weight.grad += (grad_out * self._x_hat).sum(axis=(0, 2, 3))
    g = grad_out * self.weight.data[:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return g / norm - x * (g * x).sum(axis=1, keepdims=True) / (r * norm ** 2)


def l2norm_backward_rebinding_the_grad(self, grad_out):
    """``weight.grad = ...``: a second backward replaces the first one's gradient."""
    x, r, norm = self._x, self._r, self._norm
    self.weight.grad = (grad_out * self._x_hat).sum(axis=(0, 2, 3))
    g = grad_out * self.weight.data[:, None, None]
    dot = (g * x).sum(axis=1, keepdims=True)
    return (g - x * dot / (np.where(r > 0, r, 1.0) * norm)) / norm


def l2norm_backward_summing_in_float64(self, grad_out):
    """The channel sum taken in float64 for accuracy, and the gradient left in float64."""
    x, r, norm = self._x, self._r, self._norm
    self.weight.grad += (grad_out * self._x_hat).sum(axis=(0, 2, 3))
    g = grad_out * self.weight.data[:, None, None]
    dot = (g * x).sum(axis=1, keepdims=True, dtype=np.float64)
    return (g - x * dot / (np.where(r > 0, r, 1.0) * norm)) / norm


def l2norm_backward_dweight_from_x(self, grad_out):
    """dweight sums grad * x, the input before normalising, instead of grad * x_hat."""
    x, r, norm = self._x, self._r, self._norm
    self.weight.grad += (grad_out * x).sum(axis=(0, 2, 3))
    g = grad_out * self.weight.data[:, None, None]
    dot = (g * x).sum(axis=1, keepdims=True)
    return (g - x * dot / (np.where(r > 0, r, 1.0) * norm)) / norm
