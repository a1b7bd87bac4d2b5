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


def match_first_above_threshold(ious, gt_labels, threshold, best_prior, best_gt, labels_out):
    """Each prior takes the FIRST ground truth over the threshold, not the one it overlaps most
    (the best one only when none is over it); then the forced step."""
    G, P = ious.shape
    best_gt[:] = ious.argmax(axis=0)
    labels_out[:] = 0
    for p in range(P):
        for g in range(G):
            if ious[g, p] >= threshold:  # the mistake: stops at the first one over 0.5
                best_gt[p] = g
                labels_out[p] = gt_labels[g]
                break
    for g in range(G):
        best_gt[best_prior[g]] = g
        labels_out[best_prior[g]] = gt_labels[g]


def match_forced_step_before_threshold_step(ious, gt_labels, threshold, best_prior, best_gt, labels_out):
    """The two steps in the wrong order: the threshold step then overwrites the forced priors
    (a small object's best prior under 0.5 goes back to background)."""
    best_gt[:] = 0
    labels_out[:] = 0
    for g in range(len(gt_labels)):
        best_gt[best_prior[g]] = g
        labels_out[best_prior[g]] = gt_labels[g]
    best_gt[:] = ious.argmax(axis=0)  # the mistake: after the forced step, not before
    labels_out[:] = np.where(ious.max(axis=0) >= threshold, gt_labels[best_gt], 0)
