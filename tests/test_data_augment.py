"""SSD's augmentation: properties that must hold for every random draw, and small worked cases.

Many tests use a "coordinate image": pixel (y, x) stores x in channel 0 and y in channel 1, so
that after a crop or an expand the output itself tells where every pixel came from.
"""

import math
from pathlib import Path

import numpy as np
import pytest

from minissd.data import augment as A


def coordinate_image(h, w):
    """(h, w, 3) uint8 with image[y, x] = (x, y, 77); needs h, w <= 255 (255 = expand fill tell)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w)[None, :]
    img[..., 1] = np.arange(h)[:, None]
    img[..., 2] = 77
    return img


def random_boxes(rng, n):
    """(n, 4) float32 valid corner boxes inside [0, 1]."""
    a, b = rng.uniform(0, 1, (n, 2)), rng.uniform(0, 1, (n, 2))
    lo, hi = np.minimum(a, b), np.maximum(a, b) + 0.02
    return np.clip(np.concatenate([lo, hi], 1), 0, 1).astype(np.float32)


REFERENCE = Path(__file__).parent / "fixtures" / "augment_reference.npz"  # tests/fixtures/make_fixtures.py
SEEDS = 24


def reference():
    """The stored inputs and the reference's outputs for seeds 0..23 (make_fixtures.py)."""
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


def seeds_that_differ(run, expected, close):
    """The seeds whose output differs from the stored one: run(rng) -> outputs, compared by close."""
    wrong = []
    for seed in range(SEEDS):
        rng = np.random.default_rng(seed)
        got = run(rng) + (rng.random(),)  # the generator's next number: the draws made
        if not all(close(g, e) for g, e in zip(got, expected(seed))):
            wrong.append(seed)
    return wrong


def same(a, b, atol=1e-5):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and np.allclose(a.astype(np.float64), b.astype(np.float64), atol=atol)


def assert_valid(boxes):
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert ((boxes >= 0) & (boxes <= 1)).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()


# ---- the pipeline as a whole ------------------------------------------------------------------------

def test_train_transform_outputs_and_box_validity(rng):
    tf = A.train_transform(64)
    for _ in range(60):
        image = rng.integers(0, 256, (int(rng.integers(40, 90)), int(rng.integers(40, 90)), 3), dtype=np.uint8)
        boxes = random_boxes(rng, int(rng.integers(0, 5)))
        labels = np.arange(1, len(boxes) + 1, dtype=np.int64)
        out, b, l = tf(image, boxes, labels, rng)
        assert out.shape == (3, 64, 64) and out.dtype == np.float32
        assert_valid(b)
        assert len(b) == len(l) and set(l.tolist()) <= set(labels.tolist())


def test_labels_follow_their_boxes(rng):
    """Paint box k in a colour that encodes k; after expand, crop, flip and resize, the centre
    of every output box still shows the colour of its own label."""
    geometric = A.Compose([A.expand, A.random_iou_crop, A.random_flip])
    for _ in range(40):
        H, W = 80, 100
        image = np.zeros((H, W, 3), np.uint8)
        # non-overlapping boxes: one row of G cells, each filled with colour 40 * k
        G = int(rng.integers(1, 5))
        boxes = np.array([[k / G + 0.01, 0.2, (k + 1) / G - 0.01, 0.8] for k in range(G)], np.float32)
        labels = np.arange(1, G + 1, dtype=np.int64)
        for k, (x0, y0, x1, y1) in enumerate(boxes * [W, H, W, H]):
            image[int(math.ceil(y0)):int(y1), int(math.ceil(x0)):int(x1)] = 40 * (k + 1)
        out, b, l = geometric(image, boxes, labels, rng)
        assert_valid(b)
        h, w = out.shape[:2]
        for (x0, y0, x1, y1), lab in zip(b * [w, h, w, h], l):
            cy, cx = int((y0 + y1) / 2), int((x0 + x1) / 2)
            assert out[cy, cx, 0] == 40 * lab


def test_same_seed_same_result():
    image = coordinate_image(50, 60)
    boxes, labels = np.array([[0.1, 0.2, 0.5, 0.9]], np.float32), np.array([3])
    tf = A.train_transform(32)
    a = tf(image, boxes, labels, np.random.default_rng(7))
    b = tf(image, boxes, labels, np.random.default_rng(7))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_eval_transform_is_deterministic_and_keeps_boxes():
    image = coordinate_image(50, 60)
    boxes, labels = np.array([[0.1, 0.2, 0.5, 0.9]], np.float32), np.array([3])
    out, b, l = A.eval_transform(32)(image, boxes, labels, None)
    assert out.shape == (3, 32, 32)
    np.testing.assert_array_equal(b, boxes)
    np.testing.assert_array_equal(l, labels)


