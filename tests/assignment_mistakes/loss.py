"""Wrong mining and a wrong loss normaliser (replacements for minissd.loss._mine, multibox_loss)."""

import numpy as np

from minissd import loss

_multibox_loss = loss.multibox_loss  # the reference, kept before the patch replaces it


def mine_ignoring_ratio(bg_loss, conf_t, neg_pos_ratio, mask):
    """Keeps every negative: the 3:1 ratio is ignored, background swamps the loss."""
    mask[:] = True


def mine_counting_positives_as_negatives(bg_loss, conf_t, neg_pos_ratio, mask):
    """Ranks all priors, positives included, so positives take some of the k negative slots."""
    for b in range(conf_t.shape[0]):
        pos = conf_t[b] > 0
        k = min(int(neg_pos_ratio * pos.sum()), int((~pos).sum()))
        hardest = np.argsort(-bg_loss[b], kind="stable")[:k]  # the mistake: not only negatives
        mask[b] = pos
        mask[b, hardest] = True


def multibox_loss_over_batch_size(loc_p, conf_p, loc_t, conf_t, neg_pos_ratio=3, alpha=1.0, conf_loss="hnm",
                                  focal_gamma=2.0):
    """Divides by the batch size B instead of N = the number of positives."""
    loss_l, loss_c, dloc, dconf = _multibox_loss(loc_p, conf_p, loc_t, conf_t, neg_pos_ratio, alpha,
                                                 conf_loss, focal_gamma)
    B = np.shape(conf_t)[0]
    N = max(int((np.asarray(conf_t) > 0).sum()), 1)
    scale = N / B  # undo / N, apply / B
    return loss_l * scale, loss_c * scale, dloc * scale, dconf * scale
