"""Slow, obvious oracles: plain Python loops that the fast functions are pinned to.

Each oracle follows the paper (and DESIGN.md) as literally as possible and is never used
by the package itself. Tests compare the NumPy/Numba/CUDA versions against these.

The oracles of graded functions are ``@recorded``: the student copy leaves their bodies out
(they are answers) and replays, for each call the tests make, the result this file gave when
the copy was written (minissd/assignments/oracles.py). Decorate any new oracle of a graded
function the same way; the ungraded ones (conv2d, max_pool2d: forward passes the students
are given) ship as they are.
"""

import math

import numpy as np

from minissd.assignments.oracles import recorded

# ---- boxes, matching, mining, NMS (core) --------------------------------------------------


@recorded
def iou(a, b):
    """IoU of every pair of corner boxes, one pair at a time, in Python floats."""
    out = np.zeros((len(a), len(b)))
    for i, (ax0, ay0, ax1, ay1) in enumerate(np.asarray(a, dtype=float).tolist()):
        for j, (bx0, by0, bx1, by1) in enumerate(np.asarray(b, dtype=float).tolist()):
            inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
            union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


@recorded
def encode(box, prior, variances=(0.1, 0.2)):
    """One corner box seen from one centre-form prior (Liu et al. 2016, eq. 2 with variances)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    pcx, pcy, pw, ph = (float(v) for v in prior)
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    return [(cx - pcx) / (variances[0] * pw), (cy - pcy) / (variances[0] * ph),
            math.log(w / pw) / variances[1], math.log(h / ph) / variances[1]]


@recorded
def match(gt_boxes, gt_labels, priors, iou_threshold=0.5, variances=(0.1, 0.2)):
    """DESIGN.md's matching rule read literally: two nested loops over priors and objects.

    Returns loc_t (P, 4) (0 at background priors) and conf_t (P,) int64.
    """
    priors = np.asarray(priors, dtype=float)
    P, G = len(priors), len(gt_boxes)
    corners = [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2] for cx, cy, w, h in priors.tolist()]
    overlaps = iou(gt_boxes, np.array(corners)) if G else np.zeros((0, P))
    best_gt = [0] * P
    positive = [False] * P
    for p in range(P):  # each prior: its best object (first one on ties), positive if >= threshold
        for g in range(G):
            if overlaps[g, p] > overlaps[best_gt[p], p]:
                best_gt[p] = g
        positive[p] = G > 0 and overlaps[best_gt[p], p] >= iou_threshold
    for g in range(G):  # each object claims its best prior (first one on ties), whatever the IoU
        best_p = 0
        for p in range(P):
            if overlaps[g, p] > overlaps[g, best_p]:
                best_p = p
        best_gt[best_p] = g
        positive[best_p] = True
    loc_t = np.zeros((P, 4))
    conf_t = np.zeros(P, dtype=np.int64)
    for p in range(P):
        if positive[p]:
            conf_t[p] = gt_labels[best_gt[p]]
            loc_t[p] = encode(gt_boxes[best_gt[p]], priors[p], variances)
    return loc_t, conf_t


@recorded
def hard_negative_mining(bg_loss, conf_t, neg_pos_ratio=3):
    """Per image: the positives, plus the k hardest negatives, k = min(ratio * pos, negatives).

    "Hardest" = largest background loss; equal losses go to the lower prior index.
    """
    bg_loss, conf_t = np.asarray(bg_loss), np.asarray(conf_t)
    mask = conf_t > 0
    for b in range(conf_t.shape[0]):
        negatives = [p for p in range(conf_t.shape[1]) if conf_t[b, p] == 0]
        k = min(int(neg_pos_ratio * int(mask[b].sum())), len(negatives))
        negatives.sort(key=lambda p: (-bg_loss[b, p], p))
        for p in negatives[:k]:
            mask[b, p] = True
    return mask


@recorded
def nms(boxes, scores, iou_threshold):
    """Greedy NMS: take the best remaining box, drop every box overlapping it by > threshold."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))  # ties: lower index first
    keep = []
    for i in order:
        if all(iou(boxes[i:i + 1], boxes[k:k + 1])[0, 0] <= iou_threshold for k in keep):
            keep.append(i)
    return np.array(keep, dtype=np.int64)


@recorded
def per_class_nms(boxes, scores, conf_threshold=0.01, nms_threshold=0.45, top_k=200, max_per_class=200):
    """One image's detections, class by class as ssd.pytorch's Detect does: per class c >= 1
    the boxes scoring > conf_threshold, the max_per_class best, greedy NMS; then the top_k
    best over all classes (ties: lower class first, then NMS's order)."""
    found = []  # (-score, class, rank in its class, box index)
    for c in range(1, scores.shape[1]):
        cand = [p for p in range(len(boxes)) if scores[p, c] > conf_threshold]
        cand = sorted(cand, key=lambda p: (-scores[p, c], p))[:max_per_class]
        kept = [cand[k] for k in nms(boxes[cand], scores[cand, c], nms_threshold)]
        found += [(-float(scores[p, c]), c, rank, p) for rank, p in enumerate(kept)]
    found = sorted(found)[:top_k]
    picks = np.array([p for *_, p in found], dtype=np.int64)
    return (np.asarray(boxes, dtype=np.float32)[picks].reshape(-1, 4),
            np.array([c for _, c, _, _ in found], dtype=np.int64),
            np.array([-s for s, *_ in found], dtype=np.float32))

# ---- layers (nn) ---------------------------------------------------------------------------


