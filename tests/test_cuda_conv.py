"""minissd.cuda.conv against the CPU twin nn.Conv2d, the naive.conv2d oracle, and im2col written out.

Only nn.Conv2d's public behaviour is compared: its internals are another algorithm."""

import numpy as np
import pytest

import naive
from minissd import nn
from minissd.nn import conv as cpu_conv

import minissd.cuda as mc
from minissd.cuda import conv as cuda_conv
from minissd.cuda import require, simulating


@pytest.fixture(autouse=True)
def several_1d_blocks(small_cuda_launches, monkeypatch):
    """conftest's small blocks, but deliberately up to 4 blocks of 32 for the 1-D kernels, not 1:
    these tests are the only ones that launch the im2col gather/scatter, layout and bias kernels
    with more than one block (e.g. 288 outputs: 4 blocks, each thread striding over 3 items), so
    a kernel that got its offset or stride from the block alone would fail here."""
    if simulating():
        monkeypatch.setattr(mc, "MAX_BLOCKS_1D", 4)

# (C_in, C_out, k, stride, padding, dilation, H, W): kept tiny, the simulator runs Python per thread
CASES = [
    (3, 4, 3, 1, 1, 1, 6, 6),  # the common 3x3 / pad 1
    (2, 3, 3, 2, 2, 2, 7, 5),  # stride 2, dilation 2 (fc6-like), odd sizes
]


