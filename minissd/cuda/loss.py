"""GPU twin of ``minissd.loss.hard_negative_mining``: the same selection, one block per image.

The rule is the paper's (Liu et al. 2016, sec. 2.2 "Hard negative mining") and the CPU's:
per image, keep the positives and the k = min(ratio * positives, negatives) negatives with
the largest background loss, equal losses going to the lower prior index.

The CPU twin (``loss._mine``) gives each image to one thread: it finds the k-th largest loss
t with a partial sort (``np.partition``), then takes every negative above t and, in index
order, as many equal to t as are still needed. The GPU kernel does the same three things
with the threads of one block per image sharing each step (``minissd.cuda.select``): it
counts the positives (a block-wide sum), finds t by radix select instead of a partial sort,
and hands out the ties with a prefix sum over the threads. Same answer, ties included.

(A first version ranked every negative by counting the harder ones: simple, and fine while
few negatives are kept, but with SSD300's 8732 priors almost every warp held a kept negative
and read the whole image: 6.5 ms for a batch of 32 on an H200, 3x slower than the CPU.)

The losses are ranked as float32 (the training dtype): float64 input is rounded first.
"""

import numpy as np

from minissd import loss as cpu
from minissd.cuda import is_device_array, require, to_device, to_host
from minissd.cuda import select
from minissd.cuda.select import SCRATCH_SIZE, block_sum, chunk, kth_largest, order_key, tie_quota

cuda = require()


@cuda.jit
def hard_negative_mining_kernel(bg_loss, conf_t, neg_pos_ratio, keys, mask):
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
        return to_host(cuda.device_array((0, P), dtype=np.bool_), host)
    keys = cuda.device_array((B, P), dtype=np.uint32)
    mask = cuda.device_array((B, P), dtype=np.bool_)
    bg_loss, conf_t = to_device(bg_loss, np.float32), to_device(conf_t, np.int64)
    hard_negative_mining_kernel[B, select.SELECT_THREADS](bg_loss, conf_t, float(neg_pos_ratio),
                                                          keys, mask)  # a block per image
    return to_host(mask, host)
