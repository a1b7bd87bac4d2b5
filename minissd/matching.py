"""Matching: decide which default box (prior) learns which ground-truth object.

Liu et al. 2016, sec. 2.2 "Matching strategy": each ground truth is first matched to the
default box with the best Jaccard overlap (so that every object has at least one positive,
even a small or oddly shaped one that no prior overlaps by 0.5); then every default box is
matched to the ground truth it overlaps most, and counts as a positive when that overlap is
at least the threshold (0.5). All other default boxes are background (label 0).

The per-image loop ``_match_one`` is the CPU twin of ``minissd.cuda.matching._match_one_kernel``:
same argument names, the loops in the same order (g outside, p inside), with ``for p in
range(P)`` as the grid-stride loop there.
"""

import numpy as np
from numba import njit

from .boxes import VARIANCES, _as_boxes, _check_priors, _check_variances, _encode_rows, _iou_matrix
from .errors import ConfigError


@njit(cache=True, nogil=True)
def _match_one(ious, gt_labels, threshold, best_prior, best_gt, labels_out):
    """Match one image's default boxes to its ground truths, given their IoU.

    - ious: (G, P) float32, IoU of ground truth g with prior p; G >= 1.
    - gt_labels: (G,) int64, classes 1..C.
    - threshold: float, a prior is a positive when its best IoU >= threshold (0.5).
    - best_prior: (G,) int64, the prior each ground truth overlaps most,
      ``ious.argmax(axis=1)`` (NumPy's SIMD argmax is ~20x faster than a Numba loop here).
    - best_gt: (P,) int64, written: the ground truth each prior is matched to.
    - labels_out: (P,) int64, written: that ground truth's label, or 0 (background).
    Ties: a prior equally close to two ground truths takes the first; a ground truth takes
    the first of its equally good priors (argmax); when two ground truths claim the same
    prior in step 2, the later one keeps it (as in ssd.pytorch's match).
    """
    # [assignment match] 1) each prior p takes its best ground truth, with its label only if that IoU >= threshold; 2) then each ground truth g claims best_prior[g], whatever the IoU.
    G, P = ious.shape
    # 1. every prior takes the ground truth it overlaps most; positive if IoU >= threshold.
    # The loops run g outside, p inside so that the inner loop reads one contiguous row of
    # ious (3x faster than p outside); the GPU twin runs the same two loops, p as its grid-stride loop.
    best_iou = ious[0].copy()  # (P,) best IoU so far of each prior
    best_gt[:] = 0
    for g in range(1, G):
        for p in range(P):
            if ious[g, p] > best_iou[p]:  # strict: ties keep the earlier ground truth
                best_iou[p] = ious[g, p]
                best_gt[p] = g
    for p in range(P):
        labels_out[p] = gt_labels[best_gt[p]] if best_iou[p] >= threshold else 0
    # 2. every ground truth claims the prior it overlaps most, even below the threshold
    for g in range(G):
        best_gt[best_prior[g]] = g
        labels_out[best_prior[g]] = gt_labels[g]
    # [/assignment]


# ---- checks ------------------------------------------------------------------------------------

def _check_gt(gt_boxes, gt_labels, num_classes, where=""):
    """Validate one image's ground truth; return boxes (G, 4) float32 and labels (G,) int64."""
    boxes = np.asarray(gt_boxes)
    if boxes.size == 0:
        boxes = np.zeros((0, 4), dtype=np.float32)  # [] and (0, 4) both mean "no objects"
    boxes = _as_boxes(boxes, f"gt_boxes{where}")
    labels = np.asarray(gt_labels)
    if labels.ndim != 1 or labels.shape[0] != boxes.shape[0]:
        raise ValueError(f"gt_labels{where}: expected shape ({boxes.shape[0]},) to go with "
                         f"gt_boxes, got {labels.shape}")
    if labels.size and labels.dtype.kind not in "iu":
        if labels.dtype.kind != "f" or np.any(labels != np.round(labels)):
            raise ValueError(f"gt_labels{where}: expected integer class labels, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if np.any(labels < 1) or (num_classes is not None and np.any(labels > num_classes)):
        top = "C" if num_classes is None else str(num_classes)
        raise ValueError(f"gt_labels{where}: object labels must be in 1..{top} (0 is background), "
                         f"got {labels.tolist()}")
    if boxes.size and np.any(boxes[:, 2:] <= boxes[:, :2]):
        raise ValueError(f"gt_boxes{where}: every box needs xmax > xmin and ymax > ymin "
                         "(an empty box cannot be encoded)")
    return boxes.astype(np.float32), labels


def _check_gt_batch(gt_boxes_list, gt_labels_list, num_classes):
    """Check a whole batch at once (one pass over the concatenated boxes: checking 32 images
    one by one costs more than matching them); on failure, find the image to name."""
    if len(gt_boxes_list) == 0:
        return []  # an empty batch matches to empty (0, P, 4) / (0, P) targets
    boxes = [np.asarray(b) for b in gt_boxes_list]
    boxes = [b.reshape(0, 4) if b.size == 0 else b for b in boxes]  # [] = no objects
    labels = [np.asarray(l) for l in gt_labels_list]
    counts = [b.shape[0] if b.ndim == 2 else -1 for b in boxes]
    try:
        if any(b.ndim != 2 or l.shape != (c,) for b, l, c in zip(boxes, labels, counts)):
            raise ValueError("gt_boxes_list: shapes differ")  # the loop below says where
        all_boxes, all_labels = _check_gt(np.concatenate(boxes).reshape(-1, 4),
                                          np.concatenate(labels), num_classes)
    except ValueError:  # check image by image to name the wrong one
        for i, (b, l) in enumerate(zip(boxes, labels)):
            _check_gt(b, l, num_classes, where=f"[{i}]")
        raise
    ends = np.cumsum(counts)
    return [(all_boxes[e - c:e], all_labels[e - c:e]) for e, c in zip(ends, counts)]


def _check_threshold(t):
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"iou_threshold: expected a number in [0, 1], got {t}")
    return t


