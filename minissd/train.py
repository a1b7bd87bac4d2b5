"""Train SSD: ``python -m minissd.train --tiny-voc`` (or ``--voc-root PATH`` for real VOC).

Every field of ``TrainConfig`` below is a command-line flag (``batch_size`` -> ``--batch-size``).
The defaults are the tiny-voc recipe (docs/ch07-training.md explains each number); with
``--voc-root`` the defaults switch to the paper's SSD300 recipe (``VOC_RECIPE``), and any flag
given on the command line wins over both.

The recipe is the paper's (Liu et al. 2016, sec. 3): matching at IoU 0.5, multibox loss with
3:1 hard negative mining, SGD with momentum 0.9 and weight decay 5e-4, a linear warm-up, then
a cosine (or the paper's step) schedule, and SSD's augmentation (colour distortion, zoom out,
IoU crop, flip; ``--augment light`` keeps only colour and flip).

A run writes into ``--out``: checkpoint.npz (atomic; resumed by ``--resume``), metrics.json
(val mAP, per-class AP, history, per-stage profile), curves.png and detections.png.
Ctrl-C saves a checkpoint and exits cleanly; a non-finite loss stops the run and keeps the
last good checkpoint.
"""

import argparse
import json
import math
import os
import signal
import sys
import time
from functools import partial
from dataclasses import asdict, dataclass, fields

import numpy as np
from tqdm import tqdm

from . import viz
from .checkpoint import load_checkpoint, save_checkpoint
from .data import VOCDataset, make_tiny_voc, tiny_voc_path
from .data.augment import (Compose, normalize, photometric_distort, random_flip, resize,
                           train_transform)
from .data.loader import DataLoader
from .detect import predict_dataset
from .evaluate import evaluate_detections, format_ap_table
from .model import build_model
from .nn import SGD, Adam, Cosine, LinearWarmup, MultiStep
from .nn.threads import num_threads
from .workers import StepWorkers, share_step


@dataclass
class TrainConfig:
    """One training run. Defaults: the tiny-voc recipe (the default ``--tiny-voc`` run)."""

    # ---- data ------------------------------------------------------------------------------
    tiny_voc: bool = False   # generate tiny-voc if absent and train on it
    voc_root: str = ""       # or a VOC year folder (VOCdevkit/VOC2007: Annotations, JPEGImages...)
    data_dir: str = ""       # where tiny-voc lives; default $MINISSD_DATA, else ~/.cache/minissd
    train_split: str = "train"
    val_split: str = "val"
    workers: int = 1         # background threads preparing batches (0: in the training thread)
    augment: str = "ssd"     # "ssd": the paper's pipeline; "light": colour distortion + flip only
    light_first: float = 0.7 # with "ssd": the first this fraction of the epochs use "light" (a curriculum)
    max_expand: float = 2.0  # zoom-out: canvas up to this many times the image (paper: 4, at 300 px)
    # ---- model -----------------------------------------------------------------------------
    model: str = "tiny"      # "tiny" (tiny-voc) or "ssd300" (the paper's VGG16 SSD300)
    # ---- optimisation (SSD: SGD, momentum 0.9, weight decay 5e-4, batch 32) -----------------
    iters: int = 3600        # 58k images: ~13 min end to end on 2 cores (docs/training-results.md)
    epochs: float = 0.0      # if > 0: iters = epochs * len(train set) / batch_size
    batch_size: int = 16     # the paper: 32; 16 is 1.5x faster per image here and updates twice as often
    optimizer: str = "sgd"   # "sgd" (the paper's) or "adam"
    lr: float = 0.02         # peak learning rate (BatchNorm allows 20x the paper's 1e-3)
    momentum: float = 0.9    # the paper's (Adam: its beta1)
    weight_decay: float = 5e-4  # the paper's
    warmup_iters: int = 200  # linear warm-up from lr/3, as lufficc/SSD does
    schedule: str = "cosine" # "cosine" to 0 at the end, or "step" (the paper's: x0.1 at milestones)
    milestones: str = ""     # step schedule: comma-separated iterations, e.g. "80000,100000"
    grad_clip: float = 10.0  # clip the global gradient norm (0: off); guards the first steps
    # ---- SSD's loss (the paper's numbers, but for the matching threshold) ---------------------
    iou_threshold: float = 0.4  # a default box is positive at IoU >= this with a ground truth (paper: 0.5;
                                # tiny's coarse grids leave objects 2.2 positives at 0.5, 5.7 at 0.4)
    neg_pos_ratio: float = 3.0  # hard negative mining keeps at most 3 negatives per positive
    alpha: float = 1.0          # weight of the localisation loss
    # ---- evaluation and output -------------------------------------------------------------
    eval_every: int = 1000   # validation mAP every this many iterations (0: only at the end)
    eval_images: int = 100   # periodic validation on the first N val images (the end: all)
    out: str = "runs/tiny-voc"
    resume: bool = False     # continue from OUT/checkpoint.npz
    seed: int = 0
    device: str = "cpu"      # "cpu" or "cuda" (needs a GPU and numba-cuda)
    log_every: int = 10      # history points (loss, lr) every this many iterations


