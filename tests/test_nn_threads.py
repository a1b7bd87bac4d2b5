"""minissd.nn.threads: the batch cut into pieces, the pieces run on the pool, and the layers
that use it giving the same numbers whether they run as one piece or as many."""

import threading

import numpy as np
import pytest

import naive
from minissd import nn
from minissd.nn import conv as conv_module
from minissd.nn import norm as norm_module
from minissd.nn import threads


def test_split_batch_covers_the_batch_evenly(monkeypatch):
    monkeypatch.setattr(threads, "_num_threads", 2)
    # 32 images of 1024 rows = 32768 rows of work, 4096 per piece -> 8 pieces of 4 images
    assert threads.split_batch(32, 1024) == [(4 * i, 4 * i + 4) for i in range(8)]
    # 10 images of 1000 rows -> round(10000 / 4096) = 2 pieces of 5
    assert threads.split_batch(10, 1000) == [(0, 5), (5, 10)]
    # 32 images of 64 rows = 2048 rows: less than a target, but one piece per thread
    assert threads.split_batch(32, 64) == [(0, 16), (16, 32)]
    # little work: one piece (no thread hand-over); never more pieces than images
    assert threads.split_batch(32, 4) == [(0, 32)]
    assert threads.split_batch(3, 10 ** 6) == [(0, 1), (1, 2), (2, 3)]


def test_run_pieces_keeps_order_and_uses_worker_threads():
    seen = set()

    def work(i):
        seen.add(threading.current_thread().name)
        return i * i

    assert threads.run_pieces(work, range(20)) == [i * i for i in range(20)]
    if threads.num_threads() > 1 and threads.single_threaded_blas():
        assert any(name.startswith("minissd-nn") for name in seen)


def test_set_num_threads_one_runs_in_the_caller():
    before = threads.num_threads()
    try:
        threads.set_num_threads(1)
        names = threads.run_pieces(lambda _: threading.current_thread().name, range(4))
        assert set(names) == {threading.current_thread().name}
        with pytest.raises(ValueError, match="n must be >= 1"):
            threads.set_num_threads(0)
    finally:
        threads.set_num_threads(before)


def one_image_per_piece(N, rows_per_image, target_rows=4096):
    return [(n, n + 1) for n in range(N)]


@pytest.mark.parametrize("case", [(3, 4, 3, 1, 1, 1, 5, 6), (2, 3, 3, 2, 1, 1, 7, 5)])
def test_conv_in_many_pieces_matches_naive_and_finite_differences(case, rng, monkeypatch):
    # Every image its own piece, so that the pool runs them and backward sums four dW's.
    monkeypatch.setattr(conv_module, "split_batch", one_image_per_piece)
    cin, cout, k, s, p, d, H, W = case
    conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, rng=rng, dtype=np.float64)
    conv.bias.data[...] = rng.standard_normal(cout)
    x = rng.standard_normal((4, cin, H, W))
    expected = naive.conv2d(x, conv.weight.data, conv.bias.data, s, p, d)
    np.testing.assert_allclose(conv.forward(x), expected, rtol=1e-10, atol=1e-10)
    assert nn.gradcheck(conv, x) < 1e-6


def test_batchnorm_in_channel_pieces_matches_one_piece(monkeypatch):
    rng = np.random.default_rng(1)
    # (seed 0 gives an input where gradcheck's elementwise relative error reads 4e-3 for the
    # old NumPy BatchNorm and this one alike: one near-zero entry of dx, not a wrong gradient)
    x = rng.standard_normal((2, 3, 3, 5)) * 2 + 1  # as in test_nn_norm's gradient check
    g = rng.standard_normal(x.shape)
    results = []
    for split in (lambda C, n, target_rows=0: [(0, C)], lambda C, n, target_rows=0: [(c, c + 1) for c in range(C)]):
        monkeypatch.setattr(norm_module, "split_batch", split)
        bn = nn.BatchNorm2d(3, dtype=np.float64)
        y = bn.forward(x)
        results.append((y, bn.backward(g), bn.weight.grad.copy(), bn.running_var.copy()))
    for one, many in zip(*results):
        np.testing.assert_allclose(one, many, rtol=1e-12, atol=1e-12)
    assert nn.gradcheck(bn, x) < 1e-6
