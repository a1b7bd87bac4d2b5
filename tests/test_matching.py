"""minissd.matching: each ground truth claims its best prior, then the 0.5 threshold."""

from pathlib import Path

import numpy as np
import pytest

import naive
from minissd import matching
from minissd.boxes import corner_to_center, decode
from minissd.errors import ConfigError
from minissd.matching import match, match_batch
from minissd.priors import SSD300_VOC, default_boxes

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def given_iou_and_encode(monkeypatch):
    """Grade the matching on its own: the IoU matrix and the encoding that ``match`` asks for
    come from the oracles (tests/naive.py; replayed in the student copy), not from the iou
    and encode parts, so a blank or wrong iou or encode costs no points here."""
    def iou_from_the_oracle(boxes, corners_t, out):  # corners_t: (4, P), as match stores the priors
        out[:] = naive.iou(boxes, corners_t.T)

    def encode_from_the_oracle(rows, prior_rows, v0, v1, out):
        out[:] = [naive.encode(m, q, (v0, v1)) for m, q in zip(rows, prior_rows)]

    monkeypatch.setattr(matching, "_iou_matrix", iou_from_the_oracle)
    monkeypatch.setattr(matching, "_encode_rows", encode_from_the_oracle)


def stored_priors(every=1):
    """SSD300's default boxes as the reference makes them (tests/fixtures/ssd300_priors.npz), so
    that the matching tests do not use the student's default_boxes."""
    return np.load(FIXTURES / "ssd300_priors.npz")["priors"][::every]


# Five priors given by their corners (centre form below) and two objects.
PRIOR_CORNERS = np.array([
    [0.0, 0.0, 0.2, 0.2],    # A: the small object's best prior, IoU 0.25 only
    [0.5, 0.5, 0.9, 0.9],    # B: exactly the big object, IoU 1
    [0.0, 0.5, 0.4, 0.9],    # C: overlaps nothing
    [0.6, 0.0, 1.0, 0.2],    # D: overlaps nothing
    [0.5, 0.45, 0.9, 0.9],   # E: big object, IoU 0.16 / 0.18 = 0.889
])
PRIORS = corner_to_center(PRIOR_CORNERS)
GT_BOXES = np.array([[0.5, 0.5, 0.9, 0.9], [0.0, 0.0, 0.1, 0.1]])
GT_LABELS = np.array([3, 7])


def test_worked_example_best_prior_below_threshold_is_still_positive(given_iou_and_encode):
    loc_t, conf_t = match(GT_BOXES, GT_LABELS, PRIORS)
    # A overlaps the small object by 0.1*0.1 / (0.2*0.2) = 0.25 < 0.5, but it is that
    # object's best prior, so step 1 of the rule makes it a positive with label 7.
    np.testing.assert_array_equal(conf_t, [7, 3, 0, 0, 3])
    assert loc_t.dtype == np.float32 and conf_t.dtype == np.int64
    # positives hold their own object's encoding; background rows stay 0
    np.testing.assert_allclose(loc_t[[0, 1, 4]], [naive.encode(GT_BOXES[g], PRIORS[p]) for g, p in
                                                  ((1, 0), (0, 1), (0, 4))], atol=1e-5)
    np.testing.assert_array_equal(loc_t[[2, 3]], 0)
    # the oracle agrees
    naive_loc, naive_conf = naive.match(GT_BOXES, GT_LABELS, PRIORS)
    np.testing.assert_array_equal(conf_t, naive_conf)
    np.testing.assert_allclose(loc_t, naive_loc, atol=1e-5)


def test_threshold_is_inclusive_and_configurable(given_iou_and_encode):
    # E overlaps the big object by 0.889: background at threshold 0.9
    _, conf_t = match(GT_BOXES, GT_LABELS, PRIORS, iou_threshold=0.9)
    np.testing.assert_array_equal(conf_t, [7, 3, 0, 0, 0])
    # binary fractions make the IoU exactly 0.5: prior 1 overlaps the object by
    # 0.5 * 0.25 / (0.5 * 0.5) = 0.5 and is a positive at threshold 0.5 (IoU >= threshold)
    priors = corner_to_center(np.array([[0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 1.0, 0.75], [0, 0, 0.25, 0.25]]))
    _, conf_t = match(np.array([[0.5, 0.5, 1.0, 1.0]]), np.array([4]), priors)
    np.testing.assert_array_equal(conf_t, [4, 4, 0])


