"""Inference: from the network's raw outputs to a short list of detections per image.

Liu et al. 2016, sec. 3 ("... we filter out most boxes by a confidence threshold of 0.01,
apply non-maximum suppression (NMS) with jaccard overlap of 0.45 per class and keep the top
200 detections per image"). For each image: decode the offsets against the default boxes,
softmax the class logits, then per class keep the boxes above the threshold, cap them to the
``max_per_class`` best, run greedy NMS, and finally keep the ``top_k`` best over all classes.
"""

import numpy as np
from numba import njit

from .boxes import VARIANCES, _as_boxes, _check_priors, _check_variances, _decode_rows
from .loss import _log_sum_exp


def _box_iou(ax0, ay0, ax1, ay1, bx0, by0, bx1, by1):
    """IoU of two corner-form boxes, as plain scalars (compiled for the CPU here and for the
    GPU in minissd.cuda.boxes, whose IoU, matching and NMS kernels call it).

    NMS's own: ``boxes._iou_matrix`` writes the same formula inline, because it is chapter 1's
    graded region and ``_suppress`` (compiled) must work while that region is blank.
    Boxes apart (or touching) give 0; two empty boxes (union 0) also give 0.
    """
    iw = min(ax1, bx1) - max(ax0, bx0)  # overlap width, negative if the boxes are apart
    ih = min(ay1, by1) - max(ay0, by0)
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0.0 else 0.0


_box_iou_cpu = njit(cache=True)(_box_iou)


@njit(cache=True, nogil=True)
def _suppress(boxes, order, iou_threshold, keep):
    """Greedy NMS over boxes taken in the given order; returns how many were kept.

    - boxes: (N, 4) corner form; order: (N,) int64, box indices by decreasing score;
    - iou_threshold: a box is dropped when its IoU with a kept box is > iou_threshold;
    - keep: (N,) int64, written: the kept indices first (in ``order``'s order).
    O(N^2) IoUs in the worst case: callers cap N (``detect`` keeps 200 boxes per class).
    """
    # [assignment nms] Walk boxes in order; keep each one not yet suppressed and suppress every later box whose IoU with it is > iou_threshold.
    N = order.shape[0]
    suppressed = np.zeros(N, dtype=np.bool_)  # by position in order
    n_kept = 0
    for a in range(N):
        if suppressed[a]:
            continue
        i = order[a]
        keep[n_kept] = i
        n_kept += 1
        for b in range(a + 1, N):
            j = order[b]
            if not suppressed[b] and _box_iou_cpu(boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3],
                                                  boxes[j, 0], boxes[j, 1], boxes[j, 2], boxes[j, 3]) > iou_threshold:
                suppressed[b] = True
    return n_kept
    # [/assignment]


def _nms(boxes, scores, iou_threshold):
    """NMS on checked arrays: indices kept, highest score first (ties: lower index first)."""
    order = np.argsort(-scores, kind="stable")  # (N,)
    keep = np.empty(order.shape[0], dtype=np.int64)
    n = _suppress(boxes, order, iou_threshold, keep)
    return keep[:n]


def nms(boxes, scores, iou_threshold):
    """Greedy non-maximum suppression.

    - boxes: (N, 4) corner form; scores: (N,) float; iou_threshold: in [0, 1] (0.45 in SSD).
    - returns: (K,) int64 indices into boxes of the kept boxes, highest score first; equal
      scores are taken in index order. A box is suppressed when its IoU with an already
      kept box is > iou_threshold (so identical boxes are always suppressed below 1).
    """
    boxes = _as_boxes(boxes, "boxes")
    scores = np.asarray(scores)
    if scores.shape != (boxes.shape[0],) or scores.dtype.kind not in "fiu":
        raise ValueError(f"scores: expected ({boxes.shape[0]},) numbers to go with boxes, got "
                         f"shape {scores.shape} dtype {scores.dtype}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores: contains NaN or inf")
    iou_threshold = float(iou_threshold)
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold: expected a number in [0, 1], got {iou_threshold}")
    return _nms(np.ascontiguousarray(boxes), scores, iou_threshold)