def conv2d(x, weight, bias, stride=1, padding=0, dilation=1):
    """Convolution as the definition reads (PyTorch's cross-correlation), one output at a time.

    out[n, o, i, j] = bias[o] + sum over c, u, v of
        weight[o, c, u, v] * x[n, c, i*stride + u*dilation - padding, j*stride + v*dilation - padding]
    where positions outside the input read 0.
    """
    N, C, H, W = x.shape
    O, _, K, _ = weight.shape
    Ho = (H + 2 * padding - dilation * (K - 1) - 1) // stride + 1
    Wo = (W + 2 * padding - dilation * (K - 1) - 1) // stride + 1
    out = np.zeros((N, O, Ho, Wo), dtype=np.float64)
    for n in range(N):
        for o in range(O):
            for i in range(Ho):
                for j in range(Wo):
                    total = 0.0 if bias is None else float(bias[o])
                    for c in range(C):
                        for u in range(K):
                            for v in range(K):
                                y = i * stride + u * dilation - padding
                                xx = j * stride + v * dilation - padding
                                if 0 <= y < H and 0 <= xx < W:
                                    total += float(weight[o, c, u, v]) * float(x[n, c, y, xx])
                    out[n, o, i, j] = total
    return out


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """Max pooling as PyTorch defines it: windows over the -inf-padded input.

    The output size is floor (or ceil) of (H + 2p - k) / s, plus 1; in ceil mode a last
    window that would start beyond the input and left padding is dropped.
    """
    stride = kernel_size if stride is None else stride
    N, C, H, W = x.shape

    def out_size(size):
        span = size + 2 * padding - kernel_size
        n = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
        if ceil_mode and (n - 1) * stride >= size + padding:
            n -= 1
        return n

    Ho, Wo = out_size(H), out_size(W)
    out = np.full((N, C, Ho, Wo), -np.inf)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    for u in range(kernel_size):
                        for v in range(kernel_size):
                            y, xx = i * stride + u - padding, j * stride + v - padding
                            if 0 <= y < H and 0 <= xx < W:
                                out[n, c, i, j] = max(out[n, c, i, j], float(x[n, c, y, xx]))
    return out

# ---- evaluation (AP) -----------------------------------------------------------------------


@recorded
def voc_tp_fp(scores, images, overlaps, difficult, iou_threshold=0.5):
    """The devkit's loop over ranked detections (VOCevaldet.m): tp, fp per rank.

    scores (D,), images (D,), overlaps[k]: IoU of detection k with each object of the class in
    its image, difficult[i]: those objects' flags. The best object (the first on equal IoU)
    decides: over the threshold and difficult: neither; not yet detected: tp; else fp.
    """
    ranked = sorted(range(len(scores)), key=lambda k: (-float(scores[k]), k))
    detected = [[False] * len(d) for d in difficult]
    tp, fp = [], []
    for k in ranked:
        i = int(images[k])
        ovmax, jmax = -math.inf, -1
        for j, o in enumerate(overlaps[k]):
            if float(o) > ovmax:
                ovmax, jmax = float(o), j
        t = f = False
        if ovmax >= iou_threshold:
            if not difficult[i][jmax]:
                if not detected[i][jmax]:
                    t = detected[i][jmax] = True
                else:
                    f = True  # multiple detection
        else:
            f = True
        tp.append(t)
        fp.append(f)
    return np.array(tp, dtype=bool), np.array(fp, dtype=bool)


@recorded
def average_precision(detections, ground_truths, label, iou_threshold=0.5, use_07_metric=True):
    """One class's AP, following the VOC devkit step by step (VOCevaldet.m / voc_eval.py).

    detections: list over images of (boxes, labels, scores); ground_truths: list over images
    of (boxes, labels, difficult). Like the devkit, a detection on a difficult object keeps
    its place in the ranking with tp = fp = 0.
    """
    ranked = []  # (score, image, box)
    for i, (boxes, labels, scores) in enumerate(detections):
        for box, lab, s in zip(boxes, labels, scores):
            if lab == label:
                ranked.append((-float(s), i, list(box)))
    ranked.sort(key=lambda r: (r[0], r[1]))  # best first; ties: image order
    gt = [[(list(b), bool(d)) for b, lab, d in zip(*g) if lab == label] for g in ground_truths]
    npos = sum(not d for objs in gt for _, d in objs)
    taken = [[False] * len(objs) for objs in gt]
    tp, fp = [], []
    for _, i, box in ranked:
        best, best_j = -1.0, -1
        for j, (g, _) in enumerate(gt[i]):
            o = iou([box], [g])[0, 0]
            if o > best:
                best, best_j = o, j
        t = f = 0
        if best >= iou_threshold:
            if not gt[i][best_j][1]:
                if not taken[i][best_j]:
                    t, taken[i][best_j] = 1, True
                else:
                    f = 1
        else:
            f = 1
        tp.append(t)
        fp.append(f)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if use_07_metric:
        return sum(max([p for r, p in zip(rec, prec) if r >= t], default=0.0) for t in np.arange(0, 1.1, 0.1)) / 11
    mrec = [0.0] + list(rec) + [1.0]
    mpre = [0.0] + list(prec) + [0.0]
    for k in range(len(mpre) - 2, -1, -1):
        mpre[k] = max(mpre[k], mpre[k + 1])
    return sum((mrec[k + 1] - mrec[k]) * mpre[k + 1] for k in range(len(mrec) - 1) if mrec[k + 1] != mrec[k])
