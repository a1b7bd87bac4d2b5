"""minissd.evaluate: VOC AP (11-point and area), mAP, recall by object size."""

import math

import numpy as np
import pytest

import naive
from minissd import evaluate as E
from minissd.evaluate import evaluate_class, evaluate_detections, recall_by_size

CAT, DOG = 1, 2


def gt(boxes, labels, difficult=None):
    boxes = np.array(boxes, dtype=float).reshape(-1, 4)
    difficult = np.zeros(len(boxes), bool) if difficult is None else np.array(difficult, bool)
    return boxes, np.array(labels, dtype=np.int64), difficult


def det(boxes, labels, scores):
    return np.array(boxes, dtype=float).reshape(-1, 4), np.array(labels, dtype=np.int64), np.array(scores, dtype=float)


A = [0.1, 0.1, 0.4, 0.4]
B = [0.5, 0.5, 0.9, 0.9]
C = [0.0, 0.6, 0.3, 0.9]
FAR = [0.6, 0.0, 0.8, 0.2]
NEAR_A = [0.1, 0.1, 0.4, 0.36]  # IoU with A = 0.3 * 0.26 / (0.3 * 0.3) = 0.867


def test_voc_ap_worked_11_point_example():
    # 3 objects, 5 ranked detections: hit, miss, hit, miss, hit
    #   precision 1, 1/2, 2/3, 2/4, 3/5   recall 1/3, 1/3, 2/3, 2/3, 1
    # 11-point: t = 0, 0.1, 0.2, 0.3: best precision at recall >= t is 1 (4 points)
    #           t = 0.4 .. 0.6: recall >= t first at 2/3, best precision there 2/3 (3 points)
    #           t = 0.7 .. 1.0: only recall 1, precision 3/5 (4 points)
    #   AP = (4 * 1 + 3 * 2/3 + 4 * 3/5) / 11 = (4 + 2 + 2.4) / 11 = 8.4 / 11 = 0.763636...
    recall = np.array([1, 1, 2, 2, 3]) / 3
    precision = np.array([1, 1 / 2, 2 / 3, 2 / 4, 3 / 5])
    assert E.voc_ap(recall, precision) == pytest.approx(8.4 / 11, abs=1e-12)
    # area: envelope 1 up to recall 1/3, 2/3 up to 2/3, 3/5 up to 1:
    #   1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/5 = (1 + 0.6667 + 0.6) / 3 = 0.755556
    assert E.voc_ap(recall, precision, use_07_metric=False) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3, abs=1e-12)