# ---- flip ---------------------------------------------------------------------------------------------

def test_flip_twice_is_identity(rng):
    image, boxes = coordinate_image(20, 30), random_boxes(rng, 6)
    img2, b2 = A.hflip(*A.hflip(image, boxes))
    np.testing.assert_array_equal(img2, image)
    np.testing.assert_allclose(b2, boxes, atol=1e-7)


def test_flip_worked_example():
    image = coordinate_image(4, 10)
    img, b = A.hflip(image, np.array([[0.1, 0.0, 0.3, 0.5]], np.float32))
    # columns [1, 3) of 10 land on [10 - 3, 10 - 1) = [7, 9)
    np.testing.assert_allclose(b, [[0.7, 0.0, 0.9, 0.5]], atol=1e-7)
    assert img[0, 0, 0] == 9 and img[0, 9, 0] == 0


# ---- expand (zoom out) ----------------------------------------------------------------------------------

def test_expand_keeps_boxes_on_the_same_pixels(rng):
    H, W = 30, 40
    image = coordinate_image(H, W)
    # boxes on whole pixels, so both crops are exact slices
    boxes = np.array([[4, 3, 20, 15], [0, 0, 40, 30], [33, 21, 37, 29]], np.float32) / [W, H, W, H]
    boxes = boxes.astype(np.float32)
    for _ in range(20):
        out, b, l = A.expand(image, boxes, np.array([1, 2, 3]), rng, p=1.0)
        H2, W2 = out.shape[:2]
        assert H <= H2 <= 4 * H and W <= W2 <= 4 * W
        assert_valid(b)
        for old, new in zip(boxes * [W, H, W, H], b * [W2, H2, W2, H2]):
            o, n = np.round(old).astype(int), np.round(new).astype(int)
            np.testing.assert_allclose(new, n, atol=1e-3)  # still on whole pixels
            np.testing.assert_array_equal(out[n[1]:n[3], n[0]:n[2]], image[o[1]:o[3], o[0]:o[2]])


def test_expand_equals_the_stored_reference_for_24_seeds():
    ref = reference()
    wrong = seeds_that_differ(
        lambda rng: A.expand(ref["coords"], ref["boxes"], ref["labels"], rng, p=1.0)[:2],
        lambda s: (ref[f"expand_{s}"], ref[f"expand_{s}_boxes"], ref[f"expand_{s}_next"]), same)
    assert not wrong, f"expand differs from the reference for seeds {wrong} (the draws, in the docstring's order?)"


