"""One training step of SSD, on one page: match -> forward -> loss (+ mining) -> backward.

``forward_backward`` is the whole maths of a step; it leaves the batch's gradient in every
``param.grad``. The training loop (minissd/train.py), notebook 07 and ``python -m
minissd.bench train`` call it, then clip (``clip_grad_norm``) and take the optimizer's step.
``minissd.workers.Workers`` runs this same function in several processes, one share of the
batch each, and ``minissd.cuda.forward_backward`` is its GPU twin.

Liu et al. 2016, sec. 2.2: match every default box to a ground truth (or background), then
minimise L = (L_conf + alpha L_loc) / N over the positives and the hardest negatives (at most
3 per positive), N = the number of positives in the batch.
"""

import math
import time
from dataclasses import dataclass

import numpy as np

from .loss import multibox_loss
from .matching import match_batch


@dataclass
class LossConfig:
    """What the step's loss is made of; the defaults are the paper's (Liu et al. 2016, sec. 2.2).

    - iou_threshold: a default box is a positive when its best IoU with a ground truth is >= this
    - neg_pos_ratio: hard negative mining keeps at most this many negatives per positive
    - alpha: the weight of the localisation loss, L = (L_conf + alpha L_loc) / N
    - matching: "per-prediction" (the default) or "bipartite" (Caffe's), ``match``'s rule
    - conf_loss: "hnm" (the default, the paper's mining), "all" or "focal", ``multibox_loss``'s
    The two switches are the last fields: minissd.workers rebuilds this from a tuple of its
    fields, in order. The GPU step (minissd.cuda) has the defaults only.
    """

    iou_threshold: float = 0.5
    neg_pos_ratio: float = 3.0
    alpha: float = 1.0
    matching: str = "per-prediction"
    conf_loss: str = "hnm"


def forward_backward(model, images, gt_boxes, gt_labels, loss_cfg, times=None, stats=None):
    """The gradient of SSD's multibox loss on one batch, in every ``param.grad``.

    - model: an SSD in training mode (``model.priors``: its (P, 4) default boxes, centre form)
    - images: (B, 3, S, S) float32, normalised as the data pipeline does
    - gt_boxes: B arrays (G_b, 4), corner form in [0, 1]; gt_labels: B arrays (G_b,) in 1..C
    - loss_cfg: a ``LossConfig``
    - times: optional dict; the seconds of each stage are ADDED under "match", "forward",
      "loss", "backward"
    - stats: optional dict; receives "positives", the batch's N (matched default boxes)
    - returns (loss_l, loss_c): the localisation and confidence losses, each divided by
      N = max(positives, 1). A non-finite output or loss is returned as it is, before
      backward: the gradients stay zero.
    """
    times = {} if times is None else times
    clock = [time.perf_counter()]

    def lap(stage):  # add the seconds since the last lap to times[stage]
        now = time.perf_counter()
        times[stage] = times.get(stage, 0.0) + now - clock[0]
        clock[0] = now

    # [assignment train_step] zero the grads; match with loss_cfg's threshold and rule; forward; stop with (nan, nan) on a non-finite output; multibox_loss with loss_cfg's ratio, alpha and conf_loss; stop on a non-finite loss; backward; call lap(stage) after each stage.
    model.zero_grad()  # backward ADDS into .grad
    # 1. match: each default box gets a ground truth's encoded box and label, or background (0)
    loc_t, conf_t = match_batch(gt_boxes, gt_labels, model.priors, iou_threshold=loss_cfg.iou_threshold,
                                rule=loss_cfg.matching)
    # loc_t (B, P, 4) float32, conf_t (B, P) int64
    if stats is not None:
        stats["positives"] = int(np.count_nonzero(conf_t))
    lap("match")
    # 2. forward: predicted offsets and class scores for every default box
    loc_p, conf_p = model.forward(images)  # (B, P, 4), (B, P, C+1) logits
    lap("forward")
    if not (np.isfinite(loc_p).all() and np.isfinite(conf_p).all()):
        return math.nan, math.nan
    # 3. multibox loss (with hard negative mining by default), and its gradient w.r.t. the outputs
    loss_l, loss_c, dloc, dconf = multibox_loss(loc_p, conf_p, loc_t, conf_t,
                                                loss_cfg.neg_pos_ratio, loss_cfg.alpha,
                                                conf_loss=loss_cfg.conf_loss)
    lap("loss")
    if not (math.isfinite(loss_l) and math.isfinite(loss_c)):
        return loss_l, loss_c
    # 4. backward: through the heads and the network, adding into every param.grad
    model.backward(dloc, dconf)
    lap("backward")
    # [/assignment]
    return loss_l, loss_c


def clip_grad_norm(params, max_norm):
    """Scale the gradients down so that their global L2 norm is at most ``max_norm``.

    - params: Parameters (their ``.grad`` are scaled in place)
    - max_norm: 0 or less turns clipping off (the norm is still returned)
    - returns the global norm sqrt(sum of every grad's squares) BEFORE clipping
    """
    params = list(params)
    norm = math.sqrt(sum(float(np.vdot(p.grad, p.grad)) for p in params))
    if max_norm > 0 and norm > max_norm:
        for p in params:
            p.grad *= max_norm / norm
    return norm