def test_forced_prior_overrides_a_better_object(given_iou_and_encode):
    # Prior 0 overlaps object 0 by 0.6 but is object 1's only overlapping prior (0.4):
    # step 1 gives it to object 1, whatever its own best object is.
    priors = corner_to_center(np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.3]]))
    gt = np.array([[0.0, 0.0, 0.5, 0.3], [0.0, 0.3, 0.5, 0.5]])
    # IoU(prior0, gt0) = 0.15 / 0.25 = 0.6, IoU(prior0, gt1) = 0.1 / 0.25 = 0.4,
    # IoU(prior1, gt0) = 1, IoU(prior1, gt1) = 0
    _, conf_t = match(gt, np.array([1, 2]), priors)
    np.testing.assert_array_equal(conf_t, [2, 1])


# Two objects over the threshold on one prior: the prior takes the object it overlaps MOST,
# not the first (or the last) above 0.5. Labels 5 (object 0) and 9 (object 1).
NEAR_GT = np.array([[0.0, 0.0, 0.6, 0.6], [0.1, 0.1, 0.7, 0.7]])  # IoU 0.25 / 0.47 = 0.53
NEAR_PRIORS = corner_to_center(np.array([
    [0.0, 0.0, 0.6, 0.6],      # object 0 itself: IoU 1 / 0.53
    [0.1, 0.1, 0.7, 0.7],      # object 1 itself: 0.53 / 1
    [0.1, 0.1, 0.65, 0.65],    # 0.25 / 0.4125 = 0.606 with 0, 0.3025 / 0.36 = 0.840 with 1
    [0.08, 0.08, 0.68, 0.68],  # 0.2704 / 0.4496 = 0.601 with 0, 0.3364 / 0.3836 = 0.877 with 1
    [0.02, 0.02, 0.62, 0.62],  # 0.877 with 0, 0.601 with 1
    [0.8, 0.8, 1.0, 1.0],      # overlaps neither
]))


def test_two_objects_over_the_threshold_on_one_prior_take_the_best(given_iou_and_encode):
    loc_t, conf_t = match(NEAR_GT, np.array([5, 9]), NEAR_PRIORS)
    np.testing.assert_array_equal(conf_t, [5, 9, 9, 9, 5, 0])
    # in the other order the same priors follow their objects: a prior takes the better one
    _, conf_t = match(NEAR_GT[::-1], np.array([9, 5]), NEAR_PRIORS)
    np.testing.assert_array_equal(conf_t, [5, 9, 9, 9, 5, 0])
    # the targets encode the object each prior took
    expected = [naive.encode(NEAR_GT[g], NEAR_PRIORS[p]) for p, g in enumerate([0, 1, 1, 1, 0])]
    np.testing.assert_allclose(loc_t[:5], expected, atol=1e-5)


def test_clusters_of_overlapping_objects_match_naive(given_iou_and_encode, rng):
    # objects in clusters of 2-3 jittered copies: many priors overlap several of them by >= 0.5
    priors = stored_priors(every=7)  # 1248 of SSD300's priors
    for clusters in (1, 2, 3):
        gt = []
        for _ in range(clusters):
            c, wh = rng.uniform(0.25, 0.75, 2), rng.uniform(0.15, 0.5, 2)
            for _ in range(int(rng.integers(2, 4))):
                cc, ww = c + rng.normal(0, 0.03, 2), wh * rng.uniform(0.85, 1.15, 2)
                gt.append(np.concatenate([cc - ww / 2, cc + ww / 2]))
        gt = np.clip(np.array(gt), 0, 1).astype(np.float32)
        labels = rng.integers(1, 21, len(gt))
        loc_t, conf_t = match(gt, labels, priors)
        naive_loc, naive_conf = naive.match(gt, labels, priors)
        np.testing.assert_array_equal(conf_t, naive_conf)
        np.testing.assert_allclose(loc_t, naive_loc, atol=1e-4)


