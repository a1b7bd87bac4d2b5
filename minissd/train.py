"""Train SSD: ``python -m minissd.train --tiny-voc`` (or ``--data voc:PATH``, coco:..., yolo:...).

The flags, the recipes (``--recipe tiny-voc|paper``) and their checks are minissd/config.py's
``TrainConfig``; docs/ch07-training.md explains every number. One iteration of the loop in
``train`` (Liu et al. 2016, sec. 2.2 and 3):

1. a batch of augmented images and their ground truth (``minissd.data``);
2. ``forward_backward``: match, forward, multibox loss with hard negative mining, backward:
   the batch's gradient in every ``.grad`` (``minissd.step``; run in several processes by
   ``minissd.workers.Workers``, on the GPU by ``minissd.cuda``: the same maths);
3. clip the global gradient norm;
4. an SGD step at this iteration's learning rate (linear warm-up, then cosine or steps);
5. log; 6. now and then, the validation mAP and a checkpoint.

A run writes into ``--out``: checkpoint.npz (atomic; ``--resume`` continues it), metrics.json,
curves.png, detections.png (minissd/outputs.py). A checkpoint is written only when every
weight is finite and sane, so a run that blows up keeps its last good one. Ctrl-C or SIGTERM
stops after the current iteration and saves first; a dead or hung step worker, or any other
error in the loop, also saves the last good state before the run stops.
"""

import math
import os
import signal
import sys
import threading
import time
from contextlib import ExitStack
from functools import partial

import numpy as np
from tqdm import tqdm

from . import cli, config, outputs, step
from .checkpoint import load_checkpoint, read_meta, remove_stale_temporaries, save_checkpoint
from .data.augment import augmentation
from .data.loader import DataLoader, DecodeCache
from .errors import CheckpointError, ConfigError
from .data import dataset_spec, open_dataset
from .model import build_model
from .nn import SGD, Adam, Cosine, LinearWarmup, MultiStep, set_batchnorm_group
from .step import LossConfig
from .workers import WorkerError, Workers

WEIGHT_LIMIT = 1e6  # |value| of any weight or BatchNorm statistic beyond this: the run has blown up
                    # (a trained tiny SSD's largest is about 7)


def open_datasets(cfg):
    """(train set, val set) of the dataset the flags name (``--data``, ``--voc-root``, ``--tiny-voc``)."""
    spec = dataset_spec(cfg.data, cfg.tiny_voc, cfg.voc_root)
    t = time.perf_counter()
    train_set = open_dataset(spec, cfg.train_split, data_dir=cfg.data_dir or None)
    val_set = open_dataset(spec, cfg.val_split, data_dir=cfg.data_dir or None, classes=train_set.classes)
    print(f"data {spec}: {len(train_set)} {cfg.train_split} / {len(val_set)} {cfg.val_split} images "
          f"({time.perf_counter() - t:.1f} s)")
    return train_set, val_set


def make_model(cfg, train_set):
    """The network ``cfg`` names, for ``train_set``'s classes (``--input-size``, ``--fit-priors``,
    ``--aspect-ratios``, ``--source-maps``, ``--clip-priors``: ``config.model_layout``)."""
    options = {"input_size": cfg.input_size} if cfg.input_size else {}
    options.update(config.model_layout(cfg))  # {} at the defaults
    if cfg.fit_priors:  # default-box sizes that give nearly every training object a positive
        from .model import model_config
        from .priors import fit_prior_scales, prior_coverage
        layout = model_config(cfg.model, cfg.input_size or None, **config.model_layout(cfg)).priors
        options["prior_scales"] = fit_prior_scales(train_set, config=layout, iou_threshold=cfg.iou_threshold)
        before = prior_coverage(train_set, layout, cfg.iou_threshold)[0]
        after = prior_coverage(train_set, model_config(cfg.model, **options).priors, cfg.iou_threshold)[0]
        print(f"fitted default-box scales (s_k, t_k) per map: "
              + ", ".join(f"({a:.3f}, {b:.3f})" for a, b in options["prior_scales"])
              + f"; training objects with a default box at IoU >= {cfg.iou_threshold}: {before:.0%} -> {after:.0%}")
    try:
        return build_model(cfg.model, len(train_set.classes), seed=cfg.seed, **options)
    except (TypeError, ValueError) as err:  # a size or scales the model family cannot take
        raise ConfigError(f"--model {cfg.model} --input-size {cfg.input_size}: {err}") from err


