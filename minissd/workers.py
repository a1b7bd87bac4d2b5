"""Several cores for the training step: worker processes, each running ``step.forward_backward``.

The only way minissd's CPU code uses several cores. Every layer stays plain single-threaded
code; ``Workers`` gives each of n processes a share of the batch and combines what they
return into exactly the batch's loss and gradient:

    main process                                  worker r (one per share of the batch)
    ------------                                  -------------------------------------
    images -> shared image buffer
    send (share r, its ground truth)      --->    buffers := the model's running statistics
                                                  step.forward_backward on its share:
                                                  loss_r (divided by its own N_r), grad_r
                                          <---    (loss_l_r, loss_c_r, N_r, stage times)
    N = sum N_r;  loss = sum (N_r / N) loss_r
    grad = sum (N_r / N) grad_r
    running statistics = sum (k_r / K) running_r  (k_r of the batch's K BatchNorm groups)
    clip, optimizer step on the shared weights --> (every worker sees the new weights at once)

Why this is the whole batch's gradient: the multibox loss is a sum over images divided by the
batch's N (mining is per image), so loss = sum_r N_r loss_r / N, and the gradient follows.
What would break it is BatchNorm, whose statistics mix the images they are computed over; so
a share is always a whole number of BatchNorm groups (``nn.BatchNorm2d.group``), and the
running averages, which are linear, combine with the weights k_r / K. One process or eight,
the numbers are the same (to float rounding): the worker count is a speed setting only.

Memory. The weights live in one flat float32 array in shared memory (a ``RawArray``): the
main model's and every worker's ``Parameter.data`` are views of it, so the optimizer's
in-place update in the main process is the update of every worker. Each worker writes its
gradients and its BatchNorm buffers into its own shared flat arrays and reads its images from
one shared (B, 3, S, S) buffer: only the ground truth and a few numbers travel through pipes.

Threads. Each worker's libraries are single-threaded (OpenBLAS, Numba: the environment
variables below are set when it starts), one process per core. The main process leaves them
as they come: while the workers run the step it only waits (and the data loader's threads
prepare the next batch); evaluation and notebooks run there.

Faults. A worker that dies is noticed within about a second, one that is stopped (kill -STOP)
or stuck after ``timeout`` seconds: ``WorkerError`` names it, and the workers are ended.
Workers ignore Ctrl-C: the training loop's own handler stops between iterations.
"""

import dataclasses
import math
import multiprocessing as mp
import os
import signal
import time
import traceback
from multiprocessing.connection import wait

import numpy as np

from .errors import ConfigError
from .nn import BatchNorm2d, set_batchnorm_group
from .step import LossConfig, forward_backward

SINGLE_THREADED = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                   "NUMBA_NUM_THREADS": "1"}  # the environment a worker starts with
POLL_SECONDS = 0.5  # how often a waiting main process checks that every worker is alive


class WorkerError(RuntimeError):
    """A worker process died, failed, or answered nothing within the timeout (a bug or a fault,
    not bad input: hence not a MinissdError)."""


def flat_views(flat, arrays):
    """Views of the flat array ``flat``, one per array of ``arrays``, with their shapes."""
    views, offset = [], 0
    for a in arrays:
        views.append(flat[offset:offset + a.size].reshape(a.shape))
        offset += a.size
    return views


def buffer_slots(model):
    """[(module, name)] of every buffer (BatchNorm's running statistics), in named_buffers order."""
    return [(m, name) for m in model.modules() for name in getattr(m, "_buffers", ())]


