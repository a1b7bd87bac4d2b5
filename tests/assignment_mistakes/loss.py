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


def mine_over_the_whole_batch(bg_loss, conf_t, neg_pos_ratio, mask):
    """One pool of negatives for the whole batch (3 x all positives), not per image."""
    pos = conf_t > 0
    k = min(int(neg_pos_ratio * pos.sum()), int((~pos).sum()))
    flat = np.where(pos, -np.inf, bg_loss).ravel()
    mask[:] = pos
    mask.ravel()[np.argsort(-flat, kind="stable")[:k]] = True  # the mistake: across images


def mine_ties_to_the_higher_index(bg_loss, conf_t, neg_pos_ratio, mask):
    """Per image and 3:1, but equal losses taken from the highest prior index first."""
    B, P = conf_t.shape
    for b in range(B):
        pos = conf_t[b] > 0
        k = min(int(neg_pos_ratio * pos.sum()), int((~pos).sum()))
        negatives = np.flatnonzero(~pos)
        order = np.lexsort((-negatives, -bg_loss[b, negatives]))  # the mistake: -index breaks ties
        mask[b] = pos
        mask[b, negatives[order[:k]]] = True


def _plain_multibox_loss(loc_p, conf_p, loc_t, conf_t, neg_pos_ratio, alpha, knee=1.0, ce_grad_over_n=True):
    """The multibox loss as a student writes it in NumPy, with one of two mistakes on request:
    the smooth-L1 knee at ``knee`` instead of 1, the cross-entropy gradient without the 1 / N."""
    loc_p, conf_p, loc_t, conf_t = (np.asarray(a) for a in (loc_p, conf_p, loc_t, conf_t))
    dtype = np.result_type(loc_p.dtype, conf_p.dtype)
    B, P, K = conf_p.shape
    pos = conf_t > 0
    N = max(int(pos.sum()), 1)
    m = conf_p.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(conf_p - m).sum(axis=-1, keepdims=True)))[..., 0]  # (B, P)
    mask = np.empty((B, P), dtype=bool)
    loss._mine(np.ascontiguousarray(lse - conf_p[..., 0]), np.ascontiguousarray(conf_t, np.int64),
               float(neg_pos_ratio), mask)
    ce = lse - np.take_along_axis(conf_p, conf_t[..., None], axis=-1)[..., 0]
    loss_c = float(ce[mask].sum()) / N
    dconf = np.exp(conf_p - lse[..., None])
    dconf[np.arange(B)[:, None], np.arange(P)[None, :], conf_t] -= 1
    dconf *= mask[..., None] / (N if ce_grad_over_n else 1)
    diff = loc_p[pos] - loc_t[pos]
    small = np.abs(diff) < knee
    l1 = np.where(small, 0.5 * diff ** 2 / knee, np.abs(diff) - 0.5 * knee)  # Huber with beta = knee
    g = np.where(small, diff / knee, np.sign(diff))
    dloc = np.zeros((B, P, 4), dtype)
    dloc[pos] = alpha * g / N
    return float(l1.sum()) / N, loss_c, dloc, dconf.astype(dtype)


def multibox_loss_over_batch_times_priors(loc_p, conf_p, loc_t, conf_t, neg_pos_ratio=3, alpha=1.0,
                                          conf_loss="hnm", focal_gamma=2.0):
    """Divides by B * P (a mean over every default box) instead of N, the positives."""
    loss_l, loss_c, dloc, dconf = _multibox_loss(loc_p, conf_p, loc_t, conf_t, neg_pos_ratio, alpha,
                                                 conf_loss, focal_gamma)
    B, P = np.shape(conf_t)
    scale = max(int((np.asarray(conf_t) > 0).sum()), 1) / (B * P)  # undo / N, apply / (B P)
    return loss_l * scale, loss_c * scale, dloc * scale, dconf * scale


def multibox_loss_smooth_l1_knee_at_half(loc_p, conf_p, loc_t, conf_t, neg_pos_ratio=3, alpha=1.0,
                                         conf_loss="hnm", focal_gamma=2.0):
    """Smooth L1 with its knee at |x| = 0.5 (Huber with beta 0.5), the loss and its gradient."""
    return _plain_multibox_loss(loc_p, conf_p, loc_t, conf_t, neg_pos_ratio, alpha, knee=0.5)


def multibox_loss_ce_gradient_without_1_over_n(loc_p, conf_p, loc_t, conf_t, neg_pos_ratio=3, alpha=1.0,
                                               conf_loss="hnm", focal_gamma=2.0):
    """The loss values are right, but dconf is softmax - onehot without the division by N."""
    return _plain_multibox_loss(loc_p, conf_p, loc_t, conf_t, neg_pos_ratio, alpha, ce_grad_over_n=False)
