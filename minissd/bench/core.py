"""``python -m minissd.bench core``: matching, mining, loss and detection, next to plain NumPy.

The workload of the issue: a batch of 32 images with 10 objects each, matched against the
8732 default boxes of SSD300, and its negatives mined; plus, for scale, the multibox loss
and ``detect`` on the same batch with random network outputs. Each minissd function is timed
next to a vectorised NumPy version written here (the obvious way to write it without Numba),
measured in the same run. Then a fresh process checks that ``cache=True`` works: the compiled
functions are loaded from the cache (hits, no misses), and repeated calls add no signature.
"""

import argparse
import os
import platform
import subprocess
import sys
import time

import numpy as np

from minissd.loss import hard_negative_mining, multibox_loss
from minissd.matching import match_batch
from minissd.nms import detect
from minissd.priors import SSD300_VOC, default_boxes


# ---- the NumPy baselines ---------------------------------------------------------------------------

def numpy_match_batch(gt_boxes_list, gt_labels_list, priors, threshold=0.5, variances=(0.1, 0.2)):
    """The matching rule with broadcasting: (G, P) IoU from (G, 1) x (1, P) arrays, argmaxes."""
    B, P = len(gt_boxes_list), priors.shape[0]
    corners = np.concatenate([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], 1)
    loc_t = np.zeros((B, P, 4), np.float32)
    conf_t = np.zeros((B, P), np.int64)
    for b, (gt, labels) in enumerate(zip(gt_boxes_list, gt_labels_list)):
        lt = np.maximum(gt[:, None, :2], corners[None, :, :2])  # (G, P, 2)
        rb = np.minimum(gt[:, None, 2:], corners[None, :, 2:])
        inter = np.clip(rb - lt, 0, None).prod(axis=2)  # (G, P)
        area_g = (gt[:, 2:] - gt[:, :2]).prod(axis=1)
        area_p = (corners[:, 2:] - corners[:, :2]).prod(axis=1)
        ious = inter / (area_g[:, None] + area_p[None, :] - inter)
        best_gt = ious.argmax(axis=0)  # (P,)
        best_iou = ious.max(axis=0)
        best_prior = ious.argmax(axis=1)  # (G,)
        best_gt[best_prior] = np.arange(len(gt))
        best_iou[best_prior] = 2.0  # forced positives
        conf = np.where(best_iou >= threshold, labels[best_gt], 0)
        m = gt[best_gt]  # (P, 4)
        cxcy = ((m[:, :2] + m[:, 2:]) / 2 - priors[:, :2]) / (variances[0] * priors[:, 2:])
        wh = np.log((m[:, 2:] - m[:, :2]) / priors[:, 2:]) / variances[1]
        loc_t[b] = np.where((conf > 0)[:, None], np.concatenate([cxcy, wh], 1), 0)
        conf_t[b] = conf
    return loc_t, conf_t


def numpy_mining(bg_loss, conf_t, ratio=3):
    """ssd.pytorch's trick in NumPy: sort the losses, then sort the order to get each rank."""
    pos = conf_t > 0
    loss = np.where(pos, -np.inf, bg_loss)
    order = np.argsort(-loss, axis=1, kind="stable")  # (B, P)
    rank = np.argsort(order, axis=1, kind="stable")  # rank of each prior within its image
    num_neg = np.minimum(ratio * pos.sum(1, keepdims=True), conf_t.shape[1] - pos.sum(1, keepdims=True))
    return pos | (rank < num_neg)


# ---- timing ------------------------------------------------------------------------------------------

