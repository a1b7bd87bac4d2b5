"""``python -m minissd.bench nn``: the convolution and pooling next to NumPy baselines.

For each 3x3 / padding 1 convolution of the issue (batch 32, C_in = C_out = C, H = W), it
prints forward and forward+backward time and GFLOP/s of ``minissd.nn.Conv2d``, the same
for a plain NumPy im2col convolution (NCHW, full cols, the textbook version), and, measured
in the same run, the GFLOP/s of a float32 ``numpy.matmul`` with the shape of that
convolution's im2col product, (N*H*W, 9C) @ (9C, C): the practical peak of this machine for
that size. The goal is forward+backward >= 60% of that peak ("of peak" column). Last, one
forward+backward of the tiny SSD network at the batch size, whole.

Everything runs in this process with NumPy's BLAS as it comes (OpenBLAS threads its products
over the cores; the layers' own loops are single-threaded). ``OPENBLAS_NUM_THREADS=1 python
-m minissd.bench nn`` measures one core, as a training worker process runs.

Timings are the minimum over ``--reps`` interleaved repetitions (conv, baseline, matmul,
conv, ...), so a neighbour loading the machine for a moment hurts all columns alike.
"""

import argparse
import os
import platform
import time

import numpy as np

from minissd import nn

SHAPES = ((32, 64), (64, 32), (128, 16), (256, 8))  # (C, H=W), the 3x3 convs


def machine():
    """CPU model name and core count, for the table's caption."""
    name = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def load_note():
    """The 1-minute load average and thread settings: a loaded machine makes every figure low."""
    threads = ", ".join(f"{k}={os.environ[k]}" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")
                        if k in os.environ)
    return f"load average {os.getloadavg()[0]:.1f}" + (f", {threads}" if threads else "")


def best_times(functions, reps):
    """Run each function once to warm up, then ``reps`` interleaved rounds; min time of each."""
    for f in functions:
        f()
    best = [float("inf")] * len(functions)
    for _ in range(reps):
        for i, f in enumerate(functions):
            start = time.perf_counter()
            f()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def im2col_conv_numpy(x, w, b):
    """The textbook version (3x3, stride 1, padding 1), NCHW: full cols, one product.

    Returns (forward, backward) closures so that the benchmark can time both.
    """
    N, C, H, W = x.shape
    O = w.shape[0]

    def forward():
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        windows = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # (N, C, H, W, 3, 3)
        cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(N * H * W, C * 9)  # the 9x copy
        y = cols @ w.reshape(O, -1).T + b
        return cols, np.ascontiguousarray(y.reshape(N, H, W, O).transpose(0, 3, 1, 2))

    def forward_backward():
        cols, y = forward()
        g = y.transpose(0, 2, 3, 1).reshape(-1, O)  # stands in for dL/dy
        dw = g.T @ cols
        dcols = (g @ w.reshape(O, -1)).reshape(N, H, W, C, 3, 3)
        dxp = np.zeros((N, C, H + 2, W + 2), dtype=x.dtype)
        for u in range(3):
            for v in range(3):
                dxp[:, :, u:u + H, v:v + W] += dcols[..., u, v].transpose(0, 3, 1, 2)
        return dw, dxp[:, :, 1:-1, 1:-1]

    return forward, forward_backward


def bench_conv(batch, reps, shapes=SHAPES):
    rng = np.random.default_rng(0)
    print(f"Conv2d 3x3, padding 1, batch {batch}, float32 (GFLOP/s; fwd+bwd counts 3 products)")
    header = (f"{'C':>5} {'HxW':>7} | {'fwd ms':>8} {'GF/s':>6} {'f+b ms':>8} {'GF/s':>6} | "
              f"{'im2col f+b ms':>13} {'GF/s':>6} | {'matmul GF/s':>11} | {'of peak':>7}")
    print(header)
    print("-" * len(header))
    for C, H in shapes:
        conv = nn.Conv2d(C, C, 3, padding=1, rng=rng)
        x = rng.standard_normal((batch, C, H, H), dtype=np.float32)
        g = rng.standard_normal((batch, C, H, H), dtype=np.float32)
        a = rng.standard_normal((batch * H * H, 9 * C), dtype=np.float32)
        w = rng.standard_normal((9 * C, C), dtype=np.float32)

        def matmul():  # the peak: the conv's product alone
            return a @ w
        _, plain_fb = im2col_conv_numpy(x, conv.weight.data, conv.bias.data)

        def fwd_bwd():
            conv.forward(x)
            conv.backward(g)

        t_f, t_fb, t_plain, t_mm = best_times([lambda: conv.forward(x), fwd_bwd, plain_fb, matmul], reps)
        flops = 2.0 * batch * H * H * 9 * C * C  # one product
        rate = lambda t, n: n * flops / t / 1e9  # noqa: E731
        print(f"{C:>5} {f'{H}x{H}':>7} | {t_f * 1e3:8.1f} {rate(t_f, 1):6.1f} {t_fb * 1e3:8.1f} {rate(t_fb, 3):6.1f} | "
              f"{t_plain * 1e3:13.1f} {rate(t_plain, 3):6.1f} | {rate(t_mm, 1):11.1f} | "
              f"{rate(t_fb, 3) / rate(t_mm, 1):6.0%}")


def bench_pool(batch, reps):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 64, 64, 64), dtype=np.float32)
    pool = nn.MaxPool2d(2, 2)

    def numpy_pool():  # the reshape trick: only for k = s and even sizes
        return x.reshape(batch, 64, 32, 2, 32, 2).max(axis=(3, 5))

    def fwd_bwd():
        y = pool.forward(x)
        pool.backward(y)

    t_f, t_fb, t_np = best_times([lambda: pool.forward(x), fwd_bwd, numpy_pool], reps)
    print(f"\nMaxPool2d 2x2/2 on ({batch}, 64, 64, 64) float32: forward {t_f * 1e3:.1f} ms, "
          f"forward+backward {t_fb * 1e3:.1f} ms; NumPy reshape-max forward {t_np * 1e3:.1f} ms")


def bench_tiny_step(batch, reps):
    """One forward+backward of the whole tiny SSD (stages and heads) on random images."""
    from minissd.model import ssd_tiny

    model = ssd_tiny(20)
    S = model.config.input_size
    x = np.random.default_rng(0).standard_normal((batch, 3, S, S), dtype=np.float32)

    def step():
        loc, conf = model.forward(x)
        model.backward(np.full_like(loc, 1e-3), np.full_like(conf, 1e-3))

    (t,) = best_times([step], reps)
    print(f"\ntiny SSD ({S}x{S}, 20 classes) forward+backward at batch {batch}: {t * 1e3:.0f} ms "
          f"({batch / t:.0f} images/s)")


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m minissd.bench nn", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions; the minimum is kept")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}, numpy {np.__version__}; {load_note()}\n")
    bench_conv(args.batch, args.reps)
    bench_pool(args.batch, args.reps)
    bench_tiny_step(args.batch, args.reps)
    # (a training helper adds the peak memory of one tiny-voc training step here)
    print(f"\nat the end: {load_note()}")
    return 0
