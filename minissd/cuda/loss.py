"""GPU twins of ``minissd.loss``: ``hard_negative_mining`` (one block per image) and ``multibox_loss``.

The rule is the paper's (Liu et al. 2016, sec. 2.2 "Hard negative mining") and the CPU's:
per image, keep the positives and the k = min(ratio * positives, negatives) negatives with
the largest background loss, equal losses going to the lower prior index.

The CPU twin (``loss._mine``) walks the images one after the other: it finds the k-th
largest loss t with a filtered quickselect (``_hardest_negatives_threshold``), then takes
every negative above t and, in index order, as many equal to t as are still needed. The GPU
kernel does the same three things with the threads of one block per image sharing each step
(``minissd.cuda.select``): it counts the positives (a block-wide sum), finds t by radix
select instead of a quickselect, and hands out the ties with a prefix sum over the threads.
Same answer, ties included.

(A first version ranked every negative by counting the harder ones: simple, and fine while
few negatives are kept, but with SSD300's 8732 priors almost every warp held a kept negative
and read the whole image: 6.5 ms for a batch of 32 on an H200, 3x slower than the CPU.)

The losses are ranked as float32 (the training dtype): float64 input is rounded first.

``multibox_loss`` is the CPU function's steps as kernels, all on the GPU:

1. ``_log_sum_exp_kernel``  lse (B, P), one thread per prior (twin of ``loss._log_sum_exp``);
2. ``cross_entropy_kernel`` bg_loss = lse - conf[..., 0] and ce = lse - conf[label], the
                            CPU's two NumPy lines, one thread per prior;
3. ``_mine_kernel``, above: the mask;
4. ``loss_sums_kernel``    per image, in float64: the positives, the smooth-L1 sum over
                            them and the cross-entropy sum over the mask (a block per image,
                            ``reduce.block_sum_float``: no atomics);
   ``loss_totals_kernel``  one thread adds the images' sums in order: [N, sum_l, sum_c];
5. ``_softmax_grad_kernel`` dconf = (softmax - onehot) / N on the mask (twin of
                            ``loss._softmax_grad``) and ``smooth_l1_grad_kernel``
                            dloc = alpha * smooth-L1' / N on the positives; both read N from
                            the totals on the GPU, so nothing waits for the host.
Only the four totals come back to the host, for the two loss values and the NaN check.
"""

import math

import numpy as np

from minissd import loss as cpu
from minissd.cuda import is_device_array, launch_1d, require, on_device, on_host
from minissd.cuda import reduce, select
from minissd.cuda.reduce import SUM_SCRATCH, block_sum_float
from minissd.cuda.select import SCRATCH_SIZE, block_sum, chunk, kth_largest, order_key, tie_quota

cuda = require()


@cuda.jit
def _mine_kernel(bg_loss, conf_t, neg_pos_ratio, keys, mask):
    """Positives and the k hardest negatives of image b = ``cuda.blockIdx.x``; twin of ``loss._mine``.

    - bg_loss: (B, P) float32, -log softmax(conf)[background]; conf_t: (B, P) int64;
    - neg_pos_ratio: float; keys: (B, P) uint32 scratch (the losses as ordered integers);
    - mask: (B, P) bool, written.
    Each thread owns a contiguous chunk of the image's priors (``select.chunk``).
    """
    scratch = cuda.shared.array(SCRATCH_SIZE, np.int64)
    b = cuda.blockIdx.x
    P = conf_t.shape[1]
    lo, hi = chunk(P)
    num_pos = 0
    for p in range(lo, hi):  # positives are in; negatives become candidates (key > 0)
        positive = conf_t[b, p] > 0
        mask[b, p] = positive
        num_pos += positive
        keys[b, p] = 0 if positive else order_key(bg_loss[b, p])
    num_pos = block_sum(num_pos, scratch)
    k = min(int(neg_pos_ratio * num_pos), P - num_pos)  # negatives to keep
    if k == 0:  # the same for every thread of the block: all leave together
        return
    t, ties = kth_largest(keys[b], k, scratch)  # the k-th largest loss, as a key
    quota = tie_quota(keys[b], t, ties, scratch)  # this chunk's share of the losses equal to t
    for p in range(lo, hi):
        key = keys[b, p]
        if key > t:
            mask[b, p] = True
        elif key == t and quota > 0:
            mask[b, p] = True
            quota -= 1


