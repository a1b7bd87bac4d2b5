"""BatchNorm2d (PyTorch's running statistics) and L2Norm (SSD's conv4_3 rescaling)."""

import numpy as np
import pytest

from minissd import nn


def test_batchnorm_training_forward_and_running_stats_worked_by_hand():
    # one channel, values 1, 2, 3, 6 (N=2, H=1, W=2): mean 3, biased var (4+1+0+9)/4 = 3.5,
    # unbiased var 14/3.
    x = np.array([1.0, 2.0, 3.0, 6.0]).reshape(2, 1, 1, 2)
    bn = nn.BatchNorm2d(1, eps=0.0, momentum=0.1, dtype=np.float64)
    y = bn.forward(x)
    np.testing.assert_allclose(y.ravel(), (np.array([1, 2, 3, 6]) - 3) / np.sqrt(3.5))
    # running = 0.9 * initial + 0.1 * batch statistic; initial mean 0, var 1
    np.testing.assert_allclose(bn.running_mean, [0.3])
    np.testing.assert_allclose(bn.running_var, [0.9 + 0.1 * 14 / 3])
    bn.forward(x)  # a second step moves them again: 0.9 * 0.3 + 0.3 = 0.57
    np.testing.assert_allclose(bn.running_mean, [0.57])


def test_batchnorm_eval_uses_running_stats_and_affine(rng):
    bn = nn.BatchNorm2d(3, dtype=np.float64)
    bn.running_mean[...] = [1.0, -2.0, 0.5]
    bn.running_var[...] = [4.0, 1.0, 0.25]
    bn.weight.data[...] = [2.0, 1.0, -1.0]
    bn.bias.data[...] = [0.0, 1.0, 3.0]
    bn.eval()
    x = rng.standard_normal((2, 3, 2, 2))
    y = bn.forward(x)
    scale = np.array([2.0, 1.0, -1.0]) / np.sqrt(np.array([4.0, 1.0, 0.25]) + 1e-5)
    expected = (x - np.array([1.0, -2.0, 0.5])[:, None, None]) * scale[:, None, None] + np.array([0, 1, 3.0])[:, None, None]
    np.testing.assert_allclose(y, expected)
    np.testing.assert_allclose(bn.running_mean, [1.0, -2.0, 0.5])  # eval changes nothing


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradients(training, rng):
    bn = nn.BatchNorm2d(3, dtype=np.float64)
    bn.weight.data[...] = rng.uniform(0.5, 2, 3)
    bn.bias.data[...] = rng.standard_normal(3)
    bn.running_mean[...] = rng.standard_normal(3)
    bn.running_var[...] = rng.uniform(0.5, 2, 3)
    bn.train(training)
    x = rng.standard_normal((2, 3, 3, 5)) * 2 + 1
    assert nn.gradcheck(bn, x) < 1e-6


def test_batchnorm_backward_treating_stats_as_constants_is_caught(rng, monkeypatch):
    bn = nn.BatchNorm2d(2, dtype=np.float64)
    x = rng.standard_normal((2, 2, 3, 3))
    real_forward = nn.BatchNorm2d.forward

    def forward_forgetting_batch_stats(self, x):
        y = real_forward(self, x)
        self._batch_stats = False  # backward then treats mean and var as constants
        return y

    monkeypatch.setattr(nn.BatchNorm2d, "forward", forward_forgetting_batch_stats)
    assert nn.gradcheck(bn, x) > 1e-2


def test_l2norm_worked_example():
    # the vector (3, 4) at one location has norm 5 -> (0.6, 0.8) * 20 = (12, 16)
    l2 = nn.L2Norm(2, scale=20, dtype=np.float64)
    y = l2.forward(np.array([3.0, 4.0]).reshape(1, 2, 1, 1))
    np.testing.assert_allclose(y.ravel(), [12.0, 16.0])
    np.testing.assert_array_equal(l2.weight.data, [20.0, 20.0])


def test_l2norm_gradients_and_zero_vector(rng):
    l2 = nn.L2Norm(4, dtype=np.float64)
    l2.weight.data[...] = rng.uniform(5, 25, 4)
    x = rng.standard_normal((2, 4, 3, 5))
    assert nn.gradcheck(l2, x) < 1e-6
    # an all-zero vector (possible after ReLU) maps to 0 with a finite gradient
    x[0, :, 1, 1] = 0
    y = l2.forward(x)
    assert np.all(y[0, :, 1, 1] == 0)
    assert np.all(np.isfinite(l2.backward(np.ones_like(y))))
