"""BatchNorm2d (PyTorch's running statistics) and L2Norm (SSD's conv4_3 rescaling)."""

import numpy as np
import pytest

from minissd import nn
from minissd.errors import ConfigError


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


@pytest.mark.parametrize("shape", [(2, 4, 3, 5), (1, 7, 2, 2)])
def test_l2norm_gradients(shape, rng):
    l2 = nn.L2Norm(shape[1], dtype=np.float64)
    l2.weight.data[...] = rng.uniform(5, 25, shape[1])
    x = rng.standard_normal(shape) * rng.uniform(0.1, 3)  # any scale: y does not depend on it
    assert nn.gradcheck(l2, x) < 1e-6


def test_l2norm_zero_vector_maps_to_zero_with_a_finite_gradient(rng):
    # an all-zero vector (possible after ReLU) maps to 0 with a finite gradient: near 0 the
    # layer is x * weight / eps, so the gradient there is grad * weight / eps
    l2 = nn.L2Norm(4, dtype=np.float64)
    x = rng.standard_normal((2, 4, 3, 5))
    x[0, :, 1, 1] = 0
    y = l2.forward(x)
    assert np.all(y[0, :, 1, 1] == 0)
    grad = l2.backward(np.ones_like(y))
    assert np.all(np.isfinite(grad)) and np.all(np.isfinite(l2.weight.grad))
    np.testing.assert_allclose(grad[0, :, 1, 1], 20 / 1e-10)


def test_l2norm_gradient_follows_the_eps_of_forward(rng):
    # forward divides by ||x|| + eps (eps outside the root); with a large eps and vectors of
    # norm about 1 a backward derived for another placement (or none) is visibly off
    l2 = nn.L2Norm(3, scale=2.0, eps=0.5, dtype=np.float64)
    x = rng.standard_normal((2, 3, 2, 3)) * 0.6
    assert nn.gradcheck(l2, x) < 1e-6


def test_l2norm_float32_gradients_added_into_grad(rng):
    # a float32 network gets float32 gradients, added into .grad (never rebound: training's
    # worker processes share each .grad array)
    l2 = nn.L2Norm(8)
    l2.weight.data[...] = rng.uniform(5, 25, 8)
    x = rng.standard_normal((2, 8, 3, 4)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    weight_grad = l2.weight.grad
    l2.forward(x)
    grad = l2.backward(g)
    assert grad.dtype == np.float32 and grad.shape == x.shape
    assert l2.weight.grad is weight_grad and weight_grad.dtype == np.float32
    once = weight_grad.copy()
    l2.forward(x)
    l2.backward(g)  # a second backward adds the same again
    np.testing.assert_allclose(weight_grad, 2 * once, rtol=1e-6)
    wide = nn.L2Norm(8, dtype=np.float64)
    wide.weight.data[...] = l2.weight.data
    wide.forward(x.astype(np.float64))
    wide_grad = wide.backward(g.astype(np.float64))
    assert nn.rel_error(grad, wide_grad) < 1e-5
    assert nn.rel_error(once, wide.weight.grad) < 1e-5
    # and they are the gradient (float64, along random directions of x and the weight)
    assert nn.directional_error(wide, x.astype(np.float64), g.astype(np.float64), wide_grad, rng) < 1e-6


# ---- the BatchNorm group: every g consecutive images normalised with their own statistics ----

def test_batchnorm_groups_worked_by_hand():
    # one channel, one value per image: images 1, 3 | 10, 14 in groups of 2.
    # group 1: mean 2, biased var 1 -> (-1, 1); group 2: mean 12, var 4 -> (-1, 1).
    x = np.array([1.0, 3.0, 10.0, 14.0]).reshape(4, 1, 1, 1)
    bn = nn.BatchNorm2d(1, eps=0.0, momentum=0.1, dtype=np.float64, group=2)
    np.testing.assert_allclose(bn.forward(x).ravel(), [-1, 1, -1, 1])
    # running: 0.1 * the mean over groups: mean (2 + 12) / 2 = 7; unbiased vars 2 and 8 -> 5
    np.testing.assert_allclose(bn.running_mean, [0.7])
    np.testing.assert_allclose(bn.running_var, [0.9 + 0.1 * 5])
    whole = nn.BatchNorm2d(1, eps=0.0, dtype=np.float64)  # one group: mean 7, var 27.5
    np.testing.assert_allclose(whole.forward(x).ravel(), (x.ravel() - 7) / np.sqrt(27.5))


def test_a_group_is_the_same_as_separate_layers_on_each_group(rng):
    x = rng.standard_normal((6, 3, 2, 3)) * 2 + 1
    g = rng.standard_normal(x.shape)
    grouped = nn.BatchNorm2d(3, dtype=np.float64, group=2)
    y, dx = grouped.forward(x), grouped.backward(g)
    parts = [nn.BatchNorm2d(3, dtype=np.float64) for _ in range(3)]
    for k, part in enumerate(parts):
        sl = slice(2 * k, 2 * k + 2)
        np.testing.assert_allclose(y[sl], part.forward(x[sl]), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx[sl], part.backward(g[sl]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grouped.weight.grad, sum(p.weight.grad for p in parts), rtol=1e-12)
    np.testing.assert_allclose(grouped.bias.grad, sum(p.bias.grad for p in parts), rtol=1e-12)
    # running statistics: the mean of the separate layers' (each moved from the same start)
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(getattr(grouped, name), np.mean([getattr(p, name) for p in parts], axis=0))


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradients_with_groups(training, rng):
    bn = nn.BatchNorm2d(3, dtype=np.float64, group=2)
    bn.weight.data[...] = rng.uniform(0.5, 2, 3)
    bn.bias.data[...] = rng.standard_normal(3)
    bn.train(training)
    x = rng.standard_normal((4, 3, 3, 2)) * 2 + 1
    assert nn.gradcheck(bn, x) < 1e-6


def test_batchnorm_group_must_divide_the_batch_and_be_a_count():
    bn = nn.BatchNorm2d(2, group=4)
    with pytest.raises(ConfigError, match="batch of 6 images.*groups of 4"):
        bn.forward(np.zeros((6, 2, 2, 2), np.float32))
    bn.eval()
    assert bn.forward(np.zeros((6, 2, 2, 2), np.float32)).shape == (6, 2, 2, 2)  # eval: no groups
    for bad in (-1, 2.5, "8", True):
        with pytest.raises(ConfigError, match="BatchNorm group"):
            nn.BatchNorm2d(2, group=bad)


def test_set_batchnorm_group_sets_every_layer():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4)))
    assert nn.set_batchnorm_group(model, 8) == 2
    assert [m.group for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == [8, 8]
    nn.set_batchnorm_group(model, 0)  # 0 means the whole batch, as None does
    assert [m.group for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == [None, None]
