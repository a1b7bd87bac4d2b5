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