def _prepare_priors(priors):
    """priors (P, 4) centre -> (centre float32 (P, 4), corners transposed float32 (4, P))."""
    priors = _check_priors(priors).astype(np.float32)
    if priors.shape[0] == 0:  # nothing to match to: every ground truth would be lost
        raise ConfigError("priors: no default boxes (shape (0, 4)); matching needs at least one "
                          "(check the PriorConfig's feature_maps)")
    half = priors[:, 2:] / 2
    corners = np.concatenate([priors[:, :2] - half, priors[:, :2] + half], axis=1)  # (P, 4)
    return priors, np.ascontiguousarray(corners.T)  # (4, P): the layout _iou_matrix reads fast


def _match_image(boxes, labels, priors, corners_t, threshold, v0, v1, loc_t, conf_t):
    """Match one checked image and write its targets into loc_t (P, 4) and conf_t (P,).

    IoU, the argmax per ground truth, ``_match_one``, then encoding of the positives only
    (background rows of loc_t stay 0). Empty ground truth: every prior is background.
    """
    loc_t[:] = 0
    conf_t[:] = 0
    if boxes.shape[0] == 0:
        return
    G, P = boxes.shape[0], priors.shape[0]
    ious = np.empty((G, P), dtype=np.float32)  # (G, P)
    _iou_matrix(boxes, corners_t, ious)
    best_prior = ious.argmax(axis=1)  # (G,) first maximum on ties
    best_gt = np.empty(P, dtype=np.int64)
    _match_one(ious, labels, threshold, best_prior, best_gt, conf_t)
    pos = np.flatnonzero(conf_t)  # (num_pos,) at least G of them
    matched = np.ascontiguousarray(boxes[best_gt[pos]])  # (num_pos, 4) corner
    encoded = np.empty((pos.size, 4), dtype=np.float32)
    _encode_rows(matched, np.ascontiguousarray(priors[pos]), v0, v1, encoded)
    loc_t[pos] = encoded


# ---- public ------------------------------------------------------------------------------------

def match(gt_boxes, gt_labels, priors, iou_threshold=0.5, variances=VARIANCES, num_classes=None):
    """Match one image's ground truth to the default boxes; return the training targets.

    - gt_boxes: (G, 4) corner form in [0, 1] coordinates, every box with positive area.
    - gt_labels: (G,) integers in 1..C (checked against ``num_classes`` when given).
    - priors: (P, 4) centre form, e.g. ``default_boxes(SSD300_VOC)``.
    - iou_threshold: 0.5 in the paper; variances: (0.1, 0.2).
    - returns loc_t: (P, 4) float32, the matched ground truth encoded against each positive
      prior (0 at background priors, where the localisation loss never looks);
      conf_t: (P,) int64, the matched label or 0 for background.
    G = 0 (an image with no objects) is allowed: every prior is background.
    """
    boxes, labels = _check_gt(gt_boxes, gt_labels, num_classes)
    threshold = _check_threshold(iou_threshold)
    v0, v1 = _check_variances(variances)
    priors, corners_t = _prepare_priors(priors)
    P = priors.shape[0]
    loc_t = np.empty((P, 4), dtype=np.float32)
    conf_t = np.empty(P, dtype=np.int64)
    _match_image(boxes, labels, priors, corners_t, threshold, v0, v1, loc_t, conf_t)
    return loc_t, conf_t


def match_batch(gt_boxes_list, gt_labels_list, priors, iou_threshold=0.5, variances=VARIANCES,
                num_classes=None):
    """``match`` for every image of a batch.

    - gt_boxes_list: B arrays (G_b, 4) corner form; gt_labels_list: B arrays (G_b,) in 1..C.
    - priors: (P, 4) centre form; iou_threshold, variances, num_classes as in ``match``.
    - returns loc_t: (B, P, 4) float32, conf_t: (B, P) int64.
    The priors are checked and converted once for the whole batch.
    """
    if len(gt_boxes_list) != len(gt_labels_list):
        raise ValueError(f"gt_labels_list: {len(gt_labels_list)} images, but gt_boxes_list has "
                         f"{len(gt_boxes_list)}")
    threshold = _check_threshold(iou_threshold)
    v0, v1 = _check_variances(variances)
    priors, corners_t = _prepare_priors(priors)
    B, P = len(gt_boxes_list), priors.shape[0]
    checked = _check_gt_batch(gt_boxes_list, gt_labels_list, num_classes)
    loc_t = np.empty((B, P, 4), dtype=np.float32)
    conf_t = np.empty((B, P), dtype=np.int64)
    for i, (boxes, labels) in enumerate(checked):
        _match_image(boxes, labels, priors, corners_t, threshold, v0, v1, loc_t[i], conf_t[i])
    return loc_t, conf_t
