"""minissd.loss: smooth L1, softmax cross-entropy, hard negative mining, the multibox loss."""

import numpy as np
import pytest

import naive
from minissd import loss as L
from minissd.loss import hard_negative_mining, multibox_loss, smooth_l1, softmax_cross_entropy
from minissd.nn.gradcheck import numerical_gradient, rel_error


def test_smooth_l1_values_and_gradient():
    loss, grad = smooth_l1(np.array([-2.0, -0.5, 0.0, 0.5, 1.0, 3.0]))
    # |x| < 1: x^2 / 2 ; else |x| - 1/2   (continuous at |x| = 1: 0.5 both ways)
    np.testing.assert_allclose(loss, [1.5, 0.125, 0.0, 0.125, 0.5, 2.5])
    np.testing.assert_allclose(grad, [-1, -0.5, 0, 0.5, 1, 1])


def test_softmax_cross_entropy_is_stable_and_correct():
    logits = np.array([[0.0, 0.0], [1000.0, 0.0], [0.0, 1000.0], [-1000.0, -1000.0]])
    loss, grad = softmax_cross_entropy(logits, np.array([0, 0, 0, 1]))
    # two equal logits: -log(1/2); a 1000 margin for / against the label: 0 / 1000
    np.testing.assert_allclose(loss, [np.log(2), 0.0, 1000.0, np.log(2)])
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad[0], [-0.5, 0.5])
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-12)  # softmax sums to 1


def test_mining_worked_example_with_known_ranks():
    # one image, 8 priors, 1 positive (prior 2): ratio 3 keeps the 3 negatives with the
    # largest background loss: 0.9 (prior 5), 0.8 (prior 0), then 0.7 twice (priors 3
    # and 6): the tie goes to the lower index, 3. The positive's own loss (5.0) is ignored.
    bg_loss = np.array([[0.8, 0.1, 5.0, 0.7, 0.2, 0.9, 0.7, 0.3]])
    conf_t = np.array([[0, 0, 4, 0, 0, 0, 0, 0]])
    mask = hard_negative_mining(bg_loss, conf_t)
    np.testing.assert_array_equal(np.flatnonzero(mask[0]), [0, 2, 3, 5])
    np.testing.assert_array_equal(hard_negative_mining(bg_loss, conf_t, neg_pos_ratio=1)[0],
                                  [0, 0, 1, 0, 0, 1, 0, 0])
    # not enough negatives: all of them (min(3 * 4, 1) = 1)
    np.testing.assert_array_equal(hard_negative_mining(bg_loss[:, :5], [[1, 2, 3, 0, 4]]), True)
    # no positives: no negatives either
    assert not hard_negative_mining(bg_loss, np.zeros_like(conf_t)).any()


def test_mining_matches_naive(rng):
    B, P = 6, 400
    bg_loss = rng.random((B, P)).astype(np.float32)
    bg_loss[:, ::7] = 0.5  # many ties
    conf_t = np.where(rng.random((B, P)) < rng.random((B, 1)) * 0.4, rng.integers(1, 5, (B, P)), 0)
    conf_t[0] = 0  # an image with no objects
    bg_loss[1] = np.arange(P)  # increasing and decreasing losses: the filter's worst cases
    bg_loss[2] = -np.arange(P)
    for ratio in (3, 1, 0.5):
        np.testing.assert_array_equal(hard_negative_mining(bg_loss, conf_t, ratio),
                                      naive.hard_negative_mining(bg_loss, conf_t, ratio))


def test_mining_is_per_image():
    # image 0: 1 positive, hard negatives (0.9 ...); image 1: 1 positive, easy ones (0.1 ...).
    # Per image each keeps its own 3 hardest; one pool for the batch would take image 0's 6.
    bg_loss = np.array([[5.0, 0.9, 0.8, 0.85, 0.7, 0.95, 0.75, 0.6],
                        [5.0, 0.1, 0.3, 0.05, 0.2, 0.15, 0.25, 0.01]])
    conf_t = np.array([[2, 0, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]])
    mask = hard_negative_mining(bg_loss, conf_t)
    np.testing.assert_array_equal(np.flatnonzero(mask[0]), [0, 1, 3, 5])
    np.testing.assert_array_equal(np.flatnonzero(mask[1]), [0, 2, 4, 6])


