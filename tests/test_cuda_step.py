"""minissd.cuda.step.CudaTrainStep against train.py's CPU step, on a very small SSD.

The model: 32 px input, two source maps (4x4 and 2x2), BatchNorm after every body conv, L2Norm
on the first map, a max pool, 2 classes: every GPU layer twin runs, and 2 boxes per location
(40 default boxes) keep the simulator's Python threads few."""

import numpy as np
import pytest

from minissd.model import SSD, SSDConfig
from minissd.nn import SGD
from minissd.priors import PriorConfig
from minissd.train import TrainConfig, TrainStep, global_grad_norm

try:  # skip only if numba-cuda really cannot be imported (CI must run these)
    from minissd.cuda.step import CudaTrainStep
except RuntimeError as e:  # pragma: no cover - the reason is shown by pytest -ra
    pytest.skip(f"minissd.cuda unavailable: {e}", allow_module_level=True)

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("small_cuda_launches")]  # conftest.py

TINY = SSDConfig(
    name="test", batch_norm=True, l2norm_first=True,
    tables=((("conv", 4, 3, 4, 1, 1), "M"),  # 32 -> 8 -> 4: source 1, 4x4x4
            (("conv", 8, 3, 2, 1, 1),)),     # 4 -> 2: source 2, 2x2x8
    priors=PriorConfig.from_scales(32, (4, 2), s_min=0.2, s_max=0.8, aspect_ratios=((), ())))
HYPER = dict(lr=0.05, momentum=0.9, weight_decay=5e-4, grad_clip=1.0, iou_threshold=0.5, neg_pos_ratio=3,
             alpha=1.0)


def batch(rng, B=2):
    images = rng.standard_normal((B, 3, 32, 32)).astype(np.float32)  # no flat regions: no tied losses
    boxes = [np.array([[0.1, 0.1, 0.6, 0.5], [0.5, 0.4, 0.9, 0.95]], np.float32),
             np.array([[0.2, 0.3, 0.7, 0.9]], np.float32)][:B]
    labels = [np.array([1, 2]), np.array([2])][:B]
    return images, boxes, labels


@pytest.mark.slow
def test_cuda_train_step_matches_the_cpu_step(rng):
    cpu_model, gpu_model = SSD(TINY, 2, seed=0), SSD(TINY, 2, seed=0)  # the same initial weights
    optimizer = SGD(list(cpu_model.parameters()), HYPER["lr"], momentum=HYPER["momentum"],
                    weight_decay=HYPER["weight_decay"])
    # train.py's own step, on the whole batch (as the GPU: no per-worker shares for BatchNorm)
    cpu_step = TrainStep(cpu_model, optimizer, TrainConfig(**HYPER), workers=1)
    step = CudaTrainStep(gpu_model, **HYPER)
    for lr in (0.05, 0.02):  # two steps: the second uses the momentum buffer
        images, boxes, labels = batch(rng)
        loss_l, loss_c, _ = cpu_step(images, boxes, labels, lr)
        g_loss_l, g_loss_c, times = step(images, boxes, labels, lr)
        # the clip is exercised: the clipped gradient's norm is the limit
        assert global_grad_norm(list(cpu_model.parameters())) == pytest.approx(HYPER["grad_clip"], rel=1e-4)
        assert g_loss_l == pytest.approx(loss_l, rel=1e-5) and g_loss_c == pytest.approx(loss_c, rel=1e-5)
        assert set(times) == {"match", "forward", "loss", "backward", "optimizer"}
    # losses went well

    buffers = step.to_host()
    for (name, p), q, buf, cpu_buf in zip(cpu_model.named_parameters(), gpu_model.parameters(), buffers,
                                          optimizer.buffers):
        np.testing.assert_allclose(q.grad, p.grad, rtol=1e-4, atol=1e-6, err_msg=name)  # clipped gradients
        np.testing.assert_allclose(q.data, p.data, rtol=1e-5, atol=1e-6, err_msg=name)  # updated weights
        np.testing.assert_allclose(buf, cpu_buf, rtol=1e-4, atol=1e-6, err_msg=name)   # momentum
    for (name, b), (_, c) in zip(cpu_model.named_buffers(), gpu_model.named_buffers()):
        np.testing.assert_allclose(c, b, rtol=1e-5, atol=1e-6, err_msg=name)  # BatchNorm running stats
    assert any(not np.array_equal(p.data, SSD(TINY, 2, seed=0).state_dict()[n])
               for n, p in gpu_model.named_parameters())  # the weights did move
    # weights, momentum and running statistics went well

    gpu_optimizer = SGD(list(gpu_model.parameters()), 1.0, momentum=0.9)  # what a checkpoint saves
    step.to_host(gpu_optimizer)
    assert gpu_optimizer.lr == 0.02 and all(np.array_equal(a, b) for a, b in zip(gpu_optimizer.buffers, buffers))
    resumed = CudaTrainStep(gpu_model, **HYPER, momentum_buffers=gpu_optimizer.buffers)  # resuming
    assert all(np.array_equal(a, b) for a, b in zip(resumed.to_host(), buffers))


def test_cuda_train_step_refuses_a_layer_without_twin():
    from minissd import nn
    model = SSD(TINY, 2, seed=0)
    model.stages[1].layers.append(nn.L2Norm(8))  # no GPU twin inside a stage
    with pytest.raises(ValueError, match="no GPU twin for layer L2Norm"):
        CudaTrainStep(model, **HYPER)
