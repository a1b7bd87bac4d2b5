"""``python -m minissd.bench data``: does the data pipeline keep up with training on real photos?

On a generated folder of 400x400 photo-like JPEGs with many small objects (minissd/data/photos.py,
read through the normal VOC reader; or ``--root`` a VOC folder of your own), at batch 32:

1. what one image costs, alone: decoding (full, and through Pillow's draft mode), and SSD's
   training augmentation from the full image and from an image decoded at the input size;
2. the training step (``minissd.step.forward_backward`` of the model at ``--input-size``);
3. for each loader setting, training fed by it: the share of the time the step waits for its
   batch. The settings run interleaved, round after round, each from a fresh epoch whose
   first batch (the pipeline filling) is left out, so that a machine whose load changes
   affects them alike; the ratios between rows are the result, the absolute numbers drift.

Each setting's steps are preceded, in the same round, by one reference step on a batch that is
already there (no data work at all), so its "vs the reference" figure compares two moments
seconds apart. Settings: 0 workers (data then step, in turn); N threads; N processes; N threads over a
``DecodeCache`` at full size (the same pixels, decoded once); N threads and N processes
over a DecodeCache reduced to the input size (draft mode; this one changes the pixels zoom-in
crops see, so it is a named training setting, not a speed switch).
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


def _ms(seconds, n):
    return 1e3 * seconds / max(n, 1)


def per_image_costs(ds, size, n, transform):
    """{what: ms per image} for decoding and augmenting ``n`` images of ``ds`` alone."""
    from minissd.data.loader import decode_reduced
    from minissd.data.images import load_image

    paths = [a.image_path for a in ds.annotations[:n]]
    out = {}
    t = time.perf_counter()
    full = [load_image(p) for p in paths]
    out["decode, full size"] = _ms(time.perf_counter() - t, n)
    t = time.perf_counter()
    small = [decode_reduced(p, size) for p in paths]
    out[f"decode at <= {size} px (draft mode)"] = _ms(time.perf_counter() - t, n)
    for name, images in (("augment from the full image", full), (f"augment from the {size} px image", small)):
        t = time.perf_counter()
        for k, (image, a) in enumerate(zip(images, ds.annotations)):
            extra = np.stack([a.labels, a.difficult.astype(np.int64)], axis=1)
            transform(image, a.boxes, extra, np.random.default_rng(k))
        out[name] = _ms(time.perf_counter() - t, n)
    return out


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m minissd.bench data``."""
    p = argparse.ArgumentParser(prog="python -m minissd.bench data", description=__doc__.split("\n")[0])
    p.add_argument("--root", default="", help="a VOC folder (default: generated 400x400 photos)")
    p.add_argument("--images", type=int, default=128,
                   help="generated photos (train split): at least batch x (steps + 1)")
    p.add_argument("--input-size", type=int, default=128, help="network input side (tiny family)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="threads / processes of the worker rows")
    p.add_argument("--steps", type=int, default=3, help="measured steps per setting and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-expand", type=float, default=2.0, help="zoom-out of the augmentation (train's default 2)")
    p.add_argument("--only", default="", help="comma-separated setting numbers to run (default all)")
    return p


def main(argv) -> int:
    from minissd.data import DataLoader, VOCDataset, default_data_dir, train_transform
    from minissd.data.loader import DecodeCache
    from minissd.data.photos import make_photos
    from minissd.model import build_model
    from minissd.step import LossConfig, forward_backward

    args = parser().parse_args(argv)

    root = args.root or make_photos(default_data_dir() / f"photos-400-{args.images}", n_train=args.images,
                                    n_val=8)
    ds = VOCDataset(root, "train")
    B, S, N = args.batch_size, args.input_size, args.workers
    if len(ds) < B * (args.steps + 1):
        raise SystemExit(f"bench data: {len(ds)} images is fewer than {B * (args.steps + 1)} "
                         "(batch x (steps + 1)); raise --images or lower --steps")
    transform = train_transform(S, max_expand=args.max_expand)
    objects = sum(len(a.labels) for a in ds.annotations)
    print(f"data bench on {_cpu_name()}, {os.cpu_count()} cores, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; {ds}, {objects / len(ds):.0f} objects per image")
    print(f"input {S} px, batch {B}, augmentation train_transform(max_expand={args.max_expand:g})\n")

    print("per image, alone (ms):")
    for name, ms in per_image_costs(ds, S, min(len(ds), 24), transform).items():
        print(f"  {name:34} {ms:7.1f}")

    model = build_model("tiny", len(ds.classes), input_size=S).train()
    loss_cfg = LossConfig(iou_threshold=0.4)
    warm = DataLoader(ds, B, seed=99, transform=transform)
    images, targets = next(iter(warm))
    boxes, labels = [t[0] for t in targets], [t[1] for t in targets]
    forward_backward(model, images, boxes, labels, loss_cfg)  # warm-up: Numba compiles
    t = time.perf_counter()
    forward_backward(model, images, boxes, labels, loss_cfg)
    print(f"\ntraining step (tiny at {S} px, batch {B}, one process): {time.perf_counter() - t:.2f} s\n")

    t = time.perf_counter()
    full_cache = DecodeCache(ds).fill(N)
    t_full = time.perf_counter() - t
    t = time.perf_counter()
    small_cache = DecodeCache(ds, max_side=S).fill(N)
    t_small = time.perf_counter() - t
    print(f"filling the caches ({N} threads): full size {t_full:.1f} s, at {S} px {t_small:.1f} s "
          f"({len(ds)} images)\n")

    settings = [
        ("0 workers", lambda: DataLoader(ds, B, transform=transform)),
        (f"{N} threads", lambda: DataLoader(ds, B, transform=transform, num_workers=N)),
        (f"{N} processes", lambda: DataLoader(ds, B, transform=transform, num_workers=N, processes=True)),
        (f"{N} threads, decoded once (full size)", lambda: DataLoader(full_cache, B, transform=transform, num_workers=N)),
        (f"{N} threads, decoded once at {S} px", lambda: DataLoader(small_cache, B, transform=transform, num_workers=N)),
        (f"{N} processes, decoded once at {S} px",
         lambda: DataLoader(small_cache, B, transform=transform, num_workers=N, processes=True)),
    ]
    chosen = {int(k) for k in args.only.split(",") if k.strip()} or set(range(1, len(settings) + 1))
    settings = [(k, name, make) for k, (name, make) in enumerate(settings, 1) if k in chosen]
    loaders = {k: make() for k, _, make in settings}
    waited = {k: 0.0 for k, _, _ in settings}
    stepped = {k: 0.0 for k, _, _ in settings}
    ratios = {k: [] for k, _, _ in settings}  # (wait + step) per step / the reference step just before
    try:
        for r in range(args.rounds):
            for k, name, _ in settings:
                loader = loaders[k]
                loader.set_epoch(r)
                t_ref = time.perf_counter()  # the reference step: a ready batch, no loader running yet
                forward_backward(model, images, boxes, labels, loss_cfg)
                t_ref = time.perf_counter() - t_ref
                it = iter(loader)
                next(it)  # the pipeline filling: not counted
                w0, s0 = waited[k], stepped[k]
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    images, targets = next(it)
                    t1 = time.perf_counter()
                    forward_backward(model, images, [t[0] for t in targets], [t[1] for t in targets], loss_cfg)
                    waited[k] += t1 - t0
                    stepped[k] += time.perf_counter() - t1
                it.close()
                ratios[k].append((waited[k] - w0 + stepped[k] - s0) / args.steps / t_ref)
            print(f"round {r + 1} of {args.rounds} done")
    finally:
        for loader in loaders.values():
            loader.close()

    n = args.rounds * args.steps
    width = max(len(name) for _, name, _ in settings)
    print(f"\n{'loader setting':{width}}  wait s  step s  waiting  per step vs the reference")
    for k, name, _ in settings:
        share = waited[k] / (waited[k] + stepped[k])
        vs = f"{100 * (np.mean(ratios[k]) - 1):+6.1f}%"
        print(f"{name:{width}}  {waited[k] / n:6.2f}  {stepped[k] / n:6.2f}  {100 * share:6.1f}%  {vs}")
    print("\nwaiting: the share of each step's wall time spent waiting for its batch. 'vs the reference':"
          "\nhow much longer a step takes than a step with a ready batch just before it (workers also"
          "\nslow the step by sharing its cores). Interleaved rounds on a shared machine: compare rows with each other.")
    return 0
