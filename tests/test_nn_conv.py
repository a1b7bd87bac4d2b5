"""Conv2d: forward against the nested-loop oracle, backward against finite differences."""

import copy

import numpy as np
import pytest

import naive
from minissd import nn
from minissd.nn import conv as conv_module

# (C_in, C_out, k, stride, padding, dilation, H, W): odd sizes, strides, dilations, 1x1
CASES = [
    (3, 4, 3, 1, 1, 1, 5, 6),
    (2, 3, 3, 2, 1, 1, 7, 5),
    (2, 3, 3, 1, 2, 2, 6, 7),   # dilated, as SSD300's fc6 (3x3, dilation 6, padding 6) in small
    (3, 2, 1, 1, 0, 1, 4, 5),   # 1x1, as fc7
    (2, 2, 3, 2, 1, 1, 6, 6),   # stride 2 on an even size: the extra layers' conv8_2
    (2, 3, 3, 1, 0, 1, 5, 5),   # no padding, as conv10_2
    (2, 2, 2, 3, 1, 2, 8, 9),   # even kernel, stride 3 with dilation 2
    (2, 5, 3, 2, 1, 1, 7, 8),   # stride 2, odd width
    (1, 4, 3, 1, 3, 3, 6, 5),   # one input channel, dilation 3
]


def make_conv(case, rng, bias=True, dtype=np.float64):
    cin, cout, k, s, p, d, _, _ = case
    conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, bias=bias, rng=rng, dtype=dtype)
    if bias:
        conv.bias.data[...] = rng.standard_normal(cout)
    return conv


@pytest.mark.parametrize("case", CASES)
def test_forward_matches_naive_loop(case, rng):
    conv = make_conv(case, rng)
    x = rng.standard_normal((2, case[0], case[6], case[7]))
    expected = naive.conv2d(x, conv.weight.data, conv.bias.data, case[3], case[4], case[5])
    np.testing.assert_allclose(conv.forward(x), expected, rtol=1e-10, atol=1e-10)


def test_forward_float32_stays_float32(rng):
    conv = nn.Conv2d(3, 5, 3, padding=1, rng=rng)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    y = conv.forward(x)
    assert y.dtype == np.float32 and y.shape == (2, 5, 6, 6)
    expected = naive.conv2d(x, conv.weight.data, conv.bias.data, 1, 1, 1)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_gradients_match_finite_differences(case, rng):
    conv = make_conv(case, rng)
    x = rng.standard_normal((2, case[0], case[6], case[7]))
    errors = nn.gradcheck(conv, x, details=True)
    assert set(errors) == {"input.0", "weight", "bias"}
    assert max(errors.values()) < 1e-6, errors


def test_without_bias_and_without_input_grad(rng):
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False, rng=rng, dtype=np.float64)
    assert [name for name, _ in conv.named_parameters()] == ["weight"]
    x = rng.standard_normal((1, 2, 4, 4))
    assert nn.gradcheck(conv, x) < 1e-6
    y = conv.forward(x)
    g = rng.standard_normal(y.shape)
    grad_x = conv.backward(g)
    dw = conv.weight.grad.copy()
    conv.zero_grad()
    conv.needs_input_grad = False
    conv.forward(x)
    assert conv.backward(g) is None  # the input gradient is skipped ...
    np.testing.assert_allclose(conv.weight.grad, dw)  # ... the weight gradient is not
    assert grad_x.shape == x.shape


def test_backward_accumulates(rng):
    conv = nn.Conv2d(2, 2, 3, padding=1, rng=rng, dtype=np.float64)
    x = rng.standard_normal((1, 2, 4, 4))
    g = rng.standard_normal((1, 2, 4, 4))
    conv.forward(x)
    conv.backward(g)
    once = conv.weight.grad.copy()
    conv.forward(x)
    conv.backward(g)
    np.testing.assert_allclose(conv.weight.grad, 2 * once)


# [instructor-only] tests of the tests: wrong implementations, each one step from the solution
@pytest.mark.parametrize("wrong", ["stride", "dilation"])
def test_backward_that_ignores_stride_or_dilation_is_caught(wrong, rng, monkeypatch):
    # A backward whose taps forget the stride (or the dilation) must fail the gradient check.
    conv = nn.Conv2d(2, 2, 3, stride=2 if wrong == "stride" else 1, padding=2,
                     dilation=2 if wrong == "dilation" else 1, rng=rng, dtype=np.float64)
    x = rng.standard_normal((1, 2, 7, 7))
    assert nn.gradcheck(conv, x) < 1e-6
    real_backward = conv_module.conv2d_backward

    def broken_backward(X, w_mat, dY, geo, needs_input_grad=True):
        bad = copy.copy(geo)
        if wrong == "stride":
            bad.s = 1
        else:
            bad.offsets = [off // 2 for off in geo.offsets]  # the taps of dilation 1
        return real_backward(X, w_mat, dY, bad, needs_input_grad)

    monkeypatch.setattr(conv_module, "conv2d_backward", broken_backward)
    assert nn.gradcheck(conv, x) > 1e-2
# [/instructor-only]


def test_bad_input_shape_names_the_layer(rng):
    conv = nn.Conv2d(3, 4, 3, rng=rng)
    with pytest.raises(ValueError, match=r"Conv2d\(3, 4\)"):
        conv.forward(np.zeros((1, 2, 5, 5), np.float32))


def test_init_is_seeded():
    a = nn.Conv2d(3, 4, 3, rng=np.random.default_rng(1)).weight.data
    b = nn.Conv2d(3, 4, 3, rng=np.random.default_rng(1)).weight.data
    np.testing.assert_array_equal(a, b)
    # He normal: std = sqrt(2 / fan_in), fan_in = 64 * 9
    w = nn.Conv2d(64, 128, 3, rng=np.random.default_rng(2)).weight.data
    assert w.dtype == np.float32
    assert abs(w.std() - np.sqrt(2 / (64 * 9))) < 0.02 * np.sqrt(2 / (64 * 9)) * 5


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3], CASES[6]])
def test_many_small_chunks_give_the_same_result(case, rng, monkeypatch):
    # Chunks of 7 rows: every chunk boundary and the last partial chunk are exercised.
    monkeypatch.setattr(conv_module, "_chunk_rows", lambda row_width, itemsize: 7)
    conv = make_conv(case, rng)
    x = rng.standard_normal((2, case[0], case[6], case[7]))
    expected = naive.conv2d(x, conv.weight.data, conv.bias.data, case[3], case[4], case[5])
    np.testing.assert_allclose(conv.forward(x), expected, rtol=1e-10, atol=1e-10)
    assert nn.gradcheck(conv, x) < 1e-6
