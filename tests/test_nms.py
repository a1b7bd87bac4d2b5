"""minissd.nms: greedy NMS and the detection post-processing."""

import numpy as np
import pytest

import naive
from minissd import nms as N
from minissd.boxes import corner_to_center, encode, iou
from minissd.nms import detect, nms


def test_nms_worked_example():
    boxes = np.array([
        [0.0, 0.0, 1.0, 1.0],   # 0: score 0.9, kept first
        [0.0, 0.0, 1.0, 0.8],   # 1: IoU with 0 = 0.8 > 0.45: suppressed
        [0.0, 0.0, 0.5, 1.0],   # 2: IoU with 0 = 0.5 > 0.45: suppressed
        [2.0, 2.0, 3.0, 3.0],   # 3: far away: kept
        [0.0, 0.55, 1.0, 1.0],  # 4: IoU with 0 = 0.45, not > 0.45: kept
    ])
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.5])
    np.testing.assert_array_equal(nms(boxes, scores, 0.45), [0, 4, 3])
    np.testing.assert_array_equal(nms(boxes, scores, 1.0), [0, 1, 2, 4, 3])  # nothing > 1
    np.testing.assert_array_equal(nms(boxes, scores, 0.0), [0, 3])  # any overlap suppresses
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


def test_suppressed_boxes_do_not_suppress():
    # 1 is suppressed by 0; 2 overlaps 1 a lot but not 0, so 2 survives
    boxes = np.array([[0.0, 0, 1, 1], [0.5, 0, 1.5, 1], [1.0, 0, 2, 1]])
    np.testing.assert_array_equal(nms(boxes, np.array([3.0, 2.0, 1.0]), 0.3), [0, 2])


