"""Optimizers against hand-computed steps; schedules at known iterations."""

import math

import numpy as np
import pytest

from minissd import nn


def param(value, grad):
    p = nn.Parameter(np.array(value, dtype=np.float64))
    p.grad[...] = grad
    return p


def test_plain_sgd():
    p = param([1.0, -2.0], [0.5, 1.0])
    nn.SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [0.95, -2.1])


def test_sgd_momentum_and_weight_decay_by_hand():
    # p = 1, g = 0.5, lr 0.1, momentum 0.9, wd 0.1
    # step 1: g' = 0.5 + 0.1*1 = 0.6; buf = 0.6; p = 1 - 0.06 = 0.94
    # step 2: g' = 0.5 + 0.094 = 0.594; buf = 0.54 + 0.594 = 1.134; p = 0.94 - 0.1134 = 0.8266
    p = param([1.0], [0.5])
    opt = nn.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)
    opt.step()
    np.testing.assert_allclose(p.data, [0.94])
    opt.step()
    np.testing.assert_allclose(p.data, [0.8266])


def test_sgd_nesterov_by_hand():
    # step 1: buf = 0.5, step g + 0.9 * buf = 0.95 -> p = 1 - 0.095 = 0.905
    # step 2: buf = 0.45 + 0.5 = 0.95, step 0.5 + 0.855 = 1.355 -> p = 0.905 - 0.1355 = 0.7695
    p = param([1.0], [0.5])
    opt = nn.SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    opt.step()
    np.testing.assert_allclose(p.data, [0.905])
    opt.step()
    np.testing.assert_allclose(p.data, [0.7695])


def test_sgd_momentum_follows_warmup_then_cosine_as_training_sets_it(rng):
    # The training loop's order: zero_grad, backward adds the batch's gradient into .grad,
    # opt.lr = schedule(it), step. Without weight decay the momentum rule has a closed form:
    #   buf_t = sum_{k <= t} m^(t-k) g_k,   p_T = p_0 - sum_t lr_t * buf_t
    # in which each step's rate multiplies the whole buffer of that step (a rule that folds
    # lr into the buffer agrees only while lr is constant).
    schedule = nn.LinearWarmup(nn.Cosine(0.1, 12, min_lr=0.001), warmup_iters=4)
    m, T = 0.9, 12
    params = [nn.Parameter(rng.standard_normal(shape).astype(np.float32)) for shape in ((3, 2), (4,))]
    data = [p.data for p in params]
    start = [p.data.astype(np.float64) for p in params]
    grads = [[rng.standard_normal(p.shape).astype(np.float32) for p in params] for _ in range(T)]
    opt = nn.SGD(params, lr=schedule(0), momentum=m)
    for it in range(T):
        opt.zero_grad()
        for p, g in zip(params, grads[it]):
            p.grad += g  # as backward does
        opt.lr = schedule(it)
        opt.step()
    lrs = [schedule(t) for t in range(T)]
    assert lrs[0] < lrs[3] and lrs[4] > lrs[-1]  # it rises, then falls
    for i, p in enumerate(params):
        bufs = [sum(m ** (t - k) * grads[k][i].astype(np.float64) for k in range(t + 1)) for t in range(T)]
        expected = start[i] - sum(lr * buf for lr, buf in zip(lrs, bufs))
        assert p.data is data[i] and p.data.dtype == np.float32  # updated in place
        np.testing.assert_allclose(p.data, expected, rtol=1e-5, atol=1e-6)
        assert opt.buffers[i].dtype == np.float32
        np.testing.assert_allclose(opt.buffers[i], bufs[-1], rtol=1e-5, atol=1e-6)


