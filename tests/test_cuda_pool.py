"""minissd.cuda.pool.MaxPool2dGPU against the CPU twin nn.MaxPool2d (forward, argmax, backward)."""

import numpy as np
import pytest

from minissd import nn

from minissd.cuda.pool import MaxPool2dGPU


@pytest.mark.parametrize("k, s, p, ceil", [
    (2, 2, 0, False),  # the "M" of the tables: 7 -> 3 (the last row/column is dropped)
    (2, 2, 0, True),   # "C" (SSD300's pool3): 7 -> 4, the last window hangs over the edge
    (3, 1, 1, False),  # SSD300's pool5: overlapping windows share winners
])
def test_cuda_maxpool_matches_cpu(rng, k, s, p, ceil):
    x = rng.standard_normal((2, 2, 7, 6)).astype(np.float32)
    x[0, 0, :3, :3] = 1.0  # equal values: the first maximum must win on both
    pool = nn.MaxPool2d(k, s, p, ceil_mode=ceil)
    gpu = MaxPool2dGPU(pool)
    y_cpu = pool.forward(x)
    y = gpu.forward(x)
    np.testing.assert_array_equal(y.copy_to_host(), y_cpu)
    np.testing.assert_array_equal(gpu._argmax.copy_to_host(), pool._argmax)
    g = np.round(rng.standard_normal(y_cpu.shape), 2).astype(np.float32)
    np.testing.assert_array_equal(gpu.backward(g).copy_to_host(), pool.backward(g))  # the same sums, in order


def test_cuda_maxpool_backward_adds_shared_winners():
    # 3x3/1/1 on a 1x3 row [0, 5, 1]: all three windows pick the 5 -> its gradient is 1 + 2 + 4.
    pool = nn.MaxPool2d(3, 1, 1)
    gpu = MaxPool2dGPU(pool)
    gpu.forward(np.array([[[[0.0, 5.0, 1.0]]]], np.float32))
    dx = gpu.backward(np.array([[[[1.0, 2.0, 4.0]]]], np.float32)).copy_to_host()
    np.testing.assert_array_equal(dx, [[[[0.0, 7.0, 0.0]]]])