def test_nms_matches_naive(rng):
    c = rng.uniform(0.2, 0.8, (60, 2))
    wh = rng.uniform(0.05, 0.4, (60, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1)
    scores = rng.random(60).round(1)  # many equal scores: ties go to the lower index
    for t in (0.3, 0.45, 0.7):
        np.testing.assert_array_equal(nms(boxes, scores, t), naive.nms(boxes, scores, t))


def test_nms_bad_input():
    with pytest.raises(ValueError, match="scores"):
        nms(np.zeros((2, 4)), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="scores"):
        nms(np.zeros((1, 4)), np.array([np.nan]), 0.5)
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(np.zeros((1, 4)), np.zeros(1), 1.5)
    with pytest.raises(ValueError, match="boxes"):
        nms(np.array([[0.5, 0, 0.4, 1]]), np.zeros(1), 0.5)


# ---- per-class NMS: thresholds, classes, top-k around a given NMS -------------------------------
#
# These tests grade the loop of per_class_nms around NMS, not NMS itself: nms._nms is replaced
# by a stand-in that is exact when any two boxes are either the same box or apart (IoU 1 or 0),
# which every box of these tests is. So they pass with a correct loop whatever _suppress does.

def cell(k):
    """Box number k of a grid of boxes that never overlap one another (corner form)."""
    return [0.1 * (k % 10), 0.1 * (k // 10), 0.1 * (k % 10) + 0.08, 0.1 * (k // 10) + 0.08]


@pytest.fixture
def nms_calls(monkeypatch):
    """nms._nms replaced by the stand-in; returns the list of (scores, iou_threshold) it saw."""
    calls = []

    def nms_of_equal_or_apart_boxes(boxes, scores, iou_threshold):
        """Indices kept, best first (ties: lower index): of each set of equal boxes only the best
        (their IoU 1 is > any threshold below 1); boxes apart (IoU 0) never suppress."""
        calls.append((np.array(scores), iou_threshold))
        order = np.argsort(-np.asarray(scores), kind="stable")
        if iou_threshold >= 1.0:
            return order
        _, first = np.unique(np.asarray(boxes)[order], axis=0, return_index=True)
        return order[np.sort(first)]

    monkeypatch.setattr(N, "_nms", nms_of_equal_or_apart_boxes)
    return calls


def per_class(boxes, scores, **kwargs):
    out_boxes, labels, out_scores = N.per_class_nms(np.array(boxes, dtype=np.float32),
                                                    np.array(scores, dtype=np.float32), **kwargs)
    assert out_boxes.dtype == np.float32 and labels.dtype == np.int64 and out_scores.dtype == np.float32
    assert out_boxes.shape == (len(labels), 4) and out_scores.shape == (len(labels),)
    return out_boxes, labels.tolist(), out_scores.tolist()


# 6 default boxes, background + 2 classes; priors 0 and 1 decoded to the same box.
#   prior  box      background  class 1  class 2
WORKED_BOXES = [cell(0), cell(0), cell(1), cell(2), cell(3), cell(4)]
WORKED_SCORES = [
    [0.0625, 0.875, 0.0625],   # 0
    [0.125, 0.5, 0.375],       # 1: the box of 0
    [0.25, 0.125, 0.625],      # 2
    [0.875, 0.125, 0.0],       # 3: background
    [0.375, 0.3125, 0.3125],   # 4: equal scores in both classes
    [1.0, 0.0, 0.0],           # 5: background
]


def test_per_class_nms_worked_example(nms_calls):
    # threshold 0.25. class 1: 0.875 (prior 0), 0.5 (prior 1: the box of prior 0, suppressed),
    # 0.3125 (prior 4). class 2: 0.625 (2), 0.375 (1: nothing of class 2 suppresses it),
    # 0.3125 (4). Over all classes by score, equal scores lower class first.
    boxes, labels, scores = per_class(WORKED_BOXES, WORKED_SCORES, conf_threshold=0.25)
    assert scores == [0.875, 0.625, 0.375, 0.3125, 0.3125]
    assert labels == [1, 2, 2, 1, 2]
    np.testing.assert_array_equal(boxes, np.array([cell(0), cell(1), cell(0), cell(3), cell(3)], np.float32))
    assert len(nms_calls) == 2 and all(t == 0.45 for _, t in nms_calls)  # once per class, the default 0.45


def test_background_is_never_detected(nms_calls):
    # background scores highest everywhere; classes still pass the threshold
    scores = [[0.5, 0.25, 0.25], [0.75, 0.125, 0.125], [0.625, 0.0625, 0.3125]]
    boxes, labels, out = per_class([cell(0), cell(1), cell(2)], scores, conf_threshold=0.1)
    assert labels == [2, 1, 2, 1, 2] and out == [0.3125, 0.25, 0.25, 0.125, 0.125]
    # only background above the threshold: nothing, as empty arrays of the right shapes
    boxes, labels, out = per_class([cell(0), cell(1)], [[0.9, 0.05, 0.05], [1.0, 0.0, 0.0]], conf_threshold=0.1)
    assert labels == [] and boxes.shape == (0, 4)


def test_each_class_is_suppressed_on_its_own(nms_calls):
    # prior 1 has the box of prior 0: class 1 suppresses it (0.5 under 0.875), class 2 keeps
    # it (prior 0 scores below the threshold there); prior 2 carries the same box in two
    # classes and is kept in both
    boxes = [cell(0), cell(0), cell(5)]
    scores = [[0.0625, 0.875, 0.0625], [0.125, 0.5, 0.375], [0.25, 0.375, 0.375]]
    out_boxes, labels, out = per_class(boxes, scores, conf_threshold=0.25)
    assert labels == [1, 1, 2, 2] and out == [0.875, 0.375, 0.375, 0.375]
    np.testing.assert_array_equal(out_boxes, np.array([cell(0), cell(5), cell(0), cell(5)], np.float32))


def test_score_threshold_is_strict(nms_calls):
    # a class score must be > conf_threshold: 0.25 is out at 0.25, in at 0.125
    scores = [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]
    _, labels, out = per_class([cell(0), cell(1)], scores, conf_threshold=0.25)
    assert labels == [1] and out == [0.5]
    _, labels, out = per_class([cell(0), cell(1)], scores, conf_threshold=0.125)
    assert labels == [1, 1, 2, 2] and out == [0.5, 0.25, 0.25, 0.25]


def test_max_per_class_caps_before_nms(nms_calls):
    # class 1 scores 0.875 (box A), 0.5 (box A again), 0.3125 (box B). With max_per_class=2
    # only the first two enter NMS, which keeps one of them: box B never had its chance
    boxes = [cell(0), cell(0), cell(1)]
    scores = [[0.125, 0.875, 0.0], [0.5, 0.5, 0.0], [0.6875, 0.3125, 0.0]]
    _, labels, out = per_class(boxes, scores, conf_threshold=0.25, max_per_class=2)
    assert out == [0.875] and len(nms_calls[0][0]) == 2
    _, labels, out = per_class(boxes, scores, conf_threshold=0.25, max_per_class=3)
    assert out == [0.875, 0.3125]


def test_top_k_is_over_all_classes(nms_calls):
    # the 3 best of 5 kept detections over both classes, not the 3 best of each class
    _, labels, out = per_class(WORKED_BOXES, WORKED_SCORES, conf_threshold=0.25, top_k=3)
    assert labels == [1, 2, 2] and out == [0.875, 0.625, 0.375]
    _, labels, out = per_class(WORKED_BOXES, WORKED_SCORES, conf_threshold=0.25, top_k=1)
    assert labels == [1] and out == [0.875]


def test_equal_scores_lower_class_first(nms_calls):
    # one box, the same score in classes 1, 2, 3; then two boxes equal within a class
    _, labels, _ = per_class([cell(0)], [[0.25, 0.25, 0.25, 0.25]], conf_threshold=0.125)
    assert labels == [1, 2, 3]
    boxes, labels, _ = per_class([cell(0), cell(1)], [[0.5, 0.5], [0.5, 0.5]], conf_threshold=0.125)
    np.testing.assert_array_equal(boxes, np.array([cell(0), cell(1)], np.float32))


def test_nms_threshold_reaches_nms(nms_calls):
    # at nms_threshold 1 nothing is suppressed: both copies of box A stay in class 1
    _, labels, out = per_class(WORKED_BOXES, WORKED_SCORES, conf_threshold=0.25, nms_threshold=1.0)
    assert labels == [1, 2, 1, 2, 1, 2] and out == [0.875, 0.625, 0.5, 0.375, 0.3125, 0.3125]
    assert [t for _, t in nms_calls] == [1.0, 1.0]


def test_per_class_nms_matches_naive(rng, nms_calls):
    # 40 default boxes on 8 distinct boxes (many decode to the same one), 3 classes, softmax
    # scores; small caps and top-k, so each rule has a say
    for case in range(12):
        boxes = np.array([cell(k) for k in rng.integers(0, 8, 40)], dtype=np.float32)
        logits = rng.normal(0, 1.5, (40, 4))
        scores = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
        kwargs = dict(conf_threshold=float(rng.choice([0.05, 0.2, 0.3])), top_k=int(rng.choice([3, 8, 200])),
                      max_per_class=int(rng.choice([2, 5, 200])))
        got = N.per_class_nms(boxes, scores, **kwargs)
        want = naive.per_class_nms(boxes, scores, **kwargs)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


# ---- detect: decode, softmax, per-class NMS (uses chapter 1's decode and the NMS above) ------

def test_detect_worked_example():
    # 4 priors, 2 classes. The network says: priors 0 and 1 (almost the same box) are a
    # class-1 object, prior 3 is class 2, prior 2 is background.
    corners = np.array([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.5, 0.52], [0.6, 0.6, 0.7, 0.7],
                        [0.5, 0.0, 1.0, 0.4]])
    priors = corner_to_center(corners)
    target = np.array([[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.7, 0.7],
                       [0.55, 0.05, 0.95, 0.35]])
    loc = encode(target, priors)[None].astype(np.float32)  # (1, 4, 4)
    conf = np.log(np.array([[[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.98, 0.01, 0.01],
                             [0.3, 0.1, 0.6]]], dtype=np.float32))  # logits of these softmaxes
    [(boxes, labels, scores)] = detect(loc, conf, priors)
    # class 1: 0.8 (prior 0) suppresses 0.7 (prior 1, the same decoded box); 0.1 (prior 3)
    # overlaps nothing kept and stays. class 2: 0.6 (prior 3), then 0.1 (prior 0) suppresses
    # 0.1 (prior 1). Prior 2's 0.01 is not > 0.01. Equal scores: class 1 first.
    np.testing.assert_allclose(scores, [0.8, 0.6, 0.1, 0.1], rtol=1e-5)
    np.testing.assert_array_equal(labels, [1, 2, 1, 2])
    np.testing.assert_allclose(boxes[:2], target[[0, 3]], atol=1e-6)
    assert boxes.dtype == np.float32 and labels.dtype == np.int64 and scores.dtype == np.float32
    # top_k and a higher threshold
    [(boxes, labels, scores)] = detect(loc, conf, priors, conf_threshold=0.5, top_k=1)
    np.testing.assert_array_equal(labels, [1])


def test_detect_untrained_network_is_capped(rng):
    B, P, C = 2, 500, 4
    priors = np.concatenate([rng.uniform(0.1, 0.9, (P, 2)), rng.uniform(0.05, 0.3, (P, 2))], axis=1)
    loc = rng.standard_normal((B, P, 4)).astype(np.float32) * 0.1
    conf = rng.standard_normal((B, P, C + 1)).astype(np.float32) * 0.1  # every score ~0.2 > 0.01
    out = detect(loc, conf, priors, top_k=50, max_per_class=30)
    assert len(out) == B
    for boxes, labels, scores in out:
        assert len(scores) == 50 and np.all(np.diff(scores) <= 0)
        assert np.all((labels >= 1) & (labels <= C)) and np.all((boxes >= 0) & (boxes <= 1))
        for c in range(1, C + 1):  # per class, no two kept boxes overlap by more than 0.45
            mine = boxes[labels == c]
            if len(mine) > 1:
                ious = naive.iou(mine, mine)
                assert np.all(ious[np.triu_indices(len(mine), 1)] <= 0.45 + 1e-6)


def test_detect_bad_input():
    priors = np.array([[0.5, 0.5, 0.2, 0.2]])
    with pytest.raises(ValueError, match="priors"):
        detect(np.zeros((1, 2, 4)), np.zeros((1, 2, 3)), priors)
    with pytest.raises(ValueError, match="loc"):
        detect(np.zeros((1, 1, 3)), np.zeros((1, 1, 3)), priors)
    with pytest.raises(ValueError, match="NaN"):
        detect(np.zeros((1, 1, 4)), np.full((1, 1, 3), np.nan), priors)


# [instructor-only] tests of the tests: wrong implementations, each one step from the solution
def _suppress_with_suppressed(boxes, order, iou_threshold, keep):
    """Lets suppressed boxes suppress others too (a common mistake)."""
    n = 0
    for a in range(len(order)):
        if all(naive.iou(boxes[order[a]:order[a] + 1], boxes[order[b]:order[b] + 1])[0, 0] <= iou_threshold
               for b in range(a)):
            keep[n] = order[a]
            n += 1
    return n


def _suppress_greater_equal(boxes, order, iou_threshold, keep):
    """Suppresses at IoU >= threshold instead of >."""
    kept = naive.nms(boxes, -np.argsort(order), iou_threshold - 1e-9)
    keep[:len(kept)] = kept
    return len(kept)


@pytest.mark.parametrize("wrong", [_suppress_with_suppressed, _suppress_greater_equal])
def test_wrong_nms_is_caught(monkeypatch, wrong):
    monkeypatch.setattr(N, "_suppress", wrong)
    with pytest.raises(AssertionError):
        test_nms_worked_example()
        test_suppressed_boxes_do_not_suppress()
# [/instructor-only]


def test_nms_scalar_iou_agrees_with_the_iou_matrix(rng):
    # NMS has its own compiled scalar IoU (chapter 1's matrix is a graded region); the two
    # formulas must stay the same, apart and touching boxes and empty boxes included
    lo, size = rng.uniform(0, 0.7, (40, 2)), rng.uniform(0, 0.3, (40, 2))
    a = np.concatenate([lo, lo + size], axis=1)  # (40, 4) corner form
    a[:3] = [[0.1, 0.1, 0.1, 0.1], [0.2, 0.2, 0.4, 0.4], [0.4, 0.2, 0.6, 0.4]]  # empty, touching
    want = iou(a, a)
    got = np.array([[N._box_iou_cpu(*p, *q) for q in a] for p in a])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