def learning_rate_schedule(cfg, iters):
    """lr(it): linear warm-up into cosine annealing, or into the paper's multi-step decay."""
    if cfg.schedule == "step":
        base = MultiStep(cfg.lr, config.milestones(cfg) or (int(iters * 2 / 3), int(iters * 5 / 6)))
    else:
        base = Cosine(cfg.lr, iters, min_lr=cfg.lr * 0.01)
    return LinearWarmup(base, cfg.warmup_iters) if cfg.warmup_iters > 0 else base


def augmentation_schedule(cfg, model_config, epochs):
    """epoch -> the training transform: "light" for the first ``cfg.light_first`` of the
    ``epochs`` (rounded to whole epochs) when ``cfg.augment`` is "ssd", ``cfg.augment`` after.

    Why a curriculum: a small network trained from scratch first has to learn what the
    shapes look like; zoom-out and IoU crops make most objects smaller or cut, which slows
    that down, but keep the network from overfitting later (docs/training-results.md).
    """
    size, mean, std = model_config.input_size, model_config.mean, model_config.std
    light_epochs = round(cfg.light_first * epochs) if cfg.augment == "ssd" else 0
    light = augmentation("light", size, mean, std)
    full = augmentation(cfg.augment, size, mean, std, max_expand=cfg.max_expand, crop=cfg.crop)
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


def state_problem(model, optimizer):
    """"" when every weight, BatchNorm statistic and optimizer state is finite and within
    ``WEIGHT_LIMIT``; else what is wrong, naming the first bad entry."""
    for kind, state in (("weight", model.state_dict()), ("optimizer state", optimizer.state_dict())):
        for name, value in state.items():
            value = np.asarray(value)
            if not np.isfinite(value).all():
                return f"the {kind} {name} is not finite"
            if kind == "weight" and value.size and np.abs(value).max() > WEIGHT_LIMIT:
                return f"the {kind} {name} has exploded (|value| up to {np.abs(value).max():.3g})"
    return ""


class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM. While ``deferring`` is set (the training loop), the first
    one sets ``requested`` (the signal's name), which the loop checks between iterations, so
    the checkpoint it then saves is never half-updated; a second one stops at once. Outside the
    loop (nothing trained yet, or everything saved) a signal stops at once: KeyboardInterrupt,
    which ``main`` turns into ``message``, one line."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested, self.deferring, self._previous = "", False, {}
        self.message = "interrupted before the first iteration: stopped, nothing to save"

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # only there can Python take signals
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.deferring and not self.requested:
            self.requested = signal.Signals(signum).name
            return
        if self.requested:
            self.message = ("interrupted a second time: stopped at once, without saving the current "
                            "iteration; the last checkpoint written, if any, is kept")
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)


def main(argv=None):
    """``python -m minissd.train``: 0 when the run finished, 1 when a fault stopped it (its last
    good checkpoint kept), 130 / 143 when Ctrl-C / SIGTERM stopped it (saved first)."""
    with StopRequest() as stop:
        try:
            return train(config.parse_args(argv), stop)
        except KeyboardInterrupt:
            print(f"\n{stop.message}", file=sys.stderr)
            return 130