def test_sgd_weight_decay_and_momentum_under_warmup_by_hand():
    # lr 0.1, 0.15, 0.2 (warm-up from half of 0.2 over 2 iterations); p = 1, g = 0.5 each
    # step, momentum 0.9, weight decay 0.1:
    # step 1: g' = 0.5 + 0.1*1 = 0.6; buf = 0.6; p = 1 - 0.1*0.6 = 0.94
    # step 2: g' = 0.5 + 0.094 = 0.594; buf = 0.54 + 0.594 = 1.134; p = 0.94 - 0.15*1.134 = 0.7699
    # step 3: g' = 0.5 + 0.07699 = 0.57699; buf = 1.0206 + 0.57699 = 1.59759;
    #         p = 0.7699 - 0.2*1.59759 = 0.450382
    schedule = nn.LinearWarmup(nn.Constant(0.2), warmup_iters=2, start_factor=0.5)
    p = param([1.0], [0.0])
    opt = nn.SGD([p], lr=0.2, momentum=0.9, weight_decay=0.1)
    for it, expected in enumerate([0.94, 0.7699, 0.450382]):
        opt.zero_grad()
        p.grad += 0.5
        opt.lr = schedule(it)
        opt.step()
        np.testing.assert_allclose(p.data, [expected], rtol=1e-12)


def test_lr_is_settable_and_state_round_trips():
    p = param([1.0], [1.0])
    opt = nn.SGD([p], lr=0.1, momentum=0.9)
    opt.step()
    opt.lr = 0.01
    state = opt.state_dict()
    opt2 = nn.SGD([param([0.9], [1.0])], lr=0.01, momentum=0.9)
    opt2.load_state_dict(state)
    opt.step()
    opt2.step()
    np.testing.assert_allclose(p.data, opt2.params[0].data)  # 0.9 - 0.01 * 1.9 = 0.881
    np.testing.assert_allclose(p.data, [0.881])


def test_adam_bias_correction_by_hand():
    # step 1: m = 0.1 g, v = 0.001 g^2; corrected m/(1-0.9) = g, v/(1-0.999) = g^2
    # -> p -= lr * g / (|g| + eps) = lr * sign(g): the first step has size lr whatever g is.
    p = param([1.0, 1.0], [0.5, -3.0])
    opt = nn.Adam([p], lr=0.01, eps=0.0)
    opt.step()
    np.testing.assert_allclose(p.data, [0.99, 1.01])
    # step 2 with g = (0.5, -3) again: m = 0.19 g, v = 0.001999 g^2, corrections 0.19, 0.001999
    opt.step()
    np.testing.assert_allclose(p.data, [0.98, 1.02])
    # a different gradient: m and v mix the two steps
    p.grad[...] = [1.0, 1.0]
    opt.step()
    m = 0.9 * 0.19 * np.array([0.5, -3.0]) + 0.1
    v = 0.999 * 0.001999 * np.array([0.25, 9.0]) + 0.001
    expected = np.array([0.98, 1.02]) - 0.01 * (m / (1 - 0.9 ** 3)) / np.sqrt(v / (1 - 0.999 ** 3))
    np.testing.assert_allclose(p.data, expected)


def test_schedules_at_known_iterations():
    ms = nn.MultiStep(1e-3, (80_000, 100_000))
    assert ms(0) == 1e-3 and ms(79_999) == 1e-3
    assert ms(80_000) == pytest.approx(1e-4) and ms(100_000) == pytest.approx(1e-5)
    cos = nn.Cosine(1.0, 100, min_lr=0.1)
    assert cos(0) == 1.0 and cos(50) == pytest.approx(0.55) and cos(100) == pytest.approx(0.1)
    assert cos(500) == pytest.approx(0.1)
    warm = nn.LinearWarmup(ms, warmup_iters=500)  # from 1/3 of the rate, linearly
    assert warm(0) == pytest.approx(1e-3 / 3)
    assert warm(250) == pytest.approx(1e-3 * (1 / 3 + 2 / 3 * 0.5))
    assert warm(500) == 1e-3
    assert nn.LinearWarmup(nn.Constant(2.0), 10, start_factor=0.0)(5) == pytest.approx(1.0)
    assert math.isclose(nn.Constant(0.5)(10 ** 6), 0.5)
