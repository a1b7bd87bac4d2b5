"""``python -m minissd.bench cuda``: each GPU kernel next to its CPU twin, timed in the same run.

Rows (batch 32 by default, SSD300's 8732 default boxes, VOC's 20 classes):

- iou           one image's 10 objects x 8732 priors           boxes.iou        vs cuda.boxes.iou
- match_batch   32 images x 10 objects x 8732 priors           matching         vs cuda.matching
- mining        32 x 8732 background losses, 3:1              loss             vs cuda.loss
- detect        32 x 8732 x 21 outputs: decode, softmax,       nms.detect       vs cuda.nms.detect
                per-class NMS, top 200 (an untrained network: nearly every box passes 0.01)
- conv C/HxW    3x3/pad 1 convs of the nn benchmark, forward + backward, nn.Conv2d vs Conv2dGPU
- tiny convs    every conv of the tiny-voc model (ssd_tiny) at batch 32, forward + backward
- tiny step     one whole training step of ssd_tiny at batch 32 (match, forward, loss with
                mining, backward, clip, SGD): minissd.step's calls vs their twins in minissd.cuda,
                the ratio the issue asks for (>= 20x), and where the GPU step's time goes

GPU times include what the host wrappers do on the host (checks, sorting nothing, a few
small copies) but not moving the batch's big arrays to the GPU: in a training step they
live there. Each time is the minimum over ``--reps`` runs after one warm-up run (which
compiles); GPU runs end with ``cuda.synchronize()``.

Exit status: 0 after printing the table; 2, with a message saying why, when there is no GPU
to time: numba's CUDA simulator runs every thread as Python, so its times mean nothing and
it is never timed (``NUMBA_ENABLE_CUDASIM=1`` is refused).
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
        (f"match_batch x{batch}", lambda: matching.match_batch(gt_boxes, gt_labels, priors),
         lambda: g_matching.match_batch(gt_boxes, gt_labels, priors, device_out=True)),
        (f"  its kernels alone x{batch}", lambda: matching.match_batch(gt_boxes, gt_labels, priors),
         lambda: g_matching.match_on_device(*prepared, 0.5, 0.1, 0.2)),
        (f"mining x{batch}", lambda: loss.hard_negative_mining(bg_loss, conf_t),
         lambda: g_loss.hard_negative_mining(bg_d, conf_d)),
        (f"detect x{batch}", lambda: nms.detect(loc, conf, priors),
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


def tiny_training_step_rows(rng, batch, reps):
    """Rows: all of ssd_tiny's convs (CPU vs GPU), then one whole training step (CPU vs GPU)."""
    model, convs = tiny_model_convs(batch)
    cpu_total = gpu_total = 0.0
    sync = mc.require().synchronize
    for conv, shape in convs:
        x = rng.standard_normal(shape).astype(np.float32)
        _, cpu, gpu = _conv_case("", conv, x, rng)
        cpu_total += best_time(cpu, reps)
        gpu_total += best_time(gpu, reps, sync)
    return [(f"tiny: its {len(convs)} convs x{batch}", cpu_total, gpu_total)] + \
        training_step_rows(rng, batch, reps)


STEP_HYPER = dict(lr=0.02, momentum=0.9, weight_decay=5e-4, grad_clip=10.0)  # train.py's tiny-voc defaults


