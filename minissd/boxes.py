"""Boxes: centre/corner conversions, intersection over union, and the SSD box encoding.

Conventions (DESIGN.md):
- corner form ``(xmin, ymin, xmax, ymax)`` and centre form ``(cx, cy, w, h)``, both
  normalised to [0, 1] by the image width and height, continuous coordinates (no "+1");
- an encoded box is the offset of a box from a default box (prior), in units of the prior's
  size divided by the variances (0.1, 0.2) (Liu et al. 2016, eq. 2 and the released code).

The encode/decode row loops (``_encode_rows``, ``_decode_rows``) are written once and
compiled twice: by ``njit`` here, and by ``cuda.jit(device=True)`` in ``minissd.cuda.boxes``.
The IoU loop ``_iou_matrix`` holds its formula inline: it is the student's to write
(chapter 1), so no compiled scalar that another part needs can stand in for it; NMS has its
own scalar IoU of two boxes (``nms._box_iou``, also the GPU's).
"""

import math

import numpy as np
from numba import njit

VARIANCES = (0.1, 0.2)  # centre offsets and log sizes; weiliu89/caffe and ssd.pytorch


# ---- checks shared by the public functions -------------------------------------------------

def _as_boxes(x, name, ndim=2, corner=True):
    """Return ``x`` as a float array of shape (..., 4), or raise ValueError naming ``name``.

    - ndim: the number of dimensions required (None: any, as long as the last one is 4);
    - corner: also require xmax >= xmin and ymax >= ymin (corner form).
    NaN and inf are refused: they would travel silently through every later step.
    """
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    if a.ndim == 0 or a.shape[-1] != 4 or (ndim is not None and a.ndim != ndim):
        want = "(N, 4)" if ndim == 2 else "(..., 4)"
        raise ValueError(f"{name}: expected shape {want}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf")
    if corner and a.size:
        bad = (a[..., 2] < a[..., 0]) | (a[..., 3] < a[..., 1])
        if np.any(bad):
            i = tuple(int(k) for k in np.argwhere(bad)[0])
            i = i[0] if len(i) == 1 else i
            raise ValueError(
                f"{name}: box {i} = {a[i].tolist()} has xmax < xmin or ymax < ymin "
                "(boxes are corner form (xmin, ymin, xmax, ymax))")
    return a


def _check_variances(variances):
    v0, v1 = (float(v) for v in variances)
    if not (v0 > 0 and v1 > 0 and np.isfinite(v0) and np.isfinite(v1)):
        raise ValueError(f"variances: expected two positive numbers, got {variances!r}")
    return v0, v1


# ---- centre <-> corner ---------------------------------------------------------------------

def center_to_corner(b):
    """(cx, cy, w, h) -> (xmin, ymin, xmax, ymax).

    - b: (..., 4) float, centre form.
    - returns: (..., 4) same dtype, corner form.
    """
    b = _as_boxes(b, "b", ndim=None, corner=False)
    half = b[..., 2:] / 2
    return np.concatenate([b[..., :2] - half, b[..., :2] + half], axis=-1)


def corner_to_center(b):
    """(xmin, ymin, xmax, ymax) -> (cx, cy, w, h).

    - b: (..., 4) float, corner form.
    - returns: (..., 4) same dtype, centre form.
    """
    b = _as_boxes(b, "b", ndim=None, corner=True)
    return np.concatenate([(b[..., :2] + b[..., 2:]) / 2, b[..., 2:] - b[..., :2]], axis=-1)


# ---- intersection over union ---------------------------------------------------------------

@njit(cache=True, nogil=True)
def _iou_matrix(a, bt, out):
    """Fill ``out[i, j]`` with the IoU of box ``a[i]`` and box ``j`` of ``bt``.

    - a: (N, 4) corner form.
    - bt: (4, M) corner form stored transposed: row 0 holds every xmin, row 1 every ymin, ...
      (structure of arrays: the inner loop then reads four contiguous rows, which lets the
      compiler work on 8 float32 boxes per instruction; about 5x faster than reading (M, 4)).
    - out: (N, M), written in place.
    Boxes that do not overlap (or only touch) have IoU 0; two empty boxes (union 0) also 0.
    A Numba loop rather than a NumPy broadcast: the broadcast allocates N x M x 4
    temporaries, which for 10 boxes x 8732 priors is most of the time.
    """
    # [assignment iou] For every pair (i, j): overlap width and height = min of the max corners - max of the min corners, each clamped at 0; IoU = overlap / (area i + area j - overlap), 0 when the union is 0.
    N, M = a.shape[0], bt.shape[1]
    for i in range(N):
        ax0, ay0, ax1, ay1 = a[i, 0], a[i, 1], a[i, 2], a[i, 3]
        area_a = (ax1 - ax0) * (ay1 - ay0)
        for j in range(M):
            iw = max(min(ax1, bt[2, j]) - max(ax0, bt[0, j]), 0.0)  # overlap width, 0 if apart
            ih = max(min(ay1, bt[3, j]) - max(ay0, bt[1, j]), 0.0)
            inter = iw * ih
            union = area_a + (bt[2, j] - bt[0, j]) * (bt[3, j] - bt[1, j]) - inter
            out[i, j] = inter / union if union > 0.0 else 0.0
    # [/assignment]