def share_bounds(B, n, unit):
    """Image ranges [(lo, hi)] for at most n workers, each a whole number of ``unit`` images.

    - B: the batch, a multiple of unit; unit: images per BatchNorm group (1 without BatchNorm)
    - the K = B / unit groups are dealt out as evenly as possible; a worker left without a
      group gets no share (a batch of 1 group runs in one worker)
    """
    K = B // unit
    cuts = [K * r // min(n, K) for r in range(min(n, K) + 1)]
    return [(unit * a, unit * b) for a, b in zip(cuts[:-1], cuts[1:])]


class Workers:
    """``n`` worker processes running ``step.forward_backward`` on shares of each batch.

    - model: the main process's SSD (float32); its ``Parameter.data`` and buffers become views
      of shared memory (values kept), its ``.grad`` receive the batch's gradient
    - n: worker processes (>= 1)
    - max_batch: the largest batch ``forward_backward`` will get (it sizes the image buffer)
    - bn_group: images per BatchNorm normalisation (None: the whole batch, which then runs in
      one worker); set on the model's BatchNorm2d layers and on every worker's
    - timeout: seconds a worker may take to start or to do one share of a step before it is
      declared stopped or stuck (WorkerError); a dead worker is noticed at once
    Use it as a context manager, or call ``close()``.
    """

    def __init__(self, model, n, max_batch, bn_group, timeout=600.0):
        if int(n) < 1:
            raise ValueError(f"Workers: n must be >= 1, got {n}")
        self.model, self.n, self.timeout = model, int(n), float(timeout)
        self.params = list(model.parameters())
        if any(p.data.dtype != np.float32 for p in self.params):
            raise ValueError("Workers: the model must be float32 (the shared weights are float32)")
        set_batchnorm_group(model, bn_group)
        self.bn_group = bn_group or None
        self._has_bn = any(isinstance(m, BatchNorm2d) for m in model.modules())
        ctx = mp.get_context("spawn")  # a fresh interpreter: nothing copied in a half-held state
        # weights: one shared flat array; the main model's arrays become views of it
        size = sum(p.data.size for p in self.params)
        self._weights = ctx.RawArray("f", size)
        arrays = [p.data for p in self.params]
        self._grad = np.zeros(size, dtype=np.float32)  # the combined gradient; every p.grad is a view
        for p, w, g in zip(self.params, flat_views(np.frombuffer(self._weights, np.float32), arrays),
                           flat_views(self._grad, arrays)):
            w[...] = p.data
            p.data, p.grad = w, g
        self._grads = [ctx.RawArray("f", size) for _ in range(self.n)]
        # buffers: the main model's in one shared array too; each worker has its own copy
        slots = buffer_slots(model)
        values = [np.asarray(getattr(m, name), dtype=np.float32) for m, name in slots]
        nbuf = max(sum(v.size for v in values), 1)
        self._buffers = ctx.RawArray("f", nbuf)
        for (m, name), view in zip(slots, flat_views(np.frombuffer(self._buffers, np.float32), values)):
            view[...] = getattr(m, name)
            setattr(m, name, view)
        self._worker_buffers = [ctx.RawArray("f", nbuf) for _ in range(self.n)]
        S = model.config.input_size
        self._image_shape = (int(max_batch), 3, S, S)
        self._images = ctx.RawArray("f", int(np.prod(self._image_shape)))
        spec = dict(config=model.config.to_dict(), num_classes=model.num_classes, bn_group=self.bn_group,
                    image_shape=self._image_shape)
        self._conns, self._procs = [], []
        saved = {k: os.environ.get(k) for k in SINGLE_THREADED}
        os.environ.update(SINGLE_THREADED)  # what the spawned interpreters start with
        try:
            for r in range(self.n):
                here, there = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, name=f"minissd-worker-{r}", daemon=True,
                                   args=(there, spec, self._weights, self._grads[r], self._buffers,
                                         self._worker_buffers[r], self._images))
                proc.start()
                there.close()
                self._conns.append(here)
                self._procs.append(proc)
        finally:
            for k, v in saved.items():
                if v is None:
                    del os.environ[k]
                else:
                    os.environ[k] = v
        self._collect(range(self.n), "start")  # "ready": each worker has built its model

    def forward_backward(self, images, gt_boxes, gt_labels, loss_cfg, times=None):
        """``step.forward_backward(model, ...)`` for the batch, shared among the workers.

        - images (B, 3, S, S) float32, B <= max_batch and a multiple of bn_group;
          gt_boxes, gt_labels: B arrays each; loss_cfg: a ``step.LossConfig``
        - times: optional dict; the slowest worker's stage seconds, scaled to this call's
          wall time, are ADDED under "match", "forward", "loss", "backward"
        - returns (loss_l, loss_c) of the whole batch; every ``.grad`` holds its gradient and
          the model's buffers its BatchNorm running statistics. A non-finite loss in any
          share returns NaN and changes neither the gradients (zero) nor the buffers.
        """
        t0 = time.perf_counter()
        if not self._procs:
            raise WorkerError("Workers.forward_backward: the workers are closed")
        B = len(images)
        if B > self._image_shape[0]:
            raise ValueError(f"Workers.forward_backward: batch of {B} images, but the shared buffer "
                             f"holds {self._image_shape[0]} (max_batch)")
        unit = (self.bn_group or B) if self._has_bn else 1  # images that must stay in one share
        if B % unit:
            raise ConfigError(f"BatchNorm group: a batch of {B} images cannot be cut into groups of "
                              f"{unit}; the batch size must be a multiple of the group")
        np.frombuffer(self._images, np.float32).reshape(self._image_shape)[:B] = images
        shares = share_bounds(B, self.n, unit)
        cfg = dataclasses.astuple(loss_cfg)  # every field, in order: the worker rebuilds LossConfig(*cfg)
        for r, (lo, hi) in enumerate(shares):
            self._send(r, ("step", lo, hi, list(gt_boxes[lo:hi]), list(gt_labels[lo:hi]), cfg))
        results = self._collect(range(len(shares)), "step")
        losses_l, losses_c, counts, stage_times = zip(*results)
        if times is not None:
            slowest = max(stage_times, key=lambda t: sum(t.values()))
            scale = (time.perf_counter() - t0) / max(sum(slowest.values()), 1e-12)
            for k, v in slowest.items():
                times[k] = times.get(k, 0.0) + v * scale
        if not all(math.isfinite(x) for x in losses_l + losses_c):
            self._grad[...] = 0
            return math.nan, math.nan
        # the batch from its shares: loss and gradient weighted N_r / N, buffers k_r / K
        N = max(sum(counts), 1)
        weights = [c / N for c in counts]
        np.multiply(np.frombuffer(self._grads[0], np.float32), weights[0], out=self._grad)  # = every p.grad
        for g, w in zip(self._grads[1:len(shares)], weights[1:]):
            self._grad += w * np.frombuffer(g, np.float32)
        buffers = np.frombuffer(self._buffers, np.float32)
        buffers[...] = sum((hi - lo) / B * np.frombuffer(self._worker_buffers[r], np.float32)
                           for r, (lo, hi) in enumerate(shares))
        return (sum(w * x for w, x in zip(weights, losses_l)),
                sum(w * x for w, x in zip(weights, losses_c)))

    def sync_buffers(self):
        """Make the model's buffers the workers' combined running statistics.

        ``forward_backward`` combines them after every step already, so the model is always
        complete; this is here so that a loop can call it before a checkpoint or an
        evaluation whatever runs its step (the GPU's ``to_host`` is the call that matters)."""

    def close(self):
        """End the workers (idempotent); a stopped or stuck one is killed. The weights stay
        in the main model."""
        for r in range(len(self._procs)):
            try:
                self._conns[r].send(("close",))
            except (BrokenPipeError, OSError):
                pass
        for conn, proc in zip(self._conns, self._procs):
            proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()  # SIGKILL: a stopped process ignores SIGTERM until continued
                proc.join(timeout=5)
            conn.close()
        self._procs, self._conns = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- talking to the workers ----------------------------------------------------------

    def _send(self, r, request):
        try:
            self._conns[r].send(request)
        except (BrokenPipeError, OSError):
            self._fail(r, f"died (exit code {self._procs[r].exitcode})")

    def _collect(self, ranks, what):
        """The answers of workers ``ranks``, in order; WorkerError on death, failure or timeout."""
        pending, answers = set(ranks), {}
        deadline = time.monotonic() + self.timeout
        while pending:
            ready = wait([self._conns[r] for r in pending], timeout=POLL_SECONDS)
            for r in sorted(pending):
                if self._conns[r] not in ready:
                    continue
                try:
                    kind, payload = self._conns[r].recv()
                except (EOFError, OSError):
                    self._procs[r].join(timeout=1)
                    self._fail(r, f"died (exit code {self._procs[r].exitcode})")
                if kind == "error":
                    self._fail(r, f"failed:\n{payload}")
                answers[r] = payload
                pending.discard(r)
            for r in pending:
                if not self._procs[r].is_alive():
                    self._fail(r, f"died (exit code {self._procs[r].exitcode})")
            if pending and time.monotonic() > deadline:
                r = min(pending)
                self._fail(r, f"sent nothing for {self.timeout:.0f} s ({what}): stopped (kill -STOP) "
                              f"or stuck; raise the timeout if a step really takes that long")
        return [answers[r] for r in ranks]

    def _fail(self, r, what):
        pid = self._procs[r].pid
        self.close()
        raise WorkerError(f"training worker {r} (pid {pid}) {what}")


