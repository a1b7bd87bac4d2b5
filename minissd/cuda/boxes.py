"""GPU twins of ``minissd.boxes``: the IoU matrix, encode and decode as numba.cuda kernels.

Conventions are those of ``minissd.boxes`` (corner form for boxes, centre form for priors,
variances (0.1, 0.2)). Each kernel is its CPU twin with the loops handed to the threads:

- ``_iou_matrix_kernel`` <- ``boxes._iou_matrix``: the two loops over (i, j) become a 2-D
  grid; the IoU of a pair is the scalar ``nms._box_iou`` compiled for the GPU (the CPU loop
  writes the same formula inline: it is a graded region, which no compiled code may call);
- ``_encode_rows_kernel`` <- ``boxes._encode_rows``, ``_decode_rows_kernel`` <-
  ``boxes._decode_rows``: the CPU row loops themselves, compiled for the GPU, each thread
  running them on its rows of the grid-stride loop one row at a time.

The host wrappers ``iou``, ``encode`` and ``decode`` have the CPU functions' names and
signatures. NumPy arrays in -> NumPy arrays out (they are checked as the CPU functions check
them, copied to the GPU and back); device arrays in -> device arrays out, unchecked and
without a copy, which is how a training step stays on the GPU.
"""

import numpy as np

from minissd import boxes as cpu
from minissd.boxes import VARIANCES
from minissd.nms import _box_iou
from minissd.cuda import blocks_for, is_device_array, launch_1d, require, on_device, on_host

cuda = require()

_box_iou_gpu = cuda.jit(device=True)(_box_iou)  # NMS's scalar IoU on the CPU, compiled for the GPU

TILE_2D = (32, 8)  # threads per block of the 2-D kernels: x (32, one warp) runs along columns


# ---- intersection over union ---------------------------------------------------------------

@cuda.jit
def _iou_matrix_kernel(a, bt, out):
    """One thread per pair: ``out[i, j]`` = IoU of box ``a[i]`` and box ``j`` of ``bt``; twin of ``_iou_matrix``.

    - a: (N, 4) corner form; bt: (4, M) corner form stored transposed, as in the CPU twin;
    - out: (N, M), written in place.
    The grid's x index runs along j: the 32 threads of a warp then read 32 neighbouring
    entries of each row of ``bt`` and write 32 neighbouring ``out[i, j]`` (coalesced).
    """
    j, i = cuda.grid(2)
    if i < a.shape[0] and j < bt.shape[1]:
        out[i, j] = _box_iou_gpu(a[i, 0], a[i, 1], a[i, 2], a[i, 3], bt[0, j], bt[1, j], bt[2, j], bt[3, j])


def _grid_2d(rows, cols):
    """Blocks of TILE_2D threads covering a (rows, cols) array; x runs along columns."""
    return (blocks_for(cols, TILE_2D[0]), blocks_for(rows, TILE_2D[1])), TILE_2D


def iou(a, b):
    """Intersection over union of every pair of boxes, on the GPU (twin of ``boxes.iou``).

    - a: (N, 4) corner form; b: (M, 4) corner form; float32 or float64 (NumPy or device).
    - returns: (N, M), float32 if both inputs are float32 else float64, values in [0, 1];
      a NumPy array for NumPy inputs, a device array for device inputs.
    """
    host = not (is_device_array(a) or is_device_array(b))
    if host:
        a, b = cpu._as_boxes(a, "a"), cpu._as_boxes(b, "b")
    dtype = np.result_type(a.dtype, b.dtype)
    a_d = on_device(a, dtype)
    bt_d = on_device(np.asarray(b).T, dtype) if host else _transpose(on_device(b, dtype))  # (4, M)
    out = cuda.device_array((a.shape[0], b.shape[0]), dtype=dtype)  # (N, M)
    blocks, threads = _grid_2d(a.shape[0], b.shape[0])
    _iou_matrix_kernel[blocks, threads](a_d, bt_d, out)
    return on_host(out, host)


@cuda.jit
def _transpose_kernel(x, out):
    """out = x.T for a 2-D array (used to lay device boxes out as (4, M))."""
    j, i = cuda.grid(2)
    if i < x.shape[0] and j < x.shape[1]:
        out[j, i] = x[i, j]


def _transpose(x):
    out = cuda.device_array((x.shape[1], x.shape[0]), dtype=x.dtype)
    blocks, threads = _grid_2d(x.shape[0], x.shape[1])
    _transpose_kernel[blocks, threads](x, out)
    return out