def iou(a, b):
    """Intersection over union of every pair of boxes.

    - a: (N, 4) corner form; b: (M, 4) corner form; float32 or float64.
    - returns: (N, M), float32 if both inputs are float32 else float64, values in [0, 1].
    IoU = area(a & b) / area(a | b) (the Jaccard overlap of Liu et al. 2016, sec. 2.2).
    """
    a = _as_boxes(a, "a")
    b = _as_boxes(b, "b")
    dtype = np.result_type(a.dtype, b.dtype)
    out = np.empty((a.shape[0], b.shape[0]), dtype=dtype)  # (N, M)
    _iou_matrix(np.ascontiguousarray(a, dtype), np.ascontiguousarray(b.T, dtype), out)
    return out


# ---- encode / decode against the default boxes ---------------------------------------------

# The two row loops are written once and compiled twice: by ``njit`` here, and, from their
# ``.py_func``, by ``cuda.jit(device=True)`` in minissd.cuda.boxes, whose kernels run them on
# one row per step of a grid-stride loop (``math.log``, ``math.exp``: both compilers know them).

@njit(cache=True, nogil=True)
def _encode_rows(matched, priors, v0, v1, out):
    """Encode row by row: ``out[p]`` is box ``matched[p]`` (corner) seen from ``priors[p]`` (centre).

    - matched: (P, 4) corner; priors: (P, 4) centre; out: (P, 4), written in place.
    """
    # [assignment encode] Centre offsets over (v0 * prior size); log of size ratios over v1.
    for p in range(matched.shape[0]):
        pcx, pcy, pw, ph = priors[p, 0], priors[p, 1], priors[p, 2], priors[p, 3]
        cx = (matched[p, 0] + matched[p, 2]) / 2
        cy = (matched[p, 1] + matched[p, 3]) / 2
        w = matched[p, 2] - matched[p, 0]
        h = matched[p, 3] - matched[p, 1]
        out[p, 0] = (cx - pcx) / (v0 * pw)
        out[p, 1] = (cy - pcy) / (v0 * ph)
        out[p, 2] = math.log(w / pw) / v1
        out[p, 3] = math.log(h / ph) / v1
    # [/assignment]


@njit(cache=True, nogil=True)
def _decode_rows(loc, priors, v0, v1, out):
    """Decode row by row, the inverse of ``_encode_rows``: ``out[p]`` is corner form.

    - loc: (P, 4) encoded offsets; priors: (P, 4) centre; out: (P, 4), written in place.
    """
    # [assignment decode] Undo encode: centre = prior centre + v0 * offset * prior size, size = prior size * exp(v1 * t); then to corners.
    for p in range(loc.shape[0]):
        pcx, pcy, pw, ph = priors[p, 0], priors[p, 1], priors[p, 2], priors[p, 3]
        cx = pcx + loc[p, 0] * v0 * pw
        cy = pcy + loc[p, 1] * v0 * ph
        w = pw * math.exp(loc[p, 2] * v1)
        h = ph * math.exp(loc[p, 3] * v1)
        out[p, 0] = cx - w / 2
        out[p, 1] = cy - h / 2
        out[p, 2] = cx + w / 2
        out[p, 3] = cy + h / 2
    # [/assignment]


def _check_priors(priors, name="priors"):
    priors = _as_boxes(priors, name, corner=False)
    if np.any(priors[:, 2:] <= 0):
        raise ValueError(f"{name}: every default box needs w > 0 and h > 0 (centre form)")
    return priors


def encode(matched, priors, variances=VARIANCES):
    """Encode ground-truth boxes as offsets from their default boxes (the regression target).

    - matched: (P, 4) corner form, the ground truth matched to each prior; w, h > 0.
    - priors: (P, 4) centre form (cx, cy, w, h).
    - variances: (v0, v1), default (0.1, 0.2).
    - returns: (P, 4), dtype of ``matched``: (tx, ty, tw, th) with
      tx = (cx - pcx) / (v0 pw), ty = (cy - pcy) / (v0 ph), tw = log(w / pw) / v1, th = log(h / ph) / v1.
    """
    matched = _as_boxes(matched, "matched")
    priors = _check_priors(priors)
    if matched.shape != priors.shape:
        raise ValueError(f"matched: shape {matched.shape} does not match priors {priors.shape}")
    if np.any(matched[:, 2:] <= matched[:, :2]):
        raise ValueError("matched: every box needs xmax > xmin and ymax > ymin (log of its size)")
    v0, v1 = _check_variances(variances)
    out = np.empty_like(matched)  # (P, 4)
    _encode_rows(matched, np.ascontiguousarray(priors, matched.dtype), v0, v1, out)
    return out


def decode(loc, priors, variances=VARIANCES):
    """Turn predicted offsets back into corner-form boxes (the inverse of ``encode``).

    - loc: (P, 4) encoded offsets (tx, ty, tw, th), e.g. the network's loc output for one image.
    - priors: (P, 4) centre form.
    - variances: (v0, v1), default (0.1, 0.2).
    - returns: (P, 4) corner form, dtype of ``loc``; not clipped to the image.
    """
    loc = _as_boxes(loc, "loc", corner=False)
    priors = _check_priors(priors)
    if loc.shape != priors.shape:
        raise ValueError(f"loc: shape {loc.shape} does not match priors {priors.shape}")
    v0, v1 = _check_variances(variances)
    out = np.empty_like(loc)  # (P, 4)
    _decode_rows(np.ascontiguousarray(loc), np.ascontiguousarray(priors, loc.dtype), v0, v1, out)
    return out
