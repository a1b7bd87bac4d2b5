"""Wrong average precision (replacement for minissd.evaluate.voc_ap)."""

import numpy as np

from minissd import evaluate

_voc_ap = evaluate.voc_ap  # the reference, kept before the patch replaces it


def voc_ap_on_10_points(recall, precision, use_07_metric=True):
    """The VOC2007 "11-point" AP taken at t = 0, 0.1, ..., 0.9 only (recall 1.0 forgotten)."""
    if not use_07_metric:
        return _voc_ap(recall, precision, use_07_metric=False)
    recall, precision = np.asarray(recall, dtype=np.float64), np.asarray(precision, dtype=np.float64)
    ap = 0.0
    for t in np.arange(0.0, 1.0, 0.1):  # the mistake: 10 thresholds, 1.0 is missing
        above = recall >= t
        ap += (precision[above].max() if above.any() else 0.0) / 10
    return float(ap)


def voc_ap_without_the_envelope(recall, precision, use_07_metric=True):
    """Precision taken as it is: the first point at recall >= t (11-point), the raw curve's
    area (should be the best precision at recall >= r, the monotone envelope)."""
    recall, precision = np.asarray(recall, dtype=np.float64), np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.linspace(0.0, 1.0, 11):
            above = np.flatnonzero(recall >= t)
            ap += (precision[above[0]] if above.size else 0.0) / 11  # the mistake: not the max
        return float(ap)
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])  # the mistake: no envelope
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


# ---- voc_tp_fp (replacement for minissd.evaluate.voc_tp_fp, same arguments) ------------------
# Each is the devkit's loop with one thing changed.

def _tp_fp(scores, images, overlaps, difficult, iou_threshold, ranked=True, over=np.greater_equal,
           difficult_is_fp=False, duplicates_count=False, choose="best", taken_per_image=True,
           descending=lambda s: np.argsort(-s, kind="stable")):
    scores = np.asarray(scores, dtype=np.float64)
    order = descending(scores) if ranked else np.arange(len(scores))
    G = max([len(d) for d in difficult], default=0)
    taken = [np.zeros(len(d), dtype=bool) for d in difficult]
    shared = np.zeros(G, dtype=bool)  # for taken_per_image=False: object j of any image
    tp = np.zeros(len(scores), dtype=bool)
    fp = np.zeros(len(scores), dtype=bool)
    for r, k in enumerate(order):
        i, o = int(images[k]), np.asarray(overlaps[k], dtype=np.float64)
        mark = taken[i] if taken_per_image else shared
        if choose == "first":
            over_t = np.flatnonzero(over(o, iou_threshold))
            j = int(over_t[0]) if over_t.size else (int(np.argmax(o)) if o.size else -1)
        elif choose == "best untaken":
            free = np.where(mark[:len(o)], -1.0, o)  # taken objects out of the running
            j = int(np.argmax(free)) if o.size and over(free.max(), iou_threshold) \
                else (int(np.argmax(o)) if o.size else -1)
        elif choose == "best not difficult":
            eligible = np.where(difficult[i], -1.0, o)
            j = int(np.argmax(eligible)) if o.size and over(eligible.max(), iou_threshold) \
                else (int(np.argmax(o)) if o.size else -1)
        else:
            j = int(np.argmax(o)) if o.size else -1
        if j >= 0 and over(o[j], iou_threshold):
            if difficult[i][j]:
                fp[r] = difficult_is_fp
                continue
            tp[r] = duplicates_count or not mark[j]
            fp[r] = not tp[r]
            mark[j] = True
        else:
            fp[r] = True
    return tp, fp


def tp_fp_difficult_as_false_positive(scores, images, overlaps, difficult, iou_threshold=0.5):
    """A detection on a difficult object is a false positive (should be neither)."""
    return _tp_fp(scores, images, overlaps, difficult, iou_threshold, difficult_is_fp=True)


def tp_fp_duplicates_as_true_positives(scores, images, overlaps, difficult, iou_threshold=0.5):
    """Every detection over an object is a true positive, found before or not (no bookkeeping)."""
    return _tp_fp(scores, images, overlaps, difficult, iou_threshold, duplicates_count=True)


def tp_fp_first_object_over_threshold(scores, images, overlaps, difficult, iou_threshold=0.5):
    """A detection takes the first object over the threshold, not the best one."""
    return _tp_fp(scores, images, overlaps, difficult, iou_threshold, choose="first")


def tp_fp_best_untaken_object(scores, images, overlaps, difficult, iou_threshold=0.5):
    """A detection whose best object is taken falls back on the best one still free (the
    devkit's answer: a duplicate, a false positive)."""
    return _tp_fp(scores, images, overlaps, difficult, iou_threshold, choose="best untaken")


def tp_fp_skipping_difficult_objects(scores, images, overlaps, difficult, iou_threshold=0.5):
    """A detection takes its best non-difficult object (the devkit takes the best, difficult
    or not, and ignores the detection if that one is difficult)."""
    return _tp_fp(scores, images, overlaps, difficult, iou_threshold, choose="best not difficult")


def tp_fp_not_ranked(scores, images, overlaps, difficult, iou_threshold=0.5):
    """Walks the detections in the order given, not by decreasing score."""
    return _tp_fp(scores, images, overlaps, difficult, iou_threshold, ranked=False)


def tp_fp_ranked_by_reversed_argsort(scores, images, overlaps, difficult, iou_threshold=0.5):
    """Ranks with np.argsort(scores)[::-1]: equal scores come last index first."""
    return _tp_fp(scores, images, overlaps, difficult, iou_threshold, descending=lambda s: np.argsort(s)[::-1])


def tp_fp_with_strict_threshold(scores, images, overlaps, difficult, iou_threshold=0.5):
    """A hit needs IoU > threshold (the devkit: >=)."""
    return _tp_fp(scores, images, overlaps, difficult, iou_threshold, over=np.greater)


def tp_fp_objects_taken_across_images(scores, images, overlaps, difficult, iou_threshold=0.5):
    """One 'taken' flag per object number for all images: image 0's object 0 taken blocks
    image 1's object 0."""
    return _tp_fp(scores, images, overlaps, difficult, iou_threshold, taken_per_image=False)
