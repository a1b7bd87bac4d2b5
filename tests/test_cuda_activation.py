"""minissd.cuda.activation.ReLUGPU against the CPU twin nn.ReLU."""

import numpy as np

from minissd import nn

from minissd.cuda.activation import ReLUGPU


def test_cuda_relu_matches_cpu(rng):
    # on the simulator one block of 32 threads walks the 2*3*5*7 = 210 entries (grid-stride)
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    x[0, 0, 0, :3] = [0.0, -0.0, 1e-30]  # the kink: 0 passes no gradient, a tiny positive does
    g = rng.standard_normal(x.shape).astype(np.float32)
    cpu, gpu = nn.ReLU(), ReLUGPU()
    y = gpu.forward(x).copy_to_host()
    np.testing.assert_array_equal(y, cpu.forward(x))
    dx = gpu.backward(g).copy_to_host()
    np.testing.assert_array_equal(dx, cpu.backward(g))
    assert dx[0, 0, 0, 0] == 0 and dx[0, 0, 0, 2] == g[0, 0, 0, 2]
