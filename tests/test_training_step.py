"""step.forward_backward, the training step, graded on its own (part ``train_step``, chapter 7).

The step is the order of things: zero the gradients, match, forward, loss, backward, with the
loss config's switches passed on and a non-finite value stopped before backward. To grade
that alone, these tests give it stand-ins for what it calls: a linear "network" (a few images
in, one matrix product out) and a quadratic loss in place of multibox_loss, and a fixed
matcher in place of match_batch; the stand-ins record what they were given. So a correct step
scores here whatever chapters 3-6 hold, and a mistake in those is not charged twice. The real
step on the real network is tested in test_step.py (against finite differences).
"""

import inspect
import math

import numpy as np
import pytest

from minissd import loss, matching, step
from minissd.nn import Module, Parameter
from minissd.step import LossConfig, forward_backward

P, K, S = 6, 3, 4  # default boxes, classes with background, image side


class LinearNet(Module):
    """(B, 3, S, S) -> loc (B, P, 4), conf (B, P, K): one matrix, the SSD model's interface."""

    def __init__(self, rng, dtype=np.float64):
        self.weight = Parameter(rng.standard_normal((3 * S * S, P * (4 + K))).astype(dtype) * 0.1)
        self.priors = np.tile(np.array([[0.5, 0.5, 0.4, 0.4]], np.float32), (P, 1))
        self.backward_calls = 0
        self.poison = False

    def forward(self, images):
        self._x = images.reshape(len(images), -1)
        out = (self._x @ self.weight.data).reshape(len(images), P, 4 + K)
        if self.poison:
            out[0, 0, 0] = math.nan
        return out[:, :, :4].copy(), out[:, :, 4:].copy()

    def backward(self, dloc, dconf):
        self.backward_calls += 1
        dout = np.concatenate([dloc, dconf], axis=2).reshape(len(dloc), -1)
        self.weight.grad += self._x.T @ dout


def _given(function, args, kwargs):
    """The arguments a call passed to ``function``, by parameter name (defaults not filled in:
    an argument the step left out is missing here)."""
    return dict(inspect.signature(function).bind(*args, **kwargs).arguments)


