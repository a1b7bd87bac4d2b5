"""``python -m minissd.bench peer``: minissd next to a PyTorch twin of the tiny SSD, on this CPU.

PyTorch is an optional extra (``pip install -e ".[peer]"``); nothing else in minissd, its
tests or CI imports it. The twin (minissd/bench/torch_twin.py) is built layer by layer from
``ssd_tiny``, gets minissd's weights, and must first compute the same outputs, loss,
gradients and BatchNorm statistics on a real batch (float64, ~1e-12 apart): a twin that
disagrees is not timed (exit status 1). Then, for each batch size (16 and 32), interleaved
(every row in turn, ``--rounds`` times, ``--steps`` calls each; the median round is printed
with the range, so a neighbour loading the machine for a while hurts every row alike):

- the network alone: zero the gradients, forward, backward with fixed output gradients;
  minissd in this process (its layers single-threaded, NumPy's BLAS threads as they come),
  the twin on ``--torch-threads`` threads, with BatchNorm grouped as minissd's (``--bn-group``
  images per normalisation, the default run's maths) and with the whole batch (PyTorch's
  usual BatchNorm, a little less work);
- the whole training step (train.py's iteration): next batch (minissd's loader, one thread),
  match, forward, multibox loss + mining, backward, clip, SGD. minissd runs it as the default
  run does, in ``--processes`` single-threaded worker processes (minissd.workers), and in this
  process; the twin uses minissd's own pipeline, matching and loss on its outputs (NumPy).

Ratios are images/s of minissd over images/s of the twin: >= 1.0 means minissd is as fast.

``--profile`` instead times every layer of one step alone, forward and backward, on the
layer's real input from a batch (captured once, the same arrays on both sides), one thread on
both sides (``threadpoolctl`` limits NumPy's BLAS; without it BLAS runs as it comes), as one
worker process runs: conv by shape, BatchNorm, ReLU, pooling, the head convolutions, the
heads' flatten + concat, the loss, the optimizer. It prints the layers, a summary by kind,
and the layers where minissd loses most time. Without PyTorch it prints minissd's side alone.

Exit status: 0 measured; 1 the twin disagrees with minissd; 2 PyTorch is not installed (one
line on stderr says how to install it; ``--profile`` then measures minissd's side and exits 0).
"""

import argparse
import contextlib
import copy
import os
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial

import numpy as np

from .. import nn as mnn

INSTALL = ('minissd.bench peer: PyTorch is not installed; install the optional extra with '
           '`pip install -e ".[peer]"` (torch==2.13.0 + threadpoolctl), then run it again')
STAGES = ("data", "match", "forward", "loss", "backward", "optimizer")
KINDS = ("conv", "BatchNorm", "ReLU", "pool", "head conv", "heads flatten+concat", "loss", "optimizer")
AGREE = 1e-9  # largest relative error (float64) for the twin to count as the same network


def load_twin():
    """minissd.bench.torch_twin (which imports torch), or None where PyTorch is not installed."""
    try:
        from . import torch_twin
    except ImportError:
        return None
    return torch_twin


# ---- timing ------------------------------------------------------------------------------------

def interleaved(runs, rounds, steps, warmup=2):
    """Time several runs against each other, in turn, so that a slow spell hurts them all alike.

    - runs: {name: run(times)}; one call is one step (times: a dict the run may ADD stage
      seconds to)
    - every run is called ``warmup`` times first (Numba's cache, the loader's queue, the
      workers' first step), then ``rounds`` rounds, in each of which every run makes ``steps``
      calls in turn
    - returns {name: [(seconds per call, {stage: seconds per call}) for each round]}
    """
    for run in runs.values():
        for _ in range(warmup):
            run({})
    results = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times = {}
            t = time.perf_counter()
            for _ in range(steps):
                run(times)
            results[name].append(((time.perf_counter() - t) / steps, {k: v / steps for k, v in times.items()}))
    return results