# The paper's SSD300 recipe (Liu et al. 2016 sec. 3 / ssd.pytorch config.py "voc"), applied by
# --voc-root unless a flag overrides it: 120k iterations of batch 32, lr 1e-3 dropped x0.1 at
# 80k and 100k (the paper's VOC07+12 schedule). Without BatchNorm and from scratch (no ImageNet
# VGG16 here), expect to need the warm-up.
VOC_RECIPE = dict(model="ssd300", iters=120_000, batch_size=32, lr=1e-3, schedule="step",
                  milestones="80000,100000", warmup_iters=500, augment="ssd", light_first=0.0, max_expand=4.0,
                  iou_threshold=0.5,
                  eval_every=5000, eval_images=500, out="runs/voc")


def parse_args(argv=None):
    """Flags from TrainConfig's fields; returns a TrainConfig (tiny-voc or VOC defaults)."""
    parser = argparse.ArgumentParser(prog="python -m minissd.train", description=__doc__.split("\n\n")[0],
                                     argument_default=argparse.SUPPRESS)
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool or isinstance(f.default, bool):
            parser.add_argument(flag, action="store_true", help=f"(default: {f.default})")
        else:
            choices = {"device": ("cpu", "cuda"), "schedule": ("cosine", "step"),
                       "model": ("tiny", "ssd300"), "optimizer": ("sgd", "adam"),
                       "augment": ("ssd", "light")}.get(f.name)
            parser.add_argument(flag, type=type(f.default), choices=choices, help=f"(default: {f.default})")
    given = vars(parser.parse_args(argv))
    if given.get("voc_root") and given.get("tiny_voc"):
        parser.error("choose one of --tiny-voc and --voc-root")
    if not given.get("voc_root"):
        given["tiny_voc"] = True  # tiny-voc is the default dataset
    preset = VOC_RECIPE if given.get("voc_root") else {}
    return TrainConfig(**{**preset, **given})


def learning_rate_schedule(cfg, iters):
    """lr(it): linear warm-up into cosine annealing, or into the paper's multi-step decay."""
    if cfg.schedule == "step":
        milestones = tuple(int(m) for m in cfg.milestones.split(",") if m.strip())
        base = MultiStep(cfg.lr, milestones or (int(iters * 2 / 3), int(iters * 5 / 6)))
    else:
        base = Cosine(cfg.lr, iters, min_lr=cfg.lr * 0.01)
    return LinearWarmup(base, cfg.warmup_iters) if cfg.warmup_iters > 0 else base


