"""``python -m minissd.bench data``: can the data pipeline feed training?

Prints images/s for, on tiny-voc's train split (generated first if absent):
- decoding alone (``VOCDataset[i]``): the baseline the augmentation adds to;
- decoding + ``train_transform`` through the DataLoader with 0 workers and with N threads;
- decoding + ``eval_transform`` (evaluation's pipeline);
- what a training step consumes: forward + backward of ``minissd.model.ssd_tiny`` on one batch
  (or, if minissd.model is missing, a NumPy matmul stand-in of similar cost, and says so);
- the loader feeding that training step with N workers: the share of time training waits.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time

import numpy as np


def _cpu_name():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def _rate(n, seconds):
    return n / seconds if seconds > 0 else float("inf")


def _time_loader(loader, batches):
    """Images/s of pulling ``batches`` batches out of a fresh epoch of ``loader``."""
    n, t0 = 0, time.perf_counter()
    for k, (images, _) in enumerate(loader):
        n += len(images)
        if k + 1 == batches:
            break
    return _rate(n, time.perf_counter() - t0)


def _training_step(size, batch_size, num_classes):
    """(step function on a (B, 3, S, S) batch, description)."""
    try:
        from minissd.model import ssd_tiny
    except ImportError:
        ssd_tiny = None
    if ssd_tiny is not None:
        model = ssd_tiny(num_classes)
        model.train()
        if model.config.input_size != size:
            raise SystemExit(f"bench data: ssd_tiny takes {model.config.input_size} px; pass --size "
                             f"{model.config.input_size}")

        def step(images):
            loc, conf = model.forward(images)
            model.backward(np.full_like(loc, 1e-3), np.full_like(conf, 1e-3))

        return step, f"minissd.model.ssd_tiny forward+backward ({model.num_priors} priors)"

    # Stand-in: one (256 x 1024) @ (1024 x 1024) float32 product per image, 2*256*1024*1024 =
    # 0.54 GFLOP, the order of a small SSD's forward + backward at 128 px.
    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 1024), dtype=np.float32)
    w = rng.standard_normal((1024, 1024), dtype=np.float32)

    def step(images):
        for _ in range(len(images)):
            np.tanh(a @ w)

    return step, "NumPy matmul stand-in (minissd.model not found), ~0.5 GFLOP per image"


def main(argv) -> int:
    from minissd.data import (DataLoader, VOCDataset, eval_transform, make_tiny_voc, tiny_voc_path,
                              train_transform)

    p = argparse.ArgumentParser(prog="python -m minissd.bench data", description=__doc__.split("\n")[0])
    p.add_argument("--root", default="", help="a VOC year folder (default: tiny-voc, built if absent)")
    p.add_argument("--split", default="train")
    p.add_argument("--size", type=int, default=128, help="network input side (ssd_tiny: 128)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=12, help="batches timed per loader setting")
    p.add_argument("--workers", type=int, default=2, help="threads for the N-worker rows")
    p.add_argument("--train-steps", type=int, default=3, help="training steps timed (0: skip)")
    args = p.parse_args(argv)

    root = args.root or make_tiny_voc(tiny_voc_path())
    ds = VOCDataset(root, args.split)
    B, S, N = args.batch_size, args.size, args.workers
    print(f"data bench on {_cpu_name()}, {os.cpu_count()} cores; {ds}")
    print(f"input {S}x{S}, batch {B}, {args.batches} batches per row (other processes on the machine "
          "make these numbers noisy)\n")
    rows = []

    n = min(len(ds), args.batches * B)
    t0 = time.perf_counter()
    for i in range(n):
        ds[i]
    rows.append(("decode only (VOCDataset[i]), baseline", _rate(n, time.perf_counter() - t0)))

    train_tf, eval_tf = train_transform(S), eval_transform(S)
    _time_loader(DataLoader(ds, B, transform=train_tf), 1)  # warm-up: page cache, imports
    rows.append(("decode + train_transform, 0 workers",
                 _time_loader(DataLoader(ds, B, transform=train_tf), args.batches)))
    rows.append((f"decode + train_transform, {N} worker threads",
                 _time_loader(DataLoader(ds, B, transform=train_tf, num_workers=N), args.batches)))
    rows.append(("decode + eval_transform, 0 workers",
                 _time_loader(DataLoader(ds, B, shuffle=False, transform=eval_tf), args.batches)))

    if args.train_steps > 0:
        step, what = _training_step(S, B, len(ds.classes) + 1)
        x = np.random.default_rng(0).standard_normal((B, 3, S, S), dtype=np.float32)
        step(x)  # warm-up (Numba compiles on the first call)
        t0 = time.perf_counter()
        for _ in range(args.train_steps):
            step(x)
        train_rate = _rate(args.train_steps * B, time.perf_counter() - t0)
        rows.append((f"training consumes: {what}", train_rate))

        # the loader running beside training: how long does training wait for each batch?
        loader = DataLoader(ds, B, transform=train_tf, num_workers=N)
        waited, t0 = 0.0, time.perf_counter()
        it = iter(loader)
        for _ in range(args.train_steps):
            t1 = time.perf_counter()
            images, _ = next(it)
            waited += time.perf_counter() - t1
            step(images)
        total = time.perf_counter() - t0
        it.close()
        rows.append((f"training fed by the loader ({N} threads)", _rate(args.train_steps * B, total)))

    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  images/s")
    for name, rate in rows:
        print(f"{name:{width}}  {rate:8.1f}")
    if args.train_steps > 0:
        print(f"\ntraining waited for data {100 * waited / total:.1f}% of the time "
              f"(the first batch included); loader with {N} threads vs training: "
              f"{rows[2][1] / train_rate:.1f}x what training consumes")
    return 0
