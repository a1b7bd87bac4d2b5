"""minissd.cuda.loss (mining by ranking) against the CPU twin (selection) and naive.hard_negative_mining."""

import numpy as np
import pytest

import naive
from minissd import loss

from minissd.cuda import loss as cuda_loss
from minissd.cuda import require


def test_cuda_mining_worked_example():
    # One image, 8 priors, 1 positive (prior 2) -> k = min(3 * 1, 7) = 3 negatives.
    # Negative losses: p0 0.1, p1 0.9, p3 0.5, p4 0.9, p5 0.2, p6 0.5, p7 0.3.
    # Ranked: p1 0.9, p4 0.9 (tie: lower index first), then p3 0.5 before p6 0.5 -> take p1, p4, p3.
    bg = np.array([[0.1, 0.9, 5.0, 0.5, 0.9, 0.2, 0.5, 0.3]], np.float32)
    conf = np.array([[0, 0, 4, 0, 0, 0, 0, 0]])
    mask = cuda_loss.hard_negative_mining(bg, conf)
    assert mask.dtype == np.bool_
    np.testing.assert_array_equal(np.flatnonzero(mask[0]), [1, 2, 3, 4])


@pytest.mark.parametrize("ratio", [3, 1, 0])
def test_cuda_mining_matches_cpu_and_naive(rng, ratio):
    # 3 images x 40 priors: 3 positives; 15 positives (k capped by the 25 negatives); none.
    # Losses rounded to one decimal so that many are equal: ties must go the CPU's way.
    bg = np.round(rng.uniform(0, 2, (3, 40)), 1).astype(np.float32)
    conf = np.zeros((3, 40), np.int64)
    conf[0, rng.choice(40, 3, replace=False)] = rng.integers(1, 21, 3)
    conf[1, rng.choice(40, 15, replace=False)] = rng.integers(1, 21, 15)
    got = cuda_loss.hard_negative_mining(bg, conf, neg_pos_ratio=ratio)
    np.testing.assert_array_equal(got, loss.hard_negative_mining(bg, conf, neg_pos_ratio=ratio))
    np.testing.assert_array_equal(got, naive.hard_negative_mining(bg, conf, neg_pos_ratio=ratio))
    assert not got[2].any()  # no positives, no negatives


def test_cuda_mining_on_device(rng):
    cuda = require()
    bg = rng.uniform(0, 2, (2, 40)).astype(np.float32)
    conf = np.zeros((2, 40), np.int64)
    conf[:, :4] = 1
    mask = cuda_loss.hard_negative_mining(cuda.to_device(bg), cuda.to_device(conf))
    assert hasattr(mask, "copy_to_host")
    np.testing.assert_array_equal(mask.copy_to_host(), naive.hard_negative_mining(bg, conf))
    assert mask.copy_to_host().sum(axis=1).tolist() == [16, 16]  # 4 positives + 12 negatives


def test_cuda_mining_negative_losses_and_many_chunks(rng):
    # Any finite float is ranked (negative ones too: the sign-flipping key), and 300 priors
    # over the threads put the k-th loss and its ties in different threads' chunks.
    bg = np.round(rng.normal(0, 1, (2, 300)), 1).astype(np.float32)  # ~60 distinct values: ties
    conf = np.zeros((2, 300), np.int64)
    conf[0, rng.choice(300, 40, replace=False)] = 1
    conf[1, rng.choice(300, 7, replace=False)] = 2
    got = cuda_loss.hard_negative_mining(bg, conf)
    np.testing.assert_array_equal(got, naive.hard_negative_mining(bg, conf))


def test_cuda_mining_refuses_what_cpu_refuses():
    with pytest.raises(ValueError, match="NaN"):
        cuda_loss.hard_negative_mining(np.array([[np.nan, 0.0]]), np.array([[1, 0]]))
    with pytest.raises(ValueError, match="conf_t"):
        cuda_loss.hard_negative_mining(np.zeros((1, 2)), np.array([[1, -1]]))


# ---- the multibox loss ------------------------------------------------------------------------

def loss_case(rng, B=3, P=30, K=4):
    loc_p = rng.standard_normal((B, P, 4)).astype(np.float32) * 1.5  # some |diff| >= 1: both smooth-L1 pieces
    conf_p = rng.standard_normal((B, P, K)).astype(np.float32) * 2
    loc_t = rng.standard_normal((B, P, 4)).astype(np.float32)
    conf_t = np.zeros((B, P), np.int64)
    conf_t[0, [1, 7, 20]] = [1, 3, 2]
    conf_t[1, rng.choice(P, 9, replace=False)] = rng.integers(1, K, 9)  # k capped by the negatives
    return loc_p, conf_p, loc_t, conf_t  # image 2: no positives, no negatives


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_cuda_multibox_loss_matches_cpu(rng, alpha):
    # on the simulator: one grid-stride block of 32 threads, summing blocks of 8
    loc_p, conf_p, loc_t, conf_t = loss_case(rng)
    loss_l, loss_c, dloc, dconf = loss.multibox_loss(loc_p, conf_p, loc_t, conf_t, alpha=alpha)
    g_loss_l, g_loss_c, g_dloc, g_dconf = cuda_loss.multibox_loss(loc_p, conf_p, loc_t, conf_t, alpha=alpha)
    assert g_loss_l == pytest.approx(loss_l, rel=1e-6) and g_loss_c == pytest.approx(loss_c, rel=1e-6)
    np.testing.assert_allclose(g_dloc, dloc, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(g_dconf, dconf, rtol=1e-5, atol=1e-8)
    assert not g_dconf[2].any() and not g_dloc[2].any()  # the image without objects: no gradient


def test_cuda_multibox_loss_on_device_and_without_positives(rng):
    cuda = require()
    loc_p, conf_p, loc_t, _ = (a[:1] for a in loss_case(rng))  # one image, 30 priors
    conf_t = np.zeros((1, 30), np.int64)  # no objects anywhere: both losses 0 (N = 1 only avoids / 0)
    args = [cuda.to_device(a) for a in (loc_p, conf_p, loc_t, conf_t)]
    loss_l, loss_c, dloc, dconf = cuda_loss.multibox_loss(*args)
    assert (loss_l, loss_c) == (0.0, 0.0)
    assert hasattr(dloc, "copy_to_host") and not dconf.copy_to_host().any()


@pytest.mark.parametrize("conf_loss", ["all", "focal"])
def test_cuda_loss_refuses_the_confidence_losses_it_lacks(conf_loss):
    z = np.zeros((1, 2, 4), np.float32)
    with pytest.raises(ValueError, match=f"conf_loss: the GPU has hard negative mining .* got '{conf_loss}'"):
        cuda_loss.multibox_loss(z, np.zeros((1, 2, 3), np.float32), z, np.zeros((1, 2), np.int64), conf_loss=conf_loss)
