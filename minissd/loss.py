"""The multibox loss: smooth-L1 localisation + softmax confidence with hard negative mining.

Liu et al. 2016, sec. 2.2 "Training objective" (eq. 1-3) and "Hard negative mining":

    L = (L_conf + alpha L_loc) / N,   N = number of matched (positive) default boxes

L_loc is the smooth-L1 loss between predicted and encoded ground-truth offsets, summed over
positives. L_conf is the softmax cross-entropy, summed over the positives and the hardest
negatives: after matching most default boxes are background, so per image only the
negatives with the largest background loss are kept, at most 3 per positive.

``conf_loss`` switches the confidence term (docs/switches.md): "hnm" is the paper's above, the
default; "all" is the cross-entropy of every prior with no mining (as d2l's SSD chapter
trains); "focal" is RetinaNet's focal loss over every prior (Lin et al. 2017), which down-
weights the easy negatives instead of dropping them. Both run on the CPU only.

Every function returns the gradients next to the values (no autograd here): ``dloc`` and
``dconf`` go straight into ``SSD.backward``.
"""

import math

import numpy as np
from numba import njit


# ---- the two per-prior losses ----------------------------------------------------------------

def _smooth_l1(x):
    """Smooth L1 of one difference x and its derivative, plain scalars (compiled for the CPU here
    and for the GPU in minissd.cuda.loss): (0.5 x^2, x) where |x| < 1, else (|x| - 0.5, sign(x))."""
    if abs(x) < 1:
        return 0.5 * x * x, x
    return abs(x) - 0.5, (1.0 if x > 0 else -1.0)


_smooth_l1_cpu = njit(cache=True)(_smooth_l1)


@njit(cache=True, nogil=True)
def _smooth_l1_loop(x, loss, grad):
    """loss[i], grad[i] = _smooth_l1(x[i]) for flat arrays."""
    for i in range(x.shape[0]):
        loss[i], grad[i] = _smooth_l1_cpu(x[i])


def smooth_l1(x):
    """Smooth L1 (Huber with beta = 1), elementwise, and its derivative.

    - x: any shape, float; the difference prediction - target.
    - returns (loss, grad), both shaped like x: loss = 0.5 x^2 where |x| < 1, else |x| - 0.5;
      grad = x where |x| < 1, else sign(x) (``_smooth_l1``, one number at a time).
    Quadratic near 0 (smooth gradient for small errors), linear far away (no exploding
    gradient for outliers): Girshick, Fast R-CNN 2015, eq. 3.
    """
    x = np.asarray(x)
    x = np.ascontiguousarray(x, dtype=x.dtype if x.dtype.kind == "f" else np.float64)
    loss, grad = np.empty_like(x), np.empty_like(x)
    _smooth_l1_loop(x.reshape(-1), loss.reshape(-1), grad.reshape(-1))
    return loss, grad