def training_step_rows(rng, batch, reps, config=None, num_classes=20):
    """Rows: one whole training step, the CPU's calls vs the GPU's, and the GPU's stages.

    - config: the SSDConfig (default: the tiny-voc model's); the tests pass a smaller one.
    The step is the training loop's: ``forward_backward``, ``clip_grad_norm``, SGD's
    ``step()`` (``minissd.step`` + ``nn.SGD`` on the CPU, their twins in ``minissd.cuda``).
    Two copies of the same model (same seed), one stepped on each side; both keep training
    from step to step, as in train.py (the weights change, the work does not).
    """
    from minissd import step
    from minissd.model import SSD, TINY_CONFIG
    from minissd.nn import SGD

    config = config or TINY_CONFIG
    cpu_model, gpu_model = SSD(config, num_classes, seed=0), SSD(config, num_classes, seed=0)
    S = config.input_size
    images = rng.standard_normal((batch, 3, S, S)).astype(np.float32)
    _, gt_boxes, gt_labels = _ssd300_inputs(rng, batch, objects=3, classes=num_classes)
    loss_cfg = step.LossConfig()
    sgd_args = dict(momentum=STEP_HYPER["momentum"], weight_decay=STEP_HYPER["weight_decay"])
    optimizer = SGD(list(cpu_model.parameters()), STEP_HYPER["lr"], **sgd_args)

    def cpu_step():
        step.forward_backward(cpu_model, images, gt_boxes, gt_labels, loss_cfg)
        step.clip_grad_norm(cpu_model.parameters(), STEP_HYPER["grad_clip"])
        optimizer.step()

    gpu = mc.to_device(gpu_model)
    opt = mc.SGD(gpu.parameters(), STEP_HYPER["lr"], **sgd_args)
    stages = {}

    def gpu_step():  # the images cross to the GPU inside the step, as in training
        times = {}
        mc.forward_backward(gpu, images, gt_boxes, gt_labels, loss_cfg, times=times)
        t = time.perf_counter()
        mc.clip_grad_norm(gpu.parameters(), STEP_HYPER["grad_clip"])
        opt.step()
        mc.require().synchronize()
        times["optimizer"] = time.perf_counter() - t
        if not stages or sum(times.values()) < sum(stages.values()):
            stages.update(times)  # the stages of the fastest run

    rows = [(f"tiny: whole training step x{batch}", best_time(cpu_step, reps),
             best_time(gpu_step, reps, mc.require().synchronize))]
    rows += [(f"  GPU step: {name}", None, seconds) for name, seconds in stages.items()]
    return rows


# ---- main ------------------------------------------------------------------------------------

def run(batch=32, reps=5, seed=0, conv_shapes=((32, 64), (64, 32), (128, 16), (256, 8)), tiny=True,
        num_priors=None, num_classes=20):
    """Measure every row; returns [(name, cpu seconds, gpu seconds or None)].

    (The test suite calls it with tiny sizes on the simulator only to check that it runs.)
    """
    sync = mc.require().synchronize
    rng = np.random.default_rng(seed)
    rows = []
    for name, cpu, gpu in core_cases(rng, batch, num_priors, num_classes) + conv_cases(rng, batch, conv_shapes):
        rows.append((name, best_time(cpu, reps), best_time(gpu, reps, sync)))
    if tiny:
        rows += tiny_training_step_rows(rng, batch, reps)
    return rows


def print_table(rows, device):
    print(f"GPU: {device}; CPU: {_cpu_name()}")
    print(f"{'':32s} {'CPU ms':>10s} {'GPU ms':>10s} {'speed-up':>9s}")
    for name, cpu, gpu in rows:
        c = f"{cpu * 1e3:10.3f}" if cpu is not None else f"{'-':>10s}"
        g = f"{gpu * 1e3:10.3f}" if gpu is not None else f"{'-':>10s}"
        ratio = f"{cpu / gpu:8.1f}x" if cpu and gpu else f"{'':>9s}"
        print(f"{name:32s} {c} {g} {ratio}")
    for name, cpu, gpu in rows:
        if name.startswith("tiny: whole training step"):
            verdict = "met" if cpu / gpu >= 20 else "NOT met"
            print(f"\nthe issue's goal, a tiny-voc training step >= 20x faster on the GPU: {verdict} "
                  f"({cpu / gpu:.1f}x)")


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
    print_table(run(args.batch, args.reps, tiny=not args.no_tiny), device)
    return 0
