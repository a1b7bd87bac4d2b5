"""Data parallelism with processes: each worker process runs SSD's whole step on its share.

Why processes and not threads. ``nn.DataParallel`` gives each of two threads half of the
batch, but the threads of one Python process share one interpreter lock (the GIL): every
layer call, every small NumPy operation and every return from a BLAS or Numba call that
released the lock has to take it back, and a thread that wants it waits for the other.
Measured on the 2-core machine (docs/benchmarks.md): a single-threaded process runs the
tiny SSD's step at about 49 images/s per core, so two cores could do about 95; the two
threads of ``DataParallel`` reached 61. Processes share no lock.

How the work is split (``StepWorkers``):

    main process                                  worker r (one per share of the batch)
    ------------                                  -------------------------------------
    images -> shared image buffer
    send (share r, its ground truth)      --->    match its images' ground truth
                                                  forward, multibox loss over its share (/ N_r)
                                                  backward: gradients into its grad buffer
                                          <---    (loss_l_r, loss_c_r, N_r, stage times)
    N = sum N_r; loss = sum N_r loss_r / N
    grad = sum (N_r / N) grad_r   (= the whole batch's gradient: the loss is a sum over
                                   images divided by N, and mining is per image)
    clip, SGD on the shared weights  ---->    (every worker sees the new weights at once)

Memory. The weights live in one flat float32 array in shared memory (a ``RawArray``): the
main model's and every worker's ``Parameter.data`` are views of it, so the optimizer's
in-place update in the main process is the update of every worker. Each worker writes its
gradients into its own shared flat array, and reads its images from one shared (B, 3, S, S)
buffer: only the ground truth and a few numbers travel through the pipes.

BatchNorm normalises each share with its own statistics, as ``DataParallel`` does ("ghost
batch norm"). Each worker keeps its own running statistics; ``pull_buffers`` copies their
mean into the main model (running averages are linear, so the mean of the workers' averages
is the average of the shares' means). Workers ignore Ctrl-C: the training loop's own handler
stops cleanly between iterations and ``close`` ends them.
"""

import math
import multiprocessing as mp
import signal
import time
import traceback

import numpy as np

from .loss import multibox_loss
from .matching import match_batch


def share_step(model, images, gt_boxes, gt_labels, loss_args):
    """Match, forward, loss and backward for one share of a batch, in this thread.

    - model: an SSD in training mode, whose ``.grad`` the backward ADDS into (zero it first)
    - images (b, 3, S, S); gt_boxes, gt_labels: b arrays each (corner form; labels 1..C)
    - loss_args: dict of iou_threshold, neg_pos_ratio, alpha
    - returns (loss_l, loss_c, num_pos, times): the share's losses normalised by its own
      max(num_pos, 1); times: seconds of match, forward, loss, backward. A non-finite output
      or loss returns NaN losses before backward: no gradient is written.
    """
    times, t = {}, time.perf_counter()

    def lap(name):
        nonlocal t
        now = time.perf_counter()
        times[name], t = now - t, now

    loc_t, conf_t = match_batch(gt_boxes, gt_labels, model.priors, iou_threshold=loss_args["iou_threshold"])
    lap("match")
    loc_p, conf_p = model.forward(images)  # (b, P, 4), (b, P, C+1)
    lap("forward")
    if not (np.isfinite(loc_p).all() and np.isfinite(conf_p).all()):
        return math.nan, math.nan, 0, times
    loss_l, loss_c, dloc, dconf = multibox_loss(loc_p, conf_p, loc_t, conf_t,
                                                loss_args["neg_pos_ratio"], loss_args["alpha"])
    lap("loss")
    if not (math.isfinite(loss_l) and math.isfinite(loss_c)):
        return loss_l, loss_c, 0, times
    model.backward(dloc, dconf)
    lap("backward")
    return loss_l, loss_c, int((conf_t > 0).sum()), times


def flat_views(flat, arrays):
    """Views of the flat array ``flat``, one per array of ``arrays``, with their shapes."""
    views, offset = [], 0
    for a in arrays:
        views.append(flat[offset:offset + a.size].reshape(a.shape))
        offset += a.size
    return views