def _worker_main(conn, spec, weights, grads, main_buffers, buffers, images):
    """A worker process: build the model on the shared arrays, then answer requests."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    try:
        from .model.ssd import SSD, SSDConfig
        model = SSD(SSDConfig.from_dict(spec["config"]), spec["num_classes"]).train()
        set_batchnorm_group(model, spec["bn_group"])
        params = list(model.parameters())
        arrays = [p.data for p in params]
        for p, w, g in zip(params, flat_views(np.frombuffer(weights, np.float32), arrays),
                           flat_views(np.frombuffer(grads, np.float32), arrays)):
            p.data, p.grad = w, g  # the weights are the main process's; the gradients are ours
        slots = buffer_slots(model)
        own = np.frombuffer(buffers, np.float32)
        for (m, name), view in zip(slots, flat_views(own, [getattr(m, name) for m, name in slots])):
            setattr(m, name, view)
        main = np.frombuffer(main_buffers, np.float32)
        image_buffer = np.frombuffer(images, np.float32).reshape(spec["image_shape"])
        conn.send(("ok", "ready"))
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the main process is gone
        if request[0] == "close":
            return
        try:
            _, lo, hi, gt_boxes, gt_labels, cfg = request
            own[...] = main  # start from the model's running statistics
            times, stats = {}, {}
            loss_l, loss_c = forward_backward(model, image_buffer[lo:hi], gt_boxes, gt_labels,
                                              LossConfig(*cfg), times=times, stats=stats)
            conn.send(("ok", (loss_l, loss_c, stats.get("positives", 0), times)))
        except Exception:
            conn.send(("error", traceback.format_exc()))
