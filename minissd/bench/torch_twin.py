"""The PyTorch twin of a minissd SSD, for ``python -m minissd.bench peer`` only.

This is the one file of minissd that imports torch. Nothing imports it but
``minissd.bench.peer``, and only after checking that PyTorch is installed (the optional extra
``pip install -e ".[peer]"``): the package, its tests and CI never need it.

The twin is built layer by layer FROM a minissd model, so it has the same layers in the same
order by construction (``twin_layer``): Conv2d, BatchNorm (grouped as minissd's, below), ReLU,
MaxPool2d in every stage, one 3x3 head convolution per source map, then the heads' outputs
flattened and concatenated into (B, P, 4) offsets and (B, P, C+1) scores, box order as
minissd.model.heads. It is written as a PyTorch user would: NCHW tensors, ``torch.nn`` layers,
autograd for the backward pass. ``copy_weights`` copies minissd's parameters and BatchNorm
buffers across; ``check_agreement`` then shows that both compute the same outputs, loss,
gradients and running statistics on a real batch.

Everything around the network stays minissd's own, run on the twin's outputs through NumPy
(``Tensor.numpy()`` shares memory, no copy): the data pipeline, the matching and the multibox
loss with hard negative mining (``twin_step``). The two sides therefore differ only where the
network and the optimizer run.
"""

import contextlib
import copy
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import nn as mnn
from ..loss import multibox_loss
from ..matching import match_batch


class GroupedBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with minissd's BatchNorm group ("ghost batch norm").

    - x: (N, C, H, W) -> same shape; group: images per normalisation in training (None: the
      whole batch, which is then exactly ``nn.BatchNorm2d``); N must be a multiple of it
    - training: each group of ``group`` consecutive images is normalised with its own
      statistics; every group updates its own copy of the running buffers, and the layer's
      buffers become their mean: running = (1 - m) running + m * mean over groups of each
      group's statistic, which is minissd.nn.BatchNorm2d's rule
    """

    def __init__(self, channels, eps=1e-5, momentum=0.1, group=None):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.group = group

    def forward(self, x):
        N = x.shape[0]
        g = self.group
        if not self.training or g is None or g >= N:
            return super().forward(x)
        if N % g:
            raise ValueError(f"GroupedBatchNorm2d: a batch of {N} images cannot be cut into groups of {g}")
        means = [self.running_mean.clone() for _ in range(N // g)]  # one copy per group, updated in place
        variances = [self.running_var.clone() for _ in range(N // g)]
        outs = [F.batch_norm(x[n0:n0 + g], means[k], variances[k], self.weight, self.bias, True,
                             self.momentum, self.eps)
                for k, n0 in enumerate(range(0, N, g))]  # each (g, C, H, W)
        with torch.no_grad():
            self.running_mean.copy_(torch.stack(means).mean(0))
            self.running_var.copy_(torch.stack(variances).mean(0))
            self.num_batches_tracked += 1
        return torch.cat(outs)  # (N, C, H, W)


def twin_layer(layer):
    """The torch.nn layer computing what minissd layer ``layer`` computes (weights not copied)."""
    if isinstance(layer, mnn.Conv2d):
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                         padding=layer.padding, dilation=layer.dilation, bias=layer.bias is not None)
    if isinstance(layer, mnn.BatchNorm2d):
        return GroupedBatchNorm2d(layer.channels, eps=layer.eps, momentum=layer.momentum, group=layer.group)
    if isinstance(layer, mnn.ReLU):
        return nn.ReLU()  # out of place, PyTorch's default (minissd's ReLU also returns a new array)
    if isinstance(layer, mnn.MaxPool2d):
        return nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, ceil_mode=layer.ceil_mode)
    raise TypeError(f"torch twin: no twin for layer {layer!r}")


def flatten_heads(ys, per_box):
    """The heads' outputs -> loc (B, P, 4), conf (B, P, C+1), box order as minissd.model.heads.

    - ys: one (B, k*(C+5), f, f) tensor per source map; per_box = 4 + C + 1
    """
    out = torch.cat([y.permute(0, 2, 3, 1).reshape(y.shape[0], -1, per_box) for y in ys], dim=1)  # (B, P, C+5)
    return out[..., :4].contiguous(), out[..., 4:].contiguous()


class TwinSSD(nn.Module):
    """minissd.model.SSD written with torch.nn: the same stages and heads, built from ``model``.

    - images: (B, 3, S, S) float tensor -> loc (B, P, 4), conf (B, P, C+1)
    - model: a minissd SSD without L2Norm (the tiny family); its BatchNorm groups are taken over
    """

    def __init__(self, model):
        super().__init__()
        if model.l2norm is not None:
            raise ValueError("torch twin: models with L2Norm (ssd300) have no twin here; use the tiny family")
        self.stages = nn.ModuleList(nn.Sequential(*[twin_layer(layer) for layer in stage]) for stage in model.stages)
        self.heads = nn.ModuleList(twin_layer(conv) for conv in model.heads.convs)
        self.per_box = 4 + model.num_classes + 1

    def forward(self, images):
        sources, x = [], images
        for stage in self.stages:
            x = stage(x)  # (B, C_m, f_m, f_m)
            sources.append(x)
        return flatten_heads([head(s) for head, s in zip(self.heads, sources)], self.per_box)


def layer_pairs(model, twin):
    """[(name, minissd layer, twin layer)] in forward order; names as minissd.bench.peer's profile."""
    pairs = [(f"stage{m}.{i}", a, b) for m, (sa, sb) in enumerate(zip(model.stages, twin.stages))
             for i, (a, b) in enumerate(zip(sa, sb))]
    return pairs + [(f"head{m}", a, b) for m, (a, b) in enumerate(zip(model.heads.convs, twin.heads))]


