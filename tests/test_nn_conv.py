"""Conv2d: forward against the nested-loop oracle; backward against finite differences (entry by
entry on small layers, along random directions on layers of several chunks), dtypes, accumulation."""

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


def directional_errors(module, x, rng, h=1e-6):
    """For the input and every parameter P of ``module``: <dL/dP, D> against the centred
    difference (L(P + hD) - L(P - hD)) / 2h along a random direction D, L = sum(forward(x) * g).

    One number per array instead of one per entry (gradcheck), so it checks layers far too
    large for entry-by-entry differences. A wrong gradient is off along almost every D.
    """
    g = rng.standard_normal(module.forward(x).shape)
    module.zero_grad()
    module.forward(x)
    grads = {"input": module.backward(g)}
    grads.update({name: p.grad.copy() for name, p in module.named_parameters()})
    arrays = {"input": x, **{name: p.data for name, p in module.named_parameters()}}
    errors = {}
    for name, a in arrays.items():
        direction, start = rng.standard_normal(a.shape), a.copy()
        a[...] = start + h * direction
        plus = np.sum(module.forward(x) * g)
        a[...] = start - h * direction
        minus = np.sum(module.forward(x) * g)
        a[...] = start
        numeric, analytic = (plus - minus) / (2 * h), np.vdot(grads[name], direction)
        errors[name] = abs(numeric - analytic) / max(abs(numeric), abs(analytic))
    return errors


def test_a_stack_of_ssd_layers_each_of_several_chunks_gets_its_gradient(rng):
    # The layer kinds of SSD300 and tiny, at sizes where the backward runs in several chunks
    # of output rows (float64, 3x3 over 64 channels: 455 rows a chunk) with a partial last
    # one. A mistake in any layer's input gradient spoils every gradient below it.
    layers = [(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 2), (1, 1, 0, 1), (3, 1, 0, 1)]  # k, s, p, d
    stack = nn.Sequential(*[nn.Conv2d(64, 64, k, stride=s, padding=p, dilation=d, rng=rng,
                                      dtype=np.float64) for k, s, p, d in layers])
    for conv in stack:
        conv.bias.data[...] = rng.standard_normal(64)
    x = rng.standard_normal((2, 64, 33, 31))
    rows = [2 * 33 * 31, 2 * 17 * 16, 2 * 17 * 16, 2 * 17 * 16, 2 * 15 * 14]  # outputs of each layer
    chunk = conv_module._chunk_rows(9 * 64, 8)
    assert [-(-m // chunk) for m in rows] == [5, 2, 2, 2, 1]  # chunks of the 3x3 layers (1x1: 1)
    errors = directional_errors(stack, x, rng)
    assert set(errors) == {"input"} | {f"{i}.{p}" for i in range(5) for p in ("weight", "bias")}
    assert max(errors.values()) < 1e-6, errors


def test_float32_layer_gets_float32_gradients_added_into_grad(rng):
    # A float32 network gets float32 gradients, added into .grad (never rebound: training's
    # worker processes share each .grad array), here on a stride-2, dilation-2 layer of two
    # chunks.
    conv = nn.Conv2d(128, 16, 3, stride=2, padding=2, dilation=2, rng=rng)
    conv.bias.data[...] = rng.standard_normal(16)
    x = rng.standard_normal((2, 128, 40, 38)).astype(np.float32)
    g = rng.standard_normal((2, 16, 20, 19)).astype(np.float32)
    assert 2 * 20 * 19 > conv_module._chunk_rows(9 * 128, 4)  # two chunks
    weight_grad, bias_grad = conv.weight.grad, conv.bias.grad
    conv.forward(x)
    grad_x = conv.backward(g)
    assert grad_x.dtype == np.float32 and grad_x.shape == x.shape
    assert conv.weight.grad is weight_grad and conv.bias.grad is bias_grad
    assert weight_grad.dtype == np.float32 and bias_grad.dtype == np.float32
    dy = rng.standard_normal((conv._geo.M, 16)).astype(np.float32)
    dw, dx = conv_module.conv2d_backward(conv._X, conv._w_mat(), dy, conv._geo)
    assert dw.dtype == np.float32 and dx.dtype == np.float32
    once = weight_grad.copy(), bias_grad.copy()
    conv.forward(x)
    conv.backward(g)  # a second backward adds the same again
    np.testing.assert_allclose(weight_grad, 2 * once[0], rtol=1e-6)
    np.testing.assert_allclose(bias_grad, 2 * once[1], rtol=1e-6)
    wide = copy.deepcopy(conv).to(np.float64)  # the same layer in float64
    wide.zero_grad()
    wide.forward(x.astype(np.float64))
    wide_grad_x = wide.backward(g.astype(np.float64))
    assert nn.rel_error(grad_x, wide_grad_x) < 1e-5
    assert nn.rel_error(once[0], wide.weight.grad) < 1e-5
    assert nn.rel_error(once[1], wide.bias.grad) < 1e-5
    # and they are the gradient (float64, along random directions of x, W and b)
    assert nn.directional_error(wide, x.astype(np.float64), g.astype(np.float64), wide_grad_x, rng) < 1e-6


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