# ---- encode / decode against the default boxes ---------------------------------------------

_encode_rows_gpu = cuda.jit(device=True)(cpu._encode_rows.py_func)  # the CPU's row loops, compiled
_decode_rows_gpu = cuda.jit(device=True)(cpu._decode_rows.py_func)  # for the GPU


@cuda.jit
def _encode_rows_kernel(matched, priors, v0, v1, out):
    """``out[p]`` is box ``matched[p]`` (corner) seen from its prior (centre); twin of ``_encode_rows``.

    - matched: (R, 4) corner, R = B * P: the rows of B images one after another (B = 1 for
      ``encode``); priors: (P, 4) centre, prior p % P for row p; out: (R, 4), written in place.
    The body is the CPU function itself (``boxes._encode_rows``, compiled for the GPU), run
    on one row at a time of the grid-stride loop: thread t does rows t, t + T, ...
    """
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    P = priors.shape[0]
    for p in range(start, matched.shape[0], stride):
        q = p % P  # the prior of row p
        _encode_rows_gpu(matched[p:p + 1], priors[q:q + 1], v0, v1, out[p:p + 1])  # the CPU loop, one row


@cuda.jit
def _decode_rows_kernel(loc, priors, v0, v1, out):
    """``out[p]`` (corner) is offset ``loc[p]`` applied to its prior; twin of ``_decode_rows``.

    - loc: (R, 4) encoded offsets, R = B * P (images one after another); priors: (P, 4)
      centre; out: (R, 4) corner form, written in place.
    The body is ``boxes._decode_rows`` compiled for the GPU, run on one row at a time.
    """
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    P = priors.shape[0]
    for p in range(start, loc.shape[0], stride):
        q = p % P  # the prior of row p
        _decode_rows_gpu(loc[p:p + 1], priors[q:q + 1], v0, v1, out[p:p + 1])  # the CPU loop, one row


def _rows_kernel(kernel, rows, priors, variances):
    """Launch ``_encode_rows_kernel`` or ``_decode_rows_kernel`` on (..., P, 4) rows; same kind of array back."""
    host = not (is_device_array(rows) or is_device_array(priors))
    v0, v1 = cpu._check_variances(variances)
    dtype = rows.dtype
    shape = rows.shape  # (P, 4) or (B, P, 4)
    rows_d = on_device(rows, dtype).reshape(-1, 4)  # (B*P, 4): images one after another
    out = cuda.device_array(rows_d.shape, dtype=dtype)
    n = rows_d.shape[0]
    kernel[launch_1d(n)](rows_d, on_device(priors, dtype), dtype.type(v0), dtype.type(v1), out)
    return on_host(out.reshape(shape), host)


def encode(matched, priors, variances=VARIANCES):
    """Encode matched boxes as offsets from their priors, on the GPU (twin of ``boxes.encode``).

    - matched: (P, 4) corner form, or (B, P, 4) for a batch; w, h > 0.
    - priors: (P, 4) centre form.
    - returns: the shape of ``matched``, its dtype; (tx, ty, tw, th) as in ``boxes.encode``.
    """
    if not (is_device_array(matched) or is_device_array(priors)):
        matched = cpu._as_boxes(matched, "matched", ndim=None)
        priors = cpu._check_priors(priors)
        if matched.shape[-2:] != priors.shape:
            raise ValueError(f"matched: shape {matched.shape} does not match priors {priors.shape}")
        if np.any(matched[..., 2:] <= matched[..., :2]):
            raise ValueError("matched: every box needs xmax > xmin and ymax > ymin (log of its size)")
    return _rows_kernel(_encode_rows_kernel, matched, priors, variances)


def decode(loc, priors, variances=VARIANCES):
    """Turn offsets back into corner-form boxes, on the GPU (twin of ``boxes.decode``).

    - loc: (P, 4) encoded offsets, or (B, P, 4) for a batch.
    - priors: (P, 4) centre form.
    - returns: the shape of ``loc``, its dtype, corner form; not clipped to the image.
    """
    if not (is_device_array(loc) or is_device_array(priors)):
        loc = cpu._as_boxes(loc, "loc", ndim=None, corner=False)
        priors = cpu._check_priors(priors)
        if loc.shape[-2:] != priors.shape:
            raise ValueError(f"loc: shape {loc.shape} does not match priors {priors.shape}")
    return _rows_kernel(_decode_rows_kernel, loc, priors, variances)
