"""minissd.cuda.activation.ReLUGPU against the CPU twin nn.ReLU."""

import numpy as np
import pytest

from minissd import nn

try:  # skip only if numba-cuda really cannot be imported (CI must run these)
    import minissd.cuda as mc
    from minissd.cuda.activation import ReLUGPU
except RuntimeError as e:  # pragma: no cover - the reason is shown by pytest -ra
    pytest.skip(f"minissd.cuda unavailable: {e}", allow_module_level=True)

pytestmark = pytest.mark.cuda


def test_cuda_relu_matches_cpu(rng, monkeypatch):
    if mc.simulating():  # one block of 32 threads walks the 2*3*5*7 = 210 entries (grid-stride)
        monkeypatch.setattr(mc, "MAX_BLOCKS_1D", 1)
        monkeypatch.setattr(mc, "THREADS_1D", 32)
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    x[0, 0, 0, :3] = [0.0, -0.0, 1e-30]  # the kink: 0 passes no gradient, a tiny positive does
    g = rng.standard_normal(x.shape).astype(np.float32)
    cpu, gpu = nn.ReLU(), ReLUGPU()
    y = gpu.forward(x).copy_to_host()
    np.testing.assert_array_equal(y, cpu.forward(x))
    dx = gpu.backward(g).copy_to_host()
    np.testing.assert_array_equal(dx, cpu.backward(g))
    assert dx[0, 0, 0, 0] == 0 and dx[0, 0, 0, 2] == g[0, 0, 0, 2]
