"""Wrong training steps (replacements for minissd.step.forward_backward).

Each wrong step runs and returns a loss; the loss even falls with some of them. Two of them
are bugs this project shipped for a while (stop 24: the switches saved with a run and never
reaching the step).
"""

import math

import numpy as np

from minissd import step


def _step(model, images, gt_boxes, gt_labels, loss_cfg, zero=True, rule=True, conf_loss=True,
          check=True):
    if zero:
        model.zero_grad()
    match_kw = {"rule": loss_cfg.matching} if rule else {}
    loc_t, conf_t = step.match_batch(gt_boxes, gt_labels, model.priors,
                                     iou_threshold=loss_cfg.iou_threshold, **match_kw)
    loc_p, conf_p = model.forward(images)
    if check and not (np.isfinite(loc_p).all() and np.isfinite(conf_p).all()):
        return math.nan, math.nan
    loss_kw = {"conf_loss": loss_cfg.conf_loss} if conf_loss else {}
    loss_l, loss_c, dloc, dconf = step.multibox_loss(loc_p, conf_p, loc_t, conf_t,
                                                     loss_cfg.neg_pos_ratio, loss_cfg.alpha, **loss_kw)
    if check and not (math.isfinite(loss_l) and math.isfinite(loss_c)):
        return loss_l, loss_c
    model.backward(dloc, dconf)
    return loss_l, loss_c


def step_without_zero_grad(model, images, gt_boxes, gt_labels, loss_cfg, times=None, stats=None):
    """Never zeroes .grad: every batch's gradient adds onto the last one's."""
    return _step(model, images, gt_boxes, gt_labels, loss_cfg, zero=False)


def step_dropping_the_matching_rule(model, images, gt_boxes, gt_labels, loss_cfg, times=None,
                                    stats=None):
    """Leaves out ``rule``: --matching bipartite trains per-prediction (stop 24's bug)."""
    return _step(model, images, gt_boxes, gt_labels, loss_cfg, rule=False)


def step_dropping_the_conf_loss(model, images, gt_boxes, gt_labels, loss_cfg, times=None, stats=None):
    """Leaves out ``conf_loss``: --conf-loss focal trains with mining (stop 24's bug)."""
    return _step(model, images, gt_boxes, gt_labels, loss_cfg, conf_loss=False)


def step_without_the_finite_checks(model, images, gt_boxes, gt_labels, loss_cfg, times=None,
                                   stats=None):
    """Runs backward whatever the loss: one NaN batch poisons every weight."""
    return _step(model, images, gt_boxes, gt_labels, loss_cfg, check=False)


def step_returning_the_sum(model, images, gt_boxes, gt_labels, loss_cfg, times=None, stats=None):
    """Returns (loss_l + loss_c, 0.0): the log and the curves lose the two terms."""
    loss_l, loss_c = _step(model, images, gt_boxes, gt_labels, loss_cfg)
    return loss_l + loss_c, 0.0
