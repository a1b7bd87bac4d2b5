"""One whole SSD training step on the GPU: ``CudaTrainStep``, the twin of train.py's loop body.

train.py's step on the CPU is: match the ground truth to the default boxes, forward, multibox
loss with hard negative mining, zero the gradients, backward, clip the global gradient norm,
SGD. ``CudaTrainStep`` does the same steps, in the same order and with the same formulas,
with every array on the GPU:

    images, ground truth  --(host -> GPU, each step)-->  match_on_device    loc_t, conf_t
    forward: the stages' Conv2dGPU / BatchNorm2dGPU / ReLUGPU / MaxPool2dGPU, L2NormGPU,
             MultiBoxHeadGPU                                               loc_p, conf_p
    multibox_loss_on_device (mining included)                    totals, dloc, dconf
    [N, sum_l, sum_c]  --(GPU -> host: 3 numbers)-->  loss_l, loss_c
    backward through the heads and stages        gradients into one flat buffer
    clip_grad_norm, sgd_update                   one launch each over all parameters

What crosses between host and GPU:

- once, at construction: every parameter (into one flat float32 buffer, each layer's weight
  a view of it), BatchNorm's running statistics, the momentum buffers, the default boxes;
- every step: the images (B, 3, S, S) float32 and the padded ground truth (a few hundred
  bytes) to the GPU, three float64 totals back (for the two loss values);
- ``to_host()``: everything back into the CPU model (for checkpoints, evaluation, detect).

Deterministic: no kernel adds floats atomically, so two runs from the same state give the
same bits. Numerically it is the CPU algorithm in float32, with sums in float64 where the CPU
sums in float64 (BatchNorm statistics, the losses); the order of additions differs (trees
instead of loops), so the two agree to float32 rounding, not bit for bit.
"""

import math
import time

import numpy as np

from minissd import matching as cpu_matching
from minissd.boxes import VARIANCES
from minissd.cuda import launch_1d, require, to_device
from minissd.cuda.activation import ReLUGPU
from minissd.cuda.conv import Conv2dGPU, add_kernel, fill_kernel
from minissd.cuda.heads import MultiBoxHeadGPU
from minissd.cuda.loss import multibox_loss_on_device
from minissd.cuda.matching import _pad, match_on_device
from minissd.cuda.norm import BatchNorm2dGPU, L2NormGPU
from minissd.cuda.optim import clip_grad_norm, sgd_update
from minissd.cuda.pool import MaxPool2dGPU
from minissd.nn import BatchNorm2d, Conv2d, MaxPool2d, ReLU

cuda = require()


