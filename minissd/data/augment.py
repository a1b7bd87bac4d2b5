"""SSD's data augmentation (Liu et al. 2016, sections 2.2 and 3.6), one small function per step.

Every step has the same signature, so that steps compose::

    image, boxes, labels = step(image, boxes, labels, rng)

- image: (H, W, 3) uint8 RGB (``normalize``, the last step, turns it into (3, S, S) float32)
- boxes: (G, 4) float32, corner form (xmin, ymin, xmax, ymax) normalised to [0, 1]
- labels: (G,) int64, or any array whose first axis follows the boxes (the loader passes
  (G, 2): label and difficult flag, so that both survive a crop)
- rng: a numpy Generator; every random choice comes from it, so a seed replays an epoch

The training pipeline is the paper's (parameters from the authors' Caffe code and
ssd.pytorch): photometric distortion, zoom out ("expand", up to 4x, the paper's fix for small
objects), a random IoU crop (zoom in), horizontal flip, resize, normalise. Evaluation only
resizes and normalises. ``AUGMENTATIONS`` names the training pipelines ("ssd", "light",
"none") for ``python -m minissd.train --augment``. docs/data-and-augmentation.md explains each
step and the decisions.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
from PIL import Image

# The ImageNet mean and standard deviation, RGB, on the 0-255 scale. SSD's Caffe models subtract
# the VGG mean (104, 117, 123 in BGR) and do not divide; minissd trains from scratch, where
# inputs of unit scale train better, so the default also divides by the std. Pass std=(1, 1, 1)
# for the paper's plain mean subtraction.
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


class Compose:
    """Apply steps in order: ``Compose([f, g])(image, boxes, labels, rng)`` is g(f(...))."""

    def __init__(self, steps):
        self.steps = list(steps)

    def __call__(self, image, boxes, labels, rng):
        for step in self.steps:
            image, boxes, labels = step(image, boxes, labels, rng)
        return image, boxes, labels

    def __repr__(self):
        names = [getattr(s, "func", s).__name__ for s in self.steps]
        return f"Compose({', '.join(names)})"


# ---- photometric distortion ---------------------------------------------------------------------
#
# The reference (ssd.pytorch's PhotometricDistort, after the Caffe DistortImage) applies, each
# with probability 1/2: brightness (+delta, |delta| <= 32), then either contrast (x alpha,
# alpha in [0.5, 1.5]) before saturation (x [0.5, 1.5]) and hue (+-18 degrees), or after them.
# Every one of these is an affine map of a pixel's RGB value, so they compose into a single
# 3x3 matrix plus an offset, applied to the image in one matrix product instead of five passes
# (and no RGB->HSV round trip): saturation blends each pixel with its grey (luma) value, and
# the hue shift rotates the pixel's chroma about the grey axis, in the YIQ colour space.

_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                        [0.596, -0.274, -0.322],
                        [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def _hue_matrix(degrees):
    """(3, 3): rotate chroma (I, Q) by ``degrees`` about the luma axis Y, in RGB terms."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    return _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ


def _saturation_matrix(factor):
    """(3, 3): grey + factor * (pixel - grey), grey being the luma of the pixel."""
    grey = np.tile(_RGB_TO_YIQ[0], (3, 1))  # each row computes the luma
    return factor * np.eye(3) + (1 - factor) * grey