def test_voc_ap_extremes():
    assert E.voc_ap([1.0], [1.0]) == pytest.approx(1.0)
    assert E.voc_ap([1.0], [1.0], use_07_metric=False) == pytest.approx(1.0)
    assert E.voc_ap([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert E.voc_ap([], []) == 0.0
    # half the objects found, perfectly: 6 of 11 points (t = 0 .. 0.5) have precision 1
    assert E.voc_ap([0.5], [1.0]) == pytest.approx(6 / 11)
    assert E.voc_ap([0.5], [1.0], use_07_metric=False) == pytest.approx(0.5)


def test_voc_ap_area_takes_the_envelope():
    # 3 objects, ranked: hit, miss, miss, hit, hit
    #   precision 1, 1/2, 1/3, 2/4, 3/5   recall 1/3, 1/3, 1/3, 2/3, 1
    # area: recall moves at ranks 1, 4, 5; the envelope there is 1, max(1/2, 3/5) = 3/5, 3/5:
    #   (1 + 3/5 + 3/5) / 3 = 2.2 / 3 = 0.7333 (the raw precision would give (1 + 1/2 + 3/5) / 3 = 0.7)
    # 11-point: t = 0 .. 0.3: 1 (4 points); t = 0.4 .. 1: the best precision at recall >= t is
    #   3/5 (7 points; the first point past t would give 1/2 at t = 0.4 .. 0.6):
    #   (4 + 7 * 3/5) / 11 = 8.2 / 11 = 0.745454...
    recall = np.array([1, 1, 1, 2, 3]) / 3
    precision = np.array([1, 1 / 2, 1 / 3, 2 / 4, 3 / 5])
    assert E.voc_ap(recall, precision, use_07_metric=False) == pytest.approx(2.2 / 3, abs=1e-12)
    assert E.voc_ap(recall, precision) == pytest.approx(8.2 / 11, abs=1e-12)
    # a miss ranked first: precision 0, 1/2, 2/3 at recall 0, 1/2, 1 (2 objects): the envelope
    # is 2/3 everywhere, so both AP are 2/3 (raw area: 1/2 * 1/2 + 1/2 * 2/3 = 0.5833)
    recall, precision = np.array([0, 1, 2]) / 2, np.array([0, 1 / 2, 2 / 3])
    assert E.voc_ap(recall, precision, use_07_metric=False) == pytest.approx(2 / 3, abs=1e-12)
    assert E.voc_ap(recall, precision) == pytest.approx(2 / 3, abs=1e-12)


def cell(k):
    """Box number k of a row of boxes that never overlap one another."""
    return [0.1 * (k % 10), 0.1 * (k // 10), 0.1 * (k % 10) + 0.08, 0.1 * (k // 10) + 0.08]


@pytest.mark.parametrize("use_07", [True, False])
def test_voc_ap_matches_naive_devkit_on_random_rankings(rng, use_07):
    # A ranking of hits and misses, built as detections the devkit oracle scores: a hit is a
    # detection on a new object's own box, a miss a box far from every object; some objects
    # are never found. The curve is computed here from the ranking, so only voc_ap is graded.
    for _ in range(8):
        hits = rng.random(rng.integers(1, 25)) < rng.uniform(0.2, 0.9)  # (D,) by rank
        G = int(hits.sum()) + int(rng.integers(0, 4))
        if G == 0:
            continue
        objects = [cell(k) for k in range(G)]
        boxes = [cell(k) if hit else cell(50 + r) for r, (k, hit) in enumerate(zip(np.cumsum(hits) - 1, hits))]
        scores = np.linspace(1.0, 0.1, len(hits))  # decreasing: the ranking as built
        tp = np.cumsum(hits)
        recall, precision = tp / G, tp / np.arange(1, len(hits) + 1)
        expected = naive.average_precision([det(boxes, [CAT] * len(boxes), scores)], [gt(objects, [CAT] * G)],
                                           CAT, use_07_metric=use_07)
        assert E.voc_ap(recall, precision, use_07_metric=use_07) == pytest.approx(expected, abs=1e-12)


# ---- true and false positives (the devkit's rules), on given overlaps ----------------------------
#
# voc_tp_fp takes the IoU of each detection with its image's objects as input, so these tests
# grade the assignment of detections to objects alone, not the IoU of chapter 1.

def tp_fp(scores, images, overlaps, difficult, threshold=0.5):
    tp, fp = E.voc_tp_fp(np.array(scores, dtype=float), np.array(images, dtype=np.int64),
                         [np.array(o, dtype=float) for o in overlaps],
                         [np.array(d, dtype=bool) for d in difficult], threshold)
    assert tp.dtype == bool and fp.dtype == bool and tp.shape == fp.shape == (len(scores),)
    return tp.tolist(), fp.tolist()


def test_tp_fp_worked_example():
    # one image, three cats: 0, 1 (difficult), 2. Detections (score: IoU with cats 0, 1, 2):
    #   k0 0.6: 0.7 0.1 0  -> rank 3: best cat 0, taken by k1: FP (a duplicate)
    #   k1 0.9: 0.8 0 0.2  -> rank 0: best cat 0, 0.8 >= 0.5, free: TP
    #   k2 0.3: 0 0 0.4    -> rank 4: best cat 2 at 0.4 < 0.5: FP
    #   k3 0.8: 0.1 0.9 0  -> rank 1: best cat 1, difficult: neither
    #   k4 0.7: 0.6 0 0.75 -> rank 2: best cat 2 (not cat 0, the first over 0.5): TP
    scores = [0.6, 0.9, 0.3, 0.8, 0.7]
    overlaps = [[0.7, 0.1, 0], [0.8, 0, 0.2], [0, 0, 0.4], [0.1, 0.9, 0], [0.6, 0, 0.75]]
    tp, fp = tp_fp(scores, [0] * 5, overlaps, [[False, True, False]])
    assert tp == [True, False, True, False, False]
    assert fp == [False, False, False, True, True]


def test_tp_fp_duplicates_are_false_positives():
    # one cat, two detections: the higher score is the hit, even when the other overlaps more
    tp, fp = tp_fp([0.5, 0.8], [0, 0], [[0.95], [0.6]], [[False]])
    assert tp == [True, False] and fp == [False, True]
    # ranked k1 (0.9, IoU 0.3: a miss), k2 (0.4: the hit), k0 (0.2: a duplicate)
    tp, fp = tp_fp([0.2, 0.9, 0.4], [0, 0, 0], [[0.7], [0.3], [0.8]], [[False]])
    assert tp == [False, True, False] and fp == [True, False, True]


def test_tp_fp_takes_the_best_object_not_the_first():
    # two cats; k1 overlaps both over 0.5 and takes cat 1 (0.8), leaving cat 0 to k0
    tp, fp = tp_fp([0.8, 0.9], [0, 0], [[0.9, 0.3], [0.55, 0.8]], [[False, False]])
    assert tp == [True, True] and fp == [False, False]


def test_tp_fp_a_taken_best_object_is_not_replaced():
    # k1 (0.9) takes cat 0; k0's best is cat 0 too: a duplicate, a false positive, even
    # though it overlaps the free cat 1 by 0.6 (the devkit gives no second choice)
    tp, fp = tp_fp([0.8, 0.9], [0, 0], [[0.7, 0.6], [0.9, 0.6]], [[False, False]])
    assert tp == [True, False] and fp == [False, True]


def test_tp_fp_difficult_objects_are_neither():
    # cat 0 difficult, cat 1 not. Ranked: k2 0.9 on cat 0: neither; k0 0.8 on cat 0 again:
    # neither (not a duplicate); k3 0.7 on cat 1: TP; k1 0.6 below 0.5 near cat 0: FP
    overlaps = [[0.7, 0.0], [0.3, 0.2], [0.8, 0.0], [0.0, 0.9]]
    tp, fp = tp_fp([0.8, 0.6, 0.9, 0.7], [0] * 4, overlaps, [[True, False]])
    assert tp == [False, False, True, False] and fp == [False, False, False, True]
    # only difficult cats: every detection on them is ignored, a miss is still wrong
    tp, fp = tp_fp([0.5, 0.6, 0.7], [0] * 3, [[0.9, 0.1], [0.2, 0.6], [0.1, 0.2]], [[True, True]])
    assert tp == [False, False, False] and fp == [True, False, False]


def test_tp_fp_the_best_object_decides_even_if_difficult():
    # k0's best cat is the difficult cat 0 (0.9), though it overlaps cat 1 by 0.6: ignored,
    # as in the devkit; cat 1 is left to k1
    tp, fp = tp_fp([0.9, 0.8], [0, 0], [[0.9, 0.6], [0.0, 0.7]], [[True, False]])
    assert tp == [False, True] and fp == [False, False]


def test_tp_fp_two_images():
    # one cat in image 0, one in image 1, none in image 2; each image's cat 0 is its own
    #   k0 0.5 image 0: 0.6  -> rank 4: image 0's cat taken by k2: FP
    #   k1 0.8 image 1: 0.9  -> rank 2: image 1's cat, free: TP
    #   k2 0.9 image 0: 0.8  -> rank 1: TP
    #   k3 0.95 image 1: 0.0 -> rank 0: where image 0's cat is, in image 1: FP
    #   k4 0.6 image 2: none -> rank 3: no cat at all: FP
    scores, images = [0.5, 0.8, 0.9, 0.95, 0.6], [0, 1, 0, 1, 2]
    overlaps = [[0.6], [0.9], [0.8], [0.0], []]
    tp, fp = tp_fp(scores, images, overlaps, [[False], [False], []])
    assert tp == [False, True, True, False, False] and fp == [True, False, False, True, True]
    # image 1's cat difficult: k1 is ignored, image 0's are unchanged
    tp, fp = tp_fp(scores, images, overlaps, [[False], [True], []])
    assert tp == [False, True, False, False, False] and fp == [True, False, False, True, True]


def test_tp_fp_threshold_is_inclusive():
    assert tp_fp([0.9], [0], [[0.5]], [[False]]) == ([True], [False])  # IoU 0.5 counts
    assert tp_fp([0.9], [0], [[0.7]], [[False]], threshold=0.75) == ([False], [True])
    assert tp_fp([0.9], [0], [[0.75]], [[False]], threshold=0.75) == ([True], [False])


def test_tp_fp_equal_scores_keep_the_given_order():
    # equal scores rank in the order given (the devkit's stable sort): k0, then k1
    tp, fp = tp_fp([0.5, 0.5], [0, 0], [[0.6, 0.0], [0.0, 0.3]], [[False, False]])
    assert tp == [True, False] and fp == [False, True]
    tp, fp = tp_fp([0.5, 0.5, 0.5], [0, 0, 0], [[0.0, 0.3], [0.6, 0.0], [0.0, 0.8]], [[False, False]])
    assert tp == [False, True, True] and fp == [True, False, False]


def random_overlaps(rng, n_images=5):
    """Random detections of one class: scores with ties, per-image objects, some difficult."""
    difficult = [rng.random(rng.integers(0, 5)) < 0.25 for _ in range(n_images)]
    D = int(rng.integers(0, 30))
    images = rng.integers(0, n_images, D)
    overlaps = [rng.random(len(difficult[i])) ** 2 * 0.95 + 0.05 * (rng.random() < 0.5) for i in images]
    scores = rng.random(D).round(1)  # many ties
    return scores, images, overlaps, difficult


def test_tp_fp_matches_the_devkit_on_random_detections(rng):
    for _ in range(25):
        scores, images, overlaps, difficult = random_overlaps(rng)
        tp, fp = E.voc_tp_fp(scores, images, overlaps, difficult)
        want_tp, want_fp = naive.voc_tp_fp(scores, images, overlaps, difficult)
        np.testing.assert_array_equal(tp, want_tp)
        np.testing.assert_array_equal(fp, want_fp)


def test_tp_fp_properties(rng):
    for _ in range(25):
        scores, images, overlaps, difficult = random_overlaps(rng)
        scores = rng.permutation(len(scores)) / max(len(scores), 1)  # distinct: one ranking
        tp, fp = E.voc_tp_fp(scores, images, overlaps, difficult)
        assert not np.any(tp & fp)
        assert tp.sum() <= sum(int(np.sum(~d)) for d in difficult)  # an object is found once
        # the ranking depends on the scores, not on the order the detections come in
        p = rng.permutation(len(scores))
        tp2, fp2 = E.voc_tp_fp(scores[p], images[p], [overlaps[k] for k in p], difficult)
        np.testing.assert_array_equal(tp2, tp)
        np.testing.assert_array_equal(fp2, fp)
        # a stricter threshold finds no more objects; what lands on difficult ones stays out
        tp3, fp3 = E.voc_tp_fp(scores, images, overlaps, difficult, iou_threshold=0.7)
        assert tp3.sum() <= tp.sum()
        assert (~(tp3 | fp3)).sum() <= (~(tp | fp)).sum()


# ---- whole classes (use the IoU of chapter 1 too) ------------------------------------------------

def test_perfect_and_all_wrong():
    truths = [gt([A, B], [CAT, DOG]), gt([C], [CAT])]
    perfect = [det([A, B], [CAT, DOG], [0.9, 0.8]), det([C], [CAT], [0.7])]
    r = evaluate_detections(perfect, truths, num_classes=2)
    assert r["mAP"] == pytest.approx(1.0) and r["ap"] == pytest.approx([1.0, 1.0])
    assert r["num_objects"] == [2, 1]
    wrong_class = [det([A, B], [DOG, CAT], [0.9, 0.8]), det([C], [DOG], [0.7])]
    assert evaluate_detections(wrong_class, truths, num_classes=2)["mAP"] == 0.0
    wrong_place = [det([FAR], [CAT], [0.9]), det([FAR], [DOG], [0.9])]
    assert evaluate_detections(wrong_place, truths, num_classes=2)["mAP"] == 0.0
    nothing = [det([], [], []), det([], [], [])]
    assert evaluate_detections(nothing, truths, num_classes=2)["mAP"] == 0.0


def test_duplicates_are_false_positives():
    truths = [gt([A], [CAT])]
    # ranked: A (hit), NEAR_A (second detection of the same cat: FP)
    recall, precision, ap = evaluate_class([det([A, NEAR_A], [CAT, CAT], [0.9, 0.8])], truths, CAT)
    np.testing.assert_allclose(recall, [1, 1])
    np.testing.assert_allclose(precision, [1, 0.5])
    assert ap == pytest.approx(1.0)  # the duplicate comes after full recall
    # the duplicate ranked first is the hit; the better box later is the duplicate
    recall, precision, ap = evaluate_class([det([A, NEAR_A], [CAT, CAT], [0.5, 0.8])], truths, CAT)
    np.testing.assert_allclose(precision, [1, 0.5])
    # a false positive ranked first halves the precision everywhere: 11-point AP 0.5
    recall, precision, ap = evaluate_class([det([FAR, A], [CAT, CAT], [0.9, 0.8])], truths, CAT)
    np.testing.assert_allclose(precision, [0, 0.5])
    assert ap == pytest.approx(0.5)


def test_difficult_objects_are_neither_right_nor_wrong():
    truths = [gt([A, B], [CAT, CAT], difficult=[True, False]), gt([C], [CAT], difficult=[True])]
    # detections on the two difficult cats are ignored; the only counted one is a hit on B
    dets = [det([A, B], [CAT, CAT], [0.95, 0.5]), det([C], [CAT], [0.9])]
    recall, precision, ap = evaluate_class(dets, truths, CAT)
    np.testing.assert_allclose(recall, [1.0])
    np.testing.assert_allclose(precision, [1.0])
    assert ap == pytest.approx(1.0)
    # missing the difficult ones costs nothing either
    assert evaluate_class([det([B], [CAT], [0.5]), det([], [], [])], truths, CAT)[2] == pytest.approx(1.0)
    # an image with only difficult objects and no detections: no effect on the class's AP
    r = evaluate_detections([det([B], [CAT], [0.5]), det([], [], [])], truths, class_names=["cat", "dog"])
    assert r["AP"]["cat"] == pytest.approx(1.0)
    assert math.isnan(r["AP"]["dog"]) and r["mAP"] == pytest.approx(1.0)  # no dogs: left out


def test_iou_threshold_is_inclusive():
    # binary fractions: IoU of [0, 0, 0.5, 0.5] and [0, 0, 0.5, 0.25] is exactly 0.5
    truths = [gt([[0, 0, 0.5, 0.5]], [CAT])]
    dets = [det([[0, 0, 0.5, 0.25]], [CAT], [0.9])]
    assert evaluate_class(dets, truths, CAT)[2] == pytest.approx(1.0)
    assert evaluate_class(dets, truths, CAT, iou_threshold=0.51)[2] == 0.0


def random_case(rng, n_images=6, C=3):
    dets, truths = [], []
    for _ in range(n_images):
        G = rng.integers(0, 5)
        c = rng.uniform(0.2, 0.8, (G, 2))
        wh = rng.uniform(0.1, 0.4, (G, 2))
        boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1)
        truths.append(gt(boxes, rng.integers(1, C + 1, G), rng.random(G) < 0.2))
        K = rng.integers(0, 8)
        jitter = rng.normal(0, 0.04, (K, 4))
        pick = rng.integers(0, max(G, 1), K)
        dboxes = (boxes[pick] if G else np.full((K, 4), 0.5)) + jitter
        dboxes = np.concatenate([np.minimum(dboxes[:, :2], dboxes[:, 2:]), np.maximum(dboxes[:, :2], dboxes[:, 2:])], 1)
        labels = np.where(rng.random(K) < 0.8, truths[-1][1][pick] if G else 1, rng.integers(1, C + 1, K))
        dets.append(det(dboxes, labels, rng.random(K).round(2)))
    return dets, truths


@pytest.mark.parametrize("use_07", [True, False])
def test_matches_naive_devkit(rng, use_07):
    for _ in range(5):
        dets, truths = random_case(rng)
        r = evaluate_detections(dets, truths, num_classes=3, use_07_metric=use_07)
        for c in range(1, 4):
            if r["num_objects"][c - 1]:
                assert r["ap"][c - 1] == pytest.approx(naive.average_precision(dets, truths, c, use_07_metric=use_07),
                                                       abs=1e-12)


def test_recall_by_size():
    small = [0.5, 0.5, 0.55, 0.55]  # sqrt(area) 0.05
    medium = [0.0, 0.0, 0.2, 0.2]   # 0.2
    large = [0.3, 0.3, 0.9, 0.9]    # 0.6
    truths = [gt([small, medium, large], [CAT, CAT, DOG]), gt([small], [CAT], difficult=[True])]
    dets = [det([medium, large, small], [CAT, CAT, DOG], [0.9, 0.8, 0.7]), det([], [], [])]
    r = recall_by_size(dets, truths)
    # medium found; large only by a wrong-class box; small only by a wrong-class box;
    # the difficult small cat is not counted
    assert [r[k]["total"] for k in ("small", "medium", "large")] == [1, 1, 1]
    assert [r[k]["recall"] for k in ("small", "medium", "large")] == [0.0, 1.0, 0.0]
    r = recall_by_size(dets, truths, bins=(0.1,))
    assert list(r) == ["[0, 0.1)", "[0.1, inf)"] and r["[0.1, inf)"]["found"] == 1


def test_bad_input():
    truths = [gt([A], [CAT])]
    with pytest.raises(ValueError, match="ground_truths"):
        evaluate_detections([det([A], [CAT], [1.0])] * 2, truths, num_classes=2)
    with pytest.raises(ValueError, match=r"detections\[0\] labels"):
        evaluate_detections([det([A], [3], [1.0])], truths, num_classes=2)
    with pytest.raises(ValueError, match="xmax < xmin"):
        evaluate_detections([det([[0.5, 0, 0.4, 1]], [CAT], [1.0])], truths, num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        evaluate_detections([det([A], [CAT], [1.0])], truths)
    with pytest.raises(ValueError, match="scores"):
        evaluate_detections([det([A], [CAT], [np.nan])], truths, num_classes=1)


# [instructor-only] tests of the tests: wrong implementations, each one step from the solution
# ---- wrong implementations the checks above must catch --------------------------------------

def _ap_plain_average(recall, precision, use_07_metric=True):
    """Mean precision at the ranked detections, no interpolation."""
    return float(np.mean(precision)) if len(precision) else 0.0


def _ap_10_points(recall, precision, use_07_metric=True):
    """0.0 .. 0.9 only (10 points): forgets recall 1."""
    return sum(max([p for r, p in zip(recall, precision) if r >= t], default=0.0) for t in np.arange(0, 1, 0.1)) / 10


@pytest.mark.parametrize("wrong", [_ap_plain_average, _ap_10_points])
def test_wrong_ap_is_caught(monkeypatch, wrong):
    monkeypatch.setattr(E, "voc_ap", wrong)
    with pytest.raises(AssertionError):
        test_voc_ap_worked_11_point_example()
        test_voc_ap_extremes()


def _evaluate_class_without_bookkeeping(dets, gts, label, iou_threshold):
    """Every detection overlapping a non-difficult object is a hit (duplicates too), and a
    detection on a difficult object is a false positive."""
    scores, hits, n = [], [], 0
    for (db, dl, ds), (gb, gl, gd) in zip(dets, gts):
        objects = gb[(gl == label) & ~gd]
        n += len(objects)
        for box, score in zip(db[dl == label], ds[dl == label]):
            scores.append(score)
            hits.append(len(objects) > 0 and naive.iou([box], objects).max() >= iou_threshold)
    hits = np.array(hits, dtype=float)[np.argsort(-np.array(scores), kind="stable")]
    tp, fp = np.cumsum(hits), np.cumsum(1 - hits)
    return tp / max(n, 1), tp / np.maximum(tp + fp, 1), n


@pytest.mark.parametrize("test", [lambda: test_duplicates_are_false_positives(),
                                  lambda: test_difficult_objects_are_neither_right_nor_wrong()])
def test_wrong_bookkeeping_is_caught(monkeypatch, test):
    monkeypatch.setattr(E, "_evaluate_class", _evaluate_class_without_bookkeeping)
    with pytest.raises(AssertionError):
        test()
# [/instructor-only]