def train(cfg, stop):
    """Train as ``cfg`` says; ``stop``: the StopRequest the loop checks. Returns the exit status."""
    config.check_device(cfg)
    t_start, ckpt_path = time.perf_counter(), os.path.join(cfg.out, "checkpoint.npz")
    if cfg.resume and not os.path.isfile(ckpt_path):  # say so before minutes of loading data
        raise CheckpointError(f"--resume: {ckpt_path}: checkpoint file not found (is --out right?)")
    for path in remove_stale_temporaries(cfg.out):  # what a run killed mid-write left behind
        print(f"removed {path}, a temporary checkpoint left by a run killed while writing")

    # ---- data, model, optimizer ----------------------------------------------------------
    train_set, val_set = open_datasets(cfg)
    config.check_against_data(cfg, len(train_set))
    iters = config.total_iters(cfg, len(train_set))
    model = make_model(cfg, train_set)
    set_batchnorm_group(model, cfg.bn_group)  # the same maths on every device and process count
    params = list(model.parameters())
    if cfg.optimizer == "adam":
        optimizer = Adam(params, cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)
    else:
        optimizer = SGD(params, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    lr_at = learning_rate_schedule(cfg, iters)
    loss_cfg = LossConfig(cfg.iou_threshold, cfg.neg_pos_ratio, cfg.alpha, cfg.matching, cfg.conf_loss)
    history = {"iteration": [], "loss_l": [], "loss_c": [], "lr": [], "eval_iteration": [], "mAP": []}
    start = 0
    if cfg.resume:
        config.check_resume(cfg, read_meta(ckpt_path).get("config") or {})  # the switches it was trained with
        meta = load_checkpoint(ckpt_path, model, optimizer)
        start, history = meta["iteration"], meta.get("extra", {}).get("history") or history
        print(f"resumed from {ckpt_path} at iteration {start} of {iters}"
              + (": no training left, evaluating" if start >= iters else ""))
    if cfg.decode_cache:  # augmentation then works on small images (docs/own-data.md)
        train_set = DecodeCache(train_set, max_side=cfg.decode_cache)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True,
                        num_workers=cfg.loader_processes or cfg.loader_threads, processes=cfg.loader_processes > 0)
    batches = endless(loader, start, augmentation_schedule(cfg, model.config, iters / len(loader)))
    processes = config.step_processes(cfg)
    outputs.print_start(cfg, model, train_set, val_set, iters, processes)

    def checkpoint(done):
        """Write the checkpoint of ``done`` iterations (the caller has checked the state)."""
        save_checkpoint(ckpt_path, model, optimizer, done, config.describe(cfg),
                        extra={"history": history, "classes": train_set.classes,
                               "model": cfg.model, "model_config": model.config.to_dict()})

    profile = dict.fromkeys(("data", "match", "forward", "loss", "backward", "optimizer", "eval"), 0.0)
    done, fault, failure = start, "", ""  # fault: the weights cannot be trusted; failure: a worker's
    with ExitStack() as running:
        running.callback(loader.close)  # ends the loader's processes, if any (after the generator)
        running.callback(batches.close)  # stops the loader's threads
        # where steps 2 and 3 run: here, in worker processes (whole BatchNorm groups each, the
        # gradients summed into model's .grad), or on the GPU (the weights stay there)
        forward_backward, clip_grad_norm, step_params, stepper = (
            partial(step.forward_backward, model), step.clip_grad_norm, params, optimizer)
        to_host = lambda: None  # noqa: E731 - the state the checkpoint needs is in `model` already
        if cfg.device == "cuda":
            from . import cuda
            gpu = cuda.to_device(model)
            step_params = list(gpu.parameters())
            stepper = cuda.SGD(step_params, cfg.lr, cfg.momentum, cfg.weight_decay,
                               momentum_buffers=optimizer.buffers)
            forward_backward, clip_grad_norm = partial(cuda.forward_backward, gpu), cuda.clip_grad_norm
            to_host = partial(cuda.to_host, gpu, model, stepper, optimizer)
        elif processes > 1:
            workers = running.enter_context(Workers(model, processes, cfg.batch_size, cfg.bn_group))
            forward_backward, to_host = workers.forward_backward, workers.sync_buffers

        model.train()
        stop.deferring = True  # from here on Ctrl-C / SIGTERM stop between iterations, saving first
        bar = tqdm(range(start, iters), initial=start, total=iters, desc="train", dynamic_ncols=True)
        try:
            for it in bar:
                t0 = time.perf_counter()
                # 1. a batch: augmented, resized, normalised images (B, 3, S, S); boxes, labels per image
                images, gt_boxes, gt_labels = next(batches)
                times = {"data": time.perf_counter() - t0}
                # 2. match, forward, multibox loss (+ mining), backward: the gradient in every .grad
                loss_l, loss_c = forward_backward(images, gt_boxes, gt_labels, loss_cfg, times)
                if not (math.isfinite(loss_l) and math.isfinite(loss_c)):
                    fault = f"the loss became non-finite (NaN or inf) at iteration {it + 1}"
                    break  # nothing from this batch reached the weights
                # 3. clip the global gradient norm
                t = time.perf_counter()
                clip_grad_norm(step_params, cfg.grad_clip)
                # 4. SGD step at this iteration's learning rate
                stepper.lr = lr = lr_at(it)
                stepper.step()
                done = it + 1
                times["optimizer"] = time.perf_counter() - t
                # 5. log: progress bar, history, where the time went
                for key, seconds in times.items():
                    profile[key] += seconds
                bar.set_postfix(loc=f"{loss_l:.3f}", conf=f"{loss_c:.3f}", lr=f"{lr:.4f}",
                                img_s=f"{cfg.batch_size / (time.perf_counter() - t0):.1f}")
                if it % cfg.log_every == 0 or done == iters:
                    for key, value in (("iteration", done), ("loss_l", loss_l), ("loss_c", loss_c), ("lr", lr)):
                        history[key].append(value)
                # 6. now and then: validation mAP on a subset, and a checkpoint (sane weights only)
                if cfg.eval_every and done % cfg.eval_every == 0 and done < iters:
                    t = time.perf_counter()
                    to_host()
                    fault = state_problem(model, optimizer)
                    if fault:
                        break
                    result, _ = outputs.validate(model, val_set, max_images=cfg.eval_images)
                    history["eval_iteration"].append(done)
                    history["mAP"].append(result["mAP"])
                    checkpoint(done)
                    profile["eval"] += time.perf_counter() - t
                    bar.write(f"iteration {done}: val mAP (first {cfg.eval_images} images) {result['mAP']:.3f}")
                if stop.requested:
                    break
            bar.close()
            # the last good state, unless a fault says the weights cannot be trusted
            if not fault and done > start:
                to_host()
                fault = state_problem(model, optimizer)
                if not fault:
                    checkpoint(done)
        except WorkerError as err:  # a step process died or hung: save what the main process holds
            bar.close()
            failure = f"{err}; {_save_last_good(model, optimizer, checkpoint, done, start, ckpt_path)}"
        except Exception as err:  # a bug or bad data: save the last good state, then the traceback
            bar.close()
            saved = _save_last_good(model, optimizer, checkpoint, done, start, ckpt_path, to_host)
            print(f"\nstopped by {type(err).__name__} after iteration {done}: {saved}", file=sys.stderr)
            raise

    if fault:
        print(f"\nstopped: {fault}. No checkpoint was written with these weights; the last good one, "
              f"if any, is {ckpt_path}. Try a lower --lr (now {cfg.lr}), a longer --warmup-iters (now "
              f"{cfg.warmup_iters}) or --grad-clip (now {cfg.grad_clip}).", file=sys.stderr)
        return 1
    if failure:
        print(f"\nstopped: {failure}", file=sys.stderr)
        return 1
    if stop.requested:
        how = "interrupted (Ctrl-C)" if stop.requested == "SIGINT" else f"stopped by {stop.requested}"
        saved = f"checkpoint saved to {ckpt_path}" if done > start else "nothing new to save"
        print(f"\n{how} at iteration {done}: {saved}; continue with the same command and --resume")
        return 130 if stop.requested == "SIGINT" else 128 + signal.Signals[stop.requested].value

    # ---- final evaluation on the whole validation split, and the run's outputs -----------
    stop.deferring = False  # the checkpoint is saved: Ctrl-C now stops at once
    stop.message = (f"interrupted during the final evaluation: the checkpoint of iteration {done} is saved "
                    f"({ckpt_path}); the same command with --resume evaluates it")
    t = time.perf_counter()
    result, detections = outputs.validate(model, val_set)
    profile["eval"] += time.perf_counter() - t
    if not history["eval_iteration"] or history["eval_iteration"][-1] != done:
        history["eval_iteration"].append(done)
        history["mAP"].append(result["mAP"])
    checkpoint(done)  # again, with the final mAP in its history
    train_time = sum(v for k, v in profile.items() if k != "eval")
    metrics = {
        "mAP": result["mAP"],
        "mAP_area": result.get("mAP_area"),
        "per_class_AP": dict(zip(val_set.classes, result["ap"])),
        "per_class_AP_area": dict(zip(val_set.classes, result.get("ap_area", []))),
        "num_objects": result["num_objects"],
        "iterations": done,
        "images_per_second": (done - start) * cfg.batch_size / max(train_time, 1e-9),
        "profile_seconds": profile,
        "wall_seconds": time.perf_counter() - t_start,
        "config": config.describe(cfg),
        "model_config": model.config.to_dict(),
        "history": history,
    }
    outputs.write_outputs(cfg.out, metrics, model, val_set, detections)
    return 0


def _save_last_good(model, optimizer, checkpoint, done, start, ckpt_path, to_host=None):
    """Checkpoint the state after ``done`` iterations if it is sane; says what happened, in words."""
    if done == start:
        return f"no iteration finished since the last checkpoint ({ckpt_path}, if any, is kept)"
    try:
        if to_host is not None:
            to_host()
        problem = state_problem(model, optimizer)
        if problem:
            return f"not saved: {problem}; the last good checkpoint ({ckpt_path}, if any) is kept"
        checkpoint(done)
    except Exception as err:  # noqa: BLE001 - the error that stopped the run matters more
        return f"could not save a checkpoint ({type(err).__name__}: {err})"
    return f"checkpoint of iteration {done} saved to {ckpt_path}; continue with --resume"


if __name__ == "__main__":
    sys.exit(cli.run(main))