def hard_negative_mining(bg_loss, conf_t, neg_pos_ratio=3):
    """Positives plus the hardest negatives, on the GPU (twin of ``loss.hard_negative_mining``).

    - bg_loss: (B, P) float, -log softmax(conf)[background]; conf_t: (B, P) integer labels.
    - neg_pos_ratio: 3 in the paper.
    - returns: mask (B, P) bool (NumPy for NumPy inputs, checked as on the CPU; a device
      array for device inputs, then bg_loss must be float32 and conf_t int64).
    """
    host = not (is_device_array(bg_loss) or is_device_array(conf_t))
    if host:
        bg_loss = np.asarray(bg_loss)
        if bg_loss.ndim != 2 or bg_loss.dtype.kind != "f":
            raise ValueError(f"bg_loss: expected a (B, P) float array, got shape {bg_loss.shape} "
                             f"dtype {bg_loss.dtype}")
        if not np.all(np.isfinite(bg_loss)):
            raise ValueError("bg_loss: contains NaN or inf")
        conf_t = cpu._check_targets(conf_t, bg_loss.shape)
    if not neg_pos_ratio >= 0:
        raise ValueError(f"neg_pos_ratio: expected a number >= 0, got {neg_pos_ratio}")
    B, P = bg_loss.shape
    if B == 0:  # (a GPU refuses a grid with no blocks)
        return on_host(cuda.device_array((0, P), dtype=np.bool_), host)
    keys = cuda.device_array((B, P), dtype=np.uint32)
    mask = cuda.device_array((B, P), dtype=np.bool_)
    bg_loss, conf_t = on_device(bg_loss, np.float32), on_device(conf_t, np.int64)
    _mine_kernel[B, select.SELECT_THREADS](bg_loss, conf_t, float(neg_pos_ratio),
                                                          keys, mask)  # a block per image
    return on_host(mask, host)


# ---- the multibox loss -------------------------------------------------------------------

# The CPU's scalar bodies, compiled for the GPU (written once, in minissd/loss.py)
_log_sum_exp_row_gpu = cuda.jit(device=True)(cpu._log_sum_exp_row)  # also detect's softmax
_smooth_l1_gpu = cuda.jit(device=True)(cpu._smooth_l1)
_softmax_grad_row_gpu = cuda.jit(device=True)(cpu._softmax_grad_row)


@cuda.jit
def _log_sum_exp_kernel(conf, out):
    """``out[b, p] = log(sum_k exp(conf[b, p, k]))``, stable; one thread per prior (twin of ``_log_sum_exp``).

    The body is the CPU's ``_log_sum_exp_row``, compiled for the GPU.

    - conf: (B, P, K) float32; out: (B, P) float32, written.
    """
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    B, P, K = conf.shape
    for e in range(start, B * P, stride):
        b, p = e // P, e % P
        out[b, p] = _log_sum_exp_row_gpu(conf, b, p)


@cuda.jit
def cross_entropy_kernel(conf, lse, conf_t, bg_loss, ce):
    """bg_loss = lse - conf[..., 0] (ranks the negatives), ce = lse - conf[label]; (B, P) each.

    The two NumPy lines of ``loss.multibox_loss``; one thread per prior.
    """
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    B, P = conf_t.shape
    for e in range(start, B * P, stride):
        b, p = e // P, e % P
        bg_loss[b, p] = lse[b, p] - conf[b, p, 0]
        ce[b, p] = lse[b, p] - conf[b, p, conf_t[b, p]]


