"""``python -m minissd.bench cuda``: each GPU kernel next to its CPU twin, and the whole training step.

Rows (batch 32 by default, SSD300's 8732 default boxes, VOC's 20 classes):

- iou           one image's 10 objects x 8732 priors           boxes.iou        vs cuda.boxes.iou
- match_batch   32 images x 10 objects x 8732 priors, NumPy in and out (the transfers
                included), then its kernels alone on device arrays  matching vs cuda.matching
- mining        32 x 8732 background losses, 3:1, NumPy in and out, then on the device
- detect        32 x 8732 x 21 outputs: decode, softmax, per-class NMS, top 200 (an untrained
                network: nearly every box passes 0.01), NumPy in, then device arrays in
- conv C/HxW    3x3/pad 1 convs of the nn benchmark, forward + backward, nn.Conv2d vs Conv2dGPU
- tiny convs    every conv of the tiny-voc model (ssd_tiny) at batch 32, forward + backward
- tiny step     one whole training step of ssd_tiny at batch 32 (match, forward, loss with
                mining, backward, clip, SGD): minissd.step's calls (in ``--cpu-processes``
                worker processes, as train.py runs them) vs their twins in minissd.cuda, in
                images per second, the ratio the issue asks for (>= 20x), the GPU step's
                stages, and every kernel's share of one GPU step

GPU times include what the host wrappers do on the host (checks, small copies); the rows
marked "NumPy in/out" include the transfers too. Each time is the minimum over ``--reps``
runs after one warm-up run (which compiles); GPU runs end with ``cuda.synchronize()``. The
kernel table times one GPU step with a ``cuda.synchronize()`` around every launch (so its
total is a little above the step's own time).

``--markdown FILE`` also writes the tables as Markdown, for docs/cuda.md.

Exit status: 0 after printing the table; 2, with a message saying why, when there is no GPU
to time: numba's CUDA simulator runs every thread as Python, so its times mean nothing and
it is never timed (``NUMBA_ENABLE_CUDASIM=1`` is refused; the tests call ``run`` directly).
"""

import argparse
import sys
import time

import numpy as np

import minissd.cuda as mc


# ---- timing ----------------------------------------------------------------------------------

def best_time(f, reps, sync=None):
    """Minimum wall time of ``f()`` over ``reps`` runs, after one warm-up run (compilation).

    reps=0: just the warm-up run's time (the tests' smoke run).
    """
    start = time.perf_counter()
    f()
    if sync:
        sync()
    best = time.perf_counter() - start if reps == 0 else float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        f()
        if sync:
            sync()
        best = min(best, time.perf_counter() - start)
    return best


# ---- the cases -------------------------------------------------------------------------------

def _ssd300_inputs(rng, batch, objects=10, classes=20, num_priors=None):
    from minissd.priors import SSD300_VOC, default_boxes

    priors = default_boxes(SSD300_VOC)[:num_priors]  # (8732, 4), or its first num_priors
    xy = rng.uniform(0, 0.7, (batch, objects, 2))
    wh = rng.uniform(0.05, 0.3, (batch, objects, 2))
    gt_boxes = [np.concatenate([xy[b], xy[b] + wh[b]], 1).astype(np.float32) for b in range(batch)]
    gt_labels = [rng.integers(1, classes + 1, objects) for _ in range(batch)]
    return priors, gt_boxes, gt_labels


