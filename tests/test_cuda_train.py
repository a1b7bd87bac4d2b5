"""``python -m minissd.train --device cuda``: train.py's loop with the GPU step, on the simulator.

Two iterations of a mini SSD on a handful of tiny-voc images, once with ``--device cuda``
(minissd.cuda's to_device, forward_backward, clip_grad_norm, SGD, to_host) and once on the CPU
(minissd.step) from the same seed: the checkpoints must hold the same weights, which checks the wiring (learning rate schedule, weights copied back before
the checkpoint, the optimizer's momentum buffers saved) as well as the step itself."""

import numpy as np
import pytest

from minissd import train
from minissd.checkpoint import read_checkpoint
from minissd.model import SSD

from test_cuda_step import TINY
from test_train import voc  # noqa: F401 (a module fixture: 8 train / 4 val images)


@pytest.mark.slow
def test_cuda_device_trains_like_the_cpu(voc, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MINISSD_ALLOW_CUDASIM", "1")
    monkeypatch.setattr(train, "build_model", lambda name, num_classes, seed=0, **kw: SSD(TINY, num_classes, seed=seed))
    common = ["--voc-root", voc, "--model", "tiny", "--batch-size", "2", "--bn-group", "2", "--loader-threads", "0",
              "--iters", "1", "--warmup-iters", "1", "--eval-every", "0", "--lr", "0.05"]
    assert train.main(common + ["--out", str(tmp_path / "cpu")]) == 0
    assert train.main(common + ["--out", str(tmp_path / "gpu"), "--device", "cuda"]) == 0
    cpu, cpu_optim, cpu_meta = read_checkpoint(tmp_path / "cpu" / "checkpoint.npz")
    gpu, gpu_optim, gpu_meta = read_checkpoint(tmp_path / "gpu" / "checkpoint.npz")
    assert gpu_meta["iteration"] == cpu_meta["iteration"] == 1  # one step: ~11 s on the simulator
    assert set(gpu) == set(cpu) and set(gpu_optim) == set(cpu_optim)
    for name in cpu_optim:  # SGD's momentum buffers came back from the GPU too
        np.testing.assert_allclose(gpu_optim[name], cpu_optim[name], rtol=1e-4, atol=1e-5, err_msg=name)
    moved = 0
    for name in cpu:
        np.testing.assert_allclose(gpu[name], cpu[name], rtol=1e-4, atol=1e-5, err_msg=name)
        moved += not np.array_equal(cpu[name], SSD(TINY, 6, seed=0).state_dict().get(name, cpu[name]))
    assert moved  # the weights did change: a real step was taken