@cuda.jit
def loss_sums_kernel(loc_p, conf_p, loc_t, conf_t, ce, mask, sums):
    """sums[b] = (positives, smooth-L1 sum over them, cross-entropy sum over the mask,
    non-finite outputs) of image b: the float64 sums of ``loss.multibox_loss``.

    - loc_p, loc_t: (B, P, 4) float32; conf_p: (B, P, K) logits; conf_t: (B, P) int64;
      ce: (B, P) float32; mask: (B, P) bool from mining; sums: (B, 4) float64, written.
    Block b = image b; each thread adds up its stride of the priors, then the block's
    threads' sums are combined (``block_sum_float``, a fixed order). The last count is the
    CPU step's ``np.isfinite(loc_p).all() and np.isfinite(conf_p).all()``, read on the GPU.
    """
    scratch = cuda.shared.array(SUM_SCRATCH, np.float64)
    b, t, T = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    P, K = conf_t.shape[1], conf_p.shape[2]
    num_pos, sum_l, sum_c, bad = 0.0, 0.0, 0.0, 0.0
    for p in range(t, P, T):
        if mask[b, p]:
            sum_c += ce[b, p]
        if conf_t[b, p] > 0:
            num_pos += 1.0
            for j in range(4):
                sum_l += _smooth_l1_gpu(loc_p[b, p, j] - loc_t[b, p, j])[0]
        for j in range(4):
            bad += not math.isfinite(loc_p[b, p, j])
        for k in range(K):
            bad += not math.isfinite(conf_p[b, p, k])
    num_pos = block_sum_float(num_pos, scratch)
    sum_l = block_sum_float(sum_l, scratch)
    sum_c = block_sum_float(sum_c, scratch)
    bad = block_sum_float(bad, scratch)
    if t == 0:
        sums[b, 0], sums[b, 1], sums[b, 2], sums[b, 3] = num_pos, sum_l, sum_c, bad


@cuda.jit
def loss_totals_kernel(sums, totals):
    """totals = [N, sum_l, sum_c, non-finite outputs]: the images' sums added in order by one
    thread (the totals of ``loss.multibox_loss``)."""
    if cuda.grid(1) == 0:
        for j in range(sums.shape[1]):
            total = 0.0
            for b in range(sums.shape[0]):
                total += sums[b, j]
            totals[j] = total