def tensor_pairs(model, twin, buffers=True):
    """[(name, minissd array holder, twin tensor)]: every parameter (a minissd Parameter) and,
    with ``buffers``, every BatchNorm running statistic (``(layer, buffer name)``)."""
    pairs = []
    for name, a, b in layer_pairs(model, twin):
        for p in ("weight", "bias"):
            if getattr(a, p, None) is not None:
                pairs.append((f"{name}.{p}", getattr(a, p), getattr(b, p)))
        if buffers and isinstance(a, mnn.BatchNorm2d):
            pairs += [(f"{name}.{n}", (a, n), getattr(b, n)) for n in ("running_mean", "running_var")]
    return pairs


def _array(holder):
    """The ndarray behind a tensor_pairs entry: a Parameter's data, or a (layer, name) buffer."""
    return holder.data if isinstance(holder, mnn.Parameter) else getattr(*holder)


def copy_weights(model, twin):
    """Copy every parameter and BatchNorm buffer of ``model`` into ``twin`` (shapes checked)."""
    with torch.no_grad():
        for name, holder, t in tensor_pairs(model, twin):
            a = _array(holder)
            if tuple(a.shape) != tuple(t.shape):
                raise ValueError(f"torch twin: {name} has shape {tuple(t.shape)}, minissd's {a.shape}")
            t.copy_(torch.from_numpy(np.ascontiguousarray(a)))


def make_twin(model, dtype=torch.float32):
    """A TwinSSD of ``model`` with its weights, in ``model``'s mode (train / eval)."""
    twin = TwinSSD(model).to(dtype)
    copy_weights(model, twin)
    return twin.train(model.training)


