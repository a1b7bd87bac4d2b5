"""minissd.nms: greedy NMS and the detection post-processing."""

import numpy as np
import pytest

import naive
from minissd import nms as N
from minissd.boxes import corner_to_center, encode
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