def test_expand_fills_with_the_mean():
    image = np.zeros((10, 10, 3), np.uint8)
    rng = np.random.default_rng(1)
    out, _, _ = A.expand(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), rng, p=1.0)
    assert out.shape[0] > 10
    rows, cols = np.nonzero(~out.any(-1))  # where the black 10 x 10 image was pasted
    assert rows.max() - rows.min() + 1 == 10 and cols.max() - cols.min() + 1 == 10
    outside = np.ones(out.shape[:2], bool)
    outside[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = False
    # the paper's mean (123.675, 116.28, 103.53) rounded to uint8
    np.testing.assert_array_equal(out[outside], np.broadcast_to([124, 116, 104], (outside.sum(), 3)))


# ---- random IoU crop (zoom in) --------------------------------------------------------------------------

def crop_rect(out):
    """(x0, y0, x1, y1) in source pixels of a crop of a coordinate image."""
    return int(out[0, 0, 0]), int(out[0, 0, 1]), int(out[0, 0, 0]) + out.shape[1], int(out[0, 0, 1]) + out.shape[0]


def test_crop_keeps_exactly_the_boxes_whose_centres_are_inside(rng):
    H, W = 60, 80
    image = coordinate_image(H, W)
    cropped = 0
    for _ in range(150):
        boxes = random_boxes(rng, 6)
        labels = np.arange(6)  # labels = indices, to know which boxes survived
        out, b, l = A.random_iou_crop(image, boxes, labels, rng)
        if out.shape == image.shape:
            continue  # "use the whole image" option, or no trial succeeded
        cropped += 1
        x0, y0, x1, y1 = crop_rect(out)
        px = boxes * [W, H, W, H]
        cx, cy = (px[:, 0] + px[:, 2]) / 2, (px[:, 1] + px[:, 3]) / 2
        inside = (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)
        assert l.tolist() == np.flatnonzero(inside).tolist()
        # kept boxes are the originals clipped to the patch, in patch coordinates
        expect = (np.clip(px[inside], [x0, y0, x0, y0], [x1, y1, x1, y1]) - [x0, y0, x0, y0]) / [
            x1 - x0, y1 - y0, x1 - x0, y1 - y0]
        np.testing.assert_allclose(b, expect, atol=1e-5)
        assert_valid(b)
        # the patch follows the paper's limits: sides in [0.3, 1] of the image, aspect in [1/2, 2]
        assert (x1 - x0) >= 0.3 * W - 1 and (y1 - y0) >= 0.3 * H - 1
        assert 0.5 <= (y1 - y0) / (x1 - x0) <= 2
    assert cropped > 50


@pytest.mark.parametrize("min_iou, trials", [(0.5, 50), (0.9, 2000)])  # 0.9 is rarely met in 50
def test_crop_meets_its_min_iou(rng, min_iou, trials):
    H, W = 60, 80
    image = coordinate_image(H, W)
    boxes = np.array([[0.1, 0.1, 0.6, 0.7], [0.5, 0.4, 0.9, 0.95]], np.float32)
    hits = 0
    for _ in range(40):
        out, b, l = A.random_iou_crop(image, boxes, np.array([1, 2]), rng, min_ious=(min_iou,),
                                         trials=trials)
        if out.shape == image.shape:
            continue
        hits += 1
        rect = np.array([crop_rect(out)], np.float64)
        ious = A._iou_with_rect(boxes.astype(np.float64) * [W, H, W, H], rect)[0]
        assert ious.max() >= min_iou
    assert hits > 10


def test_crop_equals_the_stored_reference_for_24_seeds():
    ref = reference()
    wrong = seeds_that_differ(
        lambda rng: A.random_iou_crop(ref["coords"], ref["boxes"], ref["labels"], rng),
        lambda s: (ref[f"crop_{s}"], ref[f"crop_{s}_boxes"], ref[f"crop_{s}_labels"], ref[f"crop_{s}_next"]),
        same)
    assert not wrong, f"random_iou_crop differs from the reference for seeds {wrong}"


def test_crop_iou_worked_example():
    # box (0,0)-(2,2) area 4, rect (1,1)-(3,3) area 4, overlap 1 -> IoU 1 / 7
    got = A._iou_with_rect(np.array([[0.0, 0, 2, 2]]), np.array([[1.0, 1, 3, 3]]))
    np.testing.assert_allclose(got, [[1 / 7]])


def test_crop_of_an_image_without_boxes(rng):
    out, b, l = A.random_iou_crop(coordinate_image(40, 40), np.zeros((0, 4), np.float32),
                                  np.zeros(0, np.int64), rng, min_ious=(0.5,))
    assert out.shape[0] < 40 or out.shape[1] < 40
    assert b.shape == (0, 4) and l.shape == (0,)


# ---- photometric distortion ----------------------------------------------------------------------------

def test_photometric_leaves_boxes_and_shape(rng):
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    boxes, labels = random_boxes(rng, 3), np.array([1, 2, 3])
    changed = 0
    for _ in range(20):
        out, b, l = A.photometric_distort(image, boxes, labels, rng)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert b is boxes and l is labels
        changed += not np.array_equal(out, image)
    assert changed > 10


def test_brightness_alone_adds_delta():
    image = np.array([[[10, 100, 250]]], np.uint8)
    rng = np.random.default_rng(0)
    delta = np.random.default_rng(0)
    delta.random()  # the p draw
    d = delta.uniform(-32, 32)
    out, _, _ = A.photometric_distort(image, None, None, rng, contrast=(1, 1), saturation=(1, 1), hue=0, p=1.0)
    np.testing.assert_array_equal(out[0, 0], np.clip(np.round(np.array([10, 100, 250]) + d), 0, 255))


def test_photometric_equals_the_stored_reference_for_24_seeds():
    # the steps in the reference's order with the draws of the docstring; colours within 1
    # (float rounding of the matrix products)
    ref = reference()
    wrong = seeds_that_differ(
        lambda rng: A.photometric_distort(ref["colours"], ref["boxes"], ref["labels"], rng)[:1],
        lambda s: (ref[f"photometric_{s}"], ref[f"photometric_{s}_next"]),
        lambda g, e: same(g, e, atol=1.0))
    assert not wrong, f"photometric_distort differs from the reference for seeds {wrong}"


def test_grey_stays_grey_under_hue_and_saturation():
    # a grey pixel has no chroma: the hue rotation and the saturation blend must both fix it
    for deg in (-18, 7, 90):
        np.testing.assert_allclose(A._hue_matrix(deg) @ [80, 80, 80], [80, 80, 80], atol=1e-9)
    np.testing.assert_allclose(A._saturation_matrix(1.4) @ [80, 80, 80], [80, 80, 80], atol=1e-9)
    np.testing.assert_allclose(A._hue_matrix(360), np.eye(3), atol=1e-9)


def test_saturation_zero_gives_luma():
    rgb = np.array([200.0, 100.0, 50.0])
    luma = 0.299 * 200 + 0.587 * 100 + 0.114 * 50  # = 124.2
    np.testing.assert_allclose(A._saturation_matrix(0.0) @ rgb, [luma] * 3)


def test_hue_rotation_keeps_luma_and_moves_colour():
    rgb = np.array([200.0, 60.0, 40.0])
    out = A._hue_matrix(18) @ rgb
    np.testing.assert_allclose(out @ [0.299, 0.587, 0.114], rgb @ [0.299, 0.587, 0.114])
    assert np.abs(out - rgb).max() > 10


# ---- resize and normalise --------------------------------------------------------------------------------

def test_resize_and_normalize_worked_example():
    image = np.full((10, 20, 3), (124, 116, 104), np.uint8)
    boxes = np.array([[0.1, 0.2, 0.3, 0.4]], np.float32)
    out, b, _ = A.resize(image, boxes, None, size=8)
    assert out.shape == (8, 8, 3) and b is boxes
    chw, _, _ = A.normalize(out, b, None)
    # (124 - 123.675) / 58.395 = 0.005566;  (116 - 116.28) / 57.12 = -0.004902
    np.testing.assert_allclose(chw[:, 3, 3], [0.005566, -0.004902, (104 - 103.53) / 57.375], atol=1e-5)
    assert chw.shape == (3, 8, 8) and chw.dtype == np.float32
    mean_only, _, _ = A.normalize(out, b, None, std=(1, 1, 1))
    np.testing.assert_allclose(mean_only[:, 0, 0], [0.325, -0.28, 0.47], atol=1e-4)


def test_the_augmentations_registry_names_the_training_pipelines(rng):
    from minissd.data.augment import AUGMENTATIONS, augmentation

    assert set(AUGMENTATIONS) == {"ssd", "light", "none"}
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    boxes = np.array([[0.1, 0.2, 0.5, 0.6]], np.float32)
    labels = np.array([3])
    # "none" is evaluation's resize + normalise: no randomness at all
    a = augmentation("none", 32)(image, boxes, labels, np.random.default_rng(0))
    b = A.eval_transform(32)(image, boxes, labels, None)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], boxes)
    # "light" recolours and may mirror, but never moves an object off its size: widths kept
    for seed in range(10):
        out, kept, _ = augmentation("light", 32)(image, boxes, labels, np.random.default_rng(seed))
        assert out.shape == (3, 32, 32)
        np.testing.assert_allclose(kept[:, 2] - kept[:, 0], boxes[:, 2] - boxes[:, 0], atol=1e-6)
    # "ssd" is the paper's whole pipeline, with the zoom-out asked for
    assert "expand" in repr(augmentation("ssd", 32, max_expand=2.0))
    with pytest.raises(ValueError, match="unknown name 'mixup'"):
        augmentation("mixup", 32)


