"""The capstone: train the tiny SSD with the student's own code, graded by the mAP it reaches.

``python -m minissd.assignments capstone [COPY] [--json results.json]`` (COPY: the student's
copy, default the current folder):

1. writes a 2000 + 200 image subset of tiny-voc (``make_tiny_voc``, under ``--data-dir``,
   made once and reused);
2. runs ``python -m minissd.train`` **of the copy** on it (a fresh process started in the
   copy, the copy first on the import path): the tiny-voc recipe, ``CAPSTONE.iters``
   iterations at peak lr ``CAPSTONE.lr``, seed 0. Every function the student wrote runs here: IoU, matching, mining and
   the loss, the layers' backward passes, SGD, the augmentation;
3. evaluates the checkpoint it wrote with **the grader's** code (``detect.load_model``,
   ``predict_dataset``, ``evaluate_detections``: VOC07 11-point mAP at IoU 0.5 on the 200
   val images), so a wrong evaluation in the copy changes nothing;
4. scores it: full points at ``target`` mAP or above, none at ``floor`` or below, linear in
   between (``capstone_points``).

The target is set below what the reference code reaches with the same command (measured in
docs/instructors.md), so that a correct implementation whose floating-point sums run in
another order still gets full points; the floor is what a network that learnt nothing
useful scores. A run that fails (a blank part raises NotImplementedError, a NaN loss stops
training) scores 0 and shows the end of its output. As for ``grade``: this is not a sandbox,
the copy's code runs with the grader's rights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import MinissdError


@dataclass(frozen=True)
class Capstone:
    """The capstone's rules. Change ``iters`` and ``target`` together (docs/instructors.md)."""

    points: float = 20.0
    iters: int = 600      # about 2.5 minutes of training on a 2-core laptop
    lr: float = 0.02      # the peak rate the target was measured with (the recipe's until 2026-12-04)
    target: float = 0.30  # full points from here: 0.86 of the reference's 0.347 (docs/instructors.md)
    floor: float = 0.05   # no points at or below this
    n_train: int = 2000   # tiny-voc's first 2000 training images
    n_val: int = 200
    seed: int = 0


CAPSTONE = Capstone()


class CapstoneError(MinissdError, RuntimeError):
    """The capstone could not be run (not a student's failure: a missing folder, bad rules)."""


def capstone_points(mAP: float, rules: Capstone = CAPSTONE) -> float:
    """Points for a val mAP: 0 at ``floor`` or below, all at ``target`` or above, linear between."""
    if not rules.floor < rules.target:
        raise CapstoneError(f"target {rules.target} must be above floor {rules.floor}")
    share = (mAP - rules.floor) / (rules.target - rules.floor)
    return round(rules.points * min(max(share, 0.0), 1.0), 1)


def capstone_data(data_dir, rules: Capstone = CAPSTONE) -> Path:
    """The tiny-voc subset the capstone trains and validates on (written once, then reused)."""
    from ..data import make_tiny_voc

    root = Path(data_dir) / f"tiny-voc-capstone-{rules.n_train}-{rules.n_val}"
    return make_tiny_voc(root, n_train=rules.n_train, n_val=rules.n_val)


def train_command(data_root, out, rules: Capstone = CAPSTONE) -> list:
    """The copy's training command: the tiny-voc recipe on the subset at the rules' length and
    learning rate, validation at the end only."""
    return [sys.executable, "-m", "minissd.train", "--data", f"voc:{data_root}", "--iters", str(rules.iters),
            "--lr", str(rules.lr), "--seed", str(rules.seed), "--eval-every", "0", "--out", str(out)]


def evaluate_checkpoint(path, data_root, rules: Capstone = CAPSTONE) -> float:
    """The val mAP of a checkpoint, computed by this (the grader's) minissd."""
    from ..checkpoint import read_meta
    from ..data import VOCDataset
    from ..detect import load_model, predict_dataset
    from ..evaluate import evaluate_detections

    iteration = read_meta(path).get("iteration")
    if iteration != rules.iters:
        raise CapstoneError(f"{path}: trained {iteration} iterations, the capstone trains {rules.iters}")
    model, classes = load_model(path)
    val = VOCDataset(data_root, "val")
    if list(val.classes) != list(classes):
        raise CapstoneError(f"{path}: classes {classes}, but the capstone's data has {list(val.classes)}")
    detections, ground_truth = predict_dataset(model, val)
    return evaluate_detections(detections, ground_truth, class_names=classes)["mAP"]


def _run_training(command, cwd, env, timeout, echo) -> tuple:
    """Run the copy's training; return (the end of its output, exit status or None on timeout).

    The output is passed on to ``echo`` (a text stream, or None) as it comes, progress bar
    included, and its last 20,000 characters are kept. The run has its own process group, so
    a timeout also stops the step processes it started.
    """
    proc = subprocess.Popen(command, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    timed_out = threading.Event()

    def stop():
        timed_out.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # it ended meanwhile
            pass

    timer = threading.Timer(timeout, stop)
    timer.start()
    tail = ""
    try:
        for chunk in iter(lambda: proc.stdout.read(256), ""):
            if echo is not None:
                echo.write(chunk)
                echo.flush()
            tail = (tail + chunk)[-20_000:]
        proc.wait()
    finally:
        timer.cancel()
    return tail, None if timed_out.is_set() else proc.returncode


def run_capstone(copy, out, data_dir, rules: Capstone = CAPSTONE, timeout: float = 3600.0,
                 echo=None) -> dict:
    """Train in ``copy``, evaluate here, score; returns the result (also what ``--json`` writes).

    - echo: a text stream that receives the training's output as it runs (the CLI: stdout).

    The result: name, score, max_score, mAP (None when training failed), the rules, seconds,
    and output: the lines a student reads (the end of the training log when it failed).
    """
    copy, out = Path(copy).resolve(), Path(out).resolve()
    if not (copy / "minissd").is_dir():
        raise CapstoneError(f"{copy}: no minissd/ package in it (give the student's copy)")
    data_root = capstone_data(data_dir, rules)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(copy)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    env.pop("MINISSD_CHECKPOINT", None)
    log, status = _run_training(train_command(data_root, out, rules), copy, env, timeout, echo)
    failed = status != 0
    why = (f"training did not finish in {timeout:g} s" if status is None
           else f"training exited with status {status}")
    mAP, lines = None, []
    checkpoint = out / "checkpoint.npz"
    if not failed:
        try:
            mAP = evaluate_checkpoint(checkpoint, data_root, rules)
        except (MinissdError, OSError, ValueError) as err:
            failed, why = True, f"its checkpoint could not be evaluated: {err}"
    seconds = time.perf_counter() - start
    if failed:
        tail = [line for line in log.replace("\r", "\n").splitlines() if line.strip()][-15:]
        lines = [f"capstone: 0 / {rules.points:g} points: {why}. The end of its output:", *tail]
        score = 0.0
    else:
        score = capstone_points(mAP, rules)
        lines = [f"capstone: {score:g} / {rules.points:g} points: val mAP {mAP:.4f} after {rules.iters} "
                 f"iterations (full points from {rules.target:g}, none at {rules.floor:g}), {seconds:.0f} s"]
    return {"name": "capstone", "score": score, "max_score": rules.points, "mAP": mAP,
            "rules": asdict(rules), "seconds": round(seconds, 1), "output": "\n".join(lines)}


def write_result(path, result) -> None:
    """Write the result as JSON (Gradescope reads score, max_score and output)."""
    Path(path).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