def test_matches_naive_on_random_images(given_iou_and_encode, rng):
    priors = stored_priors(every=13)  # 672 priors keep the oracle quick
    for G in (1, 3, 8):
        c = rng.uniform(0.1, 0.9, (G, 2))
        wh = rng.uniform(0.03, 0.6, (G, 2))
        gt = np.clip(np.concatenate([c - wh / 2, c + wh / 2], axis=1), 0, 1).astype(np.float32)
        labels = rng.integers(1, 21, G)
        loc_t, conf_t = match(gt, labels, priors)
        naive_loc, naive_conf = naive.match(gt, labels, priors)
        np.testing.assert_array_equal(conf_t, naive_conf)
        np.testing.assert_allclose(loc_t, naive_loc, atol=1e-4)
        assert np.all(np.isin(labels, conf_t))  # every object has at least one positive


def test_batch_equals_one_image_at_a_time(given_iou_and_encode, rng):
    priors = stored_priors()
    gts, labels = [], []
    for G in (4, 0, 1, 10, 2):  # an image with no objects in the middle
        c = rng.uniform(0.1, 0.9, (G, 2))
        wh = rng.uniform(0.03, 0.6, (G, 2))
        gts.append(np.clip(np.concatenate([c - wh / 2, c + wh / 2], axis=1), 0, 1))
        labels.append(rng.integers(1, 21, G))
    loc_t, conf_t = match_batch(gts, labels, priors)
    assert loc_t.shape == (5, 8732, 4) and conf_t.shape == (5, 8732)
    for b in range(5):
        one_loc, one_conf = match(gts[b], labels[b], priors)
        np.testing.assert_array_equal(conf_t[b], one_conf)
        np.testing.assert_array_equal(loc_t[b], one_loc)
    assert conf_t[1].sum() == 0 and np.all(loc_t[1] == 0)  # no objects: all background


def test_empty_ground_truth_is_all_background():
    for empty in ([], np.zeros((0, 4))):
        loc_t, conf_t = match(empty, [], PRIORS)
        assert conf_t.shape == (5,) and not conf_t.any() and not loc_t.any()


@pytest.mark.parametrize("boxes, labels, message", [
    ([[0.5, 0.5, 0.4, 0.9]], [1], "xmax < xmin"),
    ([[0.1, 0.1, 0.1, 0.9]], [1], "xmax > xmin"),  # zero width cannot be encoded
    ([[0.1, 0.1, np.nan, 0.9]], [1], "NaN"),
    ([[0.1, 0.1, 0.5, 0.9]], [0], "1..20"),
    ([[0.1, 0.1, 0.5, 0.9]], [21], "1..20"),
    ([[0.1, 0.1, 0.5, 0.9]], [1, 2], "gt_labels"),
    ([[0.1, 0.1, 0.5, 0.9]], [1.5], "integer"),
])
def test_bad_ground_truth(boxes, labels, message):
    with pytest.raises(ValueError, match=message):
        match(np.array(boxes), np.array(labels), PRIORS, num_classes=20)
    with pytest.raises(ValueError, match=r"\[1\]"):  # the batch names the image
        match_batch([GT_BOXES, np.array(boxes)], [GT_LABELS, np.array(labels)], PRIORS, num_classes=20)


def test_zero_default_boxes_is_a_config_error_naming_priors():
    """Issue 19.11: NumPy's "attempt to get argmax of an empty sequence" before."""
    none = np.zeros((0, 4), np.float32)
    for call in (lambda: match(GT_BOXES, GT_LABELS, none),
                 lambda: match(np.zeros((0, 4)), np.zeros(0, int), none),  # even with nothing to match
                 lambda: match_batch([GT_BOXES], [GT_LABELS], none)):
        with pytest.raises(ConfigError, match=r"priors: no default boxes"):
            call()


def test_bad_threshold():
    with pytest.raises(ValueError, match="iou_threshold"):
        match(GT_BOXES, GT_LABELS, PRIORS, iou_threshold=1.5)


# [instructor-only] tests of the tests: wrong implementations, each one step from the solution
# ---- wrong implementations the checks above must catch --------------------------------------

def _match_without_forced_prior(ious, gt_labels, threshold, best_prior, best_gt, labels_out):
    """Only the threshold rule (step 2 forgotten): small objects get no positive."""
    best_gt[:] = ious.argmax(axis=0)
    labels_out[:] = np.where(ious.max(axis=0) >= threshold, gt_labels[best_gt], 0)


