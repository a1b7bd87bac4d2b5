"""MultiBoxHead: where each map's predictions land in (B, P, 4) and (B, P, C+1), and back.

Graded (part ``heads``, chapter 6). The heads' convolutions are replaced by probes that return
a coded array and record the gradient they are given, so these tests grade the flattening,
the multi-scale concatenation and the split alone: they do not depend on the convolution's
backward (chapter 5) or on the default boxes (chapter 2). The real network's heads are tested
against finite differences in test_model.py.
"""

import numpy as np
import pytest

from minissd.model.heads import MultiBoxHead
from minissd.nn import Module

NUM_CLASSES = 2
PER_BOX = 4 + NUM_CLASSES + 1
MAPS = ((3, 2), (2, 3), (1, 4))  # (f, k) of each source map: sizes and box counts all differ
B = 2


class Probe(Module):
    """Stands in for a head's 3x3 conv: forward returns ``out``, backward records its input."""

    def __init__(self, out, tag):
        self.out, self.tag = out, tag
        self.seen_x = self.seen_grad = None

    def forward(self, x):
        self.seen_x = x
        return self.out

    def backward(self, grad):
        self.seen_grad = grad
        return np.full(self.seen_x.shape, float(self.tag))  # says which probe answered


def coded_output(m, f, k, dtype=np.float32):
    """(B, k*(C+5), f, f) holding 100000*b + 10000*m + 100*channel + 10*i + j."""
    b, ch, i, j = np.meshgrid(np.arange(B), np.arange(k * PER_BOX), np.arange(f), np.arange(f),
                              indexing="ij")
    return (100000 * b + 10000 * m + 100 * ch + 10 * i + j).astype(dtype)


def probed_head(dtype=np.float32):
    head = MultiBoxHead([5] * len(MAPS), [k for _, k in MAPS], NUM_CLASSES, np.random.default_rng(0))
    head.convs = [Probe(coded_output(m, f, k, dtype), tag=m + 1) for m, (f, k) in enumerate(MAPS)]
    sources = [np.zeros((B, 5, f, f), dtype) for f, _ in MAPS]
    return head, sources


def expected_row(b, m, f, k, p):
    """The C+5 values that prior p of map m (row-major position, then box) must hold."""
    box, position = p % k, p // k
    i, j = position // f, position % f
    return 100000 * b + 10000 * m + 100 * (box * PER_BOX + np.arange(PER_BOX)) + 10 * i + j


def test_every_prediction_lands_at_its_default_box():
    # default_boxes order: map by map, then row, column, box; each box's channels hold its
    # 4 offsets, then its C+1 scores. A flatten without the transpose, columns before rows,
    # maps in another order or the offsets taken from other channels put other codes here.
    head, sources = probed_head()
    loc, conf = head.forward(sources)
    P = sum(f * f * k for f, k in MAPS)
    assert loc.shape == (B, P, 4) and conf.shape == (B, P, NUM_CLASSES + 1)
    start = 0
    for m, (f, k) in enumerate(MAPS):
        for p in range(f * f * k):
            for b in range(B):
                want = expected_row(b, m, f, k, p)
                np.testing.assert_array_equal(loc[b, start + p], want[:4], err_msg=f"loc of map {m} prior {p}")
                np.testing.assert_array_equal(conf[b, start + p], want[4:], err_msg=f"conf of map {m} prior {p}")
        start += f * f * k


def test_each_conv_reads_its_own_source_and_outputs_keep_the_dtype():
    for dtype in (np.float32, np.float64):
        head, sources = probed_head(dtype)
        loc, conf = head.forward(sources)
        assert all(probe.seen_x is src for probe, src in zip(head.convs, sources))
        assert loc.dtype == dtype and conf.dtype == dtype
        assert loc.flags.c_contiguous and conf.flags.c_contiguous


def test_backward_is_the_transpose_of_forward(rng):
    # Forward only moves numbers, so backward must move the gradients to exactly where the
    # outputs came from: sum_m <grad_m, y_m> == <dloc, loc> + <dconf, conf> for any y, and
    # each probe receives a (B, k*(C+5), f, f) array.
    head, sources = probed_head(np.float64)
    for probe in head.convs:
        probe.out = rng.standard_normal(probe.out.shape)
    loc, conf = head.forward(sources)
    dloc, dconf = rng.standard_normal(loc.shape), rng.standard_normal(conf.shape)
    head.backward(dloc, dconf)
    seen = 0.0
    for probe, (f, k) in zip(head.convs, MAPS):
        assert probe.seen_grad is not None, "a head's conv backward was not called"
        assert probe.seen_grad.shape == (B, k * PER_BOX, f, f)
        seen += float(np.vdot(probe.seen_grad, probe.out))
    assert seen == pytest.approx(float(np.vdot(dloc, loc) + np.vdot(dconf, conf)), rel=1e-12)


def test_backward_puts_each_gradient_where_its_output_came_from():
    # the coded outputs, sent back as gradients: each probe must get its own codes back,
    # with the loc and conf parts joined box by box
    head, sources = probed_head(np.float64)
    loc, conf = head.forward(sources)
    head.backward(loc.copy(), conf.copy())
    for probe in head.convs:
        np.testing.assert_array_equal(probe.seen_grad, probe.out)
        assert probe.seen_grad.flags.c_contiguous, "conv backward reads a C-contiguous gradient"


def test_backward_returns_each_maps_source_gradient_in_order():
    head, sources = probed_head(np.float64)
    loc, conf = head.forward(sources)
    grads = head.backward(np.zeros_like(loc), np.zeros_like(conf))
    assert len(grads) == len(MAPS)
    for g, probe, src in zip(grads, head.convs, sources):
        assert g.shape == src.shape
        np.testing.assert_array_equal(g, np.full(src.shape, float(probe.tag)))