def core_cases(rng, batch, num_priors=None, num_classes=20):
    """(name, cpu function, gpu function) for IoU, matching, mining, detect."""
    cuda = mc.require()
    from minissd import boxes, loss, matching, nms
    from minissd.cuda import boxes as g_boxes
    from minissd.cuda import loss as g_loss
    from minissd.cuda import matching as g_matching
    from minissd.cuda import nms as g_nms

    priors, gt_boxes, gt_labels = _ssd300_inputs(rng, batch, classes=num_classes, num_priors=num_priors)
    P = len(priors)
    corners = boxes.center_to_corner(priors).astype(np.float32)
    a_d, b_d = cuda.to_device(gt_boxes[0]), cuda.to_device(corners)
    _, conf_t = matching.match_batch(gt_boxes, gt_labels, priors)  # (B, P)
    bg_loss = rng.exponential(1.0, (batch, P)).astype(np.float32)
    bg_d, conf_d = cuda.to_device(bg_loss), cuda.to_device(conf_t)
    loc = rng.normal(0, 1, (batch, P, 4)).astype(np.float32)
    conf = rng.normal(0, 1, (batch, P, num_classes + 1)).astype(np.float32)
    loc_d, conf_dd, priors_d = cuda.to_device(loc), cuda.to_device(conf), cuda.to_device(priors.astype(np.float32))
    # the GPU's matching without its host part (checks, padding, copies): the kernels alone
    padded = g_matching._pad(list(zip(gt_boxes, gt_labels)))
    prepared = [cuda.to_device(a) for a in padded] + [cuda.to_device(a) for a in matching._prepare_priors(priors)]
    return [
        (f"iou 10x{P}", lambda: boxes.iou(gt_boxes[0], corners), lambda: g_boxes.iou(a_d, b_d)),
        (f"match_batch x{batch}, NumPy in/out", lambda: matching.match_batch(gt_boxes, gt_labels, priors),
         lambda: g_matching.match_batch(gt_boxes, gt_labels, priors)),
        (f"  its kernels alone x{batch}", lambda: matching.match_batch(gt_boxes, gt_labels, priors),
         lambda: g_matching.match_on_device(*prepared, 0.5, 0.1, 0.2)),
        (f"mining x{batch}, NumPy in/out", lambda: loss.hard_negative_mining(bg_loss, conf_t),
         lambda: g_loss.hard_negative_mining(bg_loss, conf_t)),
        (f"  on device arrays x{batch}", lambda: loss.hard_negative_mining(bg_loss, conf_t),
         lambda: g_loss.hard_negative_mining(bg_d, conf_d)),
        (f"detect x{batch}, NumPy in", lambda: nms.detect(loc, conf, priors),
         lambda: g_nms.detect(loc, conf, priors)),
        (f"  on device arrays x{batch}", lambda: nms.detect(loc, conf, priors),
         lambda: g_nms.detect(loc_d, conf_dd, priors_d)),
    ]


def _conv_case(name, conv, x, rng):
    """(name, cpu fwd+bwd, gpu fwd+bwd) for one nn.Conv2d on input x."""
    cuda = mc.require()
    from minissd.cuda.conv import Conv2dGPU

    layer = Conv2dGPU(conv)
    x_d = cuda.to_device(x)
    y_shape = conv.forward(x).shape
    g = rng.standard_normal(y_shape).astype(np.float32)
    g_d = cuda.to_device(g)

    def cpu():
        conv.forward(x)
        conv.backward(g)

    def gpu():
        layer.forward(x_d)
        layer.backward(g_d)

    return name, cpu, gpu


def conv_cases(rng, batch, shapes=((32, 64), (64, 32), (128, 16), (256, 8))):
    from minissd import nn

    cases = []
    for C, H in shapes:
        conv = nn.Conv2d(C, C, 3, padding=1, rng=rng)
        x = rng.standard_normal((batch, C, H, H)).astype(np.float32)
        cases.append(_conv_case(f"conv {C}/{H}x{H} fwd+bwd", conv, x, rng))
    return cases


def tiny_model_convs(batch):
    """[(conv, input shape at this batch)] for every Conv2d of ssd_tiny, in forward order."""
    from minissd import nn
    from minissd.model import build_model

    model = build_model("tiny", 20)
    seen = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            def record(x, m=m, forward=m.forward):  # note each conv's input shape once
                seen.append((m, (batch,) + x.shape[1:]))
                return forward(x)
            m.forward = record
    S = model.config.input_size
    model.eval()  # (BatchNorm in training mode refuses a batch of 1 on a 1x1 map)
    model.forward(np.zeros((1, 3, S, S), np.float32))
    model.train()
    for m, _ in seen:
        del m.forward  # back to the class's method
    return model, seen