def test_mining_bad_input():
    with pytest.raises(ValueError, match="bg_loss"):
        hard_negative_mining(np.array([[np.nan, 1.0]]), np.array([[1, 0]]))
    with pytest.raises(ValueError, match="conf_t"):
        hard_negative_mining(np.zeros((1, 2)), np.array([[1, -1]]))
    with pytest.raises(ValueError, match="conf_t"):
        hard_negative_mining(np.zeros((1, 2)), np.array([[1, 0, 0]]))


def random_batch(rng, B=2, P=12, C=3, dtype=np.float64):
    loc_p = rng.standard_normal((B, P, 4)).astype(dtype) * 1.5  # both smooth-L1 branches
    loc_t = rng.standard_normal((B, P, 4)).astype(dtype)
    conf_p = rng.standard_normal((B, P, C + 1)).astype(dtype) * 2
    conf_t = np.zeros((B, P), dtype=np.int64)
    conf_t[0, [1, 4]] = [1, 3]
    conf_t[1, [0, 5, 7]] = [2, 2, 1]
    return loc_p, conf_p, loc_t, conf_t


@pytest.fixture
def given_mining(monkeypatch):
    """Grade the loss on its own: the mask that ``multibox_loss`` mines comes from the oracle
    (naive.hard_negative_mining, replayed in the student copy), not from the mining part."""
    def mine_from_the_oracle(losses, labels, ratio, mask_out):
        mask_out[:] = naive.hard_negative_mining(losses, labels, ratio)

    monkeypatch.setattr(L, "_mine", mine_from_the_oracle)


def test_multibox_loss_values_by_hand(given_mining, rng):
    loc_p, conf_p, loc_t, conf_t = random_batch(rng)
    loss_l, loss_c, dloc, dconf = multibox_loss(loc_p, conf_p, loc_t, conf_t)
    pos = conf_t > 0
    N = pos.sum()  # 5
    expected_l = smooth_l1(loc_p[pos] - loc_t[pos])[0].sum() / N
    logp = conf_p - np.log(np.exp(conf_p).sum(-1, keepdims=True))
    mask = naive.hard_negative_mining(-logp[..., 0], conf_t)
    assert mask.sum() == 5 + 6 + 9  # 5 positives, 3 per positive per image (2*3 and 3*3)
    expected_c = -np.take_along_axis(logp, conf_t[..., None], -1)[..., 0][mask].sum() / N
    np.testing.assert_allclose([loss_l, loss_c], [expected_l, expected_c], rtol=1e-12)
    assert dloc.shape == loc_p.shape and dconf.shape == conf_p.shape


def test_multibox_loss_gradients_by_hand(given_mining, rng):
    loc_p, conf_p, loc_t, conf_t = random_batch(rng)
    alpha = 0.7
    _, _, dloc, dconf = multibox_loss(loc_p, conf_p, loc_t, conf_t, alpha=alpha)
    pos = conf_t > 0
    N = pos.sum()  # 5
    # localisation: alpha / N * smooth-L1'(loc_p - loc_t) at the positives, 0 elsewhere
    expected_dloc = np.zeros_like(loc_p)
    expected_dloc[pos] = alpha / N * smooth_l1(loc_p[pos] - loc_t[pos])[1]
    np.testing.assert_allclose(dloc, expected_dloc, rtol=1e-12, atol=1e-15)
    # confidence: (softmax - onehot(label)) / N on the mined priors, 0 elsewhere
    logp = conf_p - np.log(np.exp(conf_p).sum(-1, keepdims=True))
    mask = naive.hard_negative_mining(-logp[..., 0], conf_t)
    expected_dconf = np.exp(logp) - np.eye(conf_p.shape[2])[conf_t]
    expected_dconf[~mask] = 0
    np.testing.assert_allclose(dconf, expected_dconf / N, rtol=1e-10, atol=1e-15)