def best_time(fn, repeat):
    """Median seconds of ``repeat`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def random_batch(rng, B, G, priors):
    gts, labels = [], []
    for _ in range(B):
        c = rng.uniform(0.15, 0.85, (G, 2))
        wh = rng.uniform(0.05, 0.5, (G, 2))
        gts.append(np.clip(np.concatenate([c - wh / 2, c + wh / 2], 1), 0, 1).astype(np.float32))
        labels.append(rng.integers(1, 21, G))
    return gts, labels


def machine():
    name = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import numba
    return f"{name}, {os.cpu_count()} cores, numba {numba.__version__}"


_CACHE_PROBE = """
import time, numpy as np
t = time.perf_counter()
from minissd import boxes, matching, loss, nms
from minissd.priors import default_boxes
priors = default_boxes()
gt = np.array([[0.1, 0.1, 0.5, 0.6]], np.float32)
matching.match_batch([gt, gt], [np.array([3]), np.array([4])], priors)
bg = np.random.default_rng(0).random((2, 8732)).astype(np.float32)
loss.hard_negative_mining(bg, np.where(bg < 0.01, 1, 0))
nms.nms(gt, np.array([1.0]), 0.45)
first = time.perf_counter() - t
fns = [boxes._iou_matrix, boxes._encode_rows, matching._match_one, loss._mine, nms._suppress]
hits = sum(sum(f.stats.cache_hits.values()) for f in fns)
misses = sum(sum(f.stats.cache_misses.values()) for f in fns)
print(f"{first:.3f} {hits} {misses}")
"""


def check_cache():
    """Run a fresh interpreter twice: the second must load everything from numba's cache."""
    out = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", _CACHE_PROBE], capture_output=True, text=True)
        if r.returncode:
            return f"cache probe failed: {r.stderr.strip().splitlines()[-1:]}", False
        first, hits, misses = r.stdout.split()
        out.append((float(first), int(hits), int(misses)))
    (t1, _, _), (t2, hits, misses) = out
    ok = misses == 0 and hits > 0
    return (f"fresh process, import + first calls: {t1 * 1e3:.0f} ms, then {t2 * 1e3:.0f} ms with "
            f"{hits} cache hits and {misses} misses ({'cache works' if ok else 'RECOMPILED'})"), ok


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m minissd.bench core", description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--loss-priors", type=int, default=8732, help="P for the loss and detect timings")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    priors = default_boxes(SSD300_VOC)
    gts, labels = random_batch(rng, args.batch, args.objects, priors)
    B, P, C = args.batch, priors.shape[0], 20
    print(f"machine: {machine()}")
    print(f"workload: {B} images x {args.objects} objects, {P} SSD300 priors; median of {args.repeat}")

    # correctness first: the two ways must agree
    loc_t, conf_t = match_batch(gts, labels, priors)
    np_loc, np_conf = numpy_match_batch(gts, labels, priors)
    assert np.array_equal(conf_t, np_conf) and np.allclose(loc_t, np_loc, atol=1e-4), "match disagrees with NumPy"
    bg_loss = rng.random((B, P)).astype(np.float32)
    assert np.array_equal(hard_negative_mining(bg_loss, conf_t), numpy_mining(bg_loss, conf_t))

    rows = [
        ("match_batch", lambda: match_batch(gts, labels, priors), lambda: numpy_match_batch(gts, labels, priors), 5.0),
        ("hard_negative_mining", lambda: hard_negative_mining(bg_loss, conf_t),
         lambda: numpy_mining(bg_loss, conf_t), 2.0),
    ]
    Pl = min(args.loss_priors, P)
    loc_p = rng.standard_normal((B, Pl, 4)).astype(np.float32)
    conf_p = rng.standard_normal((B, Pl, C + 1)).astype(np.float32)
    rows.append((f"multibox_loss (P={Pl}, C+1={C + 1})",
                 lambda: multibox_loss(loc_p, conf_p, loc_t[:, :Pl], conf_t[:, :Pl]), None, None))
    rows.append((f"detect, untrained outputs (P={Pl})",
                 lambda: detect(loc_p, conf_p, priors[:Pl]), None, None))

    print(f"\n{'':38s} {'minissd':>10s} {'NumPy':>10s} {'speed-up':>9s} {'goal':>8s}")
    for name, ours, baseline, goal in rows:
        t = best_time(ours, args.repeat)
        line = f"{name:38s} {t * 1e3:8.2f}ms"
        if baseline is not None:
            tb = best_time(baseline, max(3, args.repeat // 5))
            line += f" {tb * 1e3:8.2f}ms {tb / t:8.1f}x"
        else:
            line += f" {'':>10s} {'':>9s}"
        if goal is not None:
            line += f"  <= {goal:g}ms"
        print(line)

    # no recompilation per call: repeated calls add no new signature
    from minissd import boxes, loss, matching, nms
    fns = [boxes._iou_matrix, boxes._encode_rows, matching._match_one, loss._mine, nms._suppress]
    before = [len(f.signatures) for f in fns]
    match_batch(gts, labels, priors)
    hard_negative_mining(bg_loss, conf_t)
    same = before == [len(f.signatures) for f in fns]
    print(f"\nrepeated calls compile nothing new: {'yes' if same else 'NO'}")
    message, ok = check_cache()
    print(message)
    print("\n(Timings on a machine shared with other jobs are noisy; rerun on a quiet one.)")
    return 0 if same and ok else 1
