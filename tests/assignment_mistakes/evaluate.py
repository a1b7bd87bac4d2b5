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
