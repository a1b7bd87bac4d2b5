"""Wrong NMS (replacements for minissd.nms._suppress and per_class_nms, same arguments)."""

import numpy as np

from minissd.nms import _box_iou


def suppress_with_greater_or_equal(boxes, order, iou_threshold, keep):
    """Suppresses a box whose IoU with a kept box is >= the threshold (should be >)."""
    suppressed = [False] * len(order)
    n_kept = 0
    for a in range(len(order)):
        if suppressed[a]:
            continue
        keep[n_kept] = order[a]
        n_kept += 1
        for b in range(a + 1, len(order)):
            if _box_iou(*boxes[order[a]], *boxes[order[b]]) >= iou_threshold:  # the mistake
                suppressed[b] = True
    return n_kept


def suppress_in_index_order(boxes, order, iou_threshold, keep):
    """Walks the boxes by index, not by score: ``order`` is ignored."""
    suppressed = [False] * len(order)
    n_kept = 0
    for a in range(len(order)):  # the mistake: box a, not box order[a]
        if suppressed[a]:
            continue
        keep[n_kept] = a
        n_kept += 1
        for b in range(a + 1, len(order)):
            if _box_iou(*boxes[a], *boxes[b]) > iou_threshold:
                suppressed[b] = True
    return n_kept


def suppress_by_suppressed_boxes_too(boxes, order, iou_threshold, keep):
    """A suppressed box still suppresses the boxes after it (only kept boxes should)."""
    suppressed = [False] * len(order)
    n_kept = 0
    for a in range(len(order)):
        if not suppressed[a]:
            keep[n_kept] = order[a]
            n_kept += 1
        for b in range(a + 1, len(order)):  # the mistake: also for a suppressed box a
            if _box_iou(*boxes[order[a]], *boxes[order[b]]) > iou_threshold:
                suppressed[b] = True
    return n_kept


# ---- per_class_nms (replacement for minissd.nms.per_class_nms, same arguments) ----------------
# Each is the loop of the reference with one thing changed; NMS is nms._nms as there.

def _per_class(boxes, scores, conf_threshold, nms_threshold, top_k, max_per_class, first_class=1,
               keep=lambda s, t: s > t, cap_before=True, shared_suppression=False, top_k_per_class=False):
    from minissd import nms

    out_boxes, out_labels, out_scores = [], [], []
    dropped = np.zeros(len(boxes), dtype=bool)  # for shared_suppression: suppressed in any class
    for c in range(first_class, scores.shape[1]):
        s = scores[:, c]
        cand = np.flatnonzero(keep(s, conf_threshold) & ~dropped)
        if cap_before:
            cand = cand[np.argsort(-s[cand], kind="stable")[:max_per_class]]
        if cand.size == 0:
            continue
        kept = cand[nms._nms(boxes[cand], s[cand], nms_threshold)]
        if not cap_before:
            kept = kept[:max_per_class]
        if shared_suppression:
            dropped[np.setdiff1d(cand, kept)] = True
        if top_k_per_class:
            kept = kept[:top_k]
        out_boxes.append(boxes[kept])
        out_labels.append(np.full(kept.size, c, dtype=np.int64))
        out_scores.append(s[kept])
    if not out_boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32)
    boxes, labels, scores = (np.concatenate(x) for x in (out_boxes, out_labels, out_scores))
    best = np.argsort(-scores, kind="stable")
    if not top_k_per_class:
        best = best[:top_k]
    return boxes[best], labels[best], scores[best]


def per_class_nms_with_background(boxes, scores, conf_threshold=0.01, nms_threshold=0.45, top_k=200,
                                  max_per_class=200):
    """Loops over every class, background (0) included."""
    return _per_class(boxes, scores, conf_threshold, nms_threshold, top_k, max_per_class, first_class=0)


def per_class_nms_threshold_inclusive(boxes, scores, conf_threshold=0.01, nms_threshold=0.45, top_k=200,
                                      max_per_class=200):
    """Keeps scores >= conf_threshold (should be >)."""
    return _per_class(boxes, scores, conf_threshold, nms_threshold, top_k, max_per_class,
                      keep=lambda s, t: s >= t)


def per_class_nms_capping_after_nms(boxes, scores, conf_threshold=0.01, nms_threshold=0.45, top_k=200,
                                    max_per_class=200):
    """Runs NMS on every candidate and caps to max_per_class afterwards (should cap before)."""
    return _per_class(boxes, scores, conf_threshold, nms_threshold, top_k, max_per_class, cap_before=False)


def per_class_nms_suppressed_in_every_class(boxes, scores, conf_threshold=0.01, nms_threshold=0.45, top_k=200,
                                            max_per_class=200):
    """A default box that NMS drops in one class is dropped from the later classes too."""
    return _per_class(boxes, scores, conf_threshold, nms_threshold, top_k, max_per_class,
                      shared_suppression=True)


def per_class_nms_top_k_per_class(boxes, scores, conf_threshold=0.01, nms_threshold=0.45, top_k=200,
                                  max_per_class=200):
    """Keeps the top_k of each class (and all of them together), not the top_k over all classes."""
    return _per_class(boxes, scores, conf_threshold, nms_threshold, top_k, max_per_class, top_k_per_class=True)


def per_class_nms_class_agnostic(boxes, scores, conf_threshold=0.01, nms_threshold=0.45, top_k=200,
                                 max_per_class=200):
    """One NMS over every (box, class) pair above the threshold: a box of one class suppresses
    the boxes of every other class (should be per class)."""
    from minissd import nms

    cand, labels = np.nonzero(scores[:, 1:] > conf_threshold)  # (n,), (n,) class - 1
    labels = labels + 1
    s = scores[cand, labels]
    pick = np.argsort(-s, kind="stable")[:max_per_class * (scores.shape[1] - 1)]
    cand, labels, s = cand[pick], labels[pick], s[pick]
    if cand.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32)
    kept = nms._nms(boxes[cand], s, nms_threshold)[:top_k]  # the mistake: all classes at once
    return boxes[cand[kept]], labels[kept].astype(np.int64), s[kept]