class Recorder:
    """Fixed targets in place of match_batch and a quadratic loss in place of multibox_loss."""

    def __init__(self):
        self.match_args, self.loss_args, self.overflow = None, None, False

    def match_batch(self, *args, **kwargs):
        given = _given(matching.match_batch, args, kwargs)  # what the step passed, by name
        self.match_args = given
        gt_boxes, gt_labels = given["gt_boxes_list"], given["gt_labels_list"]
        B = len(gt_boxes)
        conf_t = np.zeros((B, P), np.int64)
        loc_t = np.zeros((B, P, 4), np.float32)
        for b in range(B):  # every other default box takes an object of its image
            for p in range(0, P, 2):
                g = (p // 2) % len(gt_boxes[b])
                conf_t[b, p] = gt_labels[b][g]
                loc_t[b, p] = gt_boxes[b][g]
        self.targets = loc_t, conf_t
        return loc_t, conf_t

    def multibox_loss(self, *args, **kwargs):
        given = _given(loss.multibox_loss, args, kwargs)
        self.loss_args = given
        loc_p, conf_p, loc_t, conf_t = (given[k] for k in ("loc_p", "conf_p", "loc_t", "conf_t"))
        loss_l, loss_c, dloc, dconf = quadratic_loss(loc_p, conf_p, loc_t, conf_t)
        if self.overflow:
            loss_l = math.inf
        return loss_l, loss_c, dloc, dconf


def quadratic_loss(loc_p, conf_p, loc_t, conf_t):
    """0.5 |loc - loc_t|^2 over positives and 0.5 |conf - onehot|^2 over all, both / N."""
    n = max(int(np.count_nonzero(conf_t)), 1)
    pos = (conf_t > 0)[..., None]
    dloc = pos * (loc_p - loc_t) / n
    dconf = (conf_p - np.eye(K)[conf_t]) / n
    loss_l = 0.5 * float(np.sum(pos * (loc_p - loc_t) ** 2)) / n
    loss_c = 0.5 * float(np.sum((conf_p - np.eye(K)[conf_t]) ** 2)) / n
    return loss_l, loss_c, dloc.astype(loc_p.dtype), dconf.astype(conf_p.dtype)


@pytest.fixture
def stand_ins(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(step, "match_batch", recorder.match_batch)
    monkeypatch.setattr(step, "multibox_loss", recorder.multibox_loss)
    return recorder


def a_batch(rng, B=3, dtype=np.float64):
    images = rng.standard_normal((B, 3, S, S)).astype(dtype)
    boxes = [rng.uniform(0, 1, (1 + b % 2, 4)).astype(np.float32) for b in range(B)]
    labels = [rng.integers(1, K, len(bx)) for bx in boxes]
    return images, boxes, labels


def the_losses(net, images, boxes, labels):
    """(loss_l, loss_c) of the stand-ins, computed without the step."""
    loc_t, conf_t = Recorder().match_batch(boxes, labels, net.priors, 0.5)
    loc_p, conf_p = net.forward(images)
    return quadratic_loss(loc_p, conf_p, loc_t, conf_t)[:2]


def total_loss(net, images, boxes, labels):
    return sum(the_losses(net, images, boxes, labels))


def test_the_step_leaves_the_gradient_of_the_loss_it_returns(rng, stand_ins):
    net = LinearNet(rng)
    images, boxes, labels = a_batch(rng)
    loss_l, loss_c = forward_backward(net, images, boxes, labels, LossConfig())
    assert (loss_l, loss_c) == pytest.approx(the_losses(net, images, boxes, labels), rel=1e-12)
    assert net.backward_calls == 1
    w, h = net.weight.data, 1e-6
    for idx in [(0, 0), (5, 3), (17, 20), (47, 41), (30, P * (4 + K) - 1)]:
        keep = w[idx]
        w[idx] = keep + h
        up = total_loss(net, images, boxes, labels)
        w[idx] = keep - h
        down = total_loss(net, images, boxes, labels)
        w[idx] = keep
        assert net.weight.grad[idx] == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=1e-9), idx


def test_the_step_zeroes_the_gradients_first(rng, stand_ins):
    # backward ADDS into .grad: a step must start from zero, or the last batch leaks in
    net = LinearNet(rng)
    images, boxes, labels = a_batch(rng)
    forward_backward(net, images, boxes, labels, LossConfig())
    first = net.weight.grad.copy()
    net.weight.grad += 5.0  # what a previous batch (or clipping) left
    forward_backward(net, images, boxes, labels, LossConfig())
    np.testing.assert_allclose(net.weight.grad, first, rtol=1e-12, atol=1e-15)


def test_the_loss_config_reaches_matching_and_the_loss(rng, stand_ins):
    net = LinearNet(rng)
    images, boxes, labels = a_batch(rng)
    cfg = LossConfig(iou_threshold=0.4, neg_pos_ratio=2.0, alpha=0.5, matching="bipartite",
                     conf_loss="focal")
    forward_backward(net, images, boxes, labels, cfg)
    m, lo = stand_ins.match_args, stand_ins.loss_args
    assert m is not None, "match_batch was not called"
    assert m["gt_boxes_list"] is boxes and m["gt_labels_list"] is labels and m["priors"] is net.priors
    assert (m.get("iou_threshold"), m.get("rule")) == (0.4, "bipartite")
    assert lo is not None, "multibox_loss was not called"
    assert lo["loc_t"] is stand_ins.targets[0] and lo["conf_t"] is stand_ins.targets[1]
    assert (lo.get("neg_pos_ratio"), lo.get("alpha"), lo.get("conf_loss")) == (2.0, 0.5, "focal")


def test_a_non_finite_output_or_loss_stops_before_backward(rng, stand_ins):
    net = LinearNet(rng)
    images, boxes, labels = a_batch(rng)
    net.weight.grad += 1.0
    net.poison = True  # a NaN in the network's output
    loss_l, loss_c = forward_backward(net, images, boxes, labels, LossConfig())
    assert math.isnan(loss_l) and math.isnan(loss_c)
    assert net.backward_calls == 0 and stand_ins.loss_args is None
    assert not net.weight.grad.any(), "the gradients must be zero, not the last batch's"
    net.poison = False
    stand_ins.overflow = True  # a loss that overflows
    loss_l, loss_c = forward_backward(net, images, boxes, labels, LossConfig())
    assert math.isinf(loss_l) and net.backward_calls == 0 and not net.weight.grad.any()


def test_times_add_up_per_stage_and_stats_count_the_positives(rng, stand_ins):
    net = LinearNet(rng)
    images, boxes, labels = a_batch(rng)
    times, stats = {"match": 100.0}, {}
    forward_backward(net, images, boxes, labels, LossConfig(), times=times, stats=stats)
    assert set(times) == {"match", "forward", "loss", "backward"}
    assert times["match"] > 100.0 and all(0 <= times[k] < 10 for k in ("forward", "loss", "backward"))
    assert stats["positives"] == int(np.count_nonzero(stand_ins.targets[1]))


def test_the_loss_falls_when_stepping_on_a_few_images(rng, stand_ins):
    net = LinearNet(rng, np.float32)
    images, boxes, labels = a_batch(rng, B=4, dtype=np.float32)
    losses = []
    for _ in range(40):
        loss_l, loss_c = forward_backward(net, images, boxes, labels, LossConfig())
        losses.append(loss_l + loss_c)
        net.weight.data -= 0.05 * net.weight.grad
    assert net.weight.grad.dtype == np.float32
    assert losses[-1] < 0.2 * losses[0], losses[::8]
    assert all(b <= a * (1 + 1e-6) for a, b in zip(losses, losses[1:])), "the loss went up"
