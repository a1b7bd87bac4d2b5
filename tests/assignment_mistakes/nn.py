"""Wrong convolution backward passes (replacements for minissd.nn.conv.conv2d_backward).

The reference walks the k*k taps of the kernel: tap t = (u, v) reads the input rows
``s*m + off_t`` for output row m, with ``off_t = (u*Wg + v)*d`` (see minissd/nn/conv.py).
Each wrong answer below is that loop (in one chunk) with one of the two factors forgotten.
"""

import math

import numpy as np


def _taps_backward(X, W_taps, dY, geo, needs_input_grad, rows_of_tap):
    """The reference's loop over taps, reading tap t's input rows from ``rows_of_tap(t, m)``."""
    m = geo.rows_used
    g = dY[:m]  # (m, C_out)
    dW = np.zeros_like(W_taps)
    dX = np.zeros_like(X) if needs_input_grad else None
    for t in range(len(W_taps)):
        rows = rows_of_tap(t, m)
        dW[t] += X[rows].T @ g
        if needs_input_grad:
            dX[rows] += g @ W_taps[t].T
    return dW, dX


def conv_backward_ignoring_stride(X, W_taps, dY, geo, needs_input_grad=True):
    """Reads rows ``m + off_t``: the stride is forgotten."""
    return _taps_backward(X, W_taps, dY, geo, needs_input_grad,
                          lambda t, m: slice(geo.offsets[t], geo.offsets[t] + m))


def conv_backward_ignoring_dilation(X, W_taps, dY, geo, needs_input_grad=True):
    """Uses the offsets ``u*Wg + v`` of an undilated kernel."""
    k = math.isqrt(len(W_taps))
    offsets = [u * geo.Wg + v for u in range(k) for v in range(k)]  # the mistake: no * d
    return _taps_backward(X, W_taps, dY, geo, needs_input_grad,
                          lambda t, m: slice(offsets[t], offsets[t] + geo.s * m, geo.s))