@cuda.jit
def _softmax_grad_kernel(conf, lse, conf_t, mask, totals, dconf):
    """dconf = (softmax - onehot(label)) / N on the mask, 0 elsewhere (twin of ``_softmax_grad``).

    - conf: (B, P, K) logits; lse: (B, P); conf_t: (B, P); mask: (B, P) bool;
    - totals: [N, ...] from ``loss_totals_kernel``: scale = 1 / max(N, 1), read on the GPU;
    - dconf: (B, P, K), written. One thread per prior; the body is the CPU's
      ``_softmax_grad_row``, compiled for the GPU.
    """
    scale = 1.0 / max(totals[0], 1.0)
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    B, P, K = conf.shape
    for e in range(start, B * P, stride):
        _softmax_grad_row_gpu(conf, lse, conf_t, mask, scale, dconf, e // P, e % P)


@cuda.jit
def smooth_l1_grad_kernel(loc_p, loc_t, conf_t, alpha, totals, dloc):
    """dloc = alpha / N * smooth-L1'(loc_p - loc_t) at the positives, 0 elsewhere.

    The lines ``dloc[pos] = (alpha / N) * l1_grad`` of ``loss.multibox_loss``, with the
    CPU's scalar ``_smooth_l1`` compiled for the GPU; one thread per prior.
    """
    scale = alpha / max(totals[0], 1.0)
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    B, P = conf_t.shape
    for e in range(start, B * P, stride):
        b, p = e // P, e % P
        for j in range(4):
            grad = _smooth_l1_gpu(loc_p[b, p, j] - loc_t[b, p, j])[1]
            dloc[b, p, j] = scale * grad if conf_t[b, p] > 0 else 0.0


def multibox_loss(loc_p, conf_p, loc_t, conf_t, neg_pos_ratio=3, alpha=1.0, conf_loss="hnm", focal_gamma=2.0):
    """SSD's training loss and its gradients, on the GPU (twin of ``loss.multibox_loss``).

    - loc_p (B, P, 4), conf_p (B, P, C+1), loc_t (B, P, 4) float; conf_t (B, P) integer labels:
      NumPy arrays (checked as on the CPU) or device arrays (float32, int64; unchecked).
    - neg_pos_ratio: negatives kept per positive (3); alpha: weight of the loc term (1).
    - conf_loss: only "hnm" (the default): the GPU has no kernels for "all" or "focal"
      (focal_gamma is accepted for the CPU's signature and unused).
    - returns (loss_l, loss_c, dloc, dconf): the losses as Python floats (the only numbers
      copied back), dloc (B, P, 4) and dconf (B, P, C+1) float32, NumPy for NumPy inputs,
      device arrays for device inputs. A non-finite input gives non-finite losses (the CPU
      raises; here checking would mean copying the outputs back: the caller checks the losses).
    """
    if conf_loss != "hnm":
        raise ValueError(f"conf_loss: the GPU has hard negative mining ('hnm') only, got {conf_loss!r} "
                         "(the CPU's loss.multibox_loss has 'all' and 'focal')")
    host = not any(is_device_array(a) for a in (loc_p, conf_p, loc_t, conf_t))
    if host:  # the CPU's checks, for the same errors
        conf_p = np.asarray(conf_p)
        if conf_p.ndim != 3 or conf_p.shape[2] < 2:
            raise ValueError(f"conf_p: expected (B, P, C+1) float logits with C >= 1, got shape {conf_p.shape}")
        conf_t = cpu._check_targets(conf_t, conf_p.shape[:2], num_classes=conf_p.shape[2] - 1)
    if not neg_pos_ratio >= 0:
        raise ValueError(f"neg_pos_ratio: expected a number >= 0, got {neg_pos_ratio}")
    loc_p, conf_p, loc_t = (on_device(a, np.float32) for a in (loc_p, conf_p, loc_t))
    conf_t = on_device(conf_t, np.int64)
    B, P, K = conf_p.shape
    totals, dloc, dconf = multibox_loss_on_device(loc_p, conf_p, loc_t, conf_t, neg_pos_ratio, alpha)
    num_pos, sum_l, sum_c, nonfinite = totals.copy_to_host()  # the four numbers that cross to the host
    N = max(num_pos, 1.0)
    if nonfinite:
        return math.nan, math.nan, on_host(dloc, host), on_host(dconf, host)
    return sum_l / N, sum_c / N, on_host(dloc, host), on_host(dconf, host)


def multibox_loss_on_device(loc_p, conf_p, loc_t, conf_t, neg_pos_ratio, alpha):
    """The launches of ``multibox_loss`` on device arrays; returns (totals, dloc, dconf) on the GPU.

    - totals: (4,) float64 [N, sum of smooth-L1 over positives, sum of cross-entropy over the
      mask, how many entries of loc_p and conf_p are NaN or inf]; the losses are
      sum_l / max(N, 1) and sum_c / max(N, 1).
    """
    B, P, K = conf_p.shape
    lse = cuda.device_array((B, P), dtype=np.float32)
    _log_sum_exp_kernel[launch_1d(B * P)](conf_p, lse)
    bg_loss = cuda.device_array((B, P), dtype=np.float32)
    ce = cuda.device_array((B, P), dtype=np.float32)
    cross_entropy_kernel[launch_1d(B * P)](conf_p, lse, conf_t, bg_loss, ce)
    keys = cuda.device_array((B, P), dtype=np.uint32)
    mask = cuda.device_array((B, P), dtype=np.bool_)
    _mine_kernel[B, select.SELECT_THREADS](bg_loss, conf_t, float(neg_pos_ratio), keys, mask)
    sums = cuda.device_array((B, 4), dtype=np.float64)
    loss_sums_kernel[B, reduce.SUM_THREADS](loc_p, conf_p, loc_t, conf_t, ce, mask, sums)  # a block per image
    totals = cuda.device_array(4, dtype=np.float64)
    loss_totals_kernel[1, 1](sums, totals)
    dconf = cuda.device_array((B, P, K), dtype=np.float32)
    _softmax_grad_kernel[launch_1d(B * P)](conf_p, lse, conf_t, mask, totals, dconf)
    dloc = cuda.device_array((B, P, 4), dtype=np.float32)
    smooth_l1_grad_kernel[launch_1d(B * P)](loc_p, loc_t, conf_t, np.float32(alpha), totals, dloc)
    return totals, dloc, dconf
