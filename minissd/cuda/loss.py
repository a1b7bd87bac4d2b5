"""GPU twin of ``minissd.loss.hard_negative_mining``: per-image ranking instead of selection.

The rule is the paper's (Liu et al. 2016, sec. 2.2 "Hard negative mining") and the CPU's:
per image, keep the positives and the k = min(ratio * positives, negatives) negatives with
the largest background loss, equal losses going to the lower prior index.

The CPU twin (``loss._mine``) gives each image to one thread, which finds the k-th largest
loss with a partial sort and then walks the priors once. A GPU has thousands of threads and
no cheap way for them to share one sort, so here every negative decides for itself:

    negative p is one of the k hardest  <=>  fewer than k negatives are harder than p

("harder": a larger loss, or the same loss at a lower index). Each thread counts the
negatives harder than its prior, and stops as soon as the count reaches k, since p is then
out. Most negatives are easy and stop after a few k; only the k hard ones (and their warps)
read the whole image. No sort, no sync, and the same answer as the CPU, ties included.
"""

import numpy as np

from minissd import loss as cpu
from minissd.cuda import is_device_array, launch_1d, require, to_device, to_host

cuda = require()


@cuda.jit
def count_positives_kernel(conf_t, num_pos):
    """``num_pos[b]`` += the number of priors of image b with a label > 0 (zeroed by the caller)."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    B, P = conf_t.shape
    for e in range(start, B * P, stride):
        b, p = e // P, e % P
        if conf_t[b, p] > 0:
            cuda.atomic.add(num_pos, b, 1)  # integer adds: the same total in any order


@cuda.jit
def hard_negative_mining_kernel(bg_loss, conf_t, neg_pos_ratio, num_pos, mask):
    """Another algorithm than the CPU twin ``loss._mine``: each negative ranks itself (see module).

    - bg_loss: (B, P) float, -log softmax(conf)[background]; conf_t: (B, P) int64;
    - neg_pos_ratio: float; num_pos: (B,) from ``count_positives_kernel``;
    - mask: (B, P) bool, written: positives and the k hardest negatives of each image.
    The grid's y index is the image; x runs over its priors (grid-stride loop).
    """
    b = cuda.blockIdx.y
    P = conf_t.shape[1]
    k = min(int(neg_pos_ratio * num_pos[b]), P - num_pos[b])  # negatives to keep
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for p in range(start, P, stride):
        if conf_t[b, p] > 0:  # a positive: always in
            mask[b, p] = True
            continue
        harder = 0  # negatives harder than p, counted until it is clear p is out
        for q in range(P):
            if harder >= k:
                break
            if conf_t[b, q] == 0 and (bg_loss[b, q] > bg_loss[b, p]
                                      or (bg_loss[b, q] == bg_loss[b, p] and q < p)):
                harder += 1
        mask[b, p] = harder < k


def hard_negative_mining(bg_loss, conf_t, neg_pos_ratio=3):
    """Positives plus the hardest negatives, on the GPU (twin of ``loss.hard_negative_mining``).

    - bg_loss: (B, P) float, -log softmax(conf)[background]; conf_t: (B, P) integer labels.
    - neg_pos_ratio: 3 in the paper.
    - returns: mask (B, P) bool (NumPy for NumPy inputs, checked as on the CPU; a device
      array for device inputs, then conf_t must be int64).
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
    bg_loss_d, conf_t_d = to_device(bg_loss, bg_loss.dtype), to_device(conf_t, np.int64)
    num_pos = cuda.to_device(np.zeros(B, dtype=np.int64))
    count_positives_kernel[launch_1d(B * P)](conf_t_d, num_pos)
    mask = cuda.device_array((B, P), dtype=np.bool_)
    blocks, threads = launch_1d(P)
    hard_negative_mining_kernel[(blocks, B), threads](bg_loss_d, conf_t_d, float(neg_pos_ratio), num_pos, mask)
    return to_host(mask, host)
