"""DataParallel: replicas share the weights, split the batch, and sum their gradients.

In eval mode (BatchNorm uses its running statistics, so images do not interact) the split
must not change anything: outputs and parameter gradients equal the model's on the whole
batch. In training mode each share is normalised with its own statistics: the result must
equal running the model on each share separately and adding the gradients."""

import numpy as np
import pytest

from minissd.model import SSD, SSDConfig
from minissd.nn.parallel import DataParallel
from minissd.priors import PriorConfig

MINI = SSDConfig(
    name="mini", batch_norm=True,
    tables=((("conv", 8, 3, 2, 1, 1), "M", 16), ("M", 16)),  # 32 -> 16 -> 8 (source 1) -> 4
    priors=PriorConfig.from_scales(32, (8, 4), s_min=0.2, s_max=0.8, aspect_ratios=((2,),) * 2))


def grads(model):
    return [p.grad.copy() for p in model.parameters()]


def run(net, model, x, dloc, dconf):
    model.zero_grad()
    loc, conf = net.forward(x)
    net.backward(dloc, dconf)
    return loc, conf, grads(model)


@pytest.fixture
def data(rng):
    x = rng.standard_normal((5, 3, 32, 32)).astype(np.float32)  # 5 images: shares of 3 and 2
    model = SSD(MINI, 3, seed=1)
    loc, conf = model.forward(x)
    return model, x, rng.standard_normal(loc.shape).astype(np.float32), rng.standard_normal(conf.shape).astype(np.float32)


def test_eval_mode_split_changes_nothing(data):
    model, x, dloc, dconf = data
    model.eval()
    loc, conf, g = run(model, model, x, dloc, dconf)
    dp = DataParallel(model, 2)
    loc2, conf2, g2 = run(dp, model, x, dloc, dconf)
    np.testing.assert_allclose(loc2, loc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(conf2, conf, rtol=1e-5, atol=1e-6)
    for a, b in zip(g2, g):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_training_mode_is_the_sum_over_shares(data):
    model, x, dloc, dconf = data
    model.train()
    parts = []
    for share in (slice(0, 3), slice(3, 5)):  # the model alone on each share, gradients summed
        parts.append(run(model, model, x[share], dloc[share], dconf[share]))
    expected = [sum(gs) for gs in zip(parts[0][2], parts[1][2])]
    loc, conf, g = run(DataParallel(model, 2), model, x, dloc, dconf)
    np.testing.assert_allclose(loc, np.concatenate([parts[0][0], parts[1][0]]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(conf, np.concatenate([parts[0][1], parts[1][1]]), rtol=1e-5, atol=1e-6)
    for a, b in zip(g, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not np.allclose(g[0], parts[0][2][0])  # the second replica's share did reach the model


def test_replicas_share_weights_and_average_running_statistics(data):
    model, x, _, _ = data
    model.train()
    dp = DataParallel(model, 2)
    twin = dp.replicas[1]
    for p, q in zip(model.parameters(), twin.parameters()):
        assert q.data is p.data and q.grad is not p.grad  # one weight array, two gradients
    first = model.stages[0].layers[1]  # the first BatchNorm2d
    before = first.running_mean.copy()
    dp.forward(x)
    assert not np.allclose(first.running_mean, before)  # the buffers moved, and alike in both
    np.testing.assert_array_equal(first.running_mean, twin.stages[0].layers[1].running_mean)


def test_one_replica_is_the_model_and_bad_n_is_refused(data):
    model, x, dloc, dconf = data
    model.train()
    loc, conf, g = run(model, model, x, dloc, dconf)
    loc1, conf1, g1 = run(DataParallel(model, 1), model, x, dloc, dconf)
    np.testing.assert_array_equal(loc1, loc)
    for a, b in zip(g1, g):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="n must be >= 1"):
        DataParallel(model, 0)
