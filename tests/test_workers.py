"""minissd.workers: the training step shared among worker processes.

The reference for every check is the same arithmetic in this process: ``share_step`` on each
share, combined by the positives' weights N_r / N. Without BatchNorm that is exactly the whole
batch's loss and gradient, which the first test checks against one call on the whole batch."""

import copy

import numpy as np
import pytest

from minissd.model import SSD, SSDConfig
from minissd.priors import PriorConfig
from minissd.train import TrainConfig, TrainStep
from minissd.nn import SGD
from minissd.workers import StepWorkers, share_step

PRIORS = PriorConfig.from_scales(32, (4, 2), s_min=0.2, s_max=0.8, aspect_ratios=((2,), ()))
TABLES = ((("conv", 4, 3, 4, 1, 1), "M"),  # 32 -> 8 -> 4: source 1
          (("conv", 8, 3, 2, 1, 1),))      # 4 -> 2: source 2
PLAIN = SSDConfig(name="test", tables=TABLES, priors=PRIORS, batch_norm=False)
WITH_BN = SSDConfig(name="test", tables=TABLES, priors=PRIORS, batch_norm=True)
LOSS = dict(iou_threshold=0.5, neg_pos_ratio=3.0, alpha=1.0)


def make_batch(rng, B=5):
    """B images; image 3 has no object (its share's weight must not break anything)."""
    images = rng.standard_normal((B, 3, 32, 32)).astype(np.float32)
    boxes, labels = [], []
    for b in range(B):
        k = 0 if b == 3 else 1 + b % 2
        c, s = rng.uniform(0.3, 0.7, (k, 2)), rng.uniform(0.2, 0.5, (k, 2))
        boxes.append(np.concatenate([c - s / 2, c + s / 2], axis=1).clip(0, 1).astype(np.float32))
        labels.append(rng.integers(1, 3, k))
    return images, boxes, labels


def grads_of(model):
    return [p.grad.copy() for p in model.parameters()]


def by_shares(model, images, boxes, labels, bounds):
    """What the workers compute, in this process: one replica per share, N_r / N weights."""
    results, grads, replicas = [], [], []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        replica = copy.deepcopy(model).train()
        replica.zero_grad()
        results.append(share_step(replica, images[lo:hi], boxes[lo:hi], labels[lo:hi], LOSS))
        grads.append(grads_of(replica))
        replicas.append(replica)
    N = max(sum(r[2] for r in results), 1)
    loss_l = sum(r[0] * r[2] for r in results) / N
    loss_c = sum(r[1] * r[2] for r in results) / N
    grad = [sum(r[2] / N * g[i] for r, g in zip(results, grads)) for i in range(len(grads[0]))]
    return loss_l, loss_c, grad, replicas


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_workers_give_the_whole_batch_loss_and_gradient(rng):
    model = SSD(PLAIN, 2, seed=1).train()
    reference = copy.deepcopy(model)
    images, boxes, labels = make_batch(rng)
    reference.zero_grad()
    loss_l, loss_c, num_pos, _ = share_step(reference, images, boxes, labels, LOSS)  # whole batch at once
    assert num_pos > 0
    workers = StepWorkers(model, 2, max_batch=8, loss_args=LOSS)
    try:
        w_l, w_c, times = workers.step(images, boxes, labels)
    finally:
        workers.close()
    assert set(times) == {"match", "forward", "loss", "backward"}
    assert w_l == pytest.approx(loss_l, rel=1e-5) and w_c == pytest.approx(loss_c, rel=1e-5)
    for (name, p), g in zip(model.named_parameters(), grads_of(reference)):
        np.testing.assert_allclose(p.grad, g, rtol=1e-4, atol=1e-6, err_msg=name)


