"""minissd.cuda.norm (BatchNorm2dGPU, L2NormGPU) against the CPU twins nn.BatchNorm2d and nn.L2Norm."""

import numpy as np

from minissd import nn

from minissd.cuda.norm import BatchNorm2dGPU, L2NormGPU


def test_cuda_batchnorm_training_matches_cpu(rng):
    # 3 channels of 2 x 3 x 5 = 30 values each, shifted and scaled so that the statistics matter
    x = (rng.standard_normal((2, 3, 3, 5)) * [[[[2.0]], [[0.5]], [[1.0]]]] + 3.0).astype(np.float32)
    bn = nn.BatchNorm2d(3)
    bn.weight.data[...] = [1.5, -0.5, 2.0]
    bn.bias.data[...] = [0.1, 0.2, -0.3]
    gpu = BatchNorm2dGPU(bn)  # copies weight, bias and the running buffers (0 and 1)
    y = gpu.forward(x).copy_to_host()
    np.testing.assert_allclose(y, bn.forward(x), rtol=1e-5, atol=1e-5)
    # running = 0.9 * (0, 1) + 0.1 * (mean, unbiased var), on both
    np.testing.assert_allclose(gpu.running_mean.copy_to_host(), bn.running_mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gpu.running_var.copy_to_host(), bn.running_var, rtol=1e-6, atol=1e-7)
    bn.running_mean[...] = 0
    gpu.to_host(bn)  # copies the GPU's running statistics back into bn
    np.testing.assert_allclose(bn.running_mean, gpu.running_mean.copy_to_host())
    # forward went well

    g = rng.standard_normal(x.shape).astype(np.float32)
    dx_cpu = bn.backward(g)
    dx = gpu.backward(g).copy_to_host()
    np.testing.assert_allclose(dx, dx_cpu, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gpu.weight.grad.copy_to_host(), bn.weight.grad, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gpu.bias.grad.copy_to_host(), bn.bias.grad, rtol=1e-4, atol=1e-5)
    # backward went well: with batch statistics, sum over a channel of dx is 0
    np.testing.assert_allclose(dx.sum(axis=(0, 2, 3)), 0, atol=1e-4)


def test_cuda_batchnorm_eval_uses_running_statistics(rng):
    x = rng.standard_normal((1, 2, 2, 3)).astype(np.float32)
    bn = nn.BatchNorm2d(2)
    bn.running_mean[...] = [0.5, -1.0]
    bn.running_var[...] = [4.0, 0.25]
    bn.eval()
    gpu = BatchNorm2dGPU(bn)
    # worked: channel 0 is (x - 0.5) / sqrt(4 + 1e-5) ~ (x - 0.5) / 2
    y = gpu.forward(x).copy_to_host()
    np.testing.assert_allclose(y, bn.forward(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y[0, 0], (x[0, 0] - 0.5) / 2, rtol=1e-4)
    g = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_allclose(gpu.backward(g).copy_to_host(), bn.backward(g), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(gpu.running_mean.copy_to_host(), [0.5, -1.0])  # untouched in eval


def test_cuda_l2norm_matches_cpu(rng):
    x = rng.standard_normal((2, 5, 3, 2)).astype(np.float32)
    x[1, :, 0, 0] = 0.0  # an all-zero vector maps to 0, and its gradient stays finite
    l2 = nn.L2Norm(5, scale=20.0)
    l2.weight.data[...] = [20.0, 10.0, 5.0, 1.0, -2.0]
    gpu = L2NormGPU(l2)
    y = gpu.forward(x).copy_to_host()
    np.testing.assert_allclose(y, l2.forward(x), rtol=1e-5, atol=1e-5)
    g = rng.standard_normal(x.shape).astype(np.float32)
    dx = gpu.backward(g).copy_to_host()
    np.testing.assert_allclose(dx, l2.backward(g), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gpu.weight.grad.copy_to_host(), l2.weight.grad, rtol=1e-4, atol=1e-5)
