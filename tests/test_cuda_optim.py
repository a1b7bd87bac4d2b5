"""minissd.cuda.optim (clip_grad_norm, SGD) against their CPU twins step.clip_grad_norm and nn.SGD."""

import numpy as np
import pytest

import minissd.cuda as mc
from minissd import nn, step
from minissd.cuda import optim
from minissd.cuda.module import FlatParameters


def cpu_params(rng, shapes=((3, 4), (5,), (2, 3, 1, 3))):
    return [nn.Parameter(rng.standard_normal(s).astype(np.float32)) for s in shapes]


def set_grads(cpu, flat, grads):
    """The same gradients on both sides: the CPU's .grad and the GPU's flat buffer."""
    for p, g in zip(cpu, grads):
        p.grad[...] = g
    flat.grad.copy_to_device(np.concatenate([g.ravel() for g in grads]))


@pytest.mark.parametrize("max_norm", [0.0, 1.0, 1e3])  # none, clipping, not needed
def test_cuda_clip_grad_norm_matches_cpu(rng, monkeypatch, max_norm):
    # Deliberately 3 summing blocks of 8 on the simulator (conftest has 2): 24 threads still
    # split the 50 squares, so the partial sums are added across blocks.
    if mc.simulating():
        monkeypatch.setattr(optim, "NORM_BLOCKS", 3)
    params = cpu_params(rng)
    flat = FlatParameters(params)
    set_grads(params, flat, [rng.standard_normal(p.shape).astype(np.float32) for p in params])
    norm_gpu = optim.clip_grad_norm(flat.params, max_norm)
    norm = step.clip_grad_norm(params, max_norm)  # ~7 for 50 standard normals
    assert norm_gpu == pytest.approx(norm, rel=1e-6)
    np.testing.assert_allclose(flat.grad.copy_to_host(), np.concatenate([p.grad.ravel() for p in params]),
                               rtol=1e-6)
    if max_norm == 1.0:  # clipped: the norm is now the limit
        assert np.linalg.norm(flat.grad.copy_to_host()) == pytest.approx(1.0, rel=1e-5)


def test_cuda_clip_and_sgd_take_a_whole_model():
    params = cpu_params(np.random.default_rng(0))
    flat = FlatParameters(params)
    with pytest.raises(ValueError, match="all of them"):
        optim.clip_grad_norm(flat.params[:2], 1.0)  # the flat buffer holds three
    with pytest.raises(ValueError, match="all of them"):
        optim.SGD(params, 0.1)  # CPU parameters


@pytest.mark.parametrize("momentum, weight_decay, nesterov", [(0.9, 5e-4, False), (0.0, 0.0, False),
                                                               (0.9, 0.1, True)])
def test_cuda_sgd_matches_cpu_over_three_steps(rng, momentum, weight_decay, nesterov):
    params = cpu_params(rng)
    flat = FlatParameters(params)
    sgd = nn.SGD(params, lr=0.1, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    gpu_sgd = optim.SGD(flat.params, lr=0.1, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    assert gpu_sgd.buffers == [None] * 3  # no step yet: the CPU's convention
    for lr in (0.1, 0.05, 0.05):  # the first step starts the buffer, the next ones use it
        set_grads(params, flat, [rng.standard_normal(p.shape).astype(np.float32) for p in params])
        sgd.lr = gpu_sgd.lr = lr
        sgd.step()
        gpu_sgd.step()
    np.testing.assert_allclose(flat.data.copy_to_host(), np.concatenate([p.data.ravel() for p in params]),
                               rtol=1e-6, atol=1e-7)
    for b, cpu_b in zip(gpu_sgd.buffers, sgd.buffers):
        if momentum:
            np.testing.assert_allclose(b, cpu_b, rtol=1e-6, atol=1e-7)
        else:
            assert b is None and cpu_b is None
    assert gpu_sgd.state_dict().keys() == sgd.state_dict().keys()


def test_cuda_sgd_resumes_from_cpu_buffers(rng):
    params = cpu_params(rng)
    flat = FlatParameters(params)
    buffers = [rng.standard_normal(p.shape).astype(np.float32) for p in params[:2]] + [None]
    gpu_sgd = optim.SGD(flat.params, 0.1, momentum=0.9, momentum_buffers=buffers)
    restored = gpu_sgd.buffers
    assert restored[2] is None and all(np.array_equal(a, b) for a, b in zip(restored[:2], buffers[:2]))