def test_multibox_loss_divides_by_the_positives_of_the_whole_batch(given_mining, rng):
    # N counts the positives of the whole batch: an image with no objects added to the batch,
    # or more default boxes that are all background and easy, change neither loss
    loc_p, conf_p, loc_t, conf_t = random_batch(rng)
    ref = multibox_loss(loc_p, conf_p, loc_t, conf_t)
    P, K = conf_p.shape[1:]
    empty = (rng.standard_normal((1, P, 4)), rng.standard_normal((1, P, K)) * 2,
             rng.standard_normal((1, P, 4)), np.zeros((1, P), np.int64))  # an image, no objects
    more_images = multibox_loss(*(np.concatenate([a, b]) for a, b in zip((loc_p, conf_p, loc_t, conf_t), empty)))
    np.testing.assert_allclose(more_images[:2], ref[:2], rtol=1e-12)
    easy = np.zeros((2, 30, conf_p.shape[2]))
    easy[..., 0] = 50.0  # background by a margin of 50: never mined before the harder ones
    more_priors = multibox_loss(np.concatenate([loc_p, np.zeros((2, 30, 4))], 1), np.concatenate([conf_p, easy], 1),
                                np.concatenate([loc_t, np.zeros((2, 30, 4))], 1),
                                np.concatenate([conf_t, np.zeros((2, 30), np.int64)], 1))
    np.testing.assert_allclose(more_priors[:2], ref[:2], rtol=1e-12)


def test_multibox_loss_gradient_check(given_mining, rng):
    loc_p, conf_p, loc_t, conf_t = random_batch(rng)
    alpha = 0.7
    _, _, dloc, dconf = multibox_loss(loc_p, conf_p, loc_t, conf_t, alpha=alpha)

    def total():
        loss_l, loss_c, _, _ = multibox_loss(loc_p, conf_p, loc_t, conf_t, alpha=alpha)
        return loss_c + alpha * loss_l

    # centred differences in float64: the error should be around 1e-9
    assert rel_error(dloc, numerical_gradient(total, loc_p)) < 1e-6
    assert rel_error(dconf, numerical_gradient(total, conf_p)) < 1e-6


def test_multibox_loss_float32_and_no_positives(given_mining, rng):
    loc_p, conf_p, loc_t, conf_t = random_batch(rng, dtype=np.float32)
    loss_l, loss_c, dloc, dconf = multibox_loss(loc_p, conf_p, loc_t, conf_t)
    assert dloc.dtype == np.float32 and dconf.dtype == np.float32
    assert isinstance(loss_l, float) and isinstance(loss_c, float)
    ref = multibox_loss(loc_p.astype(float), conf_p.astype(float), loc_t.astype(float), conf_t)
    np.testing.assert_allclose([loss_l, loss_c], ref[:2], rtol=1e-5)
    # no objects anywhere: N = 1, nothing mined, zero loss and zero gradient (finite)
    loss_l, loss_c, dloc, dconf = multibox_loss(loc_p, conf_p, loc_t, np.zeros_like(conf_t))
    assert loss_l == 0.0 and loss_c == 0.0 and not dloc.any() and not dconf.any()
    # huge logits stay finite (log-sum-exp)
    loss_l, loss_c, _, dconf = multibox_loss(loc_p, conf_p * 1e4, loc_t, conf_t)
    assert np.isfinite(loss_c) and np.all(np.isfinite(dconf))


@pytest.mark.parametrize("change, message", [
    (lambda a: (a[0][:, :, :3], *a[1:]), "loc_p"),
    (lambda a: (a[0], a[1], a[2], a[3] + 10), "conf_t"),  # labels beyond C = 3
    (lambda a: (a[0], np.where(a[1] > 1, np.nan, a[1]), a[2], a[3]), "conf_p: contains NaN"),
    (lambda a: (a[0], a[1].astype(int), a[2], a[3]), "conf_p"),
])
def test_multibox_loss_bad_input(rng, change, message):
    with pytest.raises(ValueError, match=message):
        multibox_loss(*change(random_batch(rng)))


# [instructor-only] tests of the tests: wrong implementations, each one step from the solution
# ---- wrong implementations the checks above must catch --------------------------------------

def _mine_counting_positives_as_negatives(bg_loss, conf_t, neg_pos_ratio, mask):
    """Ranks every prior, positives included, so a hard positive takes a negative's place."""
    for b in range(conf_t.shape[0]):
        num_pos = int((conf_t[b] > 0).sum())
        k = min(int(neg_pos_ratio * num_pos), conf_t.shape[1] - num_pos)
        order = np.argsort(-bg_loss[b], kind="stable")
        mask[b] = conf_t[b] > 0
        mask[b, order[:k]] = True