def minissd_forward_backward(model, images, dloc, dconf):
    """run(times): zero the gradients, forward, backward with fixed output gradients (the network alone)."""
    def run(times):
        model.zero_grad()
        model.forward(images)
        model.backward(dloc, dconf)
    return run


def minissd_step(model, optimizer, forward_backward, batches, loss_cfg, grad_clip):
    """run(times): train.py's iteration (next batch, ``forward_backward``, clip, SGD), as bench train."""
    from ..step import clip_grad_norm

    def run(times):
        t0 = time.perf_counter()
        images, targets = next(batches)
        times["data"] = times.get("data", 0.0) + time.perf_counter() - t0
        forward_backward(images, [t[0] for t in targets], [t[1] for t in targets], loss_cfg, times)
        t = time.perf_counter()
        clip_grad_norm(model.parameters(), grad_clip)
        optimizer.step()
        times["optimizer"] = times.get("optimizer", 0.0) + time.perf_counter() - t
    return run


# ---- the side-by-side table ------------------------------------------------------------------------

def rate_cell(rates):
    """'median [min-max]' of a list of images/s."""
    return f"{statistics.median(rates):.1f} [{min(rates):.0f}-{max(rates):.0f}]"


def format_rates(rows):
    """The side-by-side table, Markdown.

    - rows: dicts with measure, batch, ours (label, [images/s per round]), theirs (label, [...])
    - ratio = median images/s of minissd / median images/s of the twin (>= 1: minissd as fast)
    """
    lines = ["| measure | batch | minissd | images/s | PyTorch twin | images/s | ratio |",
             "|---|---:|---|---:|---|---:|---:|"]
    for r in rows:
        (ours, a), (theirs, b) = r["ours"], r["theirs"]
        ratio = statistics.median(a) / statistics.median(b)
        lines.append(f"| {r['measure']} | {r['batch']} | {ours} | {rate_cell(a)} | {theirs} | {rate_cell(b)} | "
                     f"{ratio:.2f} |")
    return "\n".join(lines)


def format_stages(stages):
    """Where each whole-step row's time goes, Markdown: {row name: {stage: seconds per step}} (ms)."""
    lines = ["| step | " + " | ".join(STAGES) + " | total |", "|---|" + "---:|" * (len(STAGES) + 1)]
    for name, st in stages.items():
        lines.append(f"| {name} | " + " | ".join(f"{1e3 * st.get(k, 0.0):.1f}" for k in STAGES)
                     + f" | {1e3 * sum(st.get(k, 0.0) for k in STAGES):.1f} |")
    return "\n".join(lines)


def _median_stages(rounds):
    """{stage: median over rounds of seconds per call}."""
    keys = {k for _, st in rounds for k in st}
    return {k: statistics.median(st.get(k, 0.0) for _, st in rounds) for k in keys}


# ---- the per-layer profile: minissd's side (PyTorch's is torch_twin.twin_profile_tasks) ---------

@dataclass
class Capture:
    """One real forward pass, kept so that every layer can be timed alone on its real input.

    - inputs: {layer name: the (B, C, H, W) array that entered it}; names stage{m}.{i}, head{m}
    - grads: {layer name: a gradient of the shape of its output} (random, seeded)
    - head_outputs: the head convolutions' outputs; loc (B, P, 4), conf (B, P, C+1): the
      network's; loc_t, conf_t: the batch's matching; dloc, dconf: the multibox loss's gradients
    """

    inputs: dict
    grads: dict
    head_outputs: list
    loc: np.ndarray
    conf: np.ndarray
    loc_t: np.ndarray
    conf_t: np.ndarray
    dloc: np.ndarray
    dconf: np.ndarray


