"""Wrong IoU, encoding, VOC boxes and default boxes (replacements for minissd.boxes._iou_matrix,
_encode_rows, _decode_rows, minissd.data.voc.voc_box_to_normalised, minissd.priors.default_boxes)."""

import math

import numpy as np

from minissd import boxes
from minissd import priors as priors_module
from minissd.priors import SSD300_VOC

_encode_rows = boxes._encode_rows  # the reference, kept before the patch replaces it


def iou_matrix_without_clamp(a, bt, out):
    """IoU whose overlap is not clamped at 0: two boxes apart in x and in y overlap by
    (negative) x (negative) > 0, and boxes apart in one direction get a negative IoU."""
    iw = np.minimum(a[:, 2:3], bt[2]) - np.maximum(a[:, 0:1], bt[0])  # (N, M), may be < 0
    ih = np.minimum(a[:, 3:4], bt[3]) - np.maximum(a[:, 1:2], bt[1])
    inter = iw * ih  # the mistake: no max(., 0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (bt[2] - bt[0]) * (bt[3] - bt[1])
    out[:] = inter / (area_a[:, None] + area_b[None, :] - inter)


def encode_rows_without_variances(matched, priors, v0, v1, out):
    """Encoding that forgets the variances (0.1, 0.2): offsets 10x and 5x too small."""
    _encode_rows(matched, priors, 1.0, 1.0, out)


def iou_matrix_clamping_one_axis_only(a, bt, out):
    """The overlap width is clamped at 0, the height is not: boxes apart vertically but
    overlapping horizontally get a negative IoU."""
    iw = np.maximum(np.minimum(a[:, 2:3], bt[2]) - np.maximum(a[:, 0:1], bt[0]), 0)  # (N, M)
    ih = np.minimum(a[:, 3:4], bt[3]) - np.maximum(a[:, 1:2], bt[1])  # the mistake: no max(., 0)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (bt[2] - bt[0]) * (bt[3] - bt[1])
    union = area_a[:, None] + area_b[None, :] - inter
    out[:] = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)


def iou_matrix_union_without_subtracting_overlap(a, bt, out):
    """Union = area a + area b, the overlap counted twice: a box with itself has IoU 1/2."""
    iw = np.maximum(np.minimum(a[:, 2:3], bt[2]) - np.maximum(a[:, 0:1], bt[0]), 0)
    ih = np.maximum(np.minimum(a[:, 3:4], bt[3]) - np.maximum(a[:, 1:2], bt[1]), 0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (bt[2] - bt[0]) * (bt[3] - bt[1])
    union = area_a[:, None] + area_b[None, :]  # the mistake: - iw * ih forgotten
    out[:] = np.where(union > 0, iw * ih / np.where(union > 0, union, 1), 0)


def encode_rows_log_without_variance(matched, priors, v0, v1, out):
    """Centre offsets over v0 * prior size, but the log size ratios not divided by v1."""
    cx, cy = (matched[:, 0] + matched[:, 2]) / 2, (matched[:, 1] + matched[:, 3]) / 2
    w, h = matched[:, 2] - matched[:, 0], matched[:, 3] - matched[:, 1]
    out[:, 0] = (cx - priors[:, 0]) / (v0 * priors[:, 2])
    out[:, 1] = (cy - priors[:, 1]) / (v0 * priors[:, 3])
    out[:, 2] = np.log(w / priors[:, 2])  # the mistake: / v1 forgotten
    out[:, 3] = np.log(h / priors[:, 3])


def encode_rows_width_height_swapped(matched, priors, v0, v1, out):
    """The prior's width and height swapped: x offsets over the prior's height, and so on."""
    cx, cy = (matched[:, 0] + matched[:, 2]) / 2, (matched[:, 1] + matched[:, 3]) / 2
    w, h = matched[:, 2] - matched[:, 0], matched[:, 3] - matched[:, 1]
    pw, ph = priors[:, 3], priors[:, 2]  # the mistake: columns 2 and 3 read the wrong way round
    out[:, 0] = (cx - priors[:, 0]) / (v0 * pw)
    out[:, 1] = (cy - priors[:, 1]) / (v0 * ph)
    out[:, 2] = np.log(w / pw) / v1
    out[:, 3] = np.log(h / ph) / v1


def decode_rows_exp_of_the_wrong_term(loc, priors, v0, v1, out):
    """Size = prior size * exp(t) * v1 instead of prior size * exp(v1 * t)."""
    cx = priors[:, 0] + loc[:, 0] * v0 * priors[:, 2]
    cy = priors[:, 1] + loc[:, 1] * v0 * priors[:, 3]
    w = priors[:, 2] * np.exp(loc[:, 2]) * v1  # the mistake
    h = priors[:, 3] * np.exp(loc[:, 3]) * v1
    out[:] = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def voc_box_subtracting_1_from_both_corners(boxes_px, width, height):
    """1-based pixels shifted to 0-based at both corners: every box loses its last column and row."""
    b = np.asarray(boxes_px, dtype=np.float64).reshape(-1, 4)
    return ((b - 1.0) / [width, height, width, height]).astype(np.float32)  # the mistake: xmax - 1 too


# ---- default boxes (replacements for minissd.priors.default_boxes) -----------------------------

def _default_boxes(config, extra, half):
    boxes = []
    for k, f in enumerate(config.feature_maps):
        s_k = config.min_sizes[k] / config.image_size
        s_next = config.max_sizes[k] / config.image_size
        for i in range(f):
            for j in range(f):
                cx = (j + half) * config.steps[k] / config.image_size
                cy = (i + half) * config.steps[k] / config.image_size
                boxes.append((cx, cy, s_k, s_k))
                boxes.append((cx, cy, extra(s_k, s_next), extra(s_k, s_next)))
                for a in config.aspect_ratios[k]:
                    boxes.append((cx, cy, s_k * math.sqrt(a), s_k / math.sqrt(a)))
                    boxes.append((cx, cy, s_k / math.sqrt(a), s_k * math.sqrt(a)))
    priors = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    if config.clip == "center":
        priors = np.clip(priors, 0.0, 1.0)
    elif config.clip == "corner":
        priors = priors_module._clip_corners(priors)
    return priors.astype(np.float32)


def default_boxes_with_sqrt_sk_sk_plus_1(config=SSD300_VOC):
    """The extra square read off a garbled formula: sqrt(s_k * s_k + 1) instead of sqrt(s_k s_{k+1})."""
    return _default_boxes(config, lambda s, t: math.sqrt(s * s + 1), 0.5)


def default_boxes_centres_without_half(config=SSD300_VOC):
    """Cell centres at j * step instead of (j + 0.5) * step: every box shifted half a cell up-left."""
    return _default_boxes(config, lambda s, t: math.sqrt(s * t), 0.0)