def _rel(a, b):
    """max |a - b| / max |b|: the error relative to the reference's scale."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)) if b.size else 0.0


def check_agreement(model, images, gt_boxes, gt_labels, loss_cfg):
    """Both networks on one real batch, in float64: what they compute, compared.

    - model: a minissd SSD in training mode (copied, not changed); images (B, 3, S, S)
    - returns {"outputs", "loss", "gradients", "buffers"}: the largest relative error of each
      (max |minissd - twin| / max |twin|, worst tensor), and "worst": the name of the tensor
      with the largest gradient error. Expect ~1e-12: the sums run in another order.
    In float64 no two hard-negative losses tie by accident, so both sides mine the same
    negatives and the gradients must agree to rounding.
    """
    ours = copy.deepcopy(model).to(np.float64).train()
    twin = make_twin(ours, torch.float64)
    x = np.asarray(images, np.float64)
    loc_t, conf_t = match_batch(gt_boxes, gt_labels, ours.priors, iou_threshold=loss_cfg.iou_threshold)
    # minissd: forward, loss, backward
    ours.zero_grad()
    loc, conf = ours.forward(x)
    ll, lc, dloc, dconf = multibox_loss(loc, conf, loc_t, conf_t, loss_cfg.neg_pos_ratio, loss_cfg.alpha)
    ours.backward(dloc, dconf)
    # the twin: forward, the same loss on its outputs (through NumPy), autograd's backward
    tloc, tconf = twin(torch.from_numpy(x))
    tll, tlc, tdloc, tdconf = multibox_loss(tloc.detach().numpy(), tconf.detach().numpy(), loc_t, conf_t,
                                            loss_cfg.neg_pos_ratio, loss_cfg.alpha)
    torch.autograd.backward((tloc, tconf), (torch.from_numpy(tdloc), torch.from_numpy(tdconf)))
    grads = [(name, _rel(p.grad, t.grad.numpy())) for name, p, t in tensor_pairs(ours, twin, buffers=False)]
    worst = max(grads, key=lambda g: g[1])
    buffers = [_rel(_array(h), t.numpy()) for name, h, t in tensor_pairs(ours, twin) if "running" in name]
    return {"outputs": max(_rel(loc, tloc.detach().numpy()), _rel(conf, tconf.detach().numpy())),
            "loss": max(_rel(ll, tll), _rel(lc, tlc)), "gradients": worst[1], "worst": worst[0],
            "buffers": max(buffers, default=0.0)}


# ---- what the bench times: the network alone, and the whole training step -------------------

def twin_forward_backward(twin, images, dloc, dconf):
    """run(times): zero the gradients, forward, backward with fixed output gradients (the network alone)."""
    x, gl, gc = torch.from_numpy(images), torch.from_numpy(dloc), torch.from_numpy(dconf)

    def run(times):
        twin.zero_grad(set_to_none=True)
        loc, conf = twin(x)
        torch.autograd.backward((loc, conf), (gl, gc))
    return run


def twin_step(twin, optimizer, batches, priors, loss_cfg, grad_clip):
    """run(times): train.py's iteration with the twin as the network; stage seconds ADDED to times.

    next batch (minissd's loader) -> match (minissd) -> forward (twin) -> multibox loss + mining
    (minissd, on the twin's outputs through NumPy) -> backward (autograd) -> clip + SGD (torch).
    """
    params = [p for p in twin.parameters() if p.requires_grad]

    def run(times):
        clock = [time.perf_counter()]

        def lap(stage):
            now = time.perf_counter()
            times[stage] = times.get(stage, 0.0) + now - clock[0]
            clock[0] = now

        images, targets = next(batches)
        lap("data")
        loc_t, conf_t = match_batch([t[0] for t in targets], [t[1] for t in targets], priors,
                                    iou_threshold=loss_cfg.iou_threshold)
        lap("match")
        optimizer.zero_grad(set_to_none=True)
        loc, conf = twin(torch.from_numpy(images))  # (B, P, 4), (B, P, C+1)
        lap("forward")
        _, _, dloc, dconf = multibox_loss(loc.detach().numpy(), conf.detach().numpy(), loc_t, conf_t,
                                          loss_cfg.neg_pos_ratio, loss_cfg.alpha)
        lap("loss")
        torch.autograd.backward((loc, conf), (torch.from_numpy(dloc), torch.from_numpy(dconf)))
        lap("backward")
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        lap("optimizer")
    return run


def twin_sgd(twin, lr, momentum, weight_decay):
    return torch.optim.SGD(twin.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


# ---- the per-layer profile's tasks, the twins of minissd.bench.peer.minissd_profile_tasks -----

def twin_profile_tasks(model, twin, capture, loss_cfg, grad_clip):
    """[(name, fn)]: fn() -> (forward s, backward s) of one twin layer on minissd's captured input.

    - capture: minissd.bench.peer.capture_layers(model, ...): every layer's input and output
      gradient, so that both sides time the same arrays; names as minissd's tasks
    """
    tasks = []
    for name, _, layer in layer_pairs(model, twin):
        x = torch.from_numpy(capture.inputs[name]).requires_grad_(name != "stage0.0")  # no image gradient
        tasks.append((name, _layer_task(layer, x, torch.from_numpy(capture.grads[name]))))
    ys = [torch.from_numpy(y).requires_grad_() for y in capture.head_outputs]
    dloc, dconf = torch.from_numpy(capture.dloc), torch.from_numpy(capture.dconf)

    def heads_flatten():
        for y in ys:
            y.grad = None
        t0 = time.perf_counter()
        loc, conf = flatten_heads(ys, twin.per_box)
        t1 = time.perf_counter()
        torch.autograd.backward((loc, conf), (dloc, dconf))
        return t1 - t0, time.perf_counter() - t1
    tasks.append(("heads", heads_flatten))

    loc_np, conf_np = capture.loc, capture.conf  # the twin's outputs would be these arrays' twins

    def loss():
        t0 = time.perf_counter()
        loc_p, conf_p = torch.from_numpy(loc_np), torch.from_numpy(conf_np)
        out = multibox_loss(loc_p.numpy(), conf_p.numpy(), capture.loc_t, capture.conf_t,
                            loss_cfg.neg_pos_ratio, loss_cfg.alpha)
        torch.from_numpy(out[2]), torch.from_numpy(out[3])
        return time.perf_counter() - t0, 0.0
    tasks.append(("loss", loss))

    params = list(twin.parameters())
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer = twin_sgd(twin, 0.01, 0.9, 5e-4)

    def optimize():
        t0 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        return time.perf_counter() - t0, 0.0
    tasks.append(("optimizer", optimize))
    return tasks


def _layer_task(layer, x, g):
    def run():
        x.grad = None
        t0 = time.perf_counter()
        y = layer(x)
        t1 = time.perf_counter()
        y.backward(g)
        return t1 - t0, time.perf_counter() - t1
    return run


def describe_torch():
    """torch's version and threads, for the bench's caption."""
    return (f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
            f"oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}")


def set_batchnorm_group(twin, group):
    """minissd.nn.set_batchnorm_group for the twin: ``group`` images per normalisation (None: whole batch)."""
    for m in twin.modules():
        if isinstance(m, GroupedBatchNorm2d):
            m.group = group


def set_threads(n):
    """torch's intra-op threads (the twin's forward and backward use them)."""
    torch.set_num_threads(int(n))


@contextlib.contextmanager
def threads(n):
    """torch on ``n`` intra-op threads inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