def log_softmax(logits):
    """log softmax over the last axis, stable for any finite logits.

    - logits: (..., K) float.
    - returns: (..., K), same dtype: z - logsumexp(z) with z = logits - max(logits), so the
      largest exponent is exp(0) = 1 and nothing overflows (the log-sum-exp trick).
    """
    z = logits - logits.max(axis=-1, keepdims=True)  # (..., K), <= 0
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax_cross_entropy(logits, labels):
    """Cross-entropy of a softmax over the last axis, per row, and its gradient.

    - logits: (..., K) float; labels: (...) integers in 0..K-1.
    - returns (loss, grad): loss (...) = -log softmax(logits)[label];
      grad (..., K) = softmax(logits) - onehot(label), the derivative of each row's loss.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    logp = log_softmax(logits)  # (..., K)
    loss = -np.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]  # (...)
    grad = np.exp(logp)  # softmax
    np.put_along_axis(grad, labels[..., None], np.take_along_axis(grad, labels[..., None], -1) - 1, -1)
    return loss, grad


def _log_sum_exp_row(conf, b, p):
    """log(sum_k exp(conf[b, p, k])), stable: the largest logit m is taken out first,
    log sum exp(c) = m + log sum exp(c - m), so no exponent exceeds 0; the sum in float64.
    Plain Python, compiled for the CPU here and for the GPU (the loss and detect's softmax)."""
    K = conf.shape[2]
    m = conf[b, p, 0]
    for k in range(1, K):
        m = max(m, conf[b, p, k])
    s = 0.0
    for k in range(K):
        s += math.exp(conf[b, p, k] - m)
    return m + math.log(s)


_log_sum_exp_row_cpu = njit(cache=True)(_log_sum_exp_row)


@njit(cache=True, nogil=True)
def _log_sum_exp(conf, out):
    """``out[b, p] = log(sum_k exp(conf[b, p, k]))``, stable (``_log_sum_exp_row``).

    - conf: (B, P, K) float; out: (B, P), written.
    A Numba loop: NumPy's reductions over a short last axis (K = 21) are slow, and this is
    the step that touches every logit of the batch.
    """
    B, P, K = conf.shape
    for b in range(B):
        for p in range(P):
            out[b, p] = _log_sum_exp_row_cpu(conf, b, p)


def _softmax_grad_row(conf, lse, conf_t, mask, scale, dconf, b, p):
    """Row (b, p) of ``_softmax_grad``: (softmax - onehot(label)) * scale on the mask, else 0.
    Plain Python, compiled for the CPU here and for the GPU in minissd.cuda.loss."""
    K = conf.shape[2]
    if mask[b, p]:
        for k in range(K):
            dconf[b, p, k] = math.exp(conf[b, p, k] - lse[b, p]) * scale  # softmax
        dconf[b, p, conf_t[b, p]] -= scale  # - onehot(label)
    else:
        for k in range(K):
            dconf[b, p, k] = 0.0


_softmax_grad_row_cpu = njit(cache=True)(_softmax_grad_row)


@njit(cache=True, nogil=True)
def _softmax_grad(conf, lse, conf_t, mask, scale, dconf):
    """Gradient of ``scale * sum over the mask of cross-entropy``: (softmax - onehot) * scale.

    - conf: (B, P, K) logits; lse: (B, P) their log-sum-exp; conf_t: (B, P) labels;
    - mask: (B, P) bool, the rows in the loss; scale: 1 / N;
    - dconf: (B, P, K), written: 0 on the rows outside the mask (``_softmax_grad_row``).
    """
    B, P, K = conf.shape
    for b in range(B):
        for p in range(P):
            _softmax_grad_row_cpu(conf, lse, conf_t, mask, scale, dconf, b, p)


# ---- hard negative mining --------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _kth_largest(x, k):
    """The k-th largest value of ``x`` (k = 1 is the maximum); reorders ``x`` in place.

    Quickselect (Hoare 1961): partition around a pivot (median of three), then continue in
    the one side that holds position k - 1, so on average only ~3n comparisons. About 2x
    faster here than Numba's np.partition, which copies and handles any kth.
    """
    lo, hi = 0, x.shape[0] - 1
    target = k - 1  # its index once x is sorted in decreasing order
    while lo < hi:
        a, b, c = x[lo], x[(lo + hi) // 2], x[hi]
        pivot = max(min(a, b), min(max(a, b), c))  # median of three
        i, j = lo, hi
        while i <= j:  # afterwards: x[lo..j] >= pivot >= x[i..hi], and == pivot in between
            while x[i] > pivot:
                i += 1
            while x[j] < pivot:
                j -= 1
            if i <= j:
                x[i], x[j] = x[j], x[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            return x[target]
    return x[target]


@njit(cache=True, nogil=True)
def _hardest_negatives_threshold(bg_loss, conf_t, k):
    """The k-th largest loss among the negatives (conf_t == 0) of one image, and how many
    negatives have a strictly larger loss. k >= 1 and at most the number of negatives.

    A filter in front of the quickselect: a buffer of 2k candidates and a bar t that only
    rises. A loss <= t cannot be among the k hardest (k kept candidates are already >= t), so
    most priors cost one comparison; when the buffer fills, a quickselect keeps its k best
    and raises t. Linear time even in the worst case (each refill needs k new candidates and
    costs O(k)), and ~3x faster than a quickselect over all the negatives.
    """
    buf = np.empty(2 * k, dtype=bg_loss.dtype)
    n = 0
    t = -np.inf
    for p in range(bg_loss.shape[0]):
        if conf_t[p] == 0 and (bg_loss[p] > t or n < k):
            if n == 2 * k:  # full: keep the k largest, raise the bar to the k-th of them
                t = _kth_largest(buf, k)
                n = k
                if bg_loss[p] <= t:
                    continue
            buf[n] = bg_loss[p]
            n += 1
    t = _kth_largest(buf[:n], k)
    # quickselect left buf[:k - 1] >= t and everything after position k - 1 <= t
    above = 0
    for i in range(k - 1):
        above += buf[i] > t
    return t, above


@njit(cache=True, nogil=True)
def _mine(bg_loss, conf_t, neg_pos_ratio, mask):
    """Mark, per image, the positives and the hardest negatives.

    - bg_loss: (B, P) float, -log softmax(conf)[background]; conf_t: (B, P) int64;
    - neg_pos_ratio: float; mask: (B, P) bool, written.
    Selection without a sort: the k-th largest negative loss t comes from a filtered
    quickselect (linear time); then every negative above t is taken, and negatives equal
    to t in increasing prior index until k are taken, so ties go to the lower index.
    """
    # [assignment hard_negative_mining] Per image: k = min(ratio * positives, negatives); keep positives plus the k negatives with the largest bg_loss (ties: lower index first).
    B, P = conf_t.shape
    for b in range(B):
        num_pos = 0
        for p in range(P):
            mask[b, p] = conf_t[b, p] > 0
            num_pos += conf_t[b, p] > 0
        k = min(int(neg_pos_ratio * num_pos), P - num_pos)
        if k == 0:
            continue
        t, above = _hardest_negatives_threshold(bg_loss[b], conf_t[b], k)  # k-th hardest loss
        ties = k - above  # how many negatives with loss exactly t to take
        for p in range(P):
            if conf_t[b, p] == 0:
                if bg_loss[b, p] > t:
                    mask[b, p] = True
                elif bg_loss[b, p] == t and ties > 0:  # lower prior index first
                    mask[b, p] = True
                    ties -= 1
    # [/assignment]


def _check_targets(conf_t, shape, num_classes=None, name="conf_t"):
    conf_t = np.asarray(conf_t)
    if conf_t.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {conf_t.shape}")
    if conf_t.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected integer labels, got dtype {conf_t.dtype}")
    if conf_t.size and (conf_t.min() < 0 or (num_classes is not None and conf_t.max() > num_classes)):
        top = "C" if num_classes is None else num_classes
        raise ValueError(f"{name}: labels must be in 0..{top} (0 = background), "
                         f"got min {conf_t.min()}, max {conf_t.max()}")
    return conf_t.astype(np.int64, copy=False)


def hard_negative_mining(bg_loss, conf_t, neg_pos_ratio=3):
    """The priors that enter the confidence loss: positives plus the hardest negatives.

    - bg_loss: (B, P) float, the loss each prior would have as background,
      -log softmax(conf)[0]; only its order within an image matters.
    - conf_t: (B, P) integer labels from matching, 0 = background.
    - neg_pos_ratio: 3 in the paper (at most 3 negatives per positive).
    - returns: mask (B, P) bool, the positives plus, per image, the
      min(ratio * num_pos, P - num_pos) negatives with the largest bg_loss (equal losses:
      the lower prior index first). An image with no positives gets no negatives.
    """
    bg_loss = np.asarray(bg_loss)
    if bg_loss.ndim != 2 or bg_loss.dtype.kind != "f":
        raise ValueError(f"bg_loss: expected a (B, P) float array, got shape {bg_loss.shape} "
                         f"dtype {bg_loss.dtype}")
    if not np.all(np.isfinite(bg_loss)):
        raise ValueError("bg_loss: contains NaN or inf")
    conf_t = _check_targets(conf_t, bg_loss.shape)
    if not neg_pos_ratio >= 0:
        raise ValueError(f"neg_pos_ratio: expected a number >= 0, got {neg_pos_ratio}")
    mask = np.empty(bg_loss.shape, dtype=np.bool_)
    _mine(np.ascontiguousarray(bg_loss), np.ascontiguousarray(conf_t), float(neg_pos_ratio), mask)
    return mask


# ---- the multibox loss -------------------------------------------------------------------------

CONF_LOSSES = ("hnm", "all", "focal")  # multibox_loss's conf_loss: the paper's, then two others

def multibox_loss(loc_p, conf_p, loc_t, conf_t, neg_pos_ratio=3, alpha=1.0, conf_loss="hnm",
                  focal_gamma=2.0):
    """SSD's training loss for a batch, with its gradients.

    - loc_p: (B, P, 4) float, predicted offsets (the network's loc output).
    - conf_p: (B, P, C+1) float, class logits, column 0 = background.
    - loc_t: (B, P, 4) float, encoded targets from matching (read at positives only).
    - conf_t: (B, P) int, labels from matching, 0 = background, 1..C objects.
    - neg_pos_ratio: negatives kept per positive (3); alpha: weight of the loc term (1).
    - returns (loss_l, loss_c, dloc, dconf):
      loss_l = sum over positive priors of smooth-L1(loc_p - loc_t), over the 4 offsets, / N;
      loss_c = sum over the mined priors (positives + hardest negatives) of
               -log softmax(conf_p)[conf_t], / N;
      N = max(number of positives in the batch, 1); both are Python floats.
      dloc (B, P, 4), dconf (B, P, C+1): gradients of loss_c + alpha * loss_l, dtype of
      the inputs (float32 in, float32 out; float64 for gradient checks).
    A batch with no positives (no objects anywhere) mines no negatives either: both losses
    are 0 and both gradients are 0 (N = 1 only avoids dividing by 0).
    The mined set is treated as a constant (it is piecewise constant in conf_p), as in the
    paper and every implementation; the gradient is exact wherever no two losses tie.

    - conf_loss: which priors the confidence term sums over, and how (docs/switches.md):
      "hnm" (the default, described above: the paper's hard negative mining);
      "all": the cross-entropy of every prior, no mining (neg_pos_ratio unused);
      "focal": Lin et al. 2017's focal loss -(1 - p_t)^gamma log p_t (softmax form, no
      alpha weight) of every prior, gamma = ``focal_gamma`` (2);
      both still divided by N (so an image without objects still has a background loss).
    """
    loc_p, conf_p, loc_t = np.asarray(loc_p), np.asarray(conf_p), np.asarray(loc_t)
    if conf_p.ndim != 3 or conf_p.shape[2] < 2 or conf_p.dtype.kind != "f":
        raise ValueError(f"conf_p: expected (B, P, C+1) float logits with C >= 1, got shape "
                         f"{conf_p.shape} dtype {conf_p.dtype}")
    B, P, K = conf_p.shape
    for name, a in (("loc_p", loc_p), ("loc_t", loc_t)):
        if a.shape != (B, P, 4) or a.dtype.kind != "f":
            raise ValueError(f"{name}: expected ({B}, {P}, 4) float to go with conf_p, got "
                             f"shape {a.shape} dtype {a.dtype}")
    conf_t = _check_targets(conf_t, (B, P), num_classes=K - 1)
    if not neg_pos_ratio >= 0:
        raise ValueError(f"neg_pos_ratio: expected a number >= 0, got {neg_pos_ratio}")
    if conf_loss not in CONF_LOSSES:
        raise ValueError(f"conf_loss: expected one of {', '.join(map(repr, CONF_LOSSES))}, "
                         f"got {conf_loss!r}")
    if not focal_gamma >= 0:
        raise ValueError(f"focal_gamma: expected a number >= 0, got {focal_gamma}")
    dtype = np.result_type(loc_p.dtype, conf_p.dtype)
    if conf_loss != "hnm":  # no mining: the confidence term over every prior (below)
        # the localisation term is the one with mining: take it from this function, with no
        # negatives to mine (what it computes for the confidence then is thrown away)
        loss_l, _, dloc, _ = multibox_loss(loc_p, conf_p, loc_t, conf_t, 0, alpha)
        loss_c, dconf = _confidence_every_prior(conf_p, conf_t, conf_loss, float(focal_gamma), dtype)
        return loss_l, loss_c, dloc, dconf

    # [assignment multibox_loss] lse = log-sum-exp of each prior's logits; bg loss = lse - conf[..., 0]; mine; cross-entropy (lse - conf[label]) over the mask and smooth-L1 over positives, both / N; gradients: (softmax - onehot) / N on the mask, alpha * smooth-L1' / N on positives.
    pos = conf_t > 0  # (B, P)
    N = max(int(pos.sum()), 1)

    # confidence: log-sum-exp once per prior; -log softmax(conf)[c] = lse - conf[c]
    conf_p = conf_p.astype(dtype, copy=False)
    lse = np.empty((B, P), dtype=dtype)
    _log_sum_exp(conf_p, lse)  # (B, P)
    if not np.all(np.isfinite(lse)):  # one (B, P) check instead of B*P*K
        raise ValueError("conf_p: contains NaN or inf")
    bg_loss = np.ascontiguousarray(lse - conf_p[..., 0])  # (B, P), ranks the negatives
    mask = np.empty((B, P), dtype=np.bool_)
    _mine(bg_loss, np.ascontiguousarray(conf_t), float(neg_pos_ratio), mask)
    ce = lse - np.take_along_axis(conf_p, conf_t[..., None], axis=-1)[..., 0]  # (B, P)
    loss_c = float(ce[mask].sum(dtype=np.float64)) / N
    dconf = np.empty_like(conf_p)  # (B, P, K)
    _softmax_grad(conf_p, lse, conf_t, mask, 1.0 / N, dconf)

    # localisation: smooth L1 over the positives only
    diff = (loc_p[pos] - loc_t[pos]).astype(dtype, copy=False)  # (num_pos, 4)
    if not np.all(np.isfinite(diff)):
        raise ValueError("loc_p or loc_t: contains NaN or inf at a positive prior")
    l1, l1_grad = smooth_l1(diff)
    loss_l = float(l1.sum(dtype=np.float64)) / N
    dloc = np.zeros((B, P, 4), dtype=dtype)
    dloc[pos] = (alpha / N) * l1_grad
    # [/assignment]
    return loss_l, loss_c, dloc, dconf


# ---- the other confidence losses: every prior, no mining ---------------------------------------


def focal_loss(logp_t, gamma=2.0):
    """The softmax focal loss of each row and its weight on the cross-entropy's gradient.

    - logp_t: (...) float, log softmax(z)[t] of each row, t its label (<= 0).
    - gamma: >= 0; 0 gives the cross-entropy back (loss -log p_t, weight 1).
    - returns (loss, weight), both (...): loss = -(1 - p_t)^gamma log p_t (Lin et al. 2017,
      eq. 4, with the softmax's p_t), and weight w such that d loss / dz = w (softmax(z) -
      onehot(t)), the cross-entropy's gradient scaled per row.
    Derivation: with q = 1 - p_t, dL/dp_t = gamma q^(gamma-1) log p_t - q^gamma / p_t, and
    dp_t/dz_k = p_t (onehot_k - p_k), so dL/dz_k = (q^gamma - gamma p_t q^(gamma-1) log p_t)
    (p_k - onehot_k). Both terms of w are >= 0 (log p_t <= 0); an easy row (p_t -> 1) gets
    w -> 0, which is the point: the many easy background priors stop dominating.
    q is computed as -expm1(log p_t), exact even when p_t is close to 1 (1 - p_t would round
    to 0 there); q^(gamma-1) log p_t -> 0 as q -> 0, so that term is 0 where q is 0.
    """
    q = -np.expm1(logp_t)  # 1 - p_t
    q_gamma = q ** gamma
    with np.errstate(divide="ignore", invalid="ignore"):  # q = 0 with gamma < 1: 0 ** -x
        slope = np.where(q > 0, gamma * np.exp(logp_t) * (q_gamma / q) * logp_t, 0.0)
    return -q_gamma * logp_t, q_gamma - slope


def _confidence_every_prior(conf_p, conf_t, conf_loss, gamma, dtype):
    """``multibox_loss``'s confidence term for conf_loss "all" or "focal": (loss_c, dconf).

    The term sums over EVERY prior, the positives and all the negatives, and is divided by N,
    the number of positives, as the localisation term is. "all" is the cross-entropy,
    gradient softmax - onehot; "focal" is ``focal_loss``, the same gradient weighted per prior
    by its w. dconf (B, P, K) of ``dtype``.
    """
    B, P, K = conf_p.shape
    N = max(int(np.count_nonzero(conf_t > 0)), 1)
    conf_p = conf_p.astype(dtype, copy=False)
    lse = np.empty((B, P), dtype=dtype)
    _log_sum_exp(conf_p, lse)  # (B, P)
    if not np.all(np.isfinite(lse)):
        raise ValueError("conf_p: contains NaN or inf")
    logp_t = np.take_along_axis(conf_p, conf_t[..., None], axis=-1)[..., 0] - lse  # (B, P)
    if conf_loss == "all":
        loss, w = -logp_t, np.ones_like(logp_t)  # the cross-entropy, its gradient unweighted
    else:
        loss, w = focal_loss(logp_t, gamma)  # (B, P) each
    loss_c = float(loss.sum(dtype=np.float64)) / N
    # the cross-entropy's gradient softmax - onehot on every row, in place in one (B, P, K)
    # array (NumPy's exp over the whole array beats the row-by-row loop when every row counts)
    dconf = np.subtract(conf_p, lse[..., None])  # (B, P, K) log softmax
    np.exp(dconf, out=dconf)  # softmax
    np.put_along_axis(dconf, conf_t[..., None],
                      np.take_along_axis(dconf, conf_t[..., None], axis=-1) - 1, axis=-1)
    dconf *= (w / N).astype(dtype)[..., None]  # (softmax - onehot) * w / N
    return loss_c, dconf