@pytest.mark.parametrize("transpose_a, transpose_b", [(False, False), (True, False), (False, True)])
def test_cuda_matmul_matches_numpy(rng, monkeypatch, transpose_a, transpose_b):
    # 4 x 4 tiles (stumpy's trick: patch the constant; the simulator reads it when the kernel
    # runs): 9 x 7 @ 7 x 6 needs 3 x 2 blocks and 2 tiles along k, every edge ragged. Only on
    # the simulator: a real GPU compiles TILE into the kernel once, for the whole session.
    if simulating():
        monkeypatch.setattr(cuda_conv, "TILE", 4)
    a = rng.standard_normal((9, 7)).astype(np.float32)
    b = rng.standard_normal((7, 6)).astype(np.float32)
    a_in = np.ascontiguousarray(a.T) if transpose_a else a
    b_in = np.ascontiguousarray(b.T) if transpose_b else b
    got = cuda_conv.matmul(a_in, b_in, transpose_a=transpose_a, transpose_b=transpose_b)
    np.testing.assert_allclose(got, a @ b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transpose_a", [False, True])
def test_cuda_matmul_split_k(rng, monkeypatch, transpose_a):
    # The weight gradient's shape in small: a 5 x 3 result with K = 70. Split-K threshold
    # patched down (a host-side constant, safe on a GPU too): 70 // 16 = 4 parts of 18, rounded
    # up to whole 16-wide tiles: 3 parts of 32, added up in order by sum_splits_kernel.
    monkeypatch.setattr(cuda_conv, "SPLIT_MIN_K", 16)
    assert cuda_conv._k_splits(5, 3, 70) == (3, 32)
    a = rng.standard_normal((5, 70)).astype(np.float32)
    b = rng.standard_normal((70, 3)).astype(np.float32)
    got = cuda_conv.matmul(np.ascontiguousarray(a.T) if transpose_a else a, b, transpose_a=transpose_a)
    np.testing.assert_allclose(got, a @ b, rtol=1e-5, atol=1e-5)


def test_cuda_matmul_full_size_tile(rng):
    # The real 16 x 16 tile once: a 17 x 20 result needs 2 x 2 blocks, K = 18 needs 2 tiles.
    # (Small tiles are not faster on the simulator: each cuda.syncthreads() is a barrier of
    # Python threads, and small tiles mean more of them.)
    a = rng.standard_normal((17, 18)).astype(np.float32)
    b = rng.standard_normal((18, 20)).astype(np.float32)
    np.testing.assert_allclose(cuda_conv.matmul(a, b), a @ b, rtol=1e-5, atol=1e-5)


def test_cuda_matmul_refuses_mismatched_sizes():
    with pytest.raises(ValueError, match="inner sizes"):
        cuda_conv.matmul(np.zeros((2, 3)), np.zeros((4, 2)))


def reference_cols(x_pad, r0, r1, Ho, Wo, k, s, d):
    """im2col as the definition reads, channels-last: row r = output (n, i, j), columns (u, v, c)."""
    C = x_pad.shape[3]
    cols = np.zeros((r1 - r0, k * k * C), x_pad.dtype)
    for r in range(r0, r1):
        n, i, j = r // (Ho * Wo), (r // Wo) % Ho, r % Wo
        for u in range(k):
            for v in range(k):
                cols[r - r0, (u * k + v) * C:(u * k + v + 1) * C] = x_pad[n, i * s + u * d, j * s + v * d]
    return cols


def reference_scatter(dcols, r0, r1, Ho, Wo, k, s, d, dx_pad):
    """The adjoint of reference_cols, entry by entry (adds into dx_pad)."""
    C = dx_pad.shape[3]
    for r in range(r0, r1):
        n, i, j = r // (Ho * Wo), (r // Wo) % Ho, r % Wo
        for u in range(k):
            for v in range(k):
                dx_pad[n, i * s + u * d, j * s + v * d] += dcols[r - r0, (u * k + v) * C:(u * k + v + 1) * C]


def test_cuda_layout_changes(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    x_pad = cuda_conv.to_padded_nhwc(x, 2)  # (2, 8, 9, 3)
    np.testing.assert_array_equal(x_pad, np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(cuda_conv.to_nchw(x_pad, 2, 4, 5), x)  # and back


@pytest.mark.parametrize("case", CASES)
def test_cuda_gather_scatter_windows_match_reference(case, rng):
    cin, _, k, s, p, d, H, W = case
    x_pad = np.pad(rng.standard_normal((2, H, W, cin)), ((0, 0), (p, p), (p, p), (0, 0))).astype(np.float32)
    Ho, Wo = cpu_conv.conv_output_size(H, k, s, p, d), cpu_conv.conv_output_size(W, k, s, p, d)
    r0, r1 = 3, 2 * Ho * Wo - 2  # a chunk that starts and ends inside images
    cuda = require()
    cols = cuda.device_array((r1 - r0, k * k * cin), np.float32)
    cuda_conv.gather_windows(cuda.to_device(x_pad), r0, r1, Ho, Wo, k, s, d, cols)
    np.testing.assert_array_equal(cols.copy_to_host(), reference_cols(x_pad, r0, r1, Ho, Wo, k, s, d))

    dcols = rng.standard_normal((r1 - r0, k * k * cin)).astype(np.float32)
    start = rng.standard_normal(x_pad.shape).astype(np.float32)  # scatter *adds* into dx_pad
    dx_d = cuda.to_device(start)
    cuda_conv.scatter_windows(cuda.to_device(dcols), r0, r1, Ho, Wo, k, s, d, dx_d)
    dx = start.copy()
    reference_scatter(dcols, r0, r1, Ho, Wo, k, s, d, dx)
    np.testing.assert_allclose(dx_d.copy_to_host(), dx, rtol=1e-5, atol=1e-5)


def test_cuda_scatter_is_the_adjoint_of_gather(rng):
    # <gather(x), c> = <x, scatter(c)> for every x, c: the defining property of the backward.
    cuda = require()
    x_pad = rng.standard_normal((1, 7, 7, 2)).astype(np.float32)  # 5 x 5 input, padding 1
    k, s, d, Ho, Wo = 3, 2, 1, 3, 3
    cols = cuda.device_array((Ho * Wo, k * k * 2), np.float32)
    cuda_conv.gather_windows(cuda.to_device(x_pad), 0, Ho * Wo, Ho, Wo, k, s, d, cols)
    c = rng.standard_normal(cols.shape).astype(np.float32)
    dx = cuda.to_device(np.zeros_like(x_pad))
    cuda_conv.scatter_windows(cuda.to_device(c), 0, Ho * Wo, Ho, Wo, k, s, d, dx)
    lhs = float(np.sum(cols.copy_to_host().astype(np.float64) * c))
    rhs = float(np.sum(x_pad.astype(np.float64) * dx.copy_to_host()))
    assert lhs == pytest.approx(rhs, rel=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_cuda_conv2d_layer_matches_cpu(case, rng, monkeypatch):
    cin, cout, k, s, p, d, H, W = case
    if case == CASES[1]:  # 24 rows of cols in chunks of 16: forward and backward walk 2 chunks
        monkeypatch.setattr(cuda_conv, "CHUNK_BYTES", 16 * 4 * k * k * cin)
    conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, rng=rng)  # float32
    conv.bias.data[...] = rng.standard_normal(cout)
    x = rng.standard_normal((2, cin, H, W)).astype(np.float32)
    layer = cuda_conv.Conv2dGPU(conv)

    y = layer.forward(x).copy_to_host()
    np.testing.assert_allclose(y, naive.conv2d(x, conv.weight.data, conv.bias.data, s, p, d),
                               rtol=1e-4, atol=1e-5)  # forward went well

    g = rng.standard_normal(y.shape).astype(np.float32)
    conv.forward(x)
    dx_cpu = conv.backward(g)
    dx = layer.backward(g).copy_to_host()
    np.testing.assert_allclose(dx, dx_cpu, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.weight.grad.copy_to_host(), conv.weight.grad, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.bias.grad.copy_to_host(), conv.bias.grad, rtol=1e-4, atol=1e-4)
    # backward went well


def test_cuda_im2col_matmul_forward_backward(rng):
    # The chunked functions on NumPy arrays (NumPy back), against cols @ w_mat written out.
    x_pad = rng.standard_normal((1, 4, 4, 2)).astype(np.float32)  # no padding, 2x2 kernel -> 3x3
    w_mat = rng.standard_normal((8, 3)).astype(np.float32)  # (k*k*C_in, C_out)
    cols = reference_cols(x_pad, 0, 9, 3, 3, 2, 1, 1)  # (9, 8)
    y = cuda_conv.im2col_matmul(x_pad, w_mat, (3, 3), 2, 1, 1)
    np.testing.assert_allclose(y, cols @ w_mat, rtol=1e-5, atol=1e-5)
    g = rng.standard_normal(y.shape).astype(np.float32)
    gw, gx = cuda_conv.im2col_matmul_backward(x_pad, w_mat, g, (3, 3), 2, 1, 1, needs_input_grad=False)
    assert gx is None
    np.testing.assert_allclose(gw, cols.T @ g, rtol=1e-5, atol=1e-5)
