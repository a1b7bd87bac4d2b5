"""``python -m minissd.bench train``: the tiny SSD's training step with 1 and with 2 worker
processes, where its time goes, evaluation's speed, and the step's peak memory.

Printed:
- images/s of train.py's iteration (next batch, ``forward_backward``, clip, SGD step; batch
  16, BatchNorm groups of 8, the default run's augmentation after its light phase) for each
  way of running the step: ``step.forward_backward`` in this process (NumPy's BLAS as it
  comes), and ``workers.Workers`` with 1 and 2 single-threaded worker processes. The rows are
  measured in interleaved rounds (here, 1, 2, here, 1, 2, ...) and the median round is
  printed, so a neighbour loading the machine for a while hurts every row alike;
- the per-stage profile of each row: data (waiting for the loader), match, forward, loss
  (multibox + mining), backward, optimizer (clip + SGD);
- evaluation: ``detect.predict_dataset`` on the first ``--eval-images`` val images, in this
  process (where train.py evaluates);
- baseline 1, the machine's practical peak: the step's multiply-adds (from the layer table,
  x3 for forward + the two backward products) timed as ONE float32 ``numpy.matmul`` of a
  comparable size; "of peak" = that ideal time / the measured forward+backward time;
- baseline 2, the data side: images/s of load + the training augmentation on one thread;
- peak memory of one training step in this process, two ways: ``tracemalloc`` (NumPy and
  Python allocations, blind to Numba's) and the process's peak resident set (Linux ``VmHWM``,
  reset just before the step through /proc/self/clear_refs) minus its resident set before.
"""

import argparse
import copy
import os
import statistics
import time
import tracemalloc

import numpy as np

STAGES = ("data", "match", "forward", "loss", "backward", "optimizer")


