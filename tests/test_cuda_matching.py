"""minissd.cuda.matching against its CPU twin minissd.matching and the naive.match oracle."""

import numpy as np
import pytest

import naive
from minissd import boxes as cpu_boxes
from minissd import matching

from minissd.cuda import matching as cuda_matching
from minissd.cuda import require


def random_priors(rng, n):
    return np.concatenate([rng.uniform(0.1, 0.9, (n, 2)), rng.uniform(0.05, 0.5, (n, 2))], 1).astype(np.float32)


def random_gt(rng, n):
    xy = rng.uniform(0, 0.7, (n, 2))
    wh = rng.uniform(0.05, 0.3, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    return boxes, rng.integers(1, 21, n)


@pytest.fixture
def batch(rng):
    """3 images against 40 priors: 5 objects, no object, 3 objects (padding to 5 is exercised)."""
    priors = random_priors(rng, 40)
    gts = [random_gt(rng, 5), (np.zeros((0, 4), np.float32), np.zeros(0, np.int64)), random_gt(rng, 3)]
    return priors, [g[0] for g in gts], [g[1] for g in gts]


def test_cuda_match_batch_matches_cpu_and_naive(batch):
    priors, boxes, labels = batch
    loc_t, conf_t = cuda_matching.match_batch(boxes, labels, priors)
    cpu_loc, cpu_conf = matching.match_batch(boxes, labels, priors)
    assert loc_t.shape == (3, 40, 4) and loc_t.dtype == np.float32 and conf_t.dtype == np.int64
    np.testing.assert_array_equal(conf_t, cpu_conf)
    np.testing.assert_allclose(loc_t, cpu_loc, rtol=1e-5, atol=1e-5)
    for b in range(3):
        want_loc, want_conf = naive.match(boxes[b], labels[b], priors)
        np.testing.assert_array_equal(conf_t[b], want_conf)
        np.testing.assert_allclose(loc_t[b], want_loc, rtol=1e-4, atol=1e-4)
    assert not conf_t[1].any() and not loc_t[1].any()  # the empty image is all background


def test_cuda_match_forced_positive_below_threshold():
    # One object [0, 0, 0.2, 0.2] (area 0.04). Prior 0 = the same box shifted right by 0.1:
    # overlap 0.1 * 0.2 = 0.02, union 0.06 -> IoU 1/3 < 0.5, yet it is the object's best
    # prior, so it must be positive (step 2). Prior 1 is far away: background.
    priors = np.array([[0.2, 0.1, 0.2, 0.2], [0.8, 0.8, 0.2, 0.2]], np.float32)
    loc_t, conf_t = cuda_matching.match(np.array([[0, 0, 0.2, 0.2]]), np.array([7]), priors)
    np.testing.assert_array_equal(conf_t, [7, 0])
    # encoded: centre (0.1, 0.1) vs prior (0.2, 0.1), same size -> (-0.1 / 0.02, 0, 0, 0)
    np.testing.assert_allclose(loc_t, [[-5, 0, 0, 0], [0, 0, 0, 0]], atol=1e-5)


def test_cuda_match_ties_follow_cpu():
    # Priors 0 and 2 are the same box: the object's best prior is the first (argmax). Two
    # objects that both pick prior 1 as their best: the later one keeps it (as on the CPU).
    priors = np.array([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.4, 0.4], [0.3, 0.3, 0.2, 0.2]], np.float32)
    boxes = np.array([[0.2, 0.2, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9], [0.55, 0.55, 0.85, 0.85]], np.float32)
    labels = np.array([1, 2, 3])
    got = cuda_matching.match(boxes, labels, priors)
    want = matching.match(boxes, labels, priors)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[1], [1, 3, 1])  # prior 2: IoU 1 with object 0, by step 1


def test_cuda_best_prior_reduction_with_strided_threads(batch):
    # A block of 8 threads for 40 priors: each thread first scans 5 priors, then 3 halvings.
    priors, boxes, labels = batch
    ious = cpu_boxes.iou(boxes[0], cpu_boxes.center_to_corner(priors))[None]  # (1, 5, 40)
    ious[0, 2, [3, 37]] = 2.0  # a tie across two threads: the lower prior wins
    cuda = require()
    out = cuda.device_array((1, 5), np.int64)
    cuda_matching.best_prior_kernel[(5, 1), 8](cuda.to_device(ious), cuda.to_device(np.array([5])), out)
    np.testing.assert_array_equal(out.copy_to_host()[0], ious[0].argmax(axis=1))
    assert out.copy_to_host()[0, 2] == 3


def test_cuda_match_batch_can_stay_on_device(batch):
    priors, boxes, labels = batch
    loc_t, conf_t = cuda_matching.match_batch(boxes, labels, priors, device_out=True)
    assert hasattr(loc_t, "copy_to_host") and hasattr(conf_t, "copy_to_host")
    np.testing.assert_array_equal(conf_t.copy_to_host(), matching.match_batch(boxes, labels, priors)[1])


def test_cuda_match_refuses_what_cpu_refuses(batch):
    priors, boxes, labels = batch
    with pytest.raises(ValueError, match="1..20"):
        cuda_matching.match_batch(boxes, [labels[0] + 20, labels[1], labels[2]], priors, num_classes=20)
    with pytest.raises(ValueError, match="iou_threshold"):
        cuda_matching.match(boxes[0], labels[0], priors, iou_threshold=1.5)


def test_cuda_matching_refuses_the_rule_it_lacks():
    # the GPU has the default rule only: another one is refused by name, never run as the default
    boxes, labels = [np.array([[0.1, 0.1, 0.5, 0.5]], np.float32)], [np.array([1])]
    priors = np.array([[0.3, 0.3, 0.4, 0.4]], np.float32)
    with pytest.raises(ValueError, match="rule: the GPU matches with 'per-prediction' only, got 'bipartite'"):
        cuda_matching.match_batch(boxes, labels, priors, rule="bipartite")
    with pytest.raises(ValueError, match="'bipartite'"):
        cuda_matching.match(boxes[0], labels[0], priors, rule="bipartite")
