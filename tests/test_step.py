"""minissd.step: the training step's maths (forward_backward) and clip_grad_norm.

A tiny SSD (32x32 input, two source maps, 72 default boxes) keeps every check fast."""

from dataclasses import astuple, fields

import numpy as np
import pytest

from minissd import nn
from minissd.loss import multibox_loss
from minissd.matching import match_batch
from minissd.model import SSD, SSDConfig
from minissd.priors import PriorConfig
from minissd.step import LossConfig, clip_grad_norm, forward_backward

PRIORS = PriorConfig.from_scales(32, (4, 2), s_min=0.2, s_max=0.8, aspect_ratios=((2,), ()))
TABLES = ((("conv", 4, 3, 4, 1, 1), "M"),  # 32 -> 8 -> 4: source 1
          (("conv", 8, 3, 2, 1, 1),))      # 4 -> 2: source 2
PLAIN = SSDConfig(name="test", tables=TABLES, priors=PRIORS, batch_norm=False)
LOSS = LossConfig()


def make_batch(rng, B=4):
    images = rng.standard_normal((B, 3, 32, 32)).astype(np.float32)
    boxes, labels = [], []
    for b in range(B):
        k = 1 + b % 2
        c, s = rng.uniform(0.3, 0.7, (k, 2)), rng.uniform(0.2, 0.5, (k, 2))
        boxes.append(np.concatenate([c - s / 2, c + s / 2], axis=1).clip(0, 1).astype(np.float32))
        labels.append(rng.integers(1, 3, k))
    return images, boxes, labels


def test_loss_config_defaults_are_the_papers():
    assert (LOSS.iou_threshold, LOSS.neg_pos_ratio, LOSS.alpha) == (0.5, 3.0, 1.0)
    assert (LOSS.matching, LOSS.conf_loss) == ("per-prediction", "hnm")
    # the switches come last: minissd.workers rebuilds the config as LossConfig(*tuple)
    assert [f.name for f in fields(LossConfig)] == ["iou_threshold", "neg_pos_ratio", "alpha",
                                                    "matching", "conf_loss"]
    cfg = LossConfig(0.4, 2.0, 0.5, "bipartite", "focal")
    assert LossConfig(*astuple(cfg)) == cfg and LossConfig(0.4, 2.0, 0.5) == LossConfig(0.4, 2.0, 0.5,
                                                                                   "per-prediction", "hnm")


def test_forward_backward_is_the_gradient_of_the_loss(rng):
    """Centred differences of loss_c + alpha * loss_l (float64) against the step's .grad.
    Mining's choice is constant for so small a move, so the loss is smooth there."""
    model = SSD(PLAIN, 2, seed=1).to(np.float64).train()
    images, boxes, labels = make_batch(rng)
    images = images.astype(np.float64)
    cfg = LossConfig(alpha=0.7)

    def loss():
        loss_l, loss_c = forward_backward(model, images, boxes, labels, cfg)
        return loss_c + cfg.alpha * loss_l

    for p in (model.stages[0][0].weight, model.heads.convs[0].bias):  # through every layer
        forward_backward(model, images, boxes, labels, cfg)
        analytic = p.grad.copy()
        numeric = nn.numerical_gradient(loss, p.data)
        assert np.abs(analytic).max() > 0
        assert nn.rel_error(analytic, numeric) < 1e-6


def test_forward_backward_zeroes_the_gradients_first_and_adds_up_times(rng):
    model = SSD(PLAIN, 2, seed=1).train()
    images, boxes, labels = make_batch(rng)
    times, stats = {}, {}
    first = forward_backward(model, images, boxes, labels, LOSS, times=times, stats=stats)
    grads = [p.grad.copy() for p in model.parameters()]
    once = dict(times)
    second = forward_backward(model, images, boxes, labels, LOSS, times=times)
    assert first == second
    for p, g in zip(model.parameters(), grads):
        np.testing.assert_array_equal(p.grad, g)  # not 2 g: .grad was zeroed first
    assert set(times) == {"match", "forward", "loss", "backward"}
    assert all(times[k] > once[k] > 0 for k in times)  # added, not overwritten
    assert stats["positives"] >= 6  # every ground truth claims at least one prior