# ---- the IoU crop's acceptance rules (--crop, docs/switches.md) -------------------------------------
#
# Boxes in a 100 x 100 image, pixels: A (0, 0, 40, 40), B (60, 60, 100, 100), C (40, 10, 50, 20).
BOX_A, BOX_B, BOX_C = (0, 0, 40, 40), (60, 60, 100, 100), (40, 10, 50, 20)


def naive_rule(rect, boxes, min_iou, rule):
    """The four rules as the implementations write them, one patch at a time (pixels)."""
    def iou(a, b):
        iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    def centre_inside(b):
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        return rect[0] < cx < rect[2] and rect[1] < cy < rect[3]

    ious = [iou(rect, b) for b in boxes]
    if rule == "any":  # Caffe's SatisfySampleConstraint: the first object that meets it
        return any(v >= min_iou for v in ious)
    if rule == "best":  # torchvision: the boxes with their centre inside, then max(ious) >= m
        inside = [v for v, b in zip(ious, boxes) if centre_inside(b)]
        return bool(inside) and max(inside) >= min_iou
    if rule == "all":  # mmdetection's MinIoURandomCrop: min(ious) >= m
        return min(ious) >= min_iou
    return True  # ssd.pytorch: the IoU test never fires


@pytest.mark.parametrize("boxes, rect, min_iou, expected", [
    # A meets 0.3 (IoU 760 / 2440 = 0.31) but its centre (20, 20) is outside; C's centre is
    # inside, IoU 100 / 1600 = 0.06: Caffe accepts, torchvision does not
    ((BOX_A, BOX_C), (21, 0, 61, 40), 0.3, dict(any=True, best=False, all=False)),
    # A inside with IoU 1600 / 2500 = 0.64, B outside with IoU 0: any and best, not all
    ((BOX_A, BOX_B), (0, 0, 50, 50), 0.3, dict(any=True, best=True, all=False)),
    # the whole image: IoU 0.16 with A and with B: below 0.3 for every rule but ssd.pytorch's
    ((BOX_A, BOX_B), (0, 0, 100, 100), 0.3, dict(any=False, best=False, all=False)),
    # ... and above 0.1: every rule accepts
    ((BOX_A, BOX_B), (0, 0, 100, 100), 0.1, dict(any=True, best=True, all=True)),
])
def test_crop_rules_worked_cases(boxes, rect, min_iou, expected):
    px, rects = np.array(boxes, np.float64), np.array([rect], np.float64)
    ious = A._iou_with_rect(px, rects)  # (1, G)
    cx, cy = (px[:, 0] + px[:, 2]) / 2, (px[:, 1] + px[:, 3]) / 2
    inside = ((cx > rect[0]) & (cx < rect[2]) & (cy > rect[1]) & (cy < rect[3]))[None]  # (1, G)
    expected = {**expected, "never-reject": True}
    for rule in A.CROP_RULES:
        assert bool(A.crop_accepts(ious, inside, min_iou, rule)[0]) == expected[rule], rule
        assert naive_rule(rect, boxes, min_iou, rule) == expected[rule], rule
    with pytest.raises(ValueError, match="unknown 'some'"):
        A.crop_accepts(ious, inside, min_iou, "some")