def training_step_rows(rng, batch, reps, config=None, num_classes=20, cpu_processes=2, kernels=None):
    """Rows: one whole training step, the CPU's calls vs the GPU's, and the GPU's stages.

    - config: the SSDConfig (default: the tiny-voc model's); the tests pass a smaller one.
    - cpu_processes: the CPU step runs in this many worker processes (``minissd.workers``, as
      train.py does on a machine with that many cores); 1: in this process.
    - kernels: a dict; filled with {kernel name: (launches, seconds)} of one GPU step.
    The step is the training loop's (TrainConfig's numbers: BatchNorm group, lr, momentum,
    weight decay, clip, matching threshold): ``forward_backward``, ``clip_grad_norm``, SGD's
    ``step()``, on the CPU (``minissd.step``, ``nn.SGD``) and on the GPU (their twins in
    ``minissd.cuda``). Two copies of the same model (same seed), one stepped on each side;
    both keep training from step to step, as in train.py (the weights change, the work does not).
    """
    from contextlib import ExitStack

    from minissd import step
    from minissd.config import TrainConfig
    from minissd.model import SSD, TINY_CONFIG
    from minissd.nn import SGD, set_batchnorm_group
    from minissd.workers import Workers

    cfg = TrainConfig()
    config = config or TINY_CONFIG
    cpu_model, gpu_model = SSD(config, num_classes, seed=0), SSD(config, num_classes, seed=0)
    group = cfg.bn_group if batch % cfg.bn_group == 0 else None  # the default run's BatchNorm group
    for model in (cpu_model, gpu_model):
        set_batchnorm_group(model, group)
    S = config.input_size
    images = rng.standard_normal((batch, 3, S, S)).astype(np.float32)
    _, gt_boxes, gt_labels = _ssd300_inputs(rng, batch, objects=3, classes=num_classes)
    loss_cfg = step.LossConfig(cfg.iou_threshold, cfg.neg_pos_ratio, cfg.alpha)
    sgd_args = dict(momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    optimizer = SGD(list(cpu_model.parameters()), cfg.lr, **sgd_args)
    rows = []
    with ExitStack() as stack:
        forward_backward = lambda *a: step.forward_backward(cpu_model, *a)  # noqa: E731
        if cpu_processes > 1:
            workers = stack.enter_context(Workers(cpu_model, cpu_processes, batch, group))
            forward_backward = workers.forward_backward

        def cpu_step():
            forward_backward(images, gt_boxes, gt_labels, loss_cfg)
            step.clip_grad_norm(cpu_model.parameters(), cfg.grad_clip)
            optimizer.step()

        gpu = mc.to_device(gpu_model)
        opt = mc.SGD(gpu.parameters(), cfg.lr, **sgd_args)
        stages = {}

        def gpu_step():  # the images cross to the GPU inside the step, as in training
            times = {}
            mc.forward_backward(gpu, images, gt_boxes, gt_labels, loss_cfg, times=times)
            t = time.perf_counter()
            mc.clip_grad_norm(gpu.parameters(), cfg.grad_clip)
            opt.step()
            mc.require().synchronize()
            times["optimizer"] = time.perf_counter() - t
            if not stages or sum(times.values()) < sum(stages.values()):
                stages.clear()
                stages.update(times)  # the stages of the fastest run

        where = f"{cpu_processes} processes" if cpu_processes > 1 else "1 process"
        rows.append((f"tiny: whole training step x{batch} (CPU: {where})", best_time(cpu_step, reps),
                     best_time(gpu_step, reps, mc.require().synchronize)))
    rows += [(f"  GPU step: {name}", None, seconds) for name, seconds in stages.items()]
    if kernels is not None:
        with timed_kernels() as times:
            gpu_step()
        kernels.update(times)
    return rows


class timed_kernels:
    """``with timed_kernels() as times:``: every kernel launched from minissd.cuda is timed.

    Each module global of minissd.cuda.* whose name ends in ``_kernel`` is replaced, for the
    block, by a wrapper whose launches synchronise the GPU before and after; ``times`` fills
    with {kernel name: (launches, seconds)}. The originals are put back at the end.
    """

    def __enter__(self):
        import sys

        self.times, self._patched = {}, []
        sync = mc.require().synchronize
        modules = [m for name, m in list(sys.modules.items()) if name.startswith("minissd.cuda.") and m]
        wrappers = {}
        for module in modules:
            for name, kernel in list(vars(module).items()):
                if name.endswith("_kernel") and hasattr(kernel, "__getitem__") and not isinstance(kernel, type):
                    if id(kernel) not in wrappers:
                        wrappers[id(kernel)] = _TimedKernel(name, kernel, self.times, sync)
                    self._patched.append((module, name, kernel))
                    setattr(module, name, wrappers[id(kernel)])
        return self.times

    def __exit__(self, *exc):
        for module, name, kernel in self._patched:
            setattr(module, name, kernel)


class _TimedKernel:
    """A kernel whose launches are timed (see ``timed_kernels``)."""

    def __init__(self, name, kernel, times, sync):
        self.name, self.kernel, self.times, self.sync = name, kernel, times, sync

    def __getitem__(self, launch_config):
        launch = self.kernel[launch_config]

        def run(*args):
            self.sync()
            start = time.perf_counter()
            launch(*args)
            self.sync()
            n, seconds = self.times.get(self.name, (0, 0.0))
            self.times[self.name] = (n + 1, seconds + time.perf_counter() - start)
        return run

    def __getattr__(self, name):  # py_func, __doc__, ...: the kernel's
        return getattr(self.kernel, name)


# ---- main ------------------------------------------------------------------------------------

def run(batch=32, reps=5, seed=0, conv_shapes=((32, 64), (64, 32), (128, 16), (256, 8)), tiny=True,
        num_priors=None, num_classes=20, cpu_processes=2, step_config=None):
    """Measure every row; returns {"rows": [(name, cpu s or None, gpu s or None)], "batch": B,
    "kernels": {kernel: (launches, seconds)} of one GPU training step (tiny=True only)}.

    - step_config: the SSDConfig of the whole-step rows (default: the tiny-voc model's; with
      it, the per-conv rows of that model too). The tests call this with tiny sizes on the
      simulator only to check that it runs.
    """
    sync = mc.require().synchronize
    rng = np.random.default_rng(seed)
    rows, kernels = [], {}
    for name, cpu, gpu in core_cases(rng, batch, num_priors, num_classes) + conv_cases(rng, batch, conv_shapes):
        rows.append((name, best_time(cpu, reps), best_time(gpu, reps, sync)))
    if tiny:
        if step_config is None:
            rows += tiny_model_conv_rows(rng, batch, reps)
        rows += training_step_rows(rng, batch, reps, step_config, num_classes, cpu_processes, kernels)
    return {"rows": rows, "batch": batch, "kernels": kernels}


def _ms(seconds):
    return f"{seconds * 1e3:.3f}" if seconds is not None else "-"


def table_lines(result, markdown=False):
    """The tables as text lines: plain (for the terminal) or Markdown (for docs/cuda.md)."""
    rows, batch, kernels = result["rows"], result["batch"], result["kernels"]
    lines = []
    if markdown:
        lines += ["| row | CPU ms | GPU ms | speed-up |", "|---|---|---|---|"]
    else:
        lines.append(f"{'':44s} {'CPU ms':>10s} {'GPU ms':>10s} {'speed-up':>9s}")
    for name, cpu, gpu in rows:
        ratio = f"{cpu / gpu:.1f}x" if cpu and gpu else ""
        if markdown:
            lines.append(f"| {name.strip()} | {_ms(cpu)} | {_ms(gpu)} | {ratio} |")
        else:
            lines.append(f"{name:44s} {_ms(cpu):>10s} {_ms(gpu):>10s} {ratio:>9s}")
    for name, cpu, gpu in rows:
        if "whole training step" in name:
            verdict = "met" if cpu / gpu >= 20 else "NOT met"
            lines += ["", f"whole training step at batch {batch}: CPU {batch / cpu:.1f} images/s, "
                          f"GPU {batch / gpu:.1f} images/s: {cpu / gpu:.1f}x (the issue's goal, >= 20x: {verdict})"]
    if kernels:
        total = sum(seconds for _, seconds in kernels.values())
        lines += ["", "one GPU training step, kernel by kernel (a synchronize around each launch):"]
        if markdown:
            lines += ["", "| kernel | launches | ms | share |", "|---|---|---|---|"]
        for name, (n, seconds) in sorted(kernels.items(), key=lambda kv: -kv[1][1]):
            share = f"{100 * seconds / total:.1f}%" if total else ""
            if markdown:
                lines.append(f"| `{name}` | {n} | {seconds * 1e3:.3f} | {share} |")
            else:
                lines.append(f"  {name:42s} {n:5d} {seconds * 1e3:10.3f} ms {share:>7s}")
        lines.append(f"| total | | {total * 1e3:.3f} | |" if markdown else f"  {'total':48s} {total * 1e3:10.3f} ms")
    return lines


def print_table(result, device):
    print(f"GPU: {device}; CPU: {_cpu_name()}")
    print("\n".join(table_lines(result)))


def write_markdown(path, result, device):
    """The tables as Markdown, with the machine and the date, for docs/cuda.md."""
    import datetime

    head = [f"Measured {datetime.date.today().isoformat()} by `python -m minissd.bench cuda` "
            f"(batch {result['batch']}). GPU: {device}; CPU: {_cpu_name()}.", ""]
    with open(path, "w") as f:
        f.write("\n".join(head + table_lines(result, markdown=True)) + "\n")


def tiny_model_conv_rows(rng, batch, reps):
    """One row: all of ssd_tiny's convs at this batch, forward + backward, CPU vs GPU."""
    model, convs = tiny_model_convs(batch)
    cpu_total = gpu_total = 0.0
    sync = mc.require().synchronize
    for conv, shape in convs:
        x = rng.standard_normal(shape).astype(np.float32)
        _, cpu, gpu = _conv_case("", conv, x, rng)
        cpu_total += best_time(cpu, reps)
        gpu_total += best_time(gpu, reps, sync)
    return [(f"tiny: its {len(convs)} convs x{batch}", cpu_total, gpu_total)]


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    import os
                    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
                    return f"{line.split(':', 1)[1].strip()}, {cores} cores usable"
    except OSError:
        pass
    return "unknown CPU"


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m minissd.bench cuda", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5, help="runs after the warm-up; the minimum is kept")
    parser.add_argument("--no-tiny", action="store_true", help="skip the tiny-voc model rows")
    parser.add_argument("--cpu-processes", type=int, default=2,
                        help="worker processes of the CPU training step (2: the 2-core machine's default run)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables as Markdown to FILE")
    args = parser.parse_args(argv)
    if not mc.is_available():
        try:
            mc.require()
        except RuntimeError as e:
            print(f"python -m minissd.bench cuda: nothing to time: {e}", file=sys.stderr)
        return 2
    if mc.simulating():
        print("python -m minissd.bench cuda: nothing to time: NUMBA_ENABLE_CUDASIM=1 selects numba's "
              "CUDA simulator, which runs each GPU thread as Python; its times mean nothing. "
              "Run this on a machine with an NVIDIA GPU, without NUMBA_ENABLE_CUDASIM.", file=sys.stderr)
        return 2
    cuda = mc.require()
    device = cuda.get_current_device().name
    device = device.decode() if isinstance(device, bytes) else device
    result = run(args.batch, args.reps, tiny=not args.no_tiny, cpu_processes=args.cpu_processes)
    print_table(result, device)
    if args.markdown:
        write_markdown(args.markdown, result, device)
        print(f"\nwritten: {args.markdown}")
    return 0
