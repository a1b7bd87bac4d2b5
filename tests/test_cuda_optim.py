"""minissd.cuda.optim (clip_grad_norm, sgd_update) against train.global_grad_norm and nn.SGD."""

import numpy as np
import pytest

from minissd import nn
from minissd.train import global_grad_norm

try:  # skip only if numba-cuda really cannot be imported (CI must run these)
    import minissd.cuda as mc
    from minissd.cuda import optim
except RuntimeError as e:  # pragma: no cover - the reason is shown by pytest -ra
    pytest.skip(f"minissd.cuda unavailable: {e}", allow_module_level=True)

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("small_cuda_launches")]  # conftest.py


def flat_params(rng, shapes=((3, 4), (5,), (2, 3, 1, 3))):
    return [nn.Parameter(rng.standard_normal(s).astype(np.float32)) for s in shapes]


@pytest.mark.parametrize("max_norm", [0.0, 1.0, 1e3])  # none, clipping, not needed
def test_cuda_clip_grad_norm_matches_train(rng, monkeypatch, max_norm):
    # Deliberately 3 summing blocks of 8 on the simulator (conftest has 2): 24 threads still
    # split the 50 squares, so the partial sums are added across blocks.
    if mc.simulating():
        monkeypatch.setattr(optim, "NORM_BLOCKS", 3)
    params = flat_params(rng)
    for p in params:
        p.grad[...] = rng.standard_normal(p.shape)
    grad = mc.require().to_device(np.concatenate([p.grad.ravel() for p in params]))
    coef = optim.clip_grad_norm(grad, max_norm).copy_to_host()
    norm = global_grad_norm(params)  # ~7 for 50 standard normals
    if max_norm > 0 and norm > max_norm:  # train.py's rule
        for p in params:
            p.grad *= max_norm / norm
    assert coef[0] == pytest.approx(norm, rel=1e-6)
    assert coef[1] == (max_norm / coef[0] if max_norm == 1.0 else 1.0)
    np.testing.assert_allclose(grad.copy_to_host(), np.concatenate([p.grad.ravel() for p in params]),
                               rtol=1e-6)


@pytest.mark.parametrize("momentum, weight_decay, nesterov", [(0.9, 5e-4, False), (0.0, 0.0, False),
                                                               (0.9, 0.1, True)])
def test_cuda_sgd_matches_cpu_over_three_steps(rng, momentum, weight_decay, nesterov):
    params = flat_params(rng)
    cuda = mc.require()
    data = cuda.to_device(np.concatenate([p.data.ravel() for p in params]))
    buf = cuda.to_device(np.zeros(data.shape[0], np.float32))
    sgd = nn.SGD(params, lr=0.1, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    for lr in (0.1, 0.05, 0.05):  # the first step starts the buffer, the next ones use it
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        for p, g in zip(params, grads):
            p.grad[...] = g
        sgd.lr = lr
        sgd.step()
        optim.sgd_update(data, cuda.to_device(np.concatenate([g.ravel() for g in grads])), buf, lr,
                         momentum, weight_decay, nesterov)
    np.testing.assert_allclose(data.copy_to_host(), np.concatenate([p.data.ravel() for p in params]),
                               rtol=1e-6, atol=1e-7)
    if momentum:
        np.testing.assert_allclose(buf.copy_to_host(), np.concatenate([b.ravel() for b in sgd.buffers]),
                                   rtol=1e-6, atol=1e-7)