def detect(loc, conf, priors, conf_threshold=0.01, nms_threshold=0.45, top_k=200,
           variances=VARIANCES, max_per_class=200):
    """Detections for a batch: decode, softmax, per-class threshold + NMS, top-k.

    - loc: (B, P, 4) predicted offsets; conf: (B, P, C+1) class logits (0 = background).
    - priors: (P, 4) centre form (the default boxes the network was trained with).
    - conf_threshold: a class score must be > this to be considered (0.01).
    - nms_threshold: IoU above which NMS drops the lower-scored box of a class (0.45).
    - top_k: detections kept per image over all classes (200).
    - max_per_class: per class, only the ``max_per_class`` best-scored boxes above the
      threshold enter NMS (200, as ssd.pytorch's Detect and caffe's nms top_k=400 do in
      spirit): with an untrained network nearly every one of 8732 boxes passes 0.01, and
      NMS is quadratic.
    - variances: (0.1, 0.2).
    - returns: a list of B tuples (boxes (K, 4) float32 corner form clipped to [0, 1],
      labels (K,) int64 in 1..C, scores (K,) float32), sorted by decreasing score, K <= top_k:
      ``per_class_nms`` of each image's decoded boxes and softmax.
    """
    loc, conf = np.asarray(loc), np.asarray(conf)
    if conf.ndim != 3 or conf.shape[2] < 2 or conf.dtype.kind != "f":
        raise ValueError(f"conf: expected (B, P, C+1) float logits, got shape {conf.shape} dtype {conf.dtype}")
    B, P, K = conf.shape
    if loc.shape != (B, P, 4) or loc.dtype.kind != "f":
        raise ValueError(f"loc: expected ({B}, {P}, 4) float to go with conf, got shape {loc.shape} dtype {loc.dtype}")
    priors = _check_priors(priors)
    if priors.shape[0] != P:
        raise ValueError(f"priors: {priors.shape[0]} default boxes, but the network predicted {P}")
    if not (np.all(np.isfinite(loc)) and np.all(np.isfinite(conf))):
        raise ValueError("loc or conf: contains NaN or inf")
    v0, v1 = _check_variances(variances)
    if top_k < 1 or max_per_class < 1:
        raise ValueError(f"top_k and max_per_class: expected >= 1, got {top_k}, {max_per_class}")

    priors = np.ascontiguousarray(priors, dtype=np.float32)
    conf = conf.astype(np.float32, copy=False)
    lse = np.empty((B, P), dtype=np.float32)
    _log_sum_exp(conf, lse)  # (B, P)
    results = []
    for b in range(B):
        boxes = np.empty((P, 4), dtype=np.float32)
        _decode_rows(np.ascontiguousarray(loc[b], dtype=np.float32), priors, v0, v1, boxes)
        np.clip(boxes, 0.0, 1.0, out=boxes)  # (P, 4) corner form inside the image
        probs = np.exp(conf[b] - lse[b][:, None])  # (P, C+1) softmax
        results.append(per_class_nms(boxes, probs, conf_threshold, nms_threshold, top_k, max_per_class))
    return results


def per_class_nms(boxes, scores, conf_threshold=0.01, nms_threshold=0.45, top_k=200, max_per_class=200):
    """One image's detections from its decoded boxes and class scores (``detect`` per image).

    - boxes: (P, 4) float32 corner form, one box per default box (decoded, clipped);
    - scores: (P, C+1) float32 class probabilities, column 0 = background (never detected);
    - conf_threshold: a class score must be > this to be considered (0.01);
    - nms_threshold: IoU above which NMS drops the lower-scored box of a class (0.45);
    - top_k: detections kept over all classes (200); max_per_class: per class, only the
      ``max_per_class`` best-scored boxes above the threshold enter NMS (200).
    - returns: (boxes (K, 4) float32, labels (K,) int64 in 1..C, scores (K,) float32), sorted
      by decreasing score (ties: lower class first, then NMS's order), K <= top_k.
    Each class is suppressed on its own: a box that NMS drops in one class may be kept in
    another.
    """
    # [assignment per_class_nms] Per class c >= 1: candidates = boxes scoring > conf_threshold, only the max_per_class best; keep = candidates[_nms(their boxes, their scores, nms_threshold)]; then the top_k best of all classes (stable sort: ties lower class first).
    out_boxes, out_labels, out_scores = [], [], []
    for c in range(1, scores.shape[1]):
        class_scores = scores[:, c]  # (P,)
        cand = np.flatnonzero(class_scores > conf_threshold)  # (n,)
        if cand.size > max_per_class:  # the best max_per_class, found without a full sort
            best = np.argpartition(-class_scores[cand], max_per_class - 1)[:max_per_class]
            cand = np.sort(cand[best])  # back in prior order, so equal scores stay deterministic
        if cand.size == 0:
            continue
        kept = cand[_nms(boxes[cand], class_scores[cand], nms_threshold)]  # (k,) by decreasing score
        out_boxes.append(boxes[kept])
        out_labels.append(np.full(kept.size, c, dtype=np.int64))
        out_scores.append(class_scores[kept])
    if not out_boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32)
    boxes, labels, scores = (np.concatenate(x) for x in (out_boxes, out_labels, out_scores))
    best = np.argsort(-scores, kind="stable")[:top_k]  # ties: lower class first
    return boxes[best], labels[best], scores[best]
    # [/assignment]