def photometric_distort(image, boxes, labels, rng, brightness=32.0, contrast=(0.5, 1.5),
                        saturation=(0.5, 1.5), hue=18.0, p=0.5):
    """Random brightness, contrast, saturation and hue, in the reference's random order.

    - image: (H, W, 3) uint8 or float in [0, 255] -> (H, W, 3) uint8, clipped to [0, 255]
    - brightness: max |delta| added (32 of 255); contrast/saturation: factor ranges; hue: max
      |rotation| in degrees; p: probability of each of the four
    Boxes and labels pass through unchanged.

    The draws from ``rng``, in this order (a draw in brackets only when its step is on):
    ``random() < p`` for brightness [``uniform(-brightness, brightness)``], ``random() < p``
    for contrast [``uniform(*contrast)``], ``random() < 0.5`` for contrast first,
    ``random() < p`` for saturation [``uniform(*saturation)``], ``random() < p`` for hue
    [``uniform(-hue, hue)``, degrees, for ``_hue_matrix``]. The steps then apply in the order
    brightness, contrast (if first), saturation, hue, contrast (if not first), on the values
    as they are (no clipping between steps), and the result is rounded and clipped once.
    """
    # [assignment photometric_distort] Build each random colour step as an affine map of RGB (matrix M, offset b), chain them in the reference's order, then apply x @ M.T + b once and clip.
    M, b = np.eye(3), np.zeros(3)  # the map so far: x -> M x + b

    def then(A, c=0.0):  # append the step x -> A x + c
        nonlocal M, b
        M, b = A @ M, A @ b + c

    if rng.random() < p:
        then(np.eye(3), rng.uniform(-brightness, brightness))
    alpha = rng.uniform(*contrast) if rng.random() < p else 1.0
    contrast_first = rng.random() < 0.5
    if contrast_first:
        then(alpha * np.eye(3))
    if rng.random() < p:
        then(_saturation_matrix(rng.uniform(*saturation)))
    if rng.random() < p:
        then(_hue_matrix(rng.uniform(-hue, hue)))
    if not contrast_first:
        then(alpha * np.eye(3))
    if np.allclose(M, np.eye(3)) and not b.any() and image.dtype == np.uint8:
        return image, boxes, labels  # nothing drawn: keep the exact pixels
    H, W, _ = image.shape
    x = image.reshape(-1, 3).astype(np.float32)  # (H*W, 3)
    y = x @ M.T.astype(np.float32) + b.astype(np.float32)  # (H*W, 3), one BLAS call
    out = np.clip(y, 0, 255, out=y).round(out=y).astype(np.uint8).reshape(H, W, 3)
    return out, boxes, labels
    # [/assignment]


# ---- zoom out: expand ---------------------------------------------------------------------------

def expand(image, boxes, labels, rng, max_ratio=4.0, fill=MEAN, p=0.5):
    """Zoom out: put the image somewhere on a canvas up to ``max_ratio`` times larger per side,
    filled with the mean colour (the paper's "expansion" trick, which creates small objects).

    - image: (H, W, 3) -> (H', W', 3) with H' = round(ratio * H), same dtype
    - boxes: keep covering the same pixels: new = (old * (W, H) + (left, top)) / (W', H')

    The draws from ``rng``, in this order: ``random() >= p`` returns the input unchanged;
    ``ratio = uniform(1, max_ratio)``, ``H' = round(ratio * H)``, ``W' = round(ratio * W)``;
    ``left = integers(0, W' - W + 1)``, ``top = integers(0, H' - H + 1)``: the image's top-left
    pixel lands at (left, top) of the canvas.
    """
    if rng.random() >= p:
        return image, boxes, labels
    # [assignment expand] Draw a ratio in [1, max_ratio], place the image at a random integer offset on a mean-filled canvas, then move the boxes with it.
    H, W, C = image.shape
    ratio = rng.uniform(1.0, max_ratio)
    H2, W2 = int(round(H * ratio)), int(round(W * ratio))
    left, top = int(rng.integers(0, W2 - W + 1)), int(rng.integers(0, H2 - H + 1))
    canvas = np.empty((H2, W2, C), image.dtype)
    # fill one row with the colour, then copy that row down: whole-row copies are ~50x faster
    # than broadcasting a 3-vector over (H', W', 3), whose inner loop is only 3 long
    canvas[0] = np.asarray(fill, dtype=np.float32).round().astype(image.dtype)
    canvas[1:] = canvas[0]
    canvas[top:top + H, left:left + W] = image
    scale = np.array([W, H, W, H], np.float32)
    offset = np.array([left, top, left, top], np.float32)
    new_size = np.array([W2, H2, W2, H2], np.float32)
    boxes = ((boxes * scale + offset) / new_size).astype(np.float32)  # (G, 4), same pixels
    return canvas, boxes, labels
    # [/assignment]


