"""Wrong matching (replacements for minissd.matching._match_one, same arguments)."""

import numpy as np


def match_without_forced_best_prior(ious, gt_labels, threshold, best_prior, best_gt, labels_out):
    """Only the threshold rule: a ground truth whose best prior is below 0.5 gets no positive."""
    best_gt[:] = ious.argmax(axis=0)
    labels_out[:] = np.where(ious.max(axis=0) >= threshold, gt_labels[best_gt], 0)


def match_with_strict_threshold(ious, gt_labels, threshold, best_prior, best_gt, labels_out):
    """Both steps, but IoU > threshold instead of >= (a prior at exactly 0.5 is lost)."""
    best_gt[:] = ious.argmax(axis=0)
    labels_out[:] = np.where(ious.max(axis=0) > threshold, gt_labels[best_gt], 0)
    for g in range(len(gt_labels)):
        best_gt[best_prior[g]] = g
        labels_out[best_prior[g]] = gt_labels[g]