def capture_layers(model, images, gt_boxes, gt_labels, loss_cfg, seed=0):
    """Run ``model`` (an SSD without L2Norm, in training mode) once, layer by layer, keeping what
    the profile needs (see Capture). The walk is SSD.forward's, spelled out."""
    from ..loss import multibox_loss
    from ..matching import match_batch

    if model.l2norm is not None:
        raise ValueError("peer profile: models with L2Norm (ssd300) are not covered; use the tiny family")
    rng = np.random.default_rng(seed)
    inputs, grads, sources, x = {}, {}, [], images
    for m, stage in enumerate(model.stages):
        for i, layer in enumerate(stage):
            inputs[f"stage{m}.{i}"] = x
            x = layer.forward(x)
            grads[f"stage{m}.{i}"] = (0.01 * rng.standard_normal(x.shape)).astype(x.dtype)
        sources.append(x)  # (B, C_m, f_m, f_m)
    head_outputs = []
    for m, (conv, s) in enumerate(zip(model.heads.convs, sources)):
        inputs[f"head{m}"] = s
        head_outputs.append(conv.forward(s))
        grads[f"head{m}"] = (0.01 * rng.standard_normal(head_outputs[-1].shape)).astype(s.dtype)
    loc, conf = model.heads.forward(sources)  # (B, P, 4), (B, P, C+1)
    loc_t, conf_t = match_batch(gt_boxes, gt_labels, model.priors, iou_threshold=loss_cfg.iou_threshold)
    _, _, dloc, dconf = multibox_loss(loc, conf, loc_t, conf_t, loss_cfg.neg_pos_ratio, loss_cfg.alpha)
    return Capture(inputs, grads, head_outputs, loc, conf, loc_t, conf_t, dloc, dconf)


def describe_layer(layer, shape):
    """(kind, what) of a layer given its input shape (B, C, H, W), e.g. ("conv", "conv 3x3/2 3->16 @128x128")."""
    C, H, W = shape[1:]
    at = f"@{H}x{W}"
    if isinstance(layer, mnn.Conv2d):
        k, s = layer.kernel_size, layer.stride
        return "conv", f"conv {k}x{k}/{s} {layer.in_channels}->{layer.out_channels} {at}"
    if isinstance(layer, mnn.BatchNorm2d):
        return "BatchNorm", f"BatchNorm {C} {at}"
    if isinstance(layer, mnn.ReLU):
        return "ReLU", f"ReLU {C} {at}"
    if isinstance(layer, mnn.MaxPool2d):
        k, s = layer.kernel_size, layer.stride
        return "pool", f"maxpool {k}x{k}/{s} {C} {at}"
    raise TypeError(f"peer profile: cannot describe layer {layer!r}")


def profile_rows(model, capture):
    """[(name, kind, what)] of every profiled item, in the order a step runs them."""
    rows = []
    for m, stage in enumerate(model.stages):
        for i, layer in enumerate(stage):
            name = f"stage{m}.{i}"
            rows.append((name, *describe_layer(layer, capture.inputs[name].shape)))
    for m, conv in enumerate(model.heads.convs):
        _, what = describe_layer(conv, capture.inputs[f"head{m}"].shape)
        rows.append((f"head{m}", "head conv", "head " + what))
    return rows + [("heads", "heads flatten+concat", "flatten, concat, split (and back)"),
                   ("loss", "loss", "multibox loss + mining, with its gradient"),
                   ("optimizer", "optimizer", "clip the gradient norm + SGD step")]


def _layer_task(layer, x, g):
    def run():
        t0 = time.perf_counter()
        layer.forward(x)
        t1 = time.perf_counter()
        layer.backward(g)
        return t1 - t0, time.perf_counter() - t1
    return run