def test_a_non_finite_output_writes_no_gradient(rng):
    model = SSD(PLAIN, 2, seed=1).train()
    images, boxes, labels = make_batch(rng)
    forward_backward(model, images, boxes, labels, LOSS)  # leaves gradients behind
    model.stages[0][0].weight.data[0, 0, 0, 0] = np.nan
    loss_l, loss_c = forward_backward(model, images, boxes, labels, LOSS)
    assert np.isnan(loss_l) and np.isnan(loss_c)
    assert all(not p.grad.any() for p in model.parameters())


def test_clip_grad_norm_worked_by_hand():
    a, b = nn.Parameter(np.zeros(1)), nn.Parameter(np.zeros((1, 1)))
    a.grad[...], b.grad[...] = 3.0, 4.0  # global norm 5
    assert clip_grad_norm([a, b], 10.0) == pytest.approx(5.0)
    assert (a.grad[0], b.grad[0, 0]) == (3.0, 4.0)  # under the limit: unchanged
    assert clip_grad_norm([a, b], 0.0) == pytest.approx(5.0)  # 0: clipping off
    assert (a.grad[0], b.grad[0, 0]) == (3.0, 4.0)
    assert clip_grad_norm(iter([a, b]), 1.0) == pytest.approx(5.0)  # any iterable
    np.testing.assert_allclose([a.grad[0], b.grad[0, 0]], [0.6, 0.8])  # norm 1 now


# Two objects with the same best prior: the 0.2 square of map 0, cell (1, 1), centre (0.375, 0.375).
# BIG is that prior exactly (IoU 1); SMALL, 0.16 wide on the same centre, overlaps it by 0.64 and
# the cell's 2:1 boxes by 0.53 (BIG by 0.55, so those go to BIG by the threshold rule).
SMALL, BIG = [0.295, 0.295, 0.455, 0.455], [0.275, 0.275, 0.475, 0.475]


def test_loss_config_switches_reach_matching_and_the_loss(rng):
    model = SSD(PLAIN, 2, seed=1).to(np.float64).train()
    images = rng.standard_normal((2, 3, 32, 32))
    boxes = [np.array([SMALL, BIG]), np.array([[0.1, 0.5, 0.6, 0.9]])]
    labels = [np.array([1, 2]), np.array([1])]
    # the case: per prediction, BIG (later) takes the shared prior and SMALL has no positive;
    # bipartite gives SMALL the first 2:1 box
    per = match_batch(boxes, labels, model.priors)[1]
    bip = match_batch(boxes, labels, model.priors, rule="bipartite")[1]
    assert 1 not in per[0] and 1 in bip[0] and np.array_equal(per[1], bip[1])

    def losses(cfg):
        stats = {}
        out = forward_backward(model, images, boxes, labels, cfg, stats=stats)
        return out, stats["positives"], [p.grad.copy() for p in model.parameters()]

    # defaults: the same numbers as today's calls, match_batch and multibox_loss with no switch
    loc_p, conf_p = model.forward(images)
    loc_t, conf_t = match_batch(boxes, labels, model.priors)
    before = multibox_loss(loc_p, conf_p, loc_t, conf_t, 3.0, 1.0)[:2]
    (loss_l, loss_c), positives, grads = losses(LossConfig())
    assert (loss_l, loss_c) == before and positives == np.count_nonzero(per)
    # bipartite: SMALL takes a 2:1 box that BIG held, so a box changes its target (same count)
    (bl, bc), bpos, _ = losses(LossConfig(matching="bipartite"))
    assert bpos == np.count_nonzero(bip) and not np.array_equal(per, bip) and bl != loss_l and bc != loss_c
    # the confidence loss switch: same matching, so the same loc term, another conf term
    for conf_loss in ("all", "focal"):
        (cl, cc), cpos, cgrads = losses(LossConfig(conf_loss=conf_loss))
        want = multibox_loss(loc_p, conf_p, loc_t, conf_t, conf_loss=conf_loss)[:2]
        np.testing.assert_allclose([cl, cc], want, rtol=1e-12)
        assert cpos == positives and cl == loss_l and cc != loss_c
        assert any(not np.array_equal(g, h) for g, h in zip(grads, cgrads))
    with pytest.raises(ValueError, match="rule"):
        forward_backward(model, images, boxes, labels, LossConfig(matching="greedy"))
