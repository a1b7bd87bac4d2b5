"""Matching: decide which default box (prior) learns which ground-truth object.

Liu et al. 2016, sec. 2.2 "Matching strategy": each ground truth is first matched to the
default box with the best Jaccard overlap (so that every object has at least one positive,
even a small or oddly shaped one that no prior overlaps by 0.5); then every default box is
matched to the ground truth it overlaps most, and counts as a positive when that overlap is
at least the threshold (0.5). All other default boxes are background (label 0).

The per-image loop ``_match_one`` is the CPU twin of ``minissd.cuda.matching._match_one_kernel``:
same argument names, the loops in the same order (g outside, p inside), with ``for p in
range(P)`` as the grid-stride loop there.

``rule="bipartite"`` swaps the first step for Caffe's (``_match_bipartite``): the objects take
their priors greedily, the best (prior, object) pair first, each prior at most once, so two
objects whose best prior is the same both keep a positive. It runs on the CPU only (the GPU
step has the default rule; docs/switches.md).
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


# ---- the other rule: Caffe's greedy bipartite step ---------------------------------------------

@njit(cache=True, nogil=True)
def _best_free_prior(row, used):
    """The prior with the largest IoU in ``row`` (P,) among those not ``used`` (P,) bool;
    the first one on ties; -1 when every prior is used."""
    best, best_iou = -1, -1.0
    for p in range(row.shape[0]):
        if not used[p] and row[p] > best_iou:  # strict: ties keep the lower prior index
            best, best_iou = p, row[p]
    return best


@njit(cache=True, nogil=True)
def _bipartite_pairs(ious, forced):
    """Caffe's bipartite step: give every ground truth its own prior, greedily.

    - ious: (G, P) float32, IoU of ground truth g with prior p.
    - forced: (G,) int64, written: the prior given to ground truth g, all different;
      -1 for the ground truths left over when P < G.
    Repeatedly take the largest IoU among the pairs (unused prior, unused ground truth),
    assign that pair and retire both, until every ground truth has a prior (Caffe,
    bbox_util.cpp MatchBBox, its "Bipartite matching" loop). Ties go to the lower prior
    index, then the lower ground truth, as Caffe's scan (priors outside) finds them.
    Unlike Caffe, a pair with IoU 0 can be taken (Caffe keeps only overlaps > 1e-6), so
    an object that touches no prior still gets one, as per-prediction gives it.

    Instead of rescanning all G x P pairs each round, every waiting ground truth keeps
    its best free prior ``cand``: the best pair is the best of those G candidates, and a
    candidate is searched again only when its prior was just taken. O(G P) in practice.
    """
    G, P = ious.shape
    used = np.zeros(P, dtype=np.bool_)  # priors already given away
    done = np.zeros(G, dtype=np.bool_)  # ground truths that have their prior
    cand = np.empty(G, dtype=np.int64)  # each waiting ground truth's best free prior
    forced[:] = -1
    for g in range(G):
        cand[g] = _best_free_prior(ious[g], used)
    for _ in range(min(G, P)):
        # the globally best pair: largest IoU, then lower prior index, then lower g
        g_best = -1
        for g in range(G):
            if done[g]:
                continue
            if g_best == -1:
                g_best = g
                continue
            iou, best = ious[g, cand[g]], ious[g_best, cand[g_best]]
            if iou > best or (iou == best and cand[g] < cand[g_best]):
                g_best = g
        p = cand[g_best]
        forced[g_best] = p
        done[g_best] = True
        used[p] = True
        for g in range(G):  # the ground truths that wanted p look again
            if not done[g] and cand[g] == p:
                cand[g] = _best_free_prior(ious[g], used)


def _match_bipartite(ious, gt_labels, threshold, best_prior, best_gt, labels_out):
    """Caffe's matching of one image (MatchBBox with match_type PER_PREDICTION, the
    BIPARTITE step first): arguments as ``_match_one``.

    1. ``_match_one``: the threshold rule, then each ground truth claims ``best_prior[g]``
       (a later object may take an earlier one's);
    2. the bipartite pairs override it (``_claim_pairs``): each ground truth claims its own
       prior, all different, so no object loses its forced prior.
    Every prior step 1 forced is overridden in step 2: ``best_prior[g]`` is either taken by
    another object's pair first, or still free when g's turn comes, and then it is g's best
    free prior (the same first-maximum tie rule). So the result is the threshold rule plus the
    pairs, as Caffe computes it (pairs first, then the threshold rule for the priors left).
    Plain Python: a compiled caller of the graded ``_match_one`` would not compile in the
    student copy (docs/instructors.md, the Numba trap).
    """
    _match_one(ious, gt_labels, threshold, best_prior, best_gt, labels_out)
    _claim_pairs(ious, gt_labels, best_gt, labels_out)


@njit(cache=True, nogil=True)
def _claim_pairs(ious, gt_labels, best_gt, labels_out):
    """Give each ground truth g its bipartite prior: best_gt and labels_out at it say g."""
    G = ious.shape[0]
    forced = np.empty(G, dtype=np.int64)
    _bipartite_pairs(ious, forced)
    for g in range(G):
        if forced[g] >= 0:  # -1 only when there are fewer priors than objects
            best_gt[forced[g]] = g
            labels_out[forced[g]] = gt_labels[g]


MATCHING_RULES = ("per-prediction", "bipartite")


def _check_rule(rule):
    if rule not in MATCHING_RULES:
        raise ValueError(f"rule: expected one of {', '.join(map(repr, MATCHING_RULES))}, got {rule!r}")
    return rule


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


def _match_image(boxes, labels, priors, corners_t, threshold, v0, v1, loc_t, conf_t,
                 rule="per-prediction"):
    """Match one checked image and write its targets into loc_t (P, 4) and conf_t (P,).

    IoU, the argmax per ground truth, ``_match_one`` (or ``_match_bipartite`` for
    rule="bipartite"), then encoding of the positives only (background rows of loc_t stay 0).
    Empty ground truth: every prior is background.
    """
    loc_t[:] = 0
    conf_t[:] = 0
    if boxes.shape[0] == 0:
        return
    G, P = boxes.shape[0], priors.shape[0]
    ious = np.empty((G, P), dtype=np.float32)  # (G, P)
    _iou_matrix(boxes, corners_t, ious)
    best_gt = np.empty(P, dtype=np.int64)
    best_prior = ious.argmax(axis=1)  # (G,) first maximum on ties
    if rule == "bipartite":
        _match_bipartite(ious, labels, threshold, best_prior, best_gt, conf_t)
    else:
        _match_one(ious, labels, threshold, best_prior, best_gt, conf_t)
    pos = np.flatnonzero(conf_t)  # (num_pos,) at least G of them
    matched = np.ascontiguousarray(boxes[best_gt[pos]])  # (num_pos, 4) corner
    encoded = np.empty((pos.size, 4), dtype=np.float32)
    _encode_rows(matched, np.ascontiguousarray(priors[pos]), v0, v1, encoded)
    loc_t[pos] = encoded


# ---- public ------------------------------------------------------------------------------------

def match(gt_boxes, gt_labels, priors, iou_threshold=0.5, variances=VARIANCES, num_classes=None,
          rule="per-prediction"):
    """Match one image's ground truth to the default boxes; return the training targets.

    - gt_boxes: (G, 4) corner form in [0, 1] coordinates, every box with positive area.
    - gt_labels: (G,) integers in 1..C (checked against ``num_classes`` when given).
    - priors: (P, 4) centre form, e.g. ``default_boxes(SSD300_VOC)``.
    - iou_threshold: 0.5 in the paper; variances: (0.1, 0.2).
    - rule: how each ground truth gets its forced prior (docs/switches.md):
      "per-prediction" (the default; ssd.pytorch's match, torchvision's SSD matcher): each
      claims the prior it overlaps most, and when two claim the same one the later keeps
      it, so the earlier may be left without a positive;
      "bipartite" (Caffe's MatchBBox): greedily the best (prior, object) pair among the
      unused ones, so every object gets a prior of its own (when P >= G).
      Then, either way, every other prior is a positive when its best IoU >= iou_threshold.
    - returns loc_t: (P, 4) float32, the matched ground truth encoded against each positive
      prior (0 at background priors, where the localisation loss never looks);
      conf_t: (P,) int64, the matched label or 0 for background.
    G = 0 (an image with no objects) is allowed: every prior is background.
    """
    rule = _check_rule(rule)
    boxes, labels = _check_gt(gt_boxes, gt_labels, num_classes)
    threshold = _check_threshold(iou_threshold)
    v0, v1 = _check_variances(variances)
    priors, corners_t = _prepare_priors(priors)
    P = priors.shape[0]
    loc_t = np.empty((P, 4), dtype=np.float32)
    conf_t = np.empty(P, dtype=np.int64)
    _match_image(boxes, labels, priors, corners_t, threshold, v0, v1, loc_t, conf_t, rule)
    return loc_t, conf_t


def match_batch(gt_boxes_list, gt_labels_list, priors, iou_threshold=0.5, variances=VARIANCES,
                num_classes=None, rule="per-prediction"):
    """``match`` for every image of a batch.

    - gt_boxes_list: B arrays (G_b, 4) corner form; gt_labels_list: B arrays (G_b,) in 1..C.
    - priors: (P, 4) centre form; iou_threshold, variances, num_classes, rule as in ``match``.
    - returns loc_t: (B, P, 4) float32, conf_t: (B, P) int64.
    The priors are checked and converted once for the whole batch.
    """
    if len(gt_boxes_list) != len(gt_labels_list):
        raise ValueError(f"gt_labels_list: {len(gt_labels_list)} images, but gt_boxes_list has "
                         f"{len(gt_boxes_list)}")
    rule = _check_rule(rule)
    threshold = _check_threshold(iou_threshold)
    v0, v1 = _check_variances(variances)
    priors, corners_t = _prepare_priors(priors)
    B, P = len(gt_boxes_list), priors.shape[0]
    checked = _check_gt_batch(gt_boxes_list, gt_labels_list, num_classes)
    loc_t = np.empty((B, P, 4), dtype=np.float32)
    conf_t = np.empty((B, P), dtype=np.int64)
    for i, (boxes, labels) in enumerate(checked):
        _match_image(boxes, labels, priors, corners_t, threshold, v0, v1, loc_t[i], conf_t[i], rule)
    return loc_t, conf_t