def _mine_whole_batch(bg_loss, conf_t, neg_pos_ratio, mask):
    """Mines over the batch as one pool instead of per image."""
    num_pos = int((conf_t > 0).sum())
    k = min(int(neg_pos_ratio * num_pos), int((conf_t == 0).sum()))
    flat = np.where(conf_t == 0, bg_loss, -np.inf).ravel()
    mask[:] = conf_t > 0
    mask.ravel()[np.argsort(-flat, kind="stable")[:k]] = True


@pytest.mark.parametrize("wrong", [_mine_counting_positives_as_negatives, _mine_whole_batch])
def test_wrong_mining_is_caught(monkeypatch, rng, wrong):
    monkeypatch.setattr(L, "_mine", wrong)
    with pytest.raises(AssertionError):
        test_mining_worked_example_with_known_ranks()
        test_mining_matches_naive(rng)
# [/instructor-only]


# ---- conf_loss="all" and "focal": every prior, no mining ------------------------------------

def tiny_case():
    """One image, three priors, background + 1 class, N = 1; the softmaxes are hand-made:
    prior 0 an object with logits (0, 0): p_t = 1/2; prior 1 background with (ln 3, 0):
    p_t = 3/4; prior 2 background with (ln 7, 0): p_t = 7/8."""
    conf_p = np.array([[[0.0, 0.0], [np.log(3), 0.0], [np.log(7), 0.0]]])
    conf_t = np.array([[1, 0, 0]])
    loc_p = np.array([[[0.5, -2.0, 0.0, 0.0], [9.0, 9, 9, 9], [9.0, 9, 9, 9]]])
    return loc_p, conf_p, np.zeros_like(loc_p), conf_t


def test_conf_loss_variants_by_hand():
    args = tiny_case()
    loss_l = 0.5 * 0.5 ** 2 + (2 - 0.5)  # smooth-L1 of the positive only, the same in all three
    # hnm with 1 negative per positive keeps the harder negative, prior 1 (-log 3/4 > -log 7/8)
    hnm = multibox_loss(*args, neg_pos_ratio=1)
    np.testing.assert_allclose(hnm[:2], [loss_l, np.log(2) + np.log(4 / 3)], rtol=1e-12)
    # all: every prior's cross-entropy, neg_pos_ratio has no say
    for ratio in (1, 3):
        every = multibox_loss(*args, neg_pos_ratio=ratio, conf_loss="all")
        np.testing.assert_allclose(every[:2], [loss_l, np.log(2) + np.log(4 / 3) + np.log(8 / 7)],
                                   rtol=1e-12)
    # focal, gamma 2: (1 - p_t)^2 * -log p_t = 1/4 ln 2 + 1/16 ln 4/3 + 1/64 ln 8/7
    focal = multibox_loss(*args, conf_loss="focal")
    np.testing.assert_allclose(focal[:2], [loss_l, np.log(2) / 4 + np.log(4 / 3) / 16 + np.log(8 / 7) / 64],
                               rtol=1e-12)
    # the gradient of the object's row: w (softmax - onehot), w = q^2 - 2 p q log p, p = q = 1/2
    w = 0.25 - 2 * 0.25 * np.log(0.5)
    np.testing.assert_allclose(focal[3][0, 0], [0.5 * w, -0.5 * w], rtol=1e-12)
    for out in (every, focal):
        np.testing.assert_array_equal(out[2], hnm[2])  # the loc gradient does not change


def gradcheck(conf_loss, rng, **kw):
    loc_p, conf_p, loc_t, conf_t = random_batch(rng)
    alpha = 0.7
    _, _, dloc, dconf = multibox_loss(loc_p, conf_p, loc_t, conf_t, alpha=alpha, conf_loss=conf_loss, **kw)

    def total():
        loss_l, loss_c, _, _ = multibox_loss(loc_p, conf_p, loc_t, conf_t, alpha=alpha,
                                             conf_loss=conf_loss, **kw)
        return loss_c + alpha * loss_l

    return (rel_error(dloc, numerical_gradient(total, loc_p)),
            rel_error(dconf, numerical_gradient(total, conf_p)))


