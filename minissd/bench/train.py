"""``python -m minissd.bench train``: the training step of the tiny SSD, where its time goes,
and its peak memory, next to baselines measured in the same run.

Printed:
- images/s of the full training step (batch 16 by default, as the default run) and the per-stage profile: data
  (waiting for the loader), match, forward, loss (multibox + mining), backward, optimizer;
- baseline 0 (with two or more worker processes): the same step run by as many threads of
  this process, each the whole network on its share (``nn.DataParallel``), which the
  processes replaced;
- baseline 1, the machine's practical peak: the step's multiply-adds (from the layer table,
  x3 for forward + the two backward products) timed as ONE float32 ``numpy.matmul`` of
  a comparable size; "of peak" = that ideal time / the measured forward+backward time;
- baseline 2, the data side: images/s of load + the training augmentation on one thread, which a
  background worker must beat for training never to wait;
- peak memory of one training step, two ways, because neither alone tells the whole story:
  ``tracemalloc`` (the peak of NumPy/Python allocations during the step, exact but blind to
  Numba's own allocations inside compiled code) and the process's peak resident set
  (Linux ``VmHWM``, reset just before the step through /proc/self/clear_refs) minus its
  resident set before the step (everything, including Numba's buffers; page-granular; freed
  memory is first handed back to the OS with glibc's malloc_trim so that "before" is honest).
"""

import argparse
import os
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


class ThreadedStep:
    """The baseline of ``TrainStep``'s worker processes: the same step with ``n`` threads of
    this process, each running the whole network on its share (``nn.DataParallel``; the
    GIL is what they share and the processes do not)."""

    def __init__(self, model, optimizer, cfg, n):
        from minissd.nn.parallel import DataParallel
        self.model, self.optimizer, self.cfg = model, optimizer, cfg
        self.net = DataParallel(model, n)

    def __call__(self, images, gt_boxes, gt_labels, lr):
        from minissd.loss import multibox_loss
        from minissd.matching import match_batch
        times, t = {}, time.perf_counter()
        loc_t, conf_t = match_batch(gt_boxes, gt_labels, self.model.priors, iou_threshold=self.cfg.iou_threshold)
        times["match"], t = time.perf_counter() - t, time.perf_counter()
        loc_p, conf_p = self.net.forward(images)
        times["forward"], t = time.perf_counter() - t, time.perf_counter()
        loss_l, loss_c, dloc, dconf = multibox_loss(loc_p, conf_p, loc_t, conf_t, self.cfg.neg_pos_ratio, self.cfg.alpha)
        times["loss"], t = time.perf_counter() - t, time.perf_counter()
        self.model.zero_grad()
        self.net.backward(dloc, dconf)
        times["backward"], t = time.perf_counter() - t, time.perf_counter()
        self.optimizer.lr = lr
        self.optimizer.step()
        times["optimizer"] = time.perf_counter() - t
        return loss_l, loss_c, times