class CudaTrainStep:
    """SSD's training step (match, forward, loss, backward, clip, SGD) on the GPU.

    - model: a CPU ``minissd.model.SSD`` (any ``SSDConfig``): its parameters, BatchNorm
      running statistics and default boxes are copied to the GPU once, here. The model is
      not changed until ``to_host()``; it must stay in training mode (``model.train()``)
      while steps run, as on the CPU (BatchNorm reads the flag).
    - lr, momentum, weight_decay, nesterov: SGD's (``nn.SGD``, PyTorch's rule); the
      learning rate can be changed at every call.
    - grad_clip: the global gradient norm is clipped to this when larger (0: no clipping).
    - iou_threshold: matching's (0.5); neg_pos_ratio (3), alpha (1): the loss's.
    - momentum_buffers: SGD's buffers to start from (``nn.SGD.buffers``: one array or None
      per parameter, in ``model.parameters()`` order), e.g. from a resumed checkpoint;
      None: zeros (the same as the CPU's first step, which starts the buffer at g).

    ``step(images, gt_boxes_list, gt_labels_list, lr=None) -> (loss_l, loss_c, times)``:
    one step; see ``__call__``. ``to_host(optimizer=None)`` copies the state back.
    """

    def __init__(self, model, lr, momentum=0.9, weight_decay=5e-4, grad_clip=0.0, iou_threshold=0.5,
                 neg_pos_ratio=3, alpha=1.0, nesterov=False, momentum_buffers=None):
        if nesterov and momentum <= 0:
            raise ValueError("CudaTrainStep: nesterov needs momentum > 0")
        self.model = model
        self.lr, self.momentum, self.weight_decay, self.nesterov = float(lr), float(momentum), \
            float(weight_decay), bool(nesterov)
        self.grad_clip, self.iou_threshold = float(grad_clip), cpu_matching._check_threshold(iou_threshold)
        self.neg_pos_ratio, self.alpha = float(neg_pos_ratio), float(alpha)
        self.steps = 0

        # ---- every parameter in one flat buffer; gradients and momentum laid out alike ----
        self.params = list(model.parameters())
        sizes = [p.data.size for p in self.params]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)  # parameter i: [o_i, o_i+1)
        self._index = {id(p): i for i, p in enumerate(self.params)}
        self.data = cuda.to_device(np.concatenate([p.data.ravel() for p in self.params]).astype(np.float32))
        self.grad = cuda.device_array(self.data.shape[0], dtype=np.float32)
        buffers = momentum_buffers or [None] * len(self.params)
        if len(buffers) != len(self.params):
            raise ValueError(f"momentum_buffers: {len(buffers)} buffers for {len(self.params)} parameters")
        self._has_buffer = [self.momentum != 0 and b is not None for b in buffers]  # SGD's "not None"
        self.buf = cuda.to_device(np.concatenate(
            [np.zeros(p.data.size, np.float32) if b is None else np.asarray(b, np.float32).ravel()
             for p, b in zip(self.params, buffers)]))

        # ---- the GPU twin of every layer, on views of the flat buffers ---------------------
        self.stages = [[self._twin(layer) for layer in stage] for stage in model.stages]
        self.l2norm = None
        if model.l2norm is not None:
            w = model.l2norm.weight
            self.l2norm = L2NormGPU(model.l2norm, weight=self._view(self.data, w), weight_grad=self._view(self.grad, w))
        self.heads = MultiBoxHeadGPU(model.heads, [self._twin(conv) for conv in model.heads.convs])

        # ---- the default boxes, for matching: centre form (P, 4) and corners (4, P) -------
        priors, corners_t = cpu_matching._prepare_priors(model.priors)
        self.priors_d, self.corners_t_d = to_device(priors, np.float32), to_device(corners_t, np.float32)

    def _view(self, flat, param):
        """The part of a flat device buffer that belongs to ``param``, in its shape."""
        i = self._index[id(param)]
        return flat[self._offsets[i]:self._offsets[i + 1]].reshape(param.data.shape)

    def _twin(self, layer):
        """The GPU layer for a CPU layer, its parameters and gradients views of the flat buffers."""
        if isinstance(layer, Conv2d):
            has_bias = layer.bias is not None
            return Conv2dGPU(layer, weight=self._view(self.data, layer.weight),
                             bias=self._view(self.data, layer.bias) if has_bias else None,
                             weight_grad=self._view(self.grad, layer.weight),
                             bias_grad=self._view(self.grad, layer.bias) if has_bias else None)
        if isinstance(layer, BatchNorm2d):
            return BatchNorm2dGPU(layer, weight=self._view(self.data, layer.weight),
                                  bias=self._view(self.data, layer.bias),
                                  weight_grad=self._view(self.grad, layer.weight),
                                  bias_grad=self._view(self.grad, layer.bias))
        if isinstance(layer, ReLU):
            return ReLUGPU()
        if isinstance(layer, MaxPool2d):
            return MaxPool2dGPU(layer)
        raise ValueError(f"CudaTrainStep: no GPU twin for layer {type(layer).__name__}")

    # ---- the step -----------------------------------------------------------------------

    def match(self, gt_boxes_list, gt_labels_list):
        """Training targets on the GPU: loc_t (B, P, 4) float32, conf_t (B, P) int64 (device)."""
        if len(gt_boxes_list) != len(gt_labels_list):
            raise ValueError(f"gt_labels_list: {len(gt_labels_list)} images, but gt_boxes_list has "
                             f"{len(gt_boxes_list)}")
        checked = cpu_matching._check_gt_batch(gt_boxes_list, gt_labels_list, self.model.num_classes)
        boxes, labels, num_gt = _pad(checked)  # (B, G, 4), (B, G), (B,): the ground truth that crosses
        return match_on_device(to_device(boxes, np.float32), to_device(labels, np.int64),
                               to_device(num_gt, np.int64), self.priors_d, self.corners_t_d,
                               self.iou_threshold, *VARIANCES)

    def forward(self, images):
        """SSD.forward on the GPU: images (B, 3, S, S) -> loc (B, P, 4), conf (B, P, C+1), device."""
        sources, x = [], images
        for m, stage in enumerate(self.stages):
            for layer in stage:
                x = layer.forward(x)  # (B, C_m, f_m, f_m) at the stage's end
            sources.append(self.l2norm.forward(x) if m == 0 and self.l2norm else x)
        return self.heads.forward(sources)

    def backward(self, dloc, dconf):
        """SSD.backward on the GPU: the parameters' gradients ADDED into the flat ``self.grad``."""
        source_grads = self.heads.backward(dloc, dconf)  # one (B, C_m, f_m, f_m) per map
        grad = None  # what stage m + 1 sends back into stage m's output
        for m in range(len(self.stages) - 1, -1, -1):
            g = source_grads[m]
            if m == 0 and self.l2norm:
                g = self.l2norm.backward(g)
            if grad is not None:  # stage m's output feeds both its head and stage m + 1
                add_kernel[launch_1d(g.size)](g.reshape(g.size), grad.reshape(grad.size))
            for layer in reversed(self.stages[m]):
                g = layer.backward(g)
            grad = g

    def __call__(self, images, gt_boxes_list, gt_labels_list, lr=None):
        """One training step; returns (loss_l, loss_c, times).

        - images: (B, 3, S, S) float32 NumPy (normalised, as the data loader gives them);
          gt_boxes_list, gt_labels_list: B arrays each, as for ``matching.match_batch``.
        - lr: this step's learning rate (the schedule's ``lr_at(it)``); None keeps the last.
        - returns loss_l, loss_c (Python floats, the CPU's definitions) and times, a dict of
          seconds per stage: match, forward, loss, backward, optimizer (the GPU is
          synchronised before each clock reading, so each covers its own kernels).
        When a loss is not finite, the step stops after the loss: no backward, no update
        (only BatchNorm's running statistics have moved, as on the CPU), and the caller
        sees the NaN or inf, as train.py does before it stops.
        """
        if lr is not None:
            self.lr = float(lr)
        S = self.model.config.input_size
        if images.ndim != 4 or images.shape[1:] != (3, S, S):
            raise ValueError(f"images: expected (B, 3, {S}, {S}), got {images.shape}")
        times = {}
        clock = _Clock(times)
        # 1. match every image's ground truth to the default boxes -> training targets
        loc_t, conf_t = self.match(gt_boxes_list, gt_labels_list)
        clock.lap("match")
        # 2. forward: offsets (B, P, 4) and class logits (B, P, C+1) for every default box
        loc_p, conf_p = self.forward(to_device(images, np.float32))
        clock.lap("forward")
        # 3. multibox loss with hard negative mining, and its gradient w.r.t. both outputs
        totals, dloc, dconf = multibox_loss_on_device(loc_p, conf_p, loc_t, conf_t, self.neg_pos_ratio,
                                                      self.alpha)
        num_pos, sum_l, sum_c = totals.copy_to_host()  # the only numbers that come back
        loss_l, loss_c = sum_l / max(num_pos, 1.0), sum_c / max(num_pos, 1.0)
        clock.lap("loss")
        if not (math.isfinite(loss_l) and math.isfinite(loss_c)):
            return loss_l, loss_c, times
        # 4. backward through heads, extra layers and base network into the flat gradient
        fill_kernel[launch_1d(self.grad.shape[0])](self.grad, np.float32(0.0))  # zero_grad
        self.backward(dloc, dconf)
        clock.lap("backward")
        # 5. clip the global gradient norm, then SGD over every parameter at once
        clip_grad_norm(self.grad, self.grad_clip)
        sgd_update(self.data, self.grad, self.buf, self.lr, self.momentum, self.weight_decay, self.nesterov)
        clock.lap("optimizer")
        self.steps += 1
        self._has_buffer = [self.momentum != 0] * len(self.params)  # every buffer is set now
        return loss_l, loss_c, times

    # ---- back to the CPU ----------------------------------------------------------------

    def close(self):
        """Nothing to end (``TrainStep.close`` ends its worker processes); call ``to_host`` first."""

    def to_host(self, optimizer=None):
        """Copy the GPU's state into the CPU model (in place) and return SGD's momentum buffers.

        Updates, in place: every ``Parameter.data`` of the model (the weights after the last
        step), every ``Parameter.grad`` (the last step's gradient, after clipping), and
        BatchNorm's ``running_mean`` / ``running_var``; with ``optimizer`` (an ``nn.SGD`` over
        ``model.parameters()``), its ``buffers`` and ``lr`` too, so that ``save_checkpoint``
        writes what a CPU run would have written.
        Returns the momentum buffers, a list in ``model.parameters()`` order: one float32
        array per parameter, or None for each when momentum is 0 or no step has run yet
        (the CPU's ``SGD.buffers`` convention).
        """
        data, grad, buf = self.data.copy_to_host(), self.grad.copy_to_host(), self.buf.copy_to_host()
        buffers = []
        for i, p in enumerate(self.params):
            part = slice(self._offsets[i], self._offsets[i + 1])
            p.data[...] = data[part].reshape(p.data.shape)
            p.grad[...] = grad[part].reshape(p.data.shape)
            buffers.append(buf[part].reshape(p.data.shape).copy() if self._has_buffer[i] else None)
        for stage in self.stages:
            for layer in stage:
                if isinstance(layer, BatchNorm2dGPU):
                    layer.to_host()
        if optimizer is not None:
            optimizer.buffers = [None if b is None else b.astype(p.data.dtype) for b, p in zip(buffers, self.params)]
            optimizer.lr = self.lr
        return buffers


class _Clock:
    """Seconds per stage: ``lap(name)`` waits for the GPU, then books the time since the last lap."""

    def __init__(self, times):
        self.times, self.last = times, time.perf_counter()

    def lap(self, name):
        cuda.synchronize()
        now = time.perf_counter()
        self.times[name] = now - self.last
        self.last = now