def minissd_profile_tasks(model, capture, loss_cfg, grad_clip):
    """[(name, fn)]: fn() -> (forward s, backward s) of one minissd item alone, names as profile_rows.

    - model: the captured SSD (its layers keep running on their captured inputs: forward
      stores what backward reads, so each call is a real forward then backward)
    """
    from ..loss import multibox_loss
    from ..step import clip_grad_norm

    tasks = []
    for m, stage in enumerate(model.stages):
        for i, layer in enumerate(stage):
            name = f"stage{m}.{i}"
            tasks.append((name, _layer_task(layer, capture.inputs[name], capture.grads[name])))
    tasks += [(f"head{m}", _layer_task(conv, capture.inputs[f"head{m}"], capture.grads[f"head{m}"]))
              for m, conv in enumerate(model.heads.convs)]
    heads = model.heads
    sources = [capture.inputs[f"head{m}"] for m in range(len(heads.convs))]

    def heads_flatten():
        # MultiBoxHead.forward/backward with each convolution answered by its captured output
        # (and its backward by an array of its input's shape): what is left is the reshaping
        # around the convolutions. The stubs are instance attributes, removed right after.
        for conv, y, s in zip(heads.convs, capture.head_outputs, sources):
            conv.forward, conv.backward = (lambda y: lambda x: y)(y), (lambda s: lambda g: s)(s)
        try:
            t0 = time.perf_counter()
            heads.forward(sources)
            t1 = time.perf_counter()
            heads.backward(capture.dloc, capture.dconf)
            return t1 - t0, time.perf_counter() - t1
        finally:
            for conv in heads.convs:
                del conv.forward, conv.backward
    tasks.append(("heads", heads_flatten))

    def loss():
        t0 = time.perf_counter()
        multibox_loss(capture.loc, capture.conf, capture.loc_t, capture.conf_t, loss_cfg.neg_pos_ratio,
                      loss_cfg.alpha)
        return time.perf_counter() - t0, 0.0
    tasks.append(("loss", loss))

    params = list(model.parameters())
    optimizer = mnn.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)

    def optimize():
        t0 = time.perf_counter()
        clip_grad_norm(params, grad_clip)
        optimizer.step()
        return time.perf_counter() - t0, 0.0
    tasks.append(("optimizer", optimize))
    return tasks


def run_profile(sides, reps):
    """Median (forward s, backward s) of every task on every side, interleaved task by task.

    - sides: {side name: [(name, fn)]}, the same names in the same order on every side
    - every fn is called once to warm up, then ``reps`` rounds: in each, task after task, every
      side in turn (so the two sides of one layer run back to back)
    - returns {name: {side: (forward s, backward s)}}
    """
    names = [name for name, _ in next(iter(sides.values()))]
    for side, tasks in sides.items():
        if [n for n, _ in tasks] != names:
            raise ValueError(f"run_profile: side {side!r} has other tasks than the first side")
    fns = {side: dict(tasks) for side, tasks in sides.items()}
    times = {name: {side: [] for side in sides} for name in names}
    for r in range(reps + 1):
        for name in names:
            for side in sides:
                t = fns[side][name]()
                if r:  # round 0 warms up
                    times[name][side].append(t)
    return {name: {side: (statistics.median(f for f, _ in ts), statistics.median(b for _, b in ts))
                   for side, ts in per_side.items()} for name, per_side in times.items()}


