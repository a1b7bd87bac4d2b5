"""minissd.cuda.conv against the CPU twin minissd.nn.conv and the naive.conv2d oracle."""

import numpy as np
import pytest

import naive
from minissd import nn
from minissd.nn import conv as cpu_conv

try:  # skip only if numba-cuda really cannot be imported (CI must run these)
    from minissd.cuda import conv as cuda_conv
    from minissd.cuda import require
except RuntimeError as e:  # pragma: no cover - the reason is shown by pytest -ra
    pytest.skip(f"minissd.cuda unavailable: {e}", allow_module_level=True)

pytestmark = pytest.mark.cuda

# (C_in, C_out, k, stride, padding, dilation, H, W): kept tiny, the simulator runs Python per thread
CASES = [
    (3, 4, 3, 1, 1, 1, 6, 6),  # the common 3x3 / pad 1
    (2, 3, 3, 2, 2, 2, 7, 5),  # stride 2, dilation 2 (fc6-like), odd sizes
]


@pytest.fixture
def small_tile(monkeypatch):
    """Tiles of 4 x 4 (stumpy's trick of patching the launch constant): several tiles to walk
    on tiny matrices, ragged edges on every side. (Not faster on the simulator: every
    cuda.syncthreads() is a barrier of Python threads, and small tiles mean more of them.)"""
    monkeypatch.setattr(cuda_conv, "TILE", 4)


@pytest.mark.parametrize("transpose_a, transpose_b", [(False, False), (True, False), (False, True)])
def test_cuda_matmul_matches_numpy(rng, small_tile, transpose_a, transpose_b):
    # 9 x 7 @ 7 x 6 with 4 x 4 tiles: 3 x 2 blocks, 2 tiles along k, every edge ragged.
    a = rng.standard_normal((9, 7)).astype(np.float32)
    b = rng.standard_normal((7, 6)).astype(np.float32)
    a_in = np.ascontiguousarray(a.T) if transpose_a else a
    b_in = np.ascontiguousarray(b.T) if transpose_b else b
    got = cuda_conv.matmul(a_in, b_in, transpose_a=transpose_a, transpose_b=transpose_b)
    np.testing.assert_allclose(got, a @ b, rtol=1e-5, atol=1e-5)


def test_cuda_matmul_full_size_tile(rng):
    # The real 16 x 16 tile once: a 17 x 20 result needs 2 x 2 blocks, K = 18 needs 2 tiles.
    a = rng.standard_normal((17, 18)).astype(np.float32)
    b = rng.standard_normal((18, 20)).astype(np.float32)
    np.testing.assert_allclose(cuda_conv.matmul(a, b), a @ b, rtol=1e-5, atol=1e-5)


def test_cuda_matmul_refuses_mismatched_sizes(rng):
    with pytest.raises(ValueError, match="inner sizes"):
        cuda_conv.matmul(np.zeros((2, 3)), np.zeros((4, 2)))


@pytest.mark.parametrize("case", CASES)
def test_cuda_im2col_col2im_match_cpu(case, rng):
    cin, _, k, s, p, d, H, W = case
    x = rng.standard_normal((2, cin, H, W)).astype(np.float32)
    cols, hw = cuda_conv.im2col(x, k, s, p, d)
    want, want_hw = cpu_conv.im2col(x, k, s, p, d)
    assert hw == want_hw
    np.testing.assert_array_equal(cols, want)  # a pure gather: bit for bit
    dcols = rng.standard_normal(cols.shape).astype(np.float32)
    np.testing.assert_allclose(cuda_conv.col2im(dcols, x.shape, k, s, p, d, *hw),
                               cpu_conv.col2im(dcols, x.shape, k, s, p, d, *hw), rtol=1e-5, atol=1e-5)


def test_cuda_col2im_is_the_adjoint_of_im2col(rng):
    # <im2col(x), c> = <x, col2im(c)> for every x, c: the defining property of the backward.
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    cols, hw = cuda_conv.im2col(x, 3, 2, 1, 1)
    c = rng.standard_normal(cols.shape).astype(np.float32)
    lhs = float(np.sum(cols.astype(np.float64) * c))
    rhs = float(np.sum(x.astype(np.float64) * cuda_conv.col2im(c, x.shape, 3, 2, 1, 1, *hw)))
    assert lhs == pytest.approx(rhs, rel=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_cuda_conv2d_forward_backward_match_cpu(case, rng):
    cin, cout, k, s, p, d, H, W = case
    conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, rng=rng)  # float32
    conv.bias.data[...] = rng.standard_normal(cout)
    x = rng.standard_normal((2, cin, H, W)).astype(np.float32)

    y, cols = cuda_conv.conv2d_forward(x, conv.weight.data, conv.bias.data, s, p, d)
    np.testing.assert_allclose(y, naive.conv2d(x, conv.weight.data, conv.bias.data, s, p, d),
                               rtol=1e-4, atol=1e-5)  # forward went well

    g = rng.standard_normal(y.shape).astype(np.float32)
    conv.forward(x)
    dx_cpu = conv.backward(g)
    dx, dw, db = cuda_conv.conv2d_backward(g, cols, x.shape, conv.weight.data, s, p, d)
    np.testing.assert_allclose(dx, dx_cpu, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, conv.weight.grad, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(db, conv.bias.grad, rtol=1e-4, atol=1e-4)  # backward went well


def test_cuda_conv2d_stays_on_device(rng):
    cuda = require()
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    y, cols = cuda_conv.conv2d_forward(cuda.to_device(x), cuda.to_device(w), None, 1, 1, 1)
    assert hasattr(y, "copy_to_host") and hasattr(cols, "copy_to_host")
    np.testing.assert_allclose(y.copy_to_host(), naive.conv2d(x, w, None, 1, 1, 1), rtol=1e-4, atol=1e-5)
    dx, dw, db = cuda_conv.conv2d_backward(cuda.to_device(np.ones((1, 3, 4, 4), np.float32)), cols, x.shape,
                                           cuda.to_device(w), 1, 1, 1, needs_input_grad=False)
    assert dx is None and db.copy_to_host() == pytest.approx([16, 16, 16])  # 1 * 4 * 4 positions
