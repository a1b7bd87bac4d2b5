"""ReLU's backward: by hand, against finite differences, dtypes, and the caller's gradient."""

import numpy as np

from minissd import nn


def test_relu_backward_worked_example():
    # x = -2, -0.5, 0, 0.5, 2: the gradient passes where x > 0 only (at the kink x = 0 it
    # stops, as in PyTorch); a negative gradient passes as it is
    relu = nn.ReLU()
    relu.forward(np.array([-2.0, -0.5, 0.0, 0.5, 2.0, 3.0]).reshape(1, 1, 2, 3))
    grad = relu.backward(np.array([1.0, 2.0, 3.0, -4.0, 5.0, -6.0]).reshape(1, 1, 2, 3))
    np.testing.assert_array_equal(grad, np.array([0.0, 0.0, 0.0, -4.0, 5.0, -6.0]).reshape(1, 1, 2, 3))


def test_relu_gradient_matches_finite_differences(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # stay away from the kink
    assert nn.gradcheck(nn.ReLU(), x) < 1e-8


def test_relu_float32_gradient_stays_float32(rng):
    relu = nn.ReLU()
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    relu.forward(x)
    grad = relu.backward(g)
    assert grad.dtype == np.float32 and grad.shape == x.shape
    np.testing.assert_array_equal(grad, np.where(x > 0, g, 0))


def test_relu_backward_leaves_the_callers_gradient_alone(rng):
    # backward returns a new array: the caller's grad_out may be a view it still needs
    relu = nn.ReLU()
    x = rng.standard_normal((2, 3, 4))
    g = rng.standard_normal(x.shape)
    before = g.copy()
    relu.forward(x)
    grad = relu.backward(g)
    np.testing.assert_array_equal(g, before)
    assert not np.shares_memory(grad, g)