def _status_kib(field):
    """A field of /proc/self/status in KiB (VmRSS, VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory():
    """Ask glibc to hand freed heap memory back to the OS (malloc_trim), so that the resident
    set before the step holds only live data; a no-op where glibc is not the allocator."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _matmul_rate(macs):
    """GFLOP/s of one float32 matmul with about ``macs`` multiply-adds (best of 3)."""
    k = 576  # a 3x3 conv with 64 input channels
    n = 64
    m = max(256, int(macs // (k * n)))
    a = np.random.default_rng(0).standard_normal((m, k), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((k, n), dtype=np.float32)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


def main(argv=None) -> int:
    from minissd.bench.nn import machine
    from minissd.config import TrainConfig
    from minissd.data import VOCDataset, make_tiny_voc, tiny_voc_path
    from minissd.data.augment import augmentation
    from minissd.data.loader import DataLoader
    from minissd.detect import predict_dataset
    from minissd.model import ssd_tiny
    from minissd.model.summary import layer_table
    from minissd.nn import SGD, set_batchnorm_group
    from minissd.step import LossConfig, clip_grad_norm, forward_backward
    from minissd.workers import Workers

    cfg = TrainConfig()  # the default run's numbers
    p = argparse.ArgumentParser(prog="python -m minissd.bench train", description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=cfg.batch_size, help="images per step (default run: %(default)s)")
    p.add_argument("--bn-group", type=int, default=cfg.bn_group, help="images per BatchNorm group (%(default)s)")
    p.add_argument("--processes", default="1,2", help="worker-process counts to time, comma-separated")
    p.add_argument("--steps", type=int, default=10, help="timed steps per row and round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is printed")
    p.add_argument("--eval-images", type=int, default=200, help="val images for the evaluation row (0: skip)")
    p.add_argument("--loader-threads", type=int, default=cfg.loader_threads, help="as the default run")
    p.add_argument("--data-dir", default=None, help="where tiny-voc lives (built if absent)")
    args = p.parse_args(argv)

    root = make_tiny_voc(tiny_voc_path(args.data_dir))
    ds = VOCDataset(root, "train")
    start = ssd_tiny(len(ds.classes))
    S, B = start.config.input_size, args.batch_size
    loss_cfg = LossConfig(cfg.iou_threshold, cfg.neg_pos_ratio, cfg.alpha)
    transform = augmentation(cfg.augment, S, start.config.mean, start.config.std, max_expand=cfg.max_expand)
    loader = DataLoader(ds, B, transform=transform, seed=0, num_workers=args.loader_threads, drop_last=True)
    batches = iter(loader)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"train bench on {machine()}; load average {load:.1f} (other processes make these numbers "
          f"noisy)\nssd_tiny: input {S}, {start.num_priors} default boxes, batch {B}, BatchNorm groups "
          f"of {args.bn_group}, {args.loader_threads} loader thread(s)\n")

    # ---- the rows: each its own copy of the model and optimizer, the same batches ----------------
    rows, workers = {}, []
    for n in [0] + [int(x) for x in args.processes.split(",") if x.strip()]:
        model = copy.deepcopy(start).train()
        set_batchnorm_group(model, args.bn_group)
        if n == 0:
            name, run = "this process", (lambda m: lambda *batch: forward_backward(m, *batch))(model)
        else:
            t = time.perf_counter()
            w = Workers(model, n, B, args.bn_group)
            workers.append(w)
            name, run = f"{n} worker process{'es' if n > 1 else ''}", w.forward_backward
            print(f"{name}: started in {time.perf_counter() - t:.1f} s")
        optimizer = SGD(model.parameters(), lr=0.01, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        rows[name] = (model, optimizer, run)

    def iteration(row, times):  # train.py's iteration: next batch, the step, clip, SGD
        model, optimizer, run = row
        t0 = time.perf_counter()
        images, targets = next(batches)
        times["data"] += time.perf_counter() - t0
        run(images, [t[0] for t in targets], [t[1] for t in targets], loss_cfg, times)
        t = time.perf_counter()
        clip_grad_norm(model.parameters(), cfg.grad_clip)
        optimizer.step()
        times["optimizer"] += time.perf_counter() - t

    for row in rows.values():  # warm up: Numba's cache, the loader's queue, the workers' first step
        for _ in range(2):
            iteration(row, dict.fromkeys(STAGES, 0.0))
    rates = {name: [] for name in rows}
    profiles = {name: dict.fromkeys(STAGES, 0.0) for name in rows}
    for _ in range(args.rounds):
        for name, row in rows.items():
            times = dict.fromkeys(STAGES, 0.0)
            t = time.perf_counter()
            for _ in range(args.steps):
                iteration(row, times)
            rates[name].append(B * args.steps / (time.perf_counter() - t))
            for k in STAGES:
                profiles[name][k] += times[k]
    for w in workers:
        w.close()
    steps = args.steps * args.rounds
    print(f"\ntraining step, images/s: median of {args.rounds} interleaved rounds of {args.steps} steps "
          f"(min-max in brackets)")
    print(f"{'':24s} {'images/s':>17s} " + " ".join(f"{k:>9s}" for k in STAGES) + "   (s per step)")
    for name in rows:
        r = rates[name]
        print(f"{name:24s} {statistics.median(r):7.1f} [{min(r):.0f}-{max(r):.0f}] ".ljust(43)
              + " ".join(f"{profiles[name][k] / steps:9.3f}" for k in STAGES))
    here = profiles["this process"]

    # ---- evaluation in this process, as train.py does it -----------------------------------------
    if args.eval_images > 0:
        val = VOCDataset(root, "val")
        model = start.eval()
        predict_dataset(model, val, max_images=32)  # warm up
        t = time.perf_counter()
        predict_dataset(model, val, max_images=args.eval_images)
        dt = time.perf_counter() - t
        n = min(args.eval_images, len(val))
        print(f"\nevaluation (predict_dataset in this process, batch 32): {n / dt:.1f} images/s "
              f"({n} val images in {dt:.2f} s)")

    # ---- baseline 1: the step's arithmetic at the machine's matmul rate ----------------------------
    macs = layer_table(start.config, len(ds.classes))[-1]["macs"] * B
    rate = _matmul_rate(macs)
    ideal = 3 * 2 * macs / (rate * 1e9)
    fb = (here["forward"] + here["backward"]) / steps
    print(f"\nbaseline: {3 * 2 * macs / 1e9:.1f} GFLOP per step (forward + backward) at the measured "
          f"numpy.matmul rate {rate:.0f} GFLOP/s = {ideal:.3f} s; forward+backward in this process "
          f"took {fb:.3f} s ({ideal / fb:.0%} of peak)")

    # ---- baseline 2: what one thread of data loading delivers ----------------------------------------
    t = time.perf_counter()
    n = 2 * B
    for i in range(n):
        image, boxes, labels, _ = ds[i]
        transform(image, boxes, labels, np.random.default_rng(i))
    print(f"baseline: load + the training augmentation on one thread: {n / (time.perf_counter() - t):.0f} "
          f"images/s")

    # ---- peak memory of one step in this process ----------------------------------------------------
    model, optimizer, _ = rows["this process"]
    images, targets = next(batches)
    _release_free_memory()
    rss_before = _status_kib("VmRSS")
    hwm_ok = _reset_peak_rss()
    tracemalloc.start()
    forward_backward(model, images, [t[0] for t in targets], [t[1] for t in targets], loss_cfg)
    optimizer.step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    hwm = _status_kib("VmHWM")
    print(f"\npeak memory of one training step (batch {B}, this process):")
    print(f"  tracemalloc (NumPy + Python allocations): {peak / 2**20:.0f} MiB")
    if hwm_ok and hwm is not None and rss_before is not None:
        print(f"  process peak RSS during the step - RSS before: {(hwm - rss_before) / 1024:.0f} MiB "
              f"(peak RSS {hwm / 1024:.0f} MiB, includes Python, NumPy, Numba and the dataset)")
    else:
        print("  process peak RSS: not available on this system (needs Linux /proc/self/clear_refs)")
    batches.close()
    return 0