@pytest.mark.parametrize("conf_loss, kw", [("all", {}), ("focal", {}), ("focal", {"focal_gamma": 0.5}),
                                           ("focal", {"focal_gamma": 5.0})])
def test_conf_loss_gradient_check(rng, conf_loss, kw):
    # centred differences in float64, as for the mined loss
    assert max(gradcheck(conf_loss, rng, **kw)) < 1e-6


def test_focal_with_gamma_0_is_all_and_easy_priors_fade(rng):
    loc_p, conf_p, loc_t, conf_t = random_batch(rng)
    every = multibox_loss(loc_p, conf_p, loc_t, conf_t, conf_loss="all")
    focal0 = multibox_loss(loc_p, conf_p, loc_t, conf_t, conf_loss="focal", focal_gamma=0.0)
    np.testing.assert_allclose(focal0[1], every[1], rtol=1e-12)
    np.testing.assert_allclose(focal0[3], every[3], rtol=1e-12, atol=1e-15)
    # p_t close to 1 (a logit margin of 40): 1 - p_t ~ 4e-18 would round to 0, expm1 keeps
    # it; the loss and its weight are tiny but finite and positive, and gamma < 1 is finite too
    logp_t = np.array([-np.log1p(np.exp(-40.0)), 0.0, np.log(0.5)])
    for gamma in (2.0, 0.5):
        fl, w = L.focal_loss(logp_t, gamma)
        assert np.all(np.isfinite(fl)) and np.all(np.isfinite(w))
        assert 0 < fl[0] < 1e-25 and 0 < w[0] < 1e-8 and fl[1] == 0 and w[1] == 0
    # gamma 2 at p_t = 1/2: w = 1/4 + ln 2 / 2 (hand-worked, as in the tiny case)
    np.testing.assert_allclose(L.focal_loss(np.log([0.5]), 2.0)[1], [0.25 + np.log(2) / 2], rtol=1e-12)


def test_conf_loss_float32_no_positives_and_bad_names(rng):
    loc_p, conf_p, loc_t, conf_t = random_batch(rng, dtype=np.float32)
    for conf_loss in ("all", "focal"):
        loss_l, loss_c, dloc, dconf = multibox_loss(loc_p, conf_p, loc_t, conf_t, conf_loss=conf_loss)
        assert dloc.dtype == np.float32 and dconf.dtype == np.float32 and isinstance(loss_c, float)
        ref = multibox_loss(loc_p.astype(float), conf_p.astype(float), loc_t.astype(float), conf_t,
                            conf_loss=conf_loss)
        np.testing.assert_allclose([loss_l, loss_c], ref[:2], rtol=1e-5)
        # no objects: unlike hnm (0), the background is still learned, divided by N = 1
        loss_l, loss_c, dloc, dconf = multibox_loss(loc_p, conf_p, loc_t, np.zeros_like(conf_t),
                                                    conf_loss=conf_loss)
        assert loss_l == 0 and loss_c > 0 and not dloc.any() and dconf.any()
        _, loss_c, _, dconf = multibox_loss(loc_p, conf_p * 1e4, loc_t, conf_t, conf_loss=conf_loss)
        assert np.isfinite(loss_c) and np.all(np.isfinite(dconf))
    with pytest.raises(ValueError, match=r"conf_loss: .*'hnm', 'all', 'focal'.*'ohem'"):
        multibox_loss(loc_p, conf_p, loc_t, conf_t, conf_loss="ohem")
    with pytest.raises(ValueError, match="focal_gamma"):
        multibox_loss(loc_p, conf_p, loc_t, conf_t, conf_loss="focal", focal_gamma=-1)


def _focal_weight_without_the_log_term(logp_t, gamma=2.0):
    """d/dz taken as if (1 - p_t)^gamma were a constant: w = q^gamma only."""
    q = -np.expm1(logp_t)
    return -q ** gamma * logp_t, q ** gamma


def test_wrong_focal_gradient_is_caught(monkeypatch, rng):
    monkeypatch.setattr(L, "focal_loss", _focal_weight_without_the_log_term)
    assert gradcheck("focal", rng)[1] > 1e-3