def _match_strict_threshold(ious, gt_labels, threshold, best_prior, best_gt, labels_out):
    """IoU > threshold instead of >=."""
    best_gt[:] = ious.argmax(axis=0)
    labels_out[:] = np.where(ious.max(axis=0) > threshold, gt_labels[best_gt], 0)
    best_gt[best_prior] = np.arange(len(gt_labels))
    labels_out[best_prior] = gt_labels


@pytest.mark.parametrize("wrong", [_match_without_forced_prior, _match_strict_threshold])
def test_wrong_matching_is_caught(monkeypatch, wrong, given_iou_and_encode):
    monkeypatch.setattr(matching, "_match_one", wrong)
    with pytest.raises(AssertionError):
        test_worked_example_best_prior_below_threshold_is_still_positive(None)
        test_threshold_is_inclusive_and_configurable(None)
# [/instructor-only]


def test_match_batch_of_no_images_gives_empty_targets():
    loc_t, conf_t = match_batch([], [], default_boxes(SSD300_VOC))
    assert loc_t.shape == (0, 8732, 4) and conf_t.shape == (0, 8732)


# ---- rule="bipartite": Caffe's greedy step ---------------------------------------------------

# Two objects whose best prior is the same, A. Priors by corners:
SHARED_PRIORS = corner_to_center(np.array([
    [0.0, 0.0, 0.5, 0.5],    # A: IoU 1 with the big object, 0.16 / 0.25 = 0.64 with the small one
    [0.2, 0.2, 0.6, 0.6],    # B: IoU 0.04 / 0.28 = 0.143 small, 0.09 / 0.32 = 0.281 big
    [0.7, 0.7, 0.9, 0.9],    # C: overlaps nothing
]))
SMALL, BIG = [0.0, 0.0, 0.4, 0.4], [0.0, 0.0, 0.5, 0.5]


def test_two_objects_sharing_their_best_prior():
    # per-prediction: both claim A, the later keeps it; B and C are below 0.5, so the earlier
    # object has no positive at all, whichever it is (ssd.pytorch, torchvision)
    _, conf_t = match(np.array([SMALL, BIG]), np.array([1, 2]), SHARED_PRIORS)
    np.testing.assert_array_equal(conf_t, [2, 0, 0])  # the small object (1) is lost
    _, conf_t = match(np.array([BIG, SMALL]), np.array([2, 1]), SHARED_PRIORS)
    np.testing.assert_array_equal(conf_t, [1, 0, 0])  # now the big one, though A is exactly it
    # bipartite (Caffe): the best pair (A, big) first, then the small object takes the best
    # prior left, B (0.143), though B overlaps the big object more; in either order
    for gt, labels in ((np.array([SMALL, BIG]), np.array([1, 2])), (np.array([BIG, SMALL]), np.array([2, 1]))):
        loc_t, conf_t = match(gt, labels, SHARED_PRIORS, rule="bipartite")
        np.testing.assert_array_equal(conf_t, [2, 1, 0])
        # B's target encodes the small object, A's the big one
        np.testing.assert_allclose(decode(loc_t, SHARED_PRIORS)[:2], [BIG, SMALL], atol=1e-6)


def test_bipartite_threshold_rule_for_the_other_priors():
    # the worked example has no shared best prior: both rules agree, threshold step included
    for rule in ("per-prediction", "bipartite"):
        _, conf_t = match(GT_BOXES, GT_LABELS, PRIORS, rule=rule)
        np.testing.assert_array_equal(conf_t, [7, 3, 0, 0, 3])
        _, conf_t = match(GT_BOXES, GT_LABELS, PRIORS, iou_threshold=0.9, rule=rule)
        np.testing.assert_array_equal(conf_t, [7, 3, 0, 0, 0])


def _greedy_pairs(ious):
    """The oracle: Caffe's loop as written, every (prior, object) pair rescanned each round,
    priors outside, strict > (ties: lower prior, then lower object)."""
    G, P = ious.shape
    forced, free_gt, free_p = -np.ones(G, int), set(range(G)), set(range(P))
    while free_gt and free_p:
        best = (-1.0, None, None)
        for p in sorted(free_p):
            for g in sorted(free_gt):
                if ious[g, p] > best[0]:
                    best = (ious[g, p], p, g)
        _, p, g = best
        forced[g] = p
        free_gt.discard(g)
        free_p.discard(p)
    return forced


