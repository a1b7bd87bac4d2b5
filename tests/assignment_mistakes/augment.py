"""Wrong augmentations (replacements for minissd.data.augment.photometric_distort, expand and
random_iou_crop, same arguments), each written in plain NumPy as a student might."""

import math

import numpy as np

from minissd.data.augment import CROP_MIN_IOUS, MEAN, _hue_matrix, _iou_with_rect, _saturation_matrix, crop_accepts


def _photometric(image, rng, brightness, contrast, saturation, hue, p, brightness_last=False,
                 hue_scale=1.0):
    """The five draws in the docstring's order, the steps applied one after the other."""
    x = image.astype(np.float64)
    delta = rng.uniform(-brightness, brightness) if rng.random() < p else 0.0
    if not brightness_last:
        x = x + delta
    alpha = rng.uniform(*contrast) if rng.random() < p else 1.0
    contrast_first = rng.random() < 0.5
    if contrast_first:
        x = x * alpha
    if rng.random() < p:
        x = x @ _saturation_matrix(rng.uniform(*saturation)).T
    if rng.random() < p:
        x = x @ _hue_matrix(rng.uniform(-hue, hue) * hue_scale).T  # mistake 2: another unit
    if not contrast_first:
        x = x * alpha
    if brightness_last:  # mistake 1: the offset added after contrast, saturation and hue
        x = x + delta
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def photometric_brightness_last(image, boxes, labels, rng, brightness=32.0, contrast=(0.5, 1.5),
                                saturation=(0.5, 1.5), hue=18.0, p=0.5):
    """The steps in the wrong order: brightness drawn first but added last, after the contrast
    has scaled the pixels (alpha x + delta instead of alpha (x + delta)). (Contrast before or
    after saturation and hue is no such mistake here: without clipping between the steps, the
    three are linear maps that commute.)"""
    return _photometric(image, rng, brightness, contrast, saturation, hue, p, brightness_last=True), boxes, labels


def photometric_hue_as_a_fraction_of_a_turn(image, boxes, labels, rng, brightness=32.0, contrast=(0.5, 1.5),
                                            saturation=(0.5, 1.5), hue=18.0, p=0.5):
    """The hue angle drawn in degrees but passed on as a fraction of a turn (/ 360): no visible shift."""
    return _photometric(image, rng, brightness, contrast, saturation, hue, p, hue_scale=1 / 360), boxes, labels


def _expand(image, boxes, rng, max_ratio, fill, float_offset=False, move_boxes=True):
    H, W, C = image.shape
    ratio = rng.uniform(1.0, max_ratio)
    H2, W2 = int(round(H * ratio)), int(round(W * ratio))
    if float_offset:  # mistake 1: a real offset, truncated for the paste only
        left, top = rng.uniform(0, W2 - W), rng.uniform(0, H2 - H)
    else:
        left, top = int(rng.integers(0, W2 - W + 1)), int(rng.integers(0, H2 - H + 1))
    canvas = np.empty((H2, W2, C), image.dtype)
    canvas[:] = np.round(np.asarray(fill)).astype(image.dtype)
    canvas[int(top):int(top) + H, int(left):int(left) + W] = image
    if move_boxes:
        boxes = ((boxes * [W, H, W, H] + [left, top, left, top]) / [W2, H2, W2, H2]).astype(np.float32)
    return canvas, boxes  # mistake 2: boxes left where they were when not moved


def expand_with_a_float_offset(image, boxes, labels, rng, max_ratio=4.0, fill=MEAN, p=0.5):
    """The image's position drawn as a real number (uniform): boxes moved by it, the paste truncated."""
    if rng.random() >= p:
        return image, boxes, labels
    canvas, boxes = _expand(image, boxes, rng, max_ratio, fill, float_offset=True)
    return canvas, boxes, labels


def expand_without_moving_the_boxes(image, boxes, labels, rng, max_ratio=4.0, fill=MEAN, p=0.5):
    """The canvas is right, the boxes are not moved: they still read the old fractions."""
    if rng.random() >= p:
        return image, boxes, labels
    canvas, boxes = _expand(image, boxes, rng, max_ratio, fill, move_boxes=False)
    return canvas, boxes, labels


def crop_keeping_boxes_that_overlap(image, boxes, labels, rng, min_ious=CROP_MIN_IOUS, min_scale=0.3,
                                    aspect_range=(0.5, 2.0), trials=50, rule="any"):
    """Patches drawn and accepted as the docstring says, but the boxes kept are those that overlap
    the patch at all, not those whose centre lies inside it."""
    min_iou = min_ious[int(rng.integers(len(min_ious)))]
    if min_iou is None:
        return image, boxes, labels
    H, W, _ = image.shape
    w = rng.uniform(min_scale * W, W, size=trials)
    h = rng.uniform(min_scale * H, H, size=trials)
    left = rng.uniform(0, 1, size=trials) * (W - w)
    top = rng.uniform(0, 1, size=trials) * (H - h)
    px = boxes.astype(np.float64) * [W, H, W, H]
    cx, cy = (px[:, 0] + px[:, 2]) / 2, (px[:, 1] + px[:, 3]) / 2
    for t in range(trials):
        x0, y0 = int(left[t]), int(top[t])
        x1, y1 = max(int(left[t] + w[t]), x0 + 1), max(int(top[t] + h[t]), y0 + 1)
        if not aspect_range[0] <= (y1 - y0) / (x1 - x0) <= aspect_range[1]:
            continue
        inside = (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)
        if len(boxes):
            if not inside.any():
                continue
            rect = np.array([[x0, y0, x1, y1]], np.float64)
            if min_iou > -math.inf and not crop_accepts(_iou_with_rect(px, rect), inside[None], min_iou, rule)[0]:
                continue
        keep = (px[:, 0] < x1) & (px[:, 2] > x0) & (px[:, 1] < y1) & (px[:, 3] > y0)  # the mistake
        kept = np.clip(px[keep], [x0, y0, x0, y0], [x1, y1, x1, y1]) - [x0, y0, x0, y0]
        kept /= [x1 - x0, y1 - y0, x1 - x0, y1 - y0]
        return image[y0:y1, x0:x1], kept.astype(np.float32), labels[keep]
    return image, boxes, labels
