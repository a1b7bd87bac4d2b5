"""minissd.workers: the training step shared among worker processes.

The reference for every check is ``step.forward_backward`` on the whole batch in this process:
the worker count is a speed setting, so 1 process and 2 processes must give the same losses,
gradients, weights and BatchNorm running statistics (to float rounding)."""

import copy
import dataclasses
import os
import signal
import time

import numpy as np
import pytest

from minissd.errors import ConfigError
from minissd.model import SSD, SSDConfig
from minissd.nn import SGD, set_batchnorm_group
from minissd.priors import PriorConfig
from minissd.step import LossConfig, clip_grad_norm, forward_backward
from minissd.workers import Workers, WorkerError, share_bounds

PRIORS = PriorConfig.from_scales(32, (4, 2), s_min=0.2, s_max=0.8, aspect_ratios=((2,), ()))
TABLES = ((("conv", 4, 3, 4, 1, 1), "M"),  # 32 -> 8 -> 4: source 1
          (("conv", 8, 3, 2, 1, 1),))      # 4 -> 2: source 2
PLAIN = SSDConfig(name="test", tables=TABLES, priors=PRIORS, batch_norm=False)
WITH_BN = SSDConfig(name="test", tables=TABLES, priors=PRIORS, batch_norm=True)
LOSS = LossConfig()


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


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_share_bounds_keep_whole_groups():
    assert share_bounds(5, 2, 1) == [(0, 2), (2, 5)]
    assert share_bounds(12, 2, 4) == [(0, 4), (4, 12)]  # 3 groups of 4: one and two
    assert share_bounds(8, 4, 8) == [(0, 8)]  # one group: one worker
    assert share_bounds(3, 8, 1) == [(0, 1), (1, 2), (2, 3)]


# the default loss, and the switches (before: the workers were sent three fields of the
# config, so a run with processes matched per prediction and mined whatever it was told)
@pytest.mark.parametrize("loss_cfg", [LOSS, dataclasses.replace(LOSS, matching="bipartite", conf_loss="focal")],
                         ids=["default", "switches"])
def test_workers_give_the_whole_batch_loss_and_gradient(rng, loss_cfg):
    model = SSD(PLAIN, 2, seed=1).train()
    reference = copy.deepcopy(model)
    images, boxes, labels = make_batch(rng)
    stats = {}
    loss_l, loss_c = forward_backward(reference, images, boxes, labels, loss_cfg, stats=stats)  # at once
    assert stats["positives"] > 0
    if loss_cfg != LOSS:  # the switches change the loss on this batch, so the check below can fail
        assert loss_c != pytest.approx(forward_backward(copy.deepcopy(model), images, boxes, labels, LOSS)[1],
                                       rel=1e-3)
    times = {"match": 1.0}
    with Workers(model, 2, max_batch=8, bn_group=None) as workers:
        w_l, w_c = workers.forward_backward(images, boxes, labels, loss_cfg, times=times)
    assert set(times) == {"match", "forward", "loss", "backward"} and times["match"] > 1.0  # added
    assert w_l == pytest.approx(loss_l, rel=1e-5) and w_c == pytest.approx(loss_c, rel=1e-5)
    for (name, p), g in zip(model.named_parameters(), grads_of(reference)):
        np.testing.assert_allclose(p.grad, g, rtol=1e-4, atol=1e-6, err_msg=name)
    assert not any(p.is_alive() for p in workers._procs)


def test_averaging_the_shares_instead_of_weighting_them_would_be_caught(rng):
    """The check above can fail: shares with different positive counts, plain mean != whole batch."""
    model = SSD(PLAIN, 2, seed=1).train()
    images, boxes, labels = make_batch(rng)
    forward_backward(model, images, boxes, labels, LOSS)
    whole = grads_of(model)
    parts = []
    for lo, hi in share_bounds(5, 2, 1):
        forward_backward(model, images[lo:hi], boxes[lo:hi], labels[lo:hi], LOSS)
        parts.append(grads_of(model))
    mean = [(a + b) / 2 for a, b in zip(*parts)]
    assert max(np.abs(m - w).max() for m, w in zip(mean, whole)) > 1e-3


def train_a_few_steps(model, images, boxes, labels, run, steps=3):
    """SGD with momentum and clipping, as the training loop does; returns the losses."""
    opt = SGD(list(model.parameters()), 0.05, momentum=0.9, weight_decay=5e-4)
    losses = []
    for _ in range(steps):
        losses.append(run(images, boxes, labels, LOSS))
        clip_grad_norm(model.parameters(), 10.0)
        opt.step()
    return losses


