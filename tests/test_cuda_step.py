"""minissd.cuda's training calls (to_device, forward_backward, clip_grad_norm, SGD, to_host)
against the CPU's (minissd.step, nn.SGD), on a very small SSD.

The model: 32 px input, two source maps (4x4 and 2x2), BatchNorm after every body conv, L2Norm
on the first map, a max pool, 2 classes: every GPU layer twin runs, and 2 boxes per location
(40 default boxes) keep the simulator's Python threads few."""

import numpy as np
import pytest

from minissd import cuda, nn, step
from minissd.errors import ConfigError
from minissd.model import SSD, SSDConfig
from minissd.priors import PriorConfig

TINY = SSDConfig(
    name="test", batch_norm=True, l2norm_first=True,
    tables=((("conv", 4, 3, 4, 1, 1), "M"),  # 32 -> 8 -> 4: source 1, 4x4x4
            (("conv", 8, 3, 2, 1, 1),)),     # 4 -> 2: source 2, 2x2x8
    priors=PriorConfig.from_scales(32, (4, 2), s_min=0.2, s_max=0.8, aspect_ratios=((), ())))
LOSS = step.LossConfig(iou_threshold=0.5, neg_pos_ratio=3, alpha=1.0)
SGD_ARGS = dict(momentum=0.9, weight_decay=5e-4)
MAX_NORM = 1.0  # small enough that the clip acts on both steps


def batch(rng, B=2):
    images = rng.standard_normal((B, 3, 32, 32)).astype(np.float32)  # no flat regions: no tied losses
    boxes = [np.array([[0.1, 0.1, 0.6, 0.5], [0.5, 0.4, 0.9, 0.95]], np.float32),
             np.array([[0.2, 0.3, 0.7, 0.9]], np.float32)][:B]
    labels = [np.array([1, 2]), np.array([2])][:B]
    return images, boxes, labels


@pytest.mark.slow
@pytest.mark.parametrize("group, lrs", [(None, (0.05, 0.02)), (1, (0.05,))])
def test_cuda_step_calls_match_the_cpu_step(rng, group, lrs):
    # group None: BatchNorm over the batch of 2, two steps (the second uses the momentum
    # buffer); group 1: each image on its own, one step (a GPU step costs ~11 s on the simulator)
    cpu_model, gpu_model = SSD(TINY, 2, seed=0), SSD(TINY, 2, seed=0)  # the same initial weights
    nn.set_batchnorm_group(cpu_model, group)
    nn.set_batchnorm_group(gpu_model, group)  # to_device copies the group with the layers
    optimizer = nn.SGD(list(cpu_model.parameters()), 0.05, **SGD_ARGS)
    gpu = cuda.to_device(gpu_model)
    opt = cuda.SGD(gpu.parameters(), 0.05, **SGD_ARGS)
    assert [n for n, _ in gpu.named_parameters()] == [n for n, _ in cpu_model.named_parameters()]
    for lr in lrs:
        images, boxes, labels = batch(rng)
        loss_l, loss_c = step.forward_backward(cpu_model, images, boxes, labels, LOSS)
        norm = step.clip_grad_norm(cpu_model.parameters(), MAX_NORM)
        optimizer.lr = lr
        optimizer.step()
        times, stats = {}, {}
        g_loss_l, g_loss_c = cuda.forward_backward(gpu, images, boxes, labels, LOSS, times=times, stats=stats)
        g_norm = cuda.clip_grad_norm(gpu.parameters(), MAX_NORM)
        opt.lr = lr
        opt.step()
        assert g_loss_l == pytest.approx(loss_l, rel=1e-5) and g_loss_c == pytest.approx(loss_c, rel=1e-5)
        assert g_norm == pytest.approx(norm, rel=1e-4) and norm > MAX_NORM  # the clip acted
        assert set(times) == {"match", "forward", "loss", "backward"} and stats["positives"] >= 3
    # losses went well

    cuda.to_host(gpu, gpu_model, opt, None)
    for (name, p), q, buf, cpu_buf in zip(cpu_model.named_parameters(), gpu_model.parameters(), opt.buffers,
                                          optimizer.buffers):
        np.testing.assert_allclose(q.grad, p.grad, rtol=1e-4, atol=1e-6, err_msg=name)  # clipped gradients
        np.testing.assert_allclose(q.data, p.data, rtol=1e-5, atol=1e-6, err_msg=name)  # updated weights
        np.testing.assert_allclose(buf, cpu_buf, rtol=1e-4, atol=1e-6, err_msg=name)   # momentum
    for (name, b), (_, c) in zip(cpu_model.named_buffers(), gpu_model.named_buffers()):
        np.testing.assert_allclose(c, b, rtol=1e-5, atol=1e-6, err_msg=name)  # BatchNorm running stats
    assert any(not np.array_equal(p.data, SSD(TINY, 2, seed=0).state_dict()[n])
               for n, p in gpu_model.named_parameters())  # the weights did move
    # weights, momentum and running statistics went well

    saved = nn.SGD(list(gpu_model.parameters()), 1.0, momentum=0.9)  # what a checkpoint saves
    cuda.to_host(gpu, gpu_model, opt, saved)
    assert saved.lr == lrs[-1] and all(np.array_equal(a, b) for a, b in zip(saved.buffers, opt.buffers))
    resumed = cuda.SGD(cuda.to_device(gpu_model).parameters(), lrs[-1], **SGD_ARGS, momentum_buffers=saved.buffers)
    assert all(np.array_equal(a, b) for a, b in zip(resumed.buffers, opt.buffers))


def test_cuda_forward_backward_stops_at_a_non_finite_output(rng):
    model = SSD(TINY, 2, seed=0)
    model.heads.convs[1].bias.data[0] = np.nan  # the 2x2 map's first offset of every location
    gpu = cuda.to_device(model)
    images, boxes, labels = batch(rng)
    loss_l, loss_c = cuda.forward_backward(gpu, images, boxes, labels, LOSS)
    assert np.isnan(loss_l) and np.isnan(loss_c)
    assert not gpu.flat.grad.copy_to_host().any()  # no gradient written, as on the CPU
    assert np.isnan(step.forward_backward(model, images, boxes, labels, LOSS)[0])


def test_cuda_to_device_refuses_a_layer_without_twin():
    model = SSD(TINY, 2, seed=0)
    model.stages[1].layers.append(nn.L2Norm(8))  # no GPU twin inside a stage
    with pytest.raises(ValueError, match="no GPU twin for layer L2Norm"):
        cuda.to_device(model)


def test_cuda_batchnorm_group_must_divide_the_batch(rng):
    model = SSD(TINY, 2, seed=0)
    nn.set_batchnorm_group(model, 2)
    images, boxes, labels = batch(rng, B=1)
    with pytest.raises(ConfigError, match="batch of 1 images cannot be cut into groups of 2"):
        cuda.forward_backward(cuda.to_device(model), images, boxes, labels, LOSS)