def training_augmentation(cfg, model_config, light=False):
    """The paper's augmentation (photometric distortion, zoom out, IoU crop, flip, resize,
    normalise), or with ``augment="light"`` (or ``light=True``) only the colour distortion
    and the flip."""
    size, mean, std = model_config.input_size, model_config.mean, model_config.std
    if cfg.augment == "light" or light:
        return Compose([photometric_distort, partial(resize, size=size), random_flip,
                        partial(normalize, mean=mean, std=std)])
    return train_transform(size, mean, std, max_expand=cfg.max_expand)


def open_datasets(cfg):
    """(train set, val set): tiny-voc (generated on first use) or the VOC folder given."""
    if cfg.voc_root:
        root = cfg.voc_root
    else:
        root = tiny_voc_path(cfg.data_dir or None)
        t = time.perf_counter()
        make_tiny_voc(root)  # reuses a complete copy; else writes it (~20 s)
        print(f"tiny-voc at {root} ({time.perf_counter() - t:.1f} s)")
    return VOCDataset(root, cfg.train_split), VOCDataset(root, cfg.val_split)


def augmentation_schedule(cfg, model_config, epochs):
    """epoch -> the training transform: the light one for the first ``cfg.light_first`` of the
    ``epochs`` (rounded to whole epochs), the configured one after.

    Why a curriculum: a small network trained from scratch first has to learn what the
    shapes look like; zoom-out and IoU crops make most objects smaller or cut, which slows
    that down (on tiny-voc light augmentation led by 0.15 mAP after 1,000 iterations) but
    keeps the network from overfitting later (light alone ended 0.035 below the paper's
    pipeline). docs/training-results.md has the runs.
    """
    light_epochs = round(cfg.light_first * epochs) if cfg.augment == "ssd" else 0
    light, full = training_augmentation(cfg, model_config, light=True), training_augmentation(cfg, model_config)
    return lambda epoch: light if epoch < light_epochs else full