def random_objects(rng, G, lo=0.03, hi=0.6):
    c = rng.uniform(0.1, 0.9, (G, 2))
    wh = rng.uniform(lo, hi, (G, 2))
    return np.clip(np.concatenate([c - wh / 2, c + wh / 2], axis=1), 0, 1).astype(np.float32)


def test_bipartite_pairs_are_caffes_greedy_loop(rng):
    for G, P in ((1, 7), (5, 9), (8, 8), (9, 4), (12, 30)):
        ious = rng.uniform(0, 1, (G, P)).astype(np.float32)
        ious[rng.uniform(size=(G, P)) < 0.3] = 0  # many zeros: ties between pairs
        ious[G // 2] = ious[0]  # two objects alike: ties broken by the lower index
        forced = np.empty(G, dtype=np.int64)
        matching._bipartite_pairs(ious, forced)
        np.testing.assert_array_equal(forced, _greedy_pairs(ious))
        assert (forced >= 0).sum() == min(G, P)  # P < G: every prior is taken, once
        assert len(set(forced[forced >= 0])) == min(G, P)


def test_bipartite_gives_every_object_a_positive(rng):
    """When P >= G, every object keeps a positive of its own; per-prediction does not (the
    same random scenes lose objects there: crowded, few priors)."""
    priors = default_boxes(SSD300_VOC)[::97]  # 91 coarse priors: best priors collide often
    lost_per_prediction = 0
    for G in (2, 5, 10, 20, 40):
        for _ in range(5):
            gt = random_objects(rng, G, 0.02, 0.3)
            labels = np.arange(1, G + 1)  # one class per object: the labels name the objects
            _, conf_t = match(gt, labels, priors, rule="bipartite")
            assert set(labels) <= set(conf_t.tolist())
            _, conf_t = match(gt, labels, priors)
            lost_per_prediction += len(set(labels) - set(conf_t.tolist()))
    assert lost_per_prediction > 0  # the property is not true of the default rule


def test_bipartite_batch_and_fewer_priors_than_objects(rng):
    priors = default_boxes(SSD300_VOC)
    gts = [random_objects(rng, G) for G in (3, 0, 6)]
    labels = [rng.integers(1, 21, len(g)) for g in gts]
    loc_t, conf_t = match_batch(gts, labels, priors, rule="bipartite")
    for b in range(3):
        one_loc, one_conf = match(gts[b], labels[b], priors, rule="bipartite")
        np.testing.assert_array_equal(conf_t[b], one_conf)
        np.testing.assert_array_equal(loc_t[b], one_loc)
    # 3 priors, 5 objects: every prior is forced onto one object, no index runs off
    _, conf_t = match(random_objects(rng, 5), np.arange(1, 6), SHARED_PRIORS, rule="bipartite")
    assert np.all(conf_t > 0) and len(set(conf_t.tolist())) == 3


def test_default_rule_is_per_prediction_and_unknown_rule_is_refused():
    gt, labels = np.array([SMALL, BIG]), np.array([1, 2])
    np.testing.assert_array_equal(match(gt, labels, SHARED_PRIORS)[1],
                                  match(gt, labels, SHARED_PRIORS, rule="per-prediction")[1])
    for call in (lambda: match(gt, labels, SHARED_PRIORS, rule="hungarian"),
                 lambda: match_batch([gt], [labels], SHARED_PRIORS, rule="Bipartite")):
        with pytest.raises(ValueError, match=r"rule: .*'per-prediction', 'bipartite'"):
            call()


# [instructor-only] a test of the tests: a wrong rule that is the per-prediction solution again
def _bipartite_as_argmax(ious, gt_labels, threshold, best_prior, best_gt, labels_out):
    """The threshold rule, then each object its own argmax (a later one steals): no bipartite."""
    best_gt[:] = ious.argmax(axis=0)
    labels_out[:] = np.where(ious.max(axis=0) >= threshold, gt_labels[best_gt], 0)
    for g, p in enumerate(ious.argmax(axis=1)):
        best_gt[p], labels_out[p] = g, gt_labels[g]


def test_wrong_bipartite_is_caught(monkeypatch):
    monkeypatch.setattr(matching, "_match_bipartite", _bipartite_as_argmax)
    with pytest.raises(AssertionError):
        test_two_objects_sharing_their_best_prior()
# [/instructor-only]
