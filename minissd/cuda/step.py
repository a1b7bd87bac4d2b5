"""The training step's calls on the GPU: the twins of ``minissd.step`` and ``nn.SGD``.

The CPU loop (minissd/train.py, notebook 07) is::

    loss_l, loss_c = step.forward_backward(model, images, gt_boxes, gt_labels, loss_cfg)
    norm = step.clip_grad_norm(model.parameters(), max_norm)
    optimizer.lr = lr_at(it); optimizer.step()

and on the GPU it is the same three lines on a GPU copy of the model::

    gpu = cuda.to_device(model)                  # once: weights, buffers, default boxes
    opt = cuda.SGD(gpu.parameters(), lr, momentum, weight_decay)
    loss_l, loss_c = cuda.forward_backward(gpu, images, gt_boxes, gt_labels, loss_cfg)
    norm = cuda.clip_grad_norm(gpu.parameters(), max_norm)
    opt.lr = lr_at(it); opt.step()
    cuda.to_host(gpu, model, opt, optimizer)     # before a checkpoint or an evaluation

``to_device(model)`` gives an ``SSDGPU``: the same ``SSD`` (its ``forward`` is SSD's own,
walking the stages, L2Norm and heads), whose layers are the GPU twins, ``nn.Module``s
on device arrays, with every parameter a view of one flat device buffer.

What crosses between host and GPU:

- ``to_device``: every parameter (into the flat buffer), BatchNorm's running statistics,
  the default boxes; ``SGD``: the momentum buffers given to it (a resumed checkpoint's);
- each ``forward_backward``: the images (B, 3, S, S) float32 and the padded ground truth
  (a few hundred bytes) to the GPU, four float64 totals back (for the two loss values);
  ``clip_grad_norm``: the norm back (8 bytes);
- ``to_host``: weights, gradients, BatchNorm buffers and momentum into the CPU objects.

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
from minissd.cuda import launch_1d, on_device, require
from minissd.cuda.activation import ReLUGPU
from minissd.cuda.conv import Conv2dGPU, add_kernel
from minissd.cuda.heads import MultiBoxHeadGPU
from minissd.cuda.loss import multibox_loss_on_device
from minissd.cuda.matching import _pad, match_on_device
from minissd.cuda.module import FlatParameters
from minissd.cuda.norm import BatchNorm2dGPU, L2NormGPU
from minissd.cuda.optim import SGD, clip_grad_norm  # noqa: F401 (public: minissd.cuda.SGD, ...)
from minissd.cuda.pool import MaxPool2dGPU
from minissd.model.ssd import SSD
from minissd.nn import BatchNorm2d, Conv2d, MaxPool2d, ReLU, Sequential

cuda = require()


def _twin(layer, parameter):
    """The GPU layer of a CPU layer; ``parameter`` maps its Parameters to GPU ones."""
    if isinstance(layer, Conv2d):
        return Conv2dGPU(layer, parameter)
    if isinstance(layer, BatchNorm2d):
        return BatchNorm2dGPU(layer, parameter)
    if isinstance(layer, ReLU):
        return ReLUGPU()
    if isinstance(layer, MaxPool2d):
        return MaxPool2dGPU(layer)
    raise ValueError(f"minissd.cuda.to_device: no GPU twin for layer {type(layer).__name__}")


class SSDGPU(SSD):
    """An SSD whose layers are GPU twins: ``SSD.forward`` walks them as it walks the CPU ones.

    - built by ``to_device(model)`` from a CPU ``SSD`` (any ``SSDConfig``); attributes as the
      CPU model's (config, num_classes, stages, l2norm, heads, priors), so ``parameters()``
      and ``named_parameters()`` come in the CPU model's order and names
    - ``flat``: the ``FlatParameters`` all parameters are views of;
      ``priors_d``, ``corners_t_d``: the default boxes on the GPU (centre, corners (4, P))
    - forward(images (B, 3, S, S) device or NumPy) -> loc (B, P, 4), conf (B, P, C+1) device
    - backward(dloc, dconf): every gradient ADDED into the flat gradient buffer
    """

    def __init__(self, model):  # SSD's attributes in SSD's order; no SSD.__init__ (no new weights)
        flat = FlatParameters(model.parameters())
        self.config, self.num_classes = model.config, model.num_classes
        self.stages = [Sequential(*[_twin(layer, flat.parameter) for layer in stage]) for stage in model.stages]
        self.l2norm = None if model.l2norm is None else L2NormGPU(model.l2norm, flat.parameter)
        self.heads = MultiBoxHeadGPU(model.heads, [Conv2dGPU(c, flat.parameter) for c in model.heads.convs])
        self.priors = model.priors  # (P, 4) centre form, on the host (num_priors, detect)
        self.flat = flat
        priors, corners_t = cpu_matching._prepare_priors(model.priors)
        self.priors_d, self.corners_t_d = on_device(priors, np.float32), on_device(corners_t, np.float32)
        self.train(model.training)

    def backward(self, dloc, dconf):
        """``SSD.backward`` with the one NumPy line, ``g = g + grad``, as a kernel."""
        source_grads = self.heads.backward(dloc, dconf)  # one (B, C_m, f_m, f_m) per map
        grad = None  # what stage m + 1 sends back into stage m's output
        for m in range(len(self.stages) - 1, -1, -1):
            g = source_grads[m]
            if m == 0 and self.l2norm:
                g = self.l2norm.backward(g)
            if grad is not None:  # stage m's output feeds both its head and stage m + 1
                add_kernel[launch_1d(g.size)](g.reshape(g.size), grad.reshape(grad.size))
            grad = self.stages[m].backward(g)
        return grad

    def zero_grad(self):
        self.flat.zero_grad()  # one launch over every gradient


def to_device(model):
    """A GPU copy of CPU ``model`` (an ``SSD``): an ``SSDGPU``, in the model's training mode.

    Parameters, BatchNorm's running statistics (and its group) and the default boxes are
    copied once; ``model`` itself is not changed until ``to_host``. A layer without a GPU
    twin raises ValueError naming it.
    """
    return SSDGPU(model)


def forward_backward(model, images, gt_boxes, gt_labels, loss_cfg, times=None, stats=None):
    """The gradient of SSD's multibox loss on one batch, on the GPU (twin of ``step.forward_backward``).

    - model: an ``SSDGPU`` (``to_device(cpu_model)``) in training mode
    - images: (B, 3, S, S) float32 NumPy (normalised, as the data loader gives them) or device
    - gt_boxes: B arrays (G_b, 4), corner form in [0, 1]; gt_labels: B arrays (G_b,) in 1..C
    - loss_cfg: a ``minissd.step.LossConfig`` (iou_threshold, neg_pos_ratio, alpha)
    - times: optional dict; the seconds of each stage are ADDED under "match", "forward",
      "loss", "backward" (the GPU is synchronised before each clock reading)
    - stats: optional dict; receives "positives", the batch's N (matched default boxes)
    - returns (loss_l, loss_c), Python floats, each divided by N = max(positives, 1). A
      non-finite output or loss is returned as NaN/inf before backward: the gradients stay 0.
    """
    times = {} if times is None else times
    clock = [time.perf_counter()]

    def lap(stage):  # wait for the GPU, then add the seconds since the last lap to times[stage]
        cuda.synchronize()
        now = time.perf_counter()
        times[stage] = times.get(stage, 0.0) + now - clock[0]
        clock[0] = now

    S = model.config.input_size
    if images.ndim != 4 or images.shape[1:] != (3, S, S):
        raise ValueError(f"images: expected (B, 3, {S}, {S}), got {images.shape}")
    if len(gt_boxes) != len(gt_labels) or len(gt_boxes) != images.shape[0]:
        raise ValueError(f"gt_boxes, gt_labels: expected {images.shape[0]} arrays each (one per image), "
                         f"got {len(gt_boxes)} and {len(gt_labels)}")
    model.zero_grad()  # backward ADDS into .grad
    # 1. match: each default box gets a ground truth's encoded box and label, or background (0)
    checked = cpu_matching._check_gt_batch(gt_boxes, gt_labels, model.num_classes)
    boxes, labels, num_gt = _pad(checked)  # (B, G, 4), (B, G), (B,): the ground truth that crosses
    loc_t, conf_t = match_on_device(on_device(boxes, np.float32), on_device(labels, np.int64),
                                    on_device(num_gt, np.int64), model.priors_d, model.corners_t_d,
                                    cpu_matching._check_threshold(loss_cfg.iou_threshold), *VARIANCES)
    lap("match")  # loc_t (B, P, 4) float32, conf_t (B, P) int64, on the GPU
    # 2. forward: predicted offsets and class scores for every default box
    loc_p, conf_p = model.forward(on_device(images, np.float32))  # (B, P, 4), (B, P, C+1) logits
    lap("forward")
    # 3. multibox loss with hard negative mining, and its gradient w.r.t. the outputs
    totals, dloc, dconf = multibox_loss_on_device(loc_p, conf_p, loc_t, conf_t, float(loss_cfg.neg_pos_ratio),
                                                  float(loss_cfg.alpha))
    num_pos, sum_l, sum_c, nonfinite = totals.copy_to_host()  # the only numbers that come back
    if stats is not None:
        stats["positives"] = int(num_pos)
    lap("loss")
    if nonfinite:  # a NaN or inf in loc_p or conf_p, as the CPU step checks
        return math.nan, math.nan
    loss_l, loss_c = sum_l / max(num_pos, 1.0), sum_c / max(num_pos, 1.0)
    if not (math.isfinite(loss_l) and math.isfinite(loss_c)):
        return loss_l, loss_c
    # 4. backward: through the heads and the network, adding into every gradient
    model.backward(dloc, dconf)
    lap("backward")
    return loss_l, loss_c


def _named_modules(module, prefix=""):
    """(dotted name, module) for ``module`` and every module below it."""
    yield prefix, module
    for name, child in module.named_children():
        yield from _named_modules(child, f"{prefix}{name}.")


def to_host(gpu, model, opt=None, cpu_optimizer=None):
    """Copy the GPU's state into the CPU objects, in place, e.g. before a checkpoint.

    - gpu: the ``SSDGPU`` made from ``model``; model: that CPU ``SSD``: every
      ``Parameter.data`` (the weights), every ``Parameter.grad`` (the last gradient, after
      any clip) and BatchNorm's ``running_mean`` / ``running_var`` are overwritten
    - opt: the ``minissd.cuda.SGD`` over ``gpu.parameters()``; cpu_optimizer: an ``nn.SGD``
      over ``model.parameters()``: its ``buffers`` (momentum, None where the GPU has none yet)
      and ``lr`` are set from opt's, so that ``save_checkpoint`` writes what a CPU run would
    """
    params = list(model.parameters())
    if len(params) != len(gpu.flat.cpu_params) or any(
            p.data.shape != q.data.shape for p, q in zip(params, gpu.flat.cpu_params)):
        raise ValueError("to_host: model is not the CPU model this GPU copy was made from")
    data, grad = (gpu.flat.split(b.copy_to_host()) for b in (gpu.flat.data, gpu.flat.grad))
    for p, d, g in zip(params, data, grad):
        p.data[...] = d
        p.grad[...] = g
    layers = dict(_named_modules(model))
    for name, twin in _named_modules(gpu):  # the same tree: the same names
        if isinstance(twin, BatchNorm2dGPU):
            twin.to_host(layers[name])
    if cpu_optimizer is not None:
        if opt is None:
            raise ValueError("to_host: cpu_optimizer needs opt, the GPU optimizer to copy from")
        cpu_optimizer.buffers = [None if b is None else b.astype(p.data.dtype)
                                 for b, p in zip(opt.buffers, params)]
        cpu_optimizer.lr = opt.lr
