"""MaxPool2d: PyTorch's output sizes (ceil_mode), forward against the oracle, argmax backward."""

import numpy as np
import pytest

import naive
from minissd import nn
from minissd.nn.pool import pool_output_size


@pytest.mark.parametrize("size, k, s, p, ceil, expected", [
    (75, 2, 2, 0, True, 38),   # SSD300 pool3: 75 -> 38 (floor would give 37)
    (75, 2, 2, 0, False, 37),
    (19, 3, 1, 1, False, 19),  # SSD300 pool5: 3x3, stride 1, pad 1 keeps 19
    (5, 2, 2, 1, True, 3),     # ceil gives 4, but window 4 would start at 6 >= 5 + 1: dropped
    (6, 3, 2, 1, True, 4),     # (6 + 2 - 3) / 2 = 2.5 -> 3, + 1; window 3 starts at 5 < 7: kept
    (4, 2, 2, 0, True, 2),     # exact fit: ceil changes nothing
])
def test_output_size_follows_pytorch(size, k, s, p, ceil, expected):
    assert pool_output_size(size, k, s, p, ceil) == expected


CASES = [  # (k, stride, padding, ceil_mode, H, W)
    (2, 2, 0, False, 6, 7),
    (2, 2, 0, True, 7, 5),
    (3, 1, 1, False, 5, 6),
    (3, 2, 1, True, 6, 7),
    (3, 2, 0, True, 8, 5),
]


@pytest.mark.parametrize("case", CASES)
def test_forward_matches_naive(case, rng):
    k, s, p, c, H, W = case
    x = rng.standard_normal((2, 3, H, W)).astype(np.float32)
    pool = nn.MaxPool2d(k, s, p, ceil_mode=c)
    np.testing.assert_array_equal(pool.forward(x), naive.max_pool2d(x, k, s, p, c).astype(np.float32))


@pytest.mark.parametrize("case", CASES)
def test_gradient_matches_finite_differences(case, rng):
    k, s, p, c, H, W = case
    # distinct values 0.01 apart: a 1e-6 nudge never changes which input wins a window
    x = rng.permutation(2 * 2 * H * W).reshape(2, 2, H, W) * 0.01
    assert nn.gradcheck(nn.MaxPool2d(k, s, p, ceil_mode=c), x) < 1e-6


def test_backward_worked_example():
    # rows [1, 3, 2, 0] and [0, 0, 0, 0], 2x2 windows with stride 1 -> maxima [3, 3, 2]
    pool = nn.MaxPool2d(2, stride=1)
    x = np.array([[1.0, 3.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]]).reshape(1, 1, 2, 4)
    y = pool.forward(x)  # (1, 1, 1, 3)
    np.testing.assert_array_equal(y, [[[[3.0, 3.0, 2.0]]]])
    # the two windows that share the 3 add their gradients there; the zeros get nothing
    g = pool.backward(np.array([10.0, 20.0, 5.0]).reshape(1, 1, 1, 3))
    np.testing.assert_array_equal(g, [[[[0.0, 30.0, 5.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]])


def test_float32_gradient_stays_float32_and_matches_float64(rng):
    pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)  # overlapping windows
    x = rng.permutation(2 * 3 * 9 * 8).reshape(2, 3, 9, 8).astype(np.float32)
    y = pool.forward(x)
    assert y.shape == (2, 3, 5, 5)
    g = rng.standard_normal(y.shape).astype(np.float32)
    grad = pool.backward(g)
    assert grad.dtype == np.float32 and grad.shape == x.shape
    pool.forward(x.astype(np.float64))
    wide_grad = pool.backward(g.astype(np.float64))
    np.testing.assert_allclose(grad, wide_grad, rtol=1e-6)
    # and it is the gradient (distinct inputs: no tie moves within h)
    assert nn.directional_error(pool, x.astype(np.float64), g.astype(np.float64), wide_grad, rng) < 1e-6


def test_padding_larger_than_half_kernel_is_refused():
    with pytest.raises(ValueError, match="padding"):
        nn.MaxPool2d(2, padding=2)


def test_backward_refuses_a_gradient_of_another_shape(rng):
    pool = nn.MaxPool2d(2)
    pool.forward(rng.standard_normal((1, 2, 6, 6)))
    with pytest.raises(ValueError, match=r"grad_out has shape \(1, 2, 3, 2\).*\(1, 2, 3, 3\)"):
        pool.backward(np.zeros((1, 2, 3, 2)))
