"""The gradient checker itself: it passes right gradients and flags wrong ones."""

import numpy as np
import pytest

from minissd import nn


def test_rel_error():
    assert nn.rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert nn.rel_error([1.0, 2.0], [1.0, 2.2]) == pytest.approx(0.2 / 2.2)
    assert nn.rel_error(np.zeros(3), np.zeros(3)) == 0.0
    with pytest.raises(ValueError, match="shapes"):
        nn.rel_error(np.zeros(3), np.zeros(4))


def test_function_with_two_inputs(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    saved = {}

    def matmul(a, b):
        saved["a"], saved["b"] = a, b
        return a @ b

    def backward(g):
        return g @ saved["b"].T, saved["a"].T @ g

    assert nn.gradcheck(matmul, [a, b], backward=backward) < 1e-8

    def wrong_backward(g):
        return g @ saved["b"].T, saved["a"].T @ g * 1.01  # 1 % off

    assert nn.gradcheck(matmul, [a, b], backward=wrong_backward) > 1e-3


def test_module_restored_after_check(rng):
    bn = nn.BatchNorm2d(2)
    bn.weight.grad[...] = 7
    before = bn.state_dict()
    nn.gradcheck(bn, rng.standard_normal((2, 2, 3, 3)))
    assert bn.weight.data.dtype == np.float32 and bn.running_mean.dtype == np.float32
    assert np.all(bn.weight.grad == 7)
    for k, v in before.items():
        np.testing.assert_array_equal(bn.state_dict()[k], v)


def test_relu_and_a_wrong_relu(rng):
    x = rng.standard_normal((2, 3, 4))
    x[np.abs(x) < 1e-3] = 0.5  # stay away from the kink
    relu = nn.ReLU()
    assert nn.gradcheck(relu, x) < 1e-8

    class LeakyByMistake(nn.ReLU):
        def backward(self, grad_out):
            return grad_out * np.where(self._mask, 1.0, 0.1)

    assert nn.gradcheck(LeakyByMistake(), x) > 1e-2


def test_directional_error_accepts_the_gradient_and_rejects_a_wrong_one(rng):
    conv = nn.Conv2d(3, 4, 3, padding=1, rng=rng).to(np.float64)
    x, g = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((2, 4, 5, 5))
    conv.forward(x)
    grad_x = conv.backward(g)
    assert nn.directional_error(conv, x, g, grad_x, rng) < 1e-7
    assert nn.directional_error(conv, x, g, 1.1 * grad_x, rng) > 0.05  # the input's gradient off
    conv.weight.grad *= 0.5
    assert nn.directional_error(conv, x, g, grad_x, rng) > 0.3  # a parameter's gradient off