def test_one_process_and_two_workers_train_the_same_model(rng):
    """Issue 13: the worker count changes only the speed. BatchNorm groups of 2 over a batch
    of 6 (3 groups: the two workers get 1 and 2 of them); 3 SGD steps in this process, in
    one worker and in two must give the same losses, weights and running statistics."""
    images, boxes, labels = make_batch(rng, B=6)
    start = SSD(WITH_BN, 2, seed=2).train()
    results = []
    for n in (0, 1, 2):  # 0: step.forward_backward in this process
        model = copy.deepcopy(start)
        if n == 0:
            set_batchnorm_group(model, 2)
            losses = train_a_few_steps(model, images, boxes, labels,
                                       lambda *batch: forward_backward(model, *batch))
        else:
            with Workers(model, n, max_batch=6, bn_group=2) as workers:
                losses = train_a_few_steps(model, images, boxes, labels, workers.forward_backward)
                workers.sync_buffers()
        results.append((losses, model.state_dict()))
    (ref_losses, ref_state), *others = results
    assert ref_losses[0] != pytest.approx(ref_losses[-1], rel=1e-3)  # training moved the model
    for losses, state in others:
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
        for name, value in ref_state.items():
            np.testing.assert_allclose(state[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    assert np.abs(ref_state["stages.0.1.running_mean"]).max() > 0  # the statistics did move


def test_the_batchnorm_group_changes_the_maths(rng):
    """Groups are a setting of the maths, not of the speed: groups of 2 and the whole batch
    give different losses and gradients for the same model and batch."""
    images, boxes, labels = make_batch(rng, B=6)
    model = SSD(WITH_BN, 2, seed=2).train()
    out = []
    for group in (2, None):
        set_batchnorm_group(model, group)
        out.append((forward_backward(model, images, boxes, labels, LOSS), grads_of(model)))
    (loss_2, grad_2), (loss_all, grad_all) = out
    assert loss_2[1] != pytest.approx(loss_all[1], rel=1e-3)
    assert max(np.abs(a - b).max() for a, b in zip(grad_2, grad_all)) > 1e-3


def test_a_failing_worker_names_itself_and_bad_arguments_are_refused(rng):
    model = SSD(WITH_BN, 2, seed=1)
    images, boxes, labels = make_batch(rng, B=4)
    with pytest.raises(ValueError, match="float32"):
        Workers(SSD(PLAIN, 2).to(np.float64), 2, max_batch=4, bn_group=None)
    workers = Workers(model, 2, max_batch=4, bn_group=2)
    try:
        with pytest.raises(ValueError, match="max_batch"):
            workers.forward_backward(np.zeros((5, 3, 32, 32), np.float32), boxes + boxes[:1],
                                     labels + labels[:1], LOSS)
        with pytest.raises(ConfigError, match="BatchNorm group.*batch of 3"):
            workers.forward_backward(images[:3], boxes[:3], labels[:3], LOSS)
        labels[0] = np.array([7] * len(labels[0]))  # class 7 of a 2-class model
        with pytest.raises(WorkerError, match=r"training worker 0 \(pid \d+\) failed(.|\n)*gt_labels"):
            workers.forward_backward(images, boxes, labels, LOSS)
        assert not workers._procs  # a failure ends the workers
    finally:
        workers.close()


def test_a_stopped_worker_raises_within_the_timeout(rng):
    """Issue 19.6: a worker stopped with SIGSTOP blocked the main process forever."""
    model = SSD(PLAIN, 2, seed=1)
    images, boxes, labels = make_batch(rng, B=4)
    workers = Workers(model, 2, max_batch=4, bn_group=None)
    procs = list(workers._procs)
    try:
        workers.forward_backward(images, boxes, labels, LOSS)  # both answer (the first step loads
        workers.timeout = 3                                    # Numba's cache: can take longer)
        os.kill(procs[1].pid, signal.SIGSTOP)
        t = time.monotonic()
        with pytest.raises(WorkerError, match=r"training worker 1 \(pid \d+\) sent nothing for 3 s.*stopped"):
            workers.forward_backward(images, boxes, labels, LOSS)
        assert time.monotonic() - t < 15
    finally:
        workers.close()
    assert not any(p.is_alive() for p in procs)  # the stopped one was killed, not waited for


def test_a_dead_worker_is_noticed_at_once_despite_a_long_timeout(rng):
    model = SSD(PLAIN, 2, seed=1)
    images, boxes, labels = make_batch(rng, B=4)
    workers = Workers(model, 2, max_batch=4, bn_group=None, timeout=600)
    try:
        os.kill(workers._procs[0].pid, signal.SIGKILL)
        t = time.monotonic()
        with pytest.raises(WorkerError, match=r"training worker 0 \(pid \d+\) died \(exit code -9\)"):
            workers.forward_backward(images, boxes, labels, LOSS)
        assert time.monotonic() - t < 10
        with pytest.raises(WorkerError, match="closed"):
            workers.forward_backward(images, boxes, labels, LOSS)
    finally:
        workers.close()