class StepWorkers:
    """``n`` worker processes that run ``share_step`` on shares of every batch (module docstring).

    - model: the main process's SSD; its ``Parameter.data`` become views of shared memory
      (values kept), its ``.grad`` receives the combined gradient of each ``step``
    - n: worker processes (>= 2; fewer shares than workers when a batch is smaller)
    - max_batch: the largest batch ``step`` will get (it sizes the shared image buffer)
    - loss_args: dict of iou_threshold, neg_pos_ratio, alpha
    """

    def __init__(self, model, n, max_batch, loss_args):
        if int(n) < 2:
            raise ValueError(f"StepWorkers: n must be >= 2 (one share needs no worker), got {n}")
        self.model, self.n, self.loss_args = model, int(n), dict(loss_args)
        self.params = list(model.parameters())
        if any(p.data.dtype != np.float32 for p in self.params):
            raise ValueError("StepWorkers: the model must be float32 (the shared weights are float32)")
        size = sum(p.data.size for p in self.params)
        ctx = mp.get_context("spawn")  # fork would copy the threads' locks in whatever state
        # weights: one shared flat array; the main model's arrays become views of it
        self._weights = ctx.RawArray("f", size)
        weights = np.frombuffer(self._weights, dtype=np.float32)
        # gradients: the main model's .grad become views of one flat array too, which step
        # fills in place from the workers' shared flat gradients
        self._grad = np.zeros(size, dtype=np.float32)
        arrays = [p.data for p in self.params]
        for p, w_view, g_view in zip(self.params, flat_views(weights, arrays), flat_views(self._grad, arrays)):
            w_view[...] = p.data
            p.data, p.grad = w_view, g_view
        self._grads = [ctx.RawArray("f", size) for _ in range(self.n)]
        self._worker_grads = [np.frombuffer(g, dtype=np.float32) for g in self._grads]
        S = model.config.input_size
        self._image_shape = (int(max_batch), 3, S, S)
        self._images = ctx.RawArray("f", int(np.prod(self._image_shape)))
        spec = dict(config=model.config.to_dict(), num_classes=model.num_classes,
                    buffers={name: b.copy() for name, b in model.named_buffers()},
                    image_shape=self._image_shape, loss_args=self.loss_args)
        self._conns, self._procs = [], []
        for r in range(self.n):
            here, there = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, name=f"minissd-step-{r}", daemon=True,
                               args=(there, spec, self._weights, self._grads[r], self._images))
            proc.start()
            there.close()
            self._conns.append(here)
            self._procs.append(proc)
        for r in range(self.n):
            self._receive(r)  # "ready": the worker has built its model

    def step(self, images, gt_boxes, gt_labels):
        """Match + forward + loss + backward of the whole batch, shared among the workers.

        - images (B, 3, S, S) float32, B <= max_batch; gt_boxes, gt_labels: B arrays each
        - returns (loss_l, loss_c, times) as one process would compute them for the batch
          (normalised by the batch's positives N), and sets every parameter's ``.grad`` to
          the batch's gradient. times: the slowest worker's stage times (match, forward,
          loss, backward), scaled to add up to this call's wall time.
        """
        t0 = time.perf_counter()
        B = len(images)
        if B > self._image_shape[0]:
            raise ValueError(f"StepWorkers.step: batch of {B} images, but the shared buffer holds "
                             f"{self._image_shape[0]} (max_batch)")
        buffer = np.frombuffer(self._images, dtype=np.float32).reshape(self._image_shape)
        buffer[:B] = images
        n = min(self.n, B)
        bounds = [B * r // n for r in range(n + 1)]  # shares as even as possible
        for r in range(n):
            lo, hi = bounds[r], bounds[r + 1]
            self._conns[r].send(("step", lo, hi, list(gt_boxes[lo:hi]), list(gt_labels[lo:hi])))
        results = [self._receive(r) for r in range(n)]
        losses_l, losses_c, counts, stage_times = zip(*results)
        wall = time.perf_counter() - t0
        slowest = max(stage_times, key=lambda t: sum(t.values()))
        scale = wall / max(sum(slowest.values()), 1e-12)
        times = {k: v * scale for k, v in slowest.items()}
        if not all(math.isfinite(x) for x in losses_l + losses_c):
            return math.nan, math.nan, times
        # the batch's loss and gradient from the shares': weights N_r / N
        N = max(sum(counts), 1)
        weights = [c / N for c in counts]
        np.multiply(self._worker_grads[0], weights[0], out=self._grad)  # = every p.grad
        for g, w in zip(self._worker_grads[1:n], weights[1:]):
            self._grad += w * g
        loss_l = sum(w * x for w, x in zip(weights, losses_l))
        loss_c = sum(w * x for w, x in zip(weights, losses_c))
        return loss_l, loss_c, times

    def pull_buffers(self):
        """The main model's buffers (BatchNorm running statistics) := the workers' mean."""
        for r in range(self.n):
            self._conns[r].send(("buffers",))
        per_worker = [self._receive(r) for r in range(self.n)]
        for name, b in self.model.named_buffers():
            b[...] = sum(w[name] for w in per_worker) / self.n

    def close(self):
        """End the workers (idempotent). The weights stay in the main model."""
        for conn, proc in zip(self._conns, self._procs):
            if proc.is_alive():
                try:
                    conn.send(("close",))
                except (BrokenPipeError, OSError):
                    pass
        for conn, proc in zip(self._conns, self._procs):
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
            conn.close()
        self._procs, self._conns = [], []

    def _receive(self, r):
        try:
            kind, payload = self._conns[r].recv()
        except (EOFError, OSError):
            code = self._procs[r].exitcode if r < len(self._procs) else None
            raise RuntimeError(f"training worker {r} died (exit code {code})") from None
        if kind == "error":
            raise RuntimeError(f"training worker {r} failed:\n{payload}")
        return payload


def _worker_main(conn, spec, weights, grads, images):
    """A worker process: build the model on the shared weights, then answer requests."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    try:
        from .model.ssd import SSD, SSDConfig
        from .nn import threads
        import numba
        threads.set_num_threads(1)  # one process per core: no threads inside
        numba.set_num_threads(1)
        model = SSD(SSDConfig.from_dict(spec["config"]), spec["num_classes"]).train()
        params = list(model.parameters())
        arrays = [p.data for p in params]
        w = np.frombuffer(weights, dtype=np.float32)
        g = np.frombuffer(grads, dtype=np.float32)
        for p, wv, gv in zip(params, flat_views(w, arrays), flat_views(g, arrays)):
            p.data, p.grad = wv, gv
        model.load_state_dict({**{n: p.data for n, p in model.named_parameters()}, **spec["buffers"]})
        buffer = np.frombuffer(images, dtype=np.float32).reshape(spec["image_shape"])
        conn.send(("ok", "ready"))
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the main process is gone
        try:
            if request[0] == "close":
                return
            if request[0] == "buffers":
                conn.send(("ok", {name: b.copy() for name, b in model.named_buffers()}))
                continue
            _, lo, hi, gt_boxes, gt_labels = request
            g[...] = 0
            result = share_step(model, buffer[lo:hi], gt_boxes, gt_labels, spec["loss_args"])
            conn.send(("ok", result))
        except Exception:
            conn.send(("error", traceback.format_exc()))