# ---- zoom in: the random IoU crop ---------------------------------------------------------------

# The paper's sampling options (section 2.2): the whole image, a patch whose IoU with an object
# is at least 0.1, 0.3, 0.5, 0.7 or 0.9, or any patch. None = the whole image; -inf = any patch.
CROP_MIN_IOUS = (None, 0.1, 0.3, 0.5, 0.7, 0.9, -math.inf)


def _iou_with_rect(boxes, rects):
    """(G, 4) boxes, (T, 4) rects, both corner form in the same units -> (T, G) IoU."""
    ix0 = np.maximum(rects[:, None, 0], boxes[None, :, 0])
    iy0 = np.maximum(rects[:, None, 1], boxes[None, :, 1])
    ix1 = np.minimum(rects[:, None, 2], boxes[None, :, 2])
    iy1 = np.minimum(rects[:, None, 3], boxes[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)  # (T, G)
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (G,)
    area_r = (rects[:, 2] - rects[:, 0]) * (rects[:, 3] - rects[:, 1])  # (T,)
    return inter / (area_r[:, None] + area_b[None, :] - inter)


# When does a patch's overlap with the objects let it through? Implementations disagree
# (``python -m minissd.train --crop``, docs/switches.md), for a patch and a drawn min IoU m:
# - "any": some object, centre inside the patch or not, has IoU >= m (the authors' Caffe,
#   src/caffe/util/sampler.cpp SatisfySampleConstraint: the first object that meets it wins);
# - "best": the best IoU among the objects whose centre is inside the patch is >= m
#   (torchvision's RandomIoUCrop: it keeps those objects first, then `ious.max() < m` rejects);
# - "all": every object has IoU >= m (mmdetection's MinIoURandomCrop: `overlaps.min() < m`);
# - "never-reject": the IoU is never tested (ssd.pytorch utils/augmentations.py
#   RandomSampleCrop: its test `overlap.min() < min_iou and max_iou < overlap.max()` needs
#   max_iou < some IoU, but every one of its options leaves max_iou at +inf, so the test is
#   false for every patch, amdegroot/ssd.pytorch issue #68; only the aspect and the
#   centre-inside checks remain).
# Every rule also needs one object centre inside the patch (all four implementations do).
CROP_RULES = ("any", "best", "all", "never-reject")


def crop_accepts(ious, inside, min_iou, rule="any"):
    """Which candidate patches meet the drawn min IoU under ``rule`` (see ``CROP_RULES``).

    - ious: (T, G) IoU of each of T patches with each of G boxes
    - inside: (T, G) bool, box g's centre strictly inside patch t
    - min_iou: the drawn option, a number in (0, 1]
    - returns (T,) bool
    """
    meets = ious >= min_iou  # (T, G)
    if rule == "any":
        return meets.any(axis=1)
    if rule == "best":  # max over the boxes inside >= m  <=>  some box inside meets it
        return (meets & inside).any(axis=1)
    if rule == "all":
        return meets.all(axis=1)
    if rule == "never-reject":
        return np.ones(len(ious), bool)
    raise ValueError(f"crop rule: unknown {rule!r}, choose one of {', '.join(CROP_RULES)}")


def random_iou_crop(image, boxes, labels, rng, min_ious=CROP_MIN_IOUS, min_scale=0.3,
                    aspect_range=(0.5, 2.0), trials=50, rule="any"):
    """Zoom in: crop a random patch that overlaps some object by at least a random min IoU.

    - image: (H, W, 3) -> (h, w, 3), a view of the input
    - boxes: kept when their centre lies inside the patch, clipped to it, renormalised
    - labels: filtered with their boxes
    - rule: which objects must meet the min IoU, one of ``CROP_RULES`` (``crop_accepts``)

    One option is drawn from ``min_ious``; then up to ``trials`` patches are drawn with sides in
    [min_scale, 1] of the image's and aspect h/w in ``aspect_range`` (ssd.pytorch's numbers).
    A patch is accepted when ``crop_accepts`` says so for the option (the default "any": some
    object has IoU >= the option with it, the Caffe code's rule: any object, not all) and at
    least one box centre falls inside. If no trial succeeds, the image is returned unchanged.
    The rule changes only which patch is accepted: the random draws are the same for every rule.

    The draws from ``rng``, in this order: the option ``min_ious[integers(len(min_ious))]``
    (None: return the input); then, each of ``size=trials``: widths ``uniform(min_scale * W,
    W)``, heights ``uniform(min_scale * H, H)``, then ``uniform(0, 1)`` for left (times W - w)
    and for top (times H - h). Patch t is the integer rectangle ``int(left), int(top),
    int(left + w), int(top + h)`` (at least one pixel wide and high); the first acceptable
    patch is taken. A box's centre is inside when strictly between the patch's edges.
    """
    if rule not in CROP_RULES:
        raise ValueError(f"random_iou_crop: unknown rule {rule!r}, choose one of {', '.join(CROP_RULES)}")
    # [assignment random_iou_crop] Draw many candidate patches at once, score them by their IoU with the boxes, take the first that satisfies the drawn min IoU under `rule` (crop_accepts) and holds a box centre; keep, clip and renormalise the boxes whose centres are inside.
    min_iou = min_ious[int(rng.integers(len(min_ious)))]
    if min_iou is None:
        return image, boxes, labels
    H, W, _ = image.shape
    # all trials drawn at once: sides, then positions (integers, so the crop is a plain slice)
    w = rng.uniform(min_scale * W, W, size=trials)
    h = rng.uniform(min_scale * H, H, size=trials)
    left = rng.uniform(0, 1, size=trials) * (W - w)
    top = rng.uniform(0, 1, size=trials) * (H - h)
    rects = np.stack([left, top, left + w, top + h], 1).astype(np.int64)  # (T, 4) pixels
    rects[:, 2:] = np.maximum(rects[:, 2:], rects[:, :2] + 1)  # at least one pixel
    aspect = (rects[:, 3] - rects[:, 1]) / (rects[:, 2] - rects[:, 0])  # (T,)
    ok = (aspect >= aspect_range[0]) & (aspect <= aspect_range[1])  # (T,)

    px = boxes.astype(np.float64) * np.array([W, H, W, H])  # (G, 4) in pixels
    centres = (px[:, :2] + px[:, 2:]) / 2  # (G, 2)
    # strictly inside, as in ssd.pytorch: a centre on the patch's edge does not count
    inside = ((centres[None, :, 0] > rects[:, None, 0]) & (centres[None, :, 0] < rects[:, None, 2]) &
              (centres[None, :, 1] > rects[:, None, 1]) & (centres[None, :, 1] < rects[:, None, 3]))  # (T, G)
    if len(boxes):
        ok &= inside.any(axis=1)
        if min_iou > -math.inf:
            ious = _iou_with_rect(px, rects.astype(np.float64))  # (T, G)
            ok &= crop_accepts(ious, inside, min_iou, rule)
    found = np.flatnonzero(ok)
    if len(found) == 0:
        return image, boxes, labels
    t = found[0]
    x0, y0, x1, y1 = rects[t]
    keep = inside[t]  # (G,) bool
    kept = px[keep]  # (K, 4)
    kept = np.clip(kept, [x0, y0, x0, y0], [x1, y1, x1, y1]) - [x0, y0, x0, y0]  # clip, shift
    kept /= [x1 - x0, y1 - y0, x1 - x0, y1 - y0]  # renormalise to the patch
    return image[y0:y1, x0:x1], kept.astype(np.float32), labels[keep]
    # [/assignment]


# ---- flip, resize, normalise --------------------------------------------------------------------

def hflip(image, boxes):
    """Mirror left-right: column x goes to W - x, so a box (x0, x1) goes to (1 - x1, 1 - x0)."""
    boxes = boxes.copy()
    boxes[:, [0, 2]] = 1.0 - boxes[:, [2, 0]]
    return image[:, ::-1], boxes


def random_flip(image, boxes, labels, rng, p=0.5):
    """Horizontal flip with probability p (the image is returned as a view)."""
    if rng.random() < p:
        image, boxes = hflip(image, boxes)
    return image, boxes, labels


def resize(image, boxes, labels, rng=None, size=300):
    """Resize to (size, size), bilinear (Pillow, in C); normalised boxes need no change.

    - image: (H, W, 3) uint8 -> (size, size, 3) uint8; ``size`` may be an int or (height, width)
    Squashing to a square without keeping the aspect ratio is what SSD does (its warp resize).
    """
    sh, sw = (size, size) if np.isscalar(size) else size
    if image.shape[:2] == (sh, sw):
        return image, boxes, labels
    pil = Image.fromarray(np.ascontiguousarray(image))
    # reducing_gap: shrink by an integer factor with a box filter first, then resample; much
    # faster on a 4x expanded image and visually the same
    return np.array(pil.resize((sw, sh), Image.BILINEAR, reducing_gap=2.0)), boxes, labels


def normalize(image, boxes, labels, rng=None, mean=MEAN, std=STD):
    """(H, W, 3) uint8 -> (3, H, W) float32, (pixel - mean) / std per channel."""
    mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
    inv_std = (1.0 / np.asarray(std, np.float32)).reshape(3, 1, 1)
    chw = image.transpose(2, 0, 1).astype(np.float32)  # (3, H, W)
    chw -= mean
    chw *= inv_std
    return chw, boxes, labels


def train_transform(size=300, mean=MEAN, std=STD, max_expand=4.0, crop="any"):
    """The paper's training pipeline: distort, zoom out, zoom in, flip, resize, normalise.

    - crop: the IoU crop's acceptance rule, one of ``CROP_RULES`` (default "any", Caffe's)
    """
    if crop not in CROP_RULES:
        raise ValueError(f"train_transform: unknown crop rule {crop!r}, choose one of {', '.join(CROP_RULES)}")
    return Compose([
        photometric_distort,
        partial(expand, max_ratio=max_expand, fill=mean),
        partial(random_iou_crop, rule=crop),
        partial(resize, size=size),
        random_flip,  # after the resize (the paper flips before): the same result, and
                      # mirroring a small image is cheaper than mirroring a 4x expanded one
        partial(normalize, mean=mean, std=std),
    ])


def light_transform(size=300, mean=MEAN, std=STD):
    """Colour distortion and flip only: the same objects at the same sizes, recoloured."""
    return Compose([photometric_distort, partial(resize, size=size), random_flip,
                    partial(normalize, mean=mean, std=std)])


def eval_transform(size=300, mean=MEAN, std=STD):
    """Evaluation: no randomness, only resize and normalise."""
    return Compose([partial(resize, size=size), partial(normalize, mean=mean, std=std)])


# The training augmentations by name (``python -m minissd.train --augment NAME``): each builder
# takes (size, mean, std, max_expand, crop) and returns one transform f(image, boxes, labels, rng).
AUGMENTATIONS = {
    "ssd": lambda size, mean, std, max_expand, crop: train_transform(size, mean, std, max_expand, crop),
    "light": lambda size, mean, std, max_expand, crop: light_transform(size, mean, std),
    "none": lambda size, mean, std, max_expand, crop: eval_transform(size, mean, std),
}


def augmentation(name, size, mean=MEAN, std=STD, max_expand=4.0, crop="any"):
    """The training transform called ``name`` in ``AUGMENTATIONS``, for ``size`` x ``size`` inputs.

    - name: "ssd" (the paper's pipeline, zoom-out up to ``max_expand``, IoU crops accepted by
      the rule ``crop``), "light" (colour distortion + flip), "none" (resize + normalise only)
    - raises ValueError naming the choices for another name or crop rule
    """
    if name not in AUGMENTATIONS:
        raise ValueError(f"augmentation: unknown name {name!r}, choose one of {sorted(AUGMENTATIONS)}")
    if crop not in CROP_RULES:
        raise ValueError(f"augmentation: unknown crop rule {crop!r}, choose one of {', '.join(CROP_RULES)}")
    return AUGMENTATIONS[name](size, mean, std, max_expand, crop)