def test_crop_rules_take_different_patches_from_the_same_draws():
    # boxes A, B, C, min IoU 0.1, seed 20: every rule sees the same 50 candidate patches and
    # takes the first it accepts (the rules only ever reject more: never-reject, any, best, all)
    boxes = np.array([BOX_A, BOX_B, BOX_C], np.float32) / 100
    image = coordinate_image(100, 100)
    rects = {}
    for rule in A.CROP_RULES:
        out, b, l = A.random_iou_crop(image, boxes, np.arange(3), np.random.default_rng(20),
                                      min_ious=(0.1,), rule=rule)
        rects[rule] = crop_rect(out)
    assert len(set(rects.values())) == 4  # four rules, four outcomes
    px = [BOX_A, BOX_B, BOX_C]
    for rule in ("any", "best", "never-reject"):
        assert naive_rule(rects[rule], px, 0.1, rule)  # each patch meets its own rule ...
    assert not naive_rule(rects["never-reject"], px, 0.1, "any")  # ... which the stricter refuse
    assert not naive_rule(rects["any"], px, 0.1, "best")
    # no patch of sides >= 30 px meets 0.1 with all three (C, 10 x 10, needs a patch of at most
    # 1000 px^2, which cannot reach B): "all" leaves the image whole
    assert rects["all"] == (0, 0, 100, 100)


def test_the_crop_rule_reaches_the_pipeline():
    assert A.augmentation("ssd", 32, crop="best").steps[2].keywords == {"rule": "best"}
    assert A.train_transform(32).steps[2].keywords == {"rule": "any"}  # the default: Caffe's
    for build in (lambda: A.augmentation("ssd", 32, crop="most"), lambda: A.train_transform(32, crop="most"),
                  lambda: A.random_iou_crop(coordinate_image(9, 9), np.zeros((0, 4), np.float32),
                                            np.zeros(0), np.random.default_rng(0), rule="most")):
        with pytest.raises(ValueError, match="'most'"):
            build()