def format_profile(rows, results, sides, top=6):
    """The per-layer profile as Markdown: every item, a summary by kind, the largest gaps.

    - rows: profile_rows(...); results: run_profile(...); sides: side names, minissd first;
      with two sides the ratio is minissd's time / the other's (> 1: minissd is slower) and
      the gap is the difference in ms per step
    """
    ms = lambda t: f"{1e3 * t:.2f}"  # noqa: E731
    two = len(sides) == 2
    head = "| item | what | " + " | ".join(f"{s} fwd ms | {s} bwd ms" for s in sides)
    lines = [head + (" | time ratio |" if two else " |"),
             "|---|---|" + "---:|---:|" * len(sides) + ("---:|" if two else "")]
    total = {s: 0.0 for s in sides}
    kinds = {k: {"n": 0, **{s: 0.0 for s in sides}} for k in KINDS}
    for name, kind, what in rows:
        cells = []
        for s in sides:
            f, b = results[name][s]
            cells.append(f"{ms(f)} | {ms(b)}")
            total[s] += f + b
            kinds[kind][s] += f + b
        kinds[kind]["n"] += 1
        ratio = f" | {sum(results[name][sides[0]]) / max(sum(results[name][sides[1]]), 1e-12):.2f}x" if two else ""
        lines.append(f"| {name} | {what} | " + " | ".join(cells) + ratio + " |")
    lines += ["", "| kind | items | " + " | ".join(f"{s} ms" for s in sides)
              + (" | time ratio | gap ms |" if two else " |"),
              "|---|---:|" + "---:|" * len(sides) + ("---:|---:|" if two else "")]
    for kind, k in kinds.items():
        if k["n"]:
            extra = (f" | {k[sides[0]] / max(k[sides[1]], 1e-12):.2f}x | {1e3 * (k[sides[0]] - k[sides[1]]):+.2f}"
                     if two else "")
            lines.append(f"| {kind} | {k['n']} | " + " | ".join(ms(k[s]) for s in sides) + extra + " |")
    extra = (f" | {total[sides[0]] / max(total[sides[1]], 1e-12):.2f}x | {1e3 * (total[sides[0]] - total[sides[1]]):+.2f}"
             if two else "")
    lines.append(f"| total | {len(rows)} | " + " | ".join(ms(total[s]) for s in sides) + extra + " |")
    if two:
        gap = {name: sum(results[name][sides[0]]) - sum(results[name][sides[1]]) for name, _, _ in rows}
        worst = sorted(rows, key=lambda r: -gap[r[0]])[:top]
        lines += ["", f"largest gaps ({sides[0]} - {sides[1]}, ms per step):"]
        lines += [f"  {name:10s} {what:36s} {1e3 * gap[name]:+7.2f} ms "
                  f"({sum(results[name][sides[0]]) / max(sum(results[name][sides[1]]), 1e-12):.2f}x)"
                  for name, _, what in worst]
    return "\n".join(lines)


# ---- the command ------------------------------------------------------------------------------------