def test_averaging_the_shares_instead_of_weighting_them_would_be_caught(rng):
    """The check above can fail: shares with different positive counts, plain mean != whole batch."""
    model = SSD(PLAIN, 2, seed=1).train()
    images, boxes, labels = make_batch(rng)
    _, _, weighted, _ = by_shares(model, images, boxes, labels, [0, 2, 5])
    parts = []
    for lo, hi in ((0, 2), (2, 5)):
        replica = copy.deepcopy(model)
        replica.zero_grad()
        share_step(replica, images[lo:hi], boxes[lo:hi], labels[lo:hi], LOSS)
        parts.append(grads_of(replica))
    mean = [(a + b) / 2 for a, b in zip(*parts)]
    assert max(np.abs(m - w).max() for m, w in zip(mean, weighted)) > 1e-3


def test_workers_with_batchnorm_match_per_share_replicas_and_share_the_weights(rng):
    model = SSD(WITH_BN, 2, seed=2).train()
    start = copy.deepcopy(model)
    images, boxes, labels = make_batch(rng)
    workers = StepWorkers(model, 2, max_batch=8, loss_args=LOSS)
    try:
        loss_l, loss_c, _ = workers.step(images, boxes, labels)
        ref_l, ref_c, ref_grad, replicas = by_shares(start, images, boxes, labels, [0, 2, 5])
        assert loss_l == pytest.approx(ref_l, rel=1e-5) and loss_c == pytest.approx(ref_c, rel=1e-5)
        for p, g in zip(model.parameters(), ref_grad):
            np.testing.assert_allclose(p.grad, g, rtol=1e-4, atol=1e-6)
        # the running statistics: the mean of the two shares' replicas
        workers.pull_buffers()
        for (name, b), *refs in zip(model.named_buffers(), *[r.named_buffers() for r in replicas]):
            np.testing.assert_allclose(b, np.mean([r[1] for r in refs], axis=0), rtol=1e-5, atol=1e-6,
                                       err_msg=name)
        # an in-place update in this process is what the workers compute with next
        for p in model.parameters():
            p.data -= 0.1 * p.grad
        moved = copy.deepcopy(model)
        loss_l2, _, _ = workers.step(images, boxes, labels)
        ref_l2, _, _, _ = by_shares(moved, images, boxes, labels, [0, 2, 5])
        assert loss_l2 == pytest.approx(ref_l2, rel=1e-5) and loss_l2 != pytest.approx(loss_l, rel=1e-3)
    finally:
        workers.close()
    assert not any(p.is_alive() for p in workers._procs)


def test_a_failing_worker_names_itself_and_the_error(rng):
    model = SSD(PLAIN, 2, seed=1)
    images, boxes, labels = make_batch(rng, B=4)
    labels[0] = np.array([7] * len(labels[0]))  # class 7 of a 2-class model
    workers = StepWorkers(model, 2, max_batch=4, loss_args=LOSS)
    try:
        with pytest.raises(RuntimeError, match=r"training worker 0 failed(.|\n)*gt_labels"):
            workers.step(images, boxes, labels)
        with pytest.raises(ValueError, match="float32"):
            StepWorkers(SSD(PLAIN, 2).to(np.float64), 2, max_batch=4, loss_args=LOSS)
        with pytest.raises(ValueError, match="max_batch"):
            workers.step(np.zeros((5, 3, 32, 32), np.float32), boxes + boxes[:1], labels + labels[:1])
    finally:
        workers.close()


def test_train_step_with_two_workers_equals_the_step_in_this_process(rng):
    """TrainStep's two paths (workers, or everything in this process) take the same SGD step
    when BatchNorm is off; the weights stay in the model after close()."""
    images, boxes, labels = make_batch(rng, B=4)
    cfg = TrainConfig(batch_size=4, lr=0.1, grad_clip=0.0)
    weights = []
    for workers in (1, 2):
        model = SSD(PLAIN, 2, seed=3).train()
        step = TrainStep(model, SGD(list(model.parameters()), 0.1, momentum=0.9), cfg, workers=workers)
        for _ in range(2):
            step(images, boxes, labels, 0.1)
        step.close()
        weights.append([p.data.copy() for p in model.parameters()])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