def endless(loader, start=0, transform_for=None):
    """Batches epoch after epoch, as (images, boxes list, labels list).

    - transform_for: epoch -> the loader's transform for that epoch (None: keep the loader's)

    A run resumed at iteration ``start`` continues with the next whole epoch (the epoch's
    order and augmentation come from (seed, epoch), so the data stays repeatable; the rest
    of the interrupted epoch is not replayed).
    """
    epoch = -(-start // len(loader))  # ceil: the first epoch not yet begun
    while True:
        loader.set_epoch(epoch)
        if transform_for is not None:
            loader.transform = transform_for(epoch)
        for images, targets in loader:
            yield images, [t[0] for t in targets], [t[1] for t in targets]
        epoch += 1


def global_grad_norm(params):
    return math.sqrt(sum(float(np.vdot(p.grad, p.grad)) for p in params))


def validate(model, dataset, max_images=None, batch_size=32):
    """VOC07 11-point mAP at IoU 0.5 of ``model`` on (the first ``max_images`` of) ``dataset``."""
    model.eval()
    detections, ground_truth = predict_dataset(model, dataset, max_images=max_images, batch_size=batch_size)
    result = evaluate_detections(detections, ground_truth, class_names=dataset.classes)
    area = evaluate_detections(detections, ground_truth, class_names=dataset.classes, use_07_metric=False)
    result["mAP_area"], result["ap_area"] = area["mAP"], area["ap"]
    model.train()
    return result, detections


def save_pictures(out, history, model, dataset, detections, n=8):
    """curves.png (loss and val mAP) and detections.png (the first ``n`` val images)."""
    viz.save_figure(viz.plot_loss_curves(history), os.path.join(out, "curves.png"))
    n = min(n, len(dataset))
    images, gts = [], []
    for i in range(n):
        image, boxes, labels, _ = dataset[i]
        images.append(image)
        gts.append((boxes, labels))
    fig = viz.detection_grid(images, detections[:n], class_names=dataset.classes, ground_truth=gts)
    viz.save_figure(fig, os.path.join(out, "detections.png"))


class TrainStep:
    """One SGD step of SSD on the CPU: match, forward, loss, backward, clip, update.

    ``minissd.cuda.step.CudaTrainStep`` is its GPU twin with the same interface, so the loop
    in ``main`` reads the same on both devices:

    - ``step(images, gt_boxes, gt_labels, lr) -> (loss_l, loss_c, times)``: images (B, 3, S,
      S) float32, B arrays of ground truth each; times: seconds per stage (match, forward,
      loss, backward, optimizer). A non-finite loss returns at once: nothing is updated.
    - ``to_host(optimizer)``: make ``model`` complete (the weights live there already; the
      workers' BatchNorm running statistics are averaged into it); called before every
      checkpoint and evaluation. ``close()`` ends the worker processes.
    - workers: match, forward, loss and backward run in this many processes, each on its
      share of the batch (``minissd.workers``: weights in shared memory, BatchNorm per
      share); default: the nn thread count (``MINISSD_THREADS``, else the cores) as long as
      every share keeps at least ``MIN_SHARE`` images; 1 runs them in this process.
    """

    MIN_SHARE = 8  # images per worker: BatchNorm's statistics get noisy on fewer

    def __init__(self, model, optimizer, cfg, workers=None):
        self.model, self.optimizer, self.cfg = model, optimizer, cfg
        self.params = list(model.parameters())
        if workers is None:
            workers = max(1, min(num_threads(), cfg.batch_size // self.MIN_SHARE))
        self.loss_args = dict(iou_threshold=cfg.iou_threshold, neg_pos_ratio=cfg.neg_pos_ratio, alpha=cfg.alpha)
        self.workers = StepWorkers(model, workers, cfg.batch_size, self.loss_args) if workers > 1 else None

    def __call__(self, images, gt_boxes, gt_labels, lr):
        cfg = self.cfg
        # 1-4. match, forward, multibox loss (+ mining), backward: gradients in every .grad
        if self.workers is not None:  # shared among the worker processes
            loss_l, loss_c, times = self.workers.step(images, gt_boxes, gt_labels)
        else:
            self.model.zero_grad()
            loss_l, loss_c, _, times = share_step(self.model, images, gt_boxes, gt_labels, self.loss_args)
        if not (math.isfinite(loss_l) and math.isfinite(loss_c)):
            return loss_l, loss_c, times  # stopped before a NaN reached the weights
        # 5. clip the global gradient norm, set this iteration's learning rate, SGD step
        t = time.perf_counter()
        norm = global_grad_norm(self.params)
        if cfg.grad_clip > 0 and norm > cfg.grad_clip:
            for p in self.params:
                p.grad *= cfg.grad_clip / norm
        self.optimizer.lr = lr
        self.optimizer.step()
        times["optimizer"] = time.perf_counter() - t
        return loss_l, loss_c, times

    def to_host(self, optimizer=None):
        if self.workers is not None:
            self.workers.pull_buffers()

    def close(self):
        """Average the workers' BatchNorm statistics into the model, then end the workers."""
        if self.workers is not None:
            self.to_host()
            self.workers.close()
            self.workers = None


def cuda_problem(cfg):
    """Why ``--device cuda`` cannot run this configuration ("" if it can)."""
    from . import cuda
    try:
        cuda.require()  # a clear error without a GPU or without numba-cuda
    except RuntimeError as err:
        return str(err)
    if cfg.optimizer != "sgd":
        return f"only SGD has a GPU twin (minissd/cuda/optim.py); --optimizer {cfg.optimizer} runs on the CPU"
    if cuda.simulating() and os.environ.get("MINISSD_ALLOW_CUDASIM") != "1":
        return ("NUMBA_ENABLE_CUDASIM=1: numba's CUDA simulator runs every GPU thread in Python, "
                "far too slow to train on (unset it on a machine with a GPU; the tests set "
                "MINISSD_ALLOW_CUDASIM=1 to train a toy model on it)")
    return ""


def make_step(cfg, model, optimizer):
    """The training step for ``cfg.device``: ``TrainStep`` or its GPU twin ``CudaTrainStep``."""
    if cfg.device != "cuda":
        return TrainStep(model, optimizer, cfg)
    from .cuda.step import CudaTrainStep
    return CudaTrainStep(model, optimizer.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                         grad_clip=cfg.grad_clip, iou_threshold=cfg.iou_threshold,
                         neg_pos_ratio=cfg.neg_pos_ratio, alpha=cfg.alpha,
                         momentum_buffers=optimizer.buffers)


class StopRequest:
    """Ctrl-C sets a flag the loop checks between iterations, so the checkpoint it then saves
    is never half-updated; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # the next Ctrl-C raises KeyboardInterrupt

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._previous)


def main(argv=None):
    cfg = parse_args(argv)
    if cfg.device == "cuda":
        problem = cuda_problem(cfg)
        if problem:
            print(f"--device cuda: {problem}", file=sys.stderr)
            return 2
    os.makedirs(cfg.out, exist_ok=True)
    ckpt_path = os.path.join(cfg.out, "checkpoint.npz")
    t_start = time.perf_counter()

    # ---- data, model, optimizer ----------------------------------------------------------
    train_set, val_set = open_datasets(cfg)
    model = build_model(cfg.model, len(train_set.classes), seed=cfg.seed)
    priors, size = model.priors, model.config.input_size  # (P, 4) centre form; input side
    iters = cfg.iters if cfg.epochs <= 0 else max(1, round(cfg.epochs * len(train_set) / cfg.batch_size))
    params = list(model.parameters())
    if cfg.optimizer == "adam":
        optimizer = Adam(params, cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)
    else:
        optimizer = SGD(params, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    lr_at = learning_rate_schedule(cfg, iters)
    rng = np.random.default_rng(cfg.seed)  # augmentation's randomness, checkpointed
    history = {"iteration": [], "loss_l": [], "loss_c": [], "lr": [], "eval_iteration": [], "mAP": []}
    start = 0
    if cfg.resume:
        meta = load_checkpoint(ckpt_path, model, optimizer, rng)
        start, history = meta["iteration"], meta["extra"]["history"]
        print(f"resumed from {ckpt_path} at iteration {start}")
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
                        transform=training_augmentation(cfg, model.config),
                        num_workers=cfg.workers, drop_last=True)
    batches = endless(loader, start, augmentation_schedule(cfg, model.config, iters / len(loader)))

    step = make_step(cfg, model, optimizer)  # after --resume: it starts from the loaded state

    def checkpoint(it):
        step.to_host(optimizer)  # the GPU step keeps the weights on the GPU until asked
        save_checkpoint(ckpt_path, model, optimizer, it, cfg, rng,
                        extra={"history": history, "classes": train_set.classes,
                               "model": cfg.model, "model_config": model.config.to_dict()})

    print(f"model {cfg.model}: input {size}x{size}, {len(priors)} default boxes, "
          f"{sum(p.data.size for p in params):,} parameters; {len(train_set)} train / "
          f"{len(val_set)} val images; {iters} iterations of {cfg.batch_size} on the {cfg.device.upper()}"
          + (f", {step.workers.n} worker processes" if getattr(step, "workers", None) else ""))
    profile = dict.fromkeys(("data", "match", "forward", "loss", "backward", "optimizer", "eval"), 0.0)
    it, status = start, "finished"
    model.train()
    bar = tqdm(range(start, iters), initial=start, total=iters, desc="train", dynamic_ncols=True)
    with StopRequest() as stop:
        for it in bar:
            t0 = time.perf_counter()
            # 1. next batch: augmented, resized, normalised images (B, 3, S, S) and targets
            images, gt_boxes, gt_labels = next(batches)
            profile["data"] += time.perf_counter() - t0
            # 2. one step: match, forward, loss (+ mining), backward, clip, SGD (TrainStep)
            lr = lr_at(it)
            loss_l, loss_c, times = step(images, gt_boxes, gt_labels, lr)
            if not (math.isfinite(loss_l) and math.isfinite(loss_c)):
                status = "non-finite loss"  # nothing from this step was applied
                break
            for key, dt in times.items():
                profile[key] += dt
            t1 = time.perf_counter()
            # 3. log: progress bar, history
            bar.set_postfix(loc=f"{loss_l:.3f}", conf=f"{loss_c:.3f}", lr=f"{lr:.4f}",
                            img_s=f"{cfg.batch_size / (t1 - t0):.1f}")
            if it % cfg.log_every == 0 or it == iters - 1:
                for key, value in (("iteration", it + 1), ("loss_l", loss_l), ("loss_c", loss_c),
                                   ("lr", lr)):
                    history[key].append(value)
            # 4. now and then: validation mAP on a subset, and a checkpoint
            if cfg.eval_every and (it + 1) % cfg.eval_every == 0 and it + 1 < iters:
                t = time.perf_counter()
                step.to_host(optimizer)  # validation runs the CPU model
                result, _ = validate(model, val_set, max_images=cfg.eval_images)
                history["eval_iteration"].append(it + 1)
                history["mAP"].append(result["mAP"])
                checkpoint(it + 1)
                profile["eval"] += time.perf_counter() - t
                bar.write(f"iteration {it + 1}: val mAP (first {cfg.eval_images} images) {result['mAP']:.3f}")
            if stop.requested:
                status = "interrupted"
                break
    bar.close()
    batches.close()  # stops the loader's background threads
    step.close()  # ends the worker processes (after bringing everything into the model)
    done = it + 1 if status != "non-finite loss" else it

    if status == "non-finite loss":
        print(f"\nstopped: the loss became non-finite (NaN or inf) at iteration {it + 1}. Nothing from "
              f"this step was applied. The last good checkpoint, if any, is {ckpt_path}. Try a lower "
              f"--lr (now {cfg.lr}) or a longer --warmup-iters (now {cfg.warmup_iters}).", file=sys.stderr)
        return 1
    checkpoint(done)
    if status == "interrupted":
        print(f"\ninterrupted at iteration {done}: checkpoint saved to {ckpt_path}; "
              f"continue with the same command and --resume")
        return 130

    # ---- final evaluation on the whole validation split, and the run's outputs -----------
    t = time.perf_counter()
    step.to_host(optimizer)
    result, detections = validate(model, val_set)
    profile["eval"] += time.perf_counter() - t
    history["eval_iteration"].append(done)
    history["mAP"].append(result["mAP"])
    checkpoint(done)
    train_time = sum(v for k, v in profile.items() if k != "eval")
    trained = done - start
    metrics = {
        "mAP": result["mAP"],
        "mAP_area": result.get("mAP_area"),
        "per_class_AP": dict(zip(val_set.classes, result["ap"])),
        "per_class_AP_area": dict(zip(val_set.classes, result.get("ap_area", []))) or None,
        "iterations": done,
        "images_per_second": trained * cfg.batch_size / max(train_time, 1e-9),
        "profile_seconds": profile,
        "wall_seconds": time.perf_counter() - t_start,
        "config": asdict(cfg),
        "history": history,
    }
    with open(os.path.join(cfg.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    save_pictures(cfg.out, history, model, val_set, detections)

    print(f"\nval mAP (VOC07 11-point, IoU 0.5, {len(val_set)} images): {result['mAP']:.4f}")
    print(format_ap_table(val_set.classes, result["ap"], result["ap_area"], result["num_objects"]))
    print("where the time went: " + ", ".join(f"{k} {v:.0f} s" for k, v in profile.items())
          + f"; {metrics['images_per_second']:.1f} images/s; wall {metrics['wall_seconds']:.0f} s")
    print(f"wrote {cfg.out}/: checkpoint.npz, metrics.json, curves.png, detections.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