@contextlib.contextmanager
def blas_threads(n):
    """NumPy's BLAS limited to ``n`` threads inside the block (threadpoolctl), where possible.
    Yields a note for the caption ("" when the limit holds)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield "threadpoolctl not installed: NumPy's BLAS ran on its own threads"
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield ""


def _endless(loader):
    while True:
        yield from loader


def _header(torch_twin, args):
    from .nn import machine
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    peer = torch_twin.describe_torch() if torch_twin else "PyTorch not installed"
    return (f"peer bench on {machine()}; numpy {np.__version__}; {peer}\n"
            f"load average {load:.1f} at the start (other processes make every figure low and noisy)")


def _agreement(torch_twin, model, batches, loss_cfg):
    """Print the twin check; True when the twin computes what minissd computes."""
    images, targets = next(batches)
    a = torch_twin.check_agreement(model, images, [t[0] for t in targets], [t[1] for t in targets], loss_cfg)
    ok = max(a["outputs"], a["loss"], a["gradients"], a["buffers"]) < AGREE
    print(f"twin check (float64, batch {len(images)}): outputs {a['outputs']:.1e}, loss {a['loss']:.1e}, "
          f"gradients {a['gradients']:.1e} (worst {a['worst']}), BatchNorm running statistics "
          f"{a['buffers']:.1e} -> {'the same network' if ok else f'DISAGREE (limit {AGREE:.0e}): nothing timed'}")
    return ok


def profile(torch_twin, model, batches, args, loss_cfg, grad_clip):
    """The per-layer profile at batch --profile-batch, one thread on each side."""
    images, targets = next(batches)
    B = args.profile_batch
    images, targets = images[:B], targets[:B]
    model = copy.deepcopy(model).train()
    mnn.set_batchnorm_group(model, min(args.bn_group, B))
    capture = capture_layers(model, images, [t[0] for t in targets], [t[1] for t in targets], loss_cfg)
    sides = {"minissd": minissd_profile_tasks(model, capture, loss_cfg, grad_clip)}
    if torch_twin:
        twin = torch_twin.make_twin(model)
        sides["PyTorch"] = torch_twin.twin_profile_tasks(model, twin, capture, loss_cfg, grad_clip)
    with blas_threads(1) as note, (torch_twin.threads(1) if torch_twin else contextlib.nullcontext()):
        results = run_profile(sides, args.profile_reps)
    print(f"\nper-layer profile: batch {B}, BatchNorm groups of {min(args.bn_group, B)}, one thread on each side"
          f"{' (' + note + ')' if note else ''}; each item alone on its real input, median of "
          f"{args.profile_reps} interleaved rounds\n")
    print(format_profile(profile_rows(model, capture), results, list(sides)))
    return 0


def measure(torch_twin, ds, transform, args, cfg, loss_cfg, model):
    """The side-by-side table: network forward+backward and the whole step, per batch size."""
    from ..data.loader import DataLoader
    from ..loss import multibox_loss
    from ..matching import match_batch
    from ..step import forward_backward
    from ..workers import Workers

    sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    g, n = args.bn_group, args.processes
    group = f"BN groups of {g}"
    lr, momentum, wd = 0.01, cfg.momentum, cfg.weight_decay
    here = copy.deepcopy(model)  # minissd in this process: the network rows and one step row
    in_workers = copy.deepcopy(model)
    workers = Workers(in_workers, n, max(sizes), g)
    rows, stage_tables = [], []
    try:
        opt_here = mnn.SGD(here.parameters(), lr, momentum=momentum, weight_decay=wd)
        opt_workers = mnn.SGD(in_workers.parameters(), lr, momentum=momentum, weight_decay=wd)
        twins = {}
        for name, bn in ((group, g), ("whole-batch BN", None)):
            twin = torch_twin.make_twin(model)
            torch_twin.set_batchnorm_group(twin, bn)
            twins[name] = (twin, torch_twin.twin_sgd(twin, lr, momentum, wd))
        for B in sizes:
            loader = DataLoader(ds, B, transform=transform, seed=B, num_workers=cfg.loader_threads, drop_last=True)
            batches = _endless(loader)
            images, targets = next(batches)  # the network rows' fixed batch and output gradients
            loc, conf = here.forward(images)
            loc_t, conf_t = match_batch([t[0] for t in targets], [t[1] for t in targets], here.priors)
            _, _, dloc, dconf = multibox_loss(loc, conf, loc_t, conf_t, loss_cfg.neg_pos_ratio, loss_cfg.alpha)
            runs = {"net minissd": minissd_forward_backward(here, images, dloc, dconf)}
            for name, (twin, _) in twins.items():
                runs[f"net twin {name}"] = torch_twin.twin_forward_backward(twin, images, dloc, dconf)
            step_names = {f"minissd, {n} worker processes": "step workers", "minissd, this process": "step here"}
            runs["step workers"] = minissd_step(in_workers, opt_workers, workers.forward_backward, batches,
                                                loss_cfg, cfg.grad_clip)
            runs["step here"] = minissd_step(here, opt_here, partial(forward_backward, here), batches,
                                             loss_cfg, cfg.grad_clip)
            for name, (twin, opt) in twins.items():
                step_names[f"PyTorch, {name}"] = f"step twin {name}"
                runs[f"step twin {name}"] = torch_twin.twin_step(twin, opt, batches, here.priors, loss_cfg,
                                                                 cfg.grad_clip)
            print(f"batch {B}: timing {len(runs)} rows, {args.rounds} rounds of {args.steps} steps ...", flush=True)
            res = interleaved(runs, args.rounds, args.steps)
            rate = {k: [B / s for s, _ in v] for k, v in res.items()}
            fb_workers = [B / (st["forward"] + st["backward"]) for _, st in res["step workers"]]
            net, step = "network forward+backward", "whole step"
            rows += [dict(measure=net, batch=B, ours=("this process", rate["net minissd"]),
                          theirs=(group, rate[f"net twin {group}"])),
                     dict(measure=net, batch=B, ours=("this process", rate["net minissd"]),
                          theirs=("whole-batch BN", rate["net twin whole-batch BN"])),
                     dict(measure=net, batch=B, ours=(f"{n} workers (stage times)", fb_workers),
                          theirs=(group, rate[f"net twin {group}"])),
                     dict(measure=step, batch=B, ours=(f"{n} worker processes", rate["step workers"]),
                          theirs=(group, rate[f"step twin {group}"])),
                     dict(measure=step, batch=B, ours=("this process", rate["step here"]),
                          theirs=(group, rate[f"step twin {group}"])),
                     dict(measure=step, batch=B, ours=(f"{n} worker processes", rate["step workers"]),
                          theirs=("whole-batch BN", rate["step twin whole-batch BN"]))]
            stage_tables.append((B, {label: _median_stages(res[key]) for label, key in step_names.items()}))
            batches.close()  # stops the loader's thread
            loader.close()
    finally:
        workers.close()
    print(f"\nimages/s, median of {args.rounds} interleaved rounds of {args.steps} steps [min-max]; "
          f"ratio = minissd / twin (>= 1: minissd as fast); minissd's BatchNorm: groups of {g}\n")
    print(format_rates(rows))
    for B, stages in stage_tables:
        print(f"\nwhole step at batch {B}, ms per step by stage (median round):\n")
        print(format_stages(stages))
    return 0


def main(argv=None):
    from ..config import TrainConfig

    cfg = TrainConfig()  # the default run's numbers
    p = argparse.ArgumentParser(prog="python -m minissd.bench peer", description=__doc__.split("\n")[0])
    p.add_argument("--batch-sizes", default="16,32", help="batch sizes to time, comma-separated")
    p.add_argument("--bn-group", type=int, default=cfg.bn_group, help="images per BatchNorm group (%(default)s)")
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="minissd's worker processes")
    p.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1, help="the twin's intra-op threads")
    p.add_argument("--steps", type=int, default=5, help="calls per row and round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is printed")
    p.add_argument("--profile", action="store_true", help="the per-layer profile instead of the table")
    p.add_argument("--profile-batch", type=int, default=cfg.bn_group, help="images in the profile (%(default)s)")
    p.add_argument("--profile-reps", type=int, default=9, help="interleaved rounds of the profile")
    p.add_argument("--data-dir", default=None, help="where tiny-voc lives (built if absent)")
    args = p.parse_args(argv)

    torch_twin = load_twin()
    if torch_twin is None and not args.profile:
        print(INSTALL, file=sys.stderr)
        return 2
    from ..data import VOCDataset, make_tiny_voc, tiny_voc_path
    from ..data.augment import augmentation
    from ..data.loader import DataLoader
    from ..model import ssd_tiny
    from ..step import LossConfig

    ds = VOCDataset(make_tiny_voc(tiny_voc_path(args.data_dir)), "train")
    model = ssd_tiny(len(ds.classes)).train()
    mnn.set_batchnorm_group(model, args.bn_group)
    S = model.config.input_size
    transform = augmentation(cfg.augment, S, model.config.mean, model.config.std, max_expand=cfg.max_expand)
    loss_cfg = LossConfig(cfg.iou_threshold, cfg.neg_pos_ratio, cfg.alpha)
    print(_header(torch_twin, args))
    print(f"ssd_tiny: input {S}, {model.num_priors} default boxes; the default run's augmentation "
          f"({cfg.augment}), matching and loss on both sides\n")
    first = iter(DataLoader(ds, max(16, args.profile_batch), transform=transform, seed=1, drop_last=True))
    if torch_twin is not None:
        torch_twin.set_threads(args.torch_threads)
        if not _agreement(torch_twin, model, first, loss_cfg):
            return 1
    if args.profile:
        if torch_twin is None:
            print(INSTALL.replace("then run it again", "for the twin's side") + "\n")
        status = profile(torch_twin, model, first, args, loss_cfg, cfg.grad_clip)
    else:
        status = measure(torch_twin, ds, transform, args, cfg, loss_cfg, model)
    print(f"\nat the end: load average {os.getloadavg()[0]:.1f}")
    return status