def main(argv=None) -> int:
    from minissd.bench.nn import machine
    from minissd.data import VOCDataset, make_tiny_voc, tiny_voc_path
    from minissd.data.loader import DataLoader
    from minissd.loss import multibox_loss
    from minissd.matching import match_batch
    from minissd.model import ssd_tiny
    from minissd.model.summary import layer_table
    from minissd.nn import SGD
    from minissd.train import TrainConfig, TrainStep, training_augmentation

    p = argparse.ArgumentParser(prog="python -m minissd.bench train", description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=16, help="images per step (the default training run: 16)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
    p.add_argument("--workers", type=int, default=1, help="loader threads (as the default training run)")
    p.add_argument("--data-dir", default=None, help="where tiny-voc lives (built if absent)")
    args = p.parse_args(argv)

    ds = VOCDataset(make_tiny_voc(tiny_voc_path(args.data_dir)), "train")
    model = ssd_tiny(len(ds.classes))
    S, B = model.config.input_size, args.batch_size
    cfg = TrainConfig(lr=0.01)
    # the default run's augmentation after its light phase: the paper's, zoom-out up to 2x
    transform = training_augmentation(cfg, model.config)
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(ds, B, transform=transform, seed=0, num_workers=args.workers, drop_last=True)
    batches = iter(loader)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"train bench on {machine()}; load average {load:.1f} (other processes make these numbers "
          f"noisy)\nssd_tiny: input {S}, {model.num_priors} default boxes, batch {B}, "
          f"{args.workers} loader thread(s)\n")


    def step(times, train_step):  # train.py's iteration: next batch, then TrainStep
        t0 = time.perf_counter()
        images, targets = next(batches)
        times["data"] += time.perf_counter() - t0
        _, _, stage_times = train_step(images, [t[0] for t in targets], [t[1] for t in targets], cfg.lr)
        for k, dt in stage_times.items():
            times[k] += dt

    def measure(train_step):
        warm = dict.fromkeys(STAGES, 0.0)
        for _ in range(2):  # compile / load Numba's cache, fill the loader's queue
            step(warm, train_step)
        times = dict.fromkeys(STAGES, 0.0)
        for _ in range(args.steps):
            step(times, train_step)
        return times

    train_step = TrainStep(model, optimizer, cfg)  # what train.py runs
    workers = train_step.workers.n if train_step.workers else 1
    times = measure(train_step)
    train_step.close()
    total = sum(times.values())
    print(f"training step: {B * args.steps / total:.1f} images/s ({total / args.steps:.3f} s per batch of {B}; "
          f"{workers} worker process(es), each the whole step on its share of the batch)")
    print(f"{'stage':>10s} {'s/step':>8s} {'share':>6s}")
    for k in STAGES:
        print(f"{k:>10s} {times[k] / args.steps:8.3f} {times[k] / total:6.1%}")
    if workers > 1:  # baseline 0: the same shares run by threads of this process (nn.DataParallel)
        threaded = measure(ThreadedStep(model, optimizer, cfg, workers))
        th_total = sum(threaded.values())
        print(f"baseline: {workers} threads of this process instead, each the whole network on its "
              f"share (nn.DataParallel): {B * args.steps / th_total:.1f} images/s ({th_total / args.steps:.3f} s per batch)")

    # baseline 1: the step's arithmetic at the machine's matmul rate
    macs = layer_table(model.config, len(ds.classes))[-1]["macs"] * B
    rate = _matmul_rate(macs)
    ideal = 3 * 2 * macs / (rate * 1e9)
    fb = (times["forward"] + times["backward"]) / args.steps
    print(f"\nbaseline: {3 * 2 * macs / 1e9:.1f} GFLOP per step (forward + backward) at the measured "
          f"numpy.matmul rate {rate:.0f} GFLOP/s = {ideal:.3f} s; forward+backward took {fb:.3f} s "
          f"({ideal / fb:.0%} of peak)")

    # baseline 2: what one thread of data loading delivers
    t = time.perf_counter()
    n = 2 * B
    for i in range(n):
        image, boxes, labels, _ = ds[i]
        transform(image, boxes, labels, np.random.default_rng(i))
    data_rate = n / (time.perf_counter() - t)
    print(f"baseline: load + the training augmentation on one thread: {data_rate:.0f} images/s "
          f"(the step consumes {B * args.steps / total:.0f} images/s)")

    # peak memory of one step
    images, targets = next(batches)
    _release_free_memory()
    rss_before = _status_kib("VmRSS")
    hwm_ok = _reset_peak_rss()
    tracemalloc.start()
    loc_t, conf_t = match_batch([t[0] for t in targets], [t[1] for t in targets], model.priors)
    loc_p, conf_p = model.forward(images)
    _, _, dloc, dconf = multibox_loss(loc_p, conf_p, loc_t, conf_t)
    model.zero_grad()
    model.backward(dloc, dconf)
    optimizer.step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    hwm = _status_kib("VmHWM")
    print(f"\npeak memory of one training step (batch {B}):")
    print(f"  tracemalloc (NumPy + Python allocations): {peak / 2**20:.0f} MiB")
    if hwm_ok and hwm is not None and rss_before is not None:
        print(f"  process peak RSS during the step - RSS before: {(hwm - rss_before) / 1024:.0f} MiB "
              f"(peak RSS {hwm / 1024:.0f} MiB, includes Python, NumPy, Numba and the dataset)")
    else:
        print("  process peak RSS: not available on this system (needs Linux /proc/self/clear_refs)")
    batches.close()
    return 0
