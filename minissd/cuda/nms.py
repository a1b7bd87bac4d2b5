"""GPU twin of ``minissd.nms``: greedy NMS and the whole ``detect`` post-processing on the GPU.

Greedy NMS (Liu et al. 2016, sec. 3; DESIGN.md): walk the boxes from the highest score
down; keep a box unless a box kept before it overlaps it by IoU > threshold. The walk is
sequential by nature (whether box a is kept depends on every decision before it); what can
run in parallel is one step's work, comparing the kept box with every later box. So
``_suppress_kernel`` is the CPU's ``_suppress`` with:

- one *block* per NMS problem (one class of one image), all problems of a batch at once;
- the inner loop ``for b in range(a + 1, N)`` spread over the block's threads (block-stride),
  and a ``cuda.syncthreads()`` after each step before anyone looks at box a + 1.

``detect`` keeps everything else on the GPU too. Where the CPU twin sorts with NumPy
(``np.argpartition`` for the ``max_per_class`` best of a class, ``np.argsort`` for the
``top_k`` best of an image), one block per class (``candidates_kernel``) or per image
(``top_k_kernel``) selects and orders them with ``minissd.cuda.select``: radix select of
the k-th largest score, ties to the lower index, then each pick's rank among the picks. The
result is the CPU's list (equal scores: lower prior index, then lower class first), except
when equal scores straddle the ``max_per_class`` cut, where ``np.argpartition`` picks among
them arbitrarily and the GPU takes the lower prior indices.
"""

import math

import numpy as np

from minissd import boxes as cpu_boxes
from minissd.boxes import VARIANCES
from minissd.cuda import blocks_for, is_device_array, launch_1d, require, on_device
from minissd.cuda import select
from minissd.cuda.boxes import _box_iou_gpu, _decode_rows_kernel
from minissd.cuda.loss import _log_sum_exp_row_gpu
from minissd.cuda.select import SCRATCH_SIZE, block_sum, chunk, order_key, sorted_selection

cuda = require()

NMS_THREADS = 128  # threads of one block, i.e. of one NMS problem


@cuda.jit
def _suppress_kernel(boxes, image, order, count, iou_threshold, suppressed):
    """Greedy NMS of problem q = ``cuda.blockIdx.x``; twin of ``nms._suppress``.

    - boxes: (B, P, 4) corner form, the boxes of B images;
    - image: (Q,) the image of problem q; order: (Q, L) its box indices by decreasing
      score, padded; count: (Q,) how many of a row of ``order`` are real (N);
    - iou_threshold: a box is dropped when its IoU with a kept box is > iou_threshold;
    - suppressed: (Q, L) bool, written, by position in ``order`` as on the CPU: the kept
      boxes are ``order[q, a]`` for the a < N with ``suppressed[q, a]`` False.
    """
    q = cuda.blockIdx.x
    m, N = image[q], count[q]
    for a in range(cuda.threadIdx.x, N, cuda.blockDim.x):
        suppressed[q, a] = False
    cuda.syncthreads()
    for a in range(N):  # every thread walks the same a, in order
        if not suppressed[q, a]:  # box a survived every better box: kept; it drops the rest
            i = order[q, a]
            for b in range(a + 1 + cuda.threadIdx.x, N, cuda.blockDim.x):
                j = order[q, b]
                if not suppressed[q, b] and _box_iou_gpu(
                        boxes[m, i, 0], boxes[m, i, 1], boxes[m, i, 2], boxes[m, i, 3],
                        boxes[m, j, 0], boxes[m, j, 1], boxes[m, j, 2], boxes[m, j, 3]) > iou_threshold:
                    suppressed[q, b] = True
        cuda.syncthreads()  # outside the if: every thread of the block must reach it


def nms(boxes, scores, iou_threshold):
    """Greedy NMS of one set of boxes on the GPU (twin of ``minissd.nms.nms``).

    - boxes: (N, 4) corner form; scores: (N,); iou_threshold in [0, 1].
    - returns: kept indices (K,) int64, highest score first (equal scores: lower index first).
    The sort by score is NumPy's, on the host, as in the CPU's ``_nms``; ``detect`` ranks on
    the GPU instead.
    """
    boxes = cpu_boxes._as_boxes(boxes, "boxes")
    scores = np.asarray(scores)
    if scores.shape != (boxes.shape[0],) or scores.dtype.kind not in "fiu":
        raise ValueError(f"scores: expected ({boxes.shape[0]},) numbers to go with boxes, got "
                         f"shape {scores.shape} dtype {scores.dtype}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores: contains NaN or inf")
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold: expected a number in [0, 1], got {iou_threshold}")
    N = boxes.shape[0]
    order = np.argsort(-scores, kind="stable")[None]  # (1, N)
    suppressed = cuda.device_array((1, max(N, 1)), dtype=np.bool_)
    if N:
        _suppress_kernel[1, NMS_THREADS](on_device(boxes[None], np.float32), on_device(np.zeros(1), np.int64),
                                   on_device(order, np.int64), on_device(np.array([N]), np.int64),
                                   float(iou_threshold), suppressed)
    return order[0][~suppressed.copy_to_host()[0, :N]].astype(np.int64)


# ---- detect: decode, softmax, per-class candidates, NMS, top-k, all on the GPU -------------

@cuda.jit
def softmax_kernel(conf, scores):
    """scores[b, p] = softmax(conf[b, p]) over the classes, as exp(log_softmax): the formula of ``nms.detect``."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    B, P, K = conf.shape
    for e in range(start, B * P, stride):
        b, p = e // P, e % P
        lse = _log_sum_exp_row_gpu(conf, b, p)  # the CPU loss's own, minissd/loss.py
        for c in range(K):
            scores[b, p, c] = math.exp(conf[b, p, c] - lse)


@cuda.jit
def clip_kernel(x, lo, hi):
    """x = min(max(x, lo), hi), for a flat array: ``nms.detect``'s clip of the decoded boxes."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for e in range(start, x.shape[0], stride):
        x[e] = min(max(x[e], lo), hi)


@cuda.jit
def candidates_kernel(scores, conf_threshold, keys, packed, order, count):
    """Problem q = (image, class) = ``cuda.blockIdx.x``: its best boxes above the threshold, best first.

    Another algorithm for the ``np.argpartition`` of ``nms.per_class_nms`` (which
    ``nms.detect`` calls per image): block-wide radix select.

    - scores: (B, P, C+1); problem q = b * C + (c - 1);
    - keys: (Q, P) uint32 and packed: (Q, L) int64, scratch;
    - order: (Q, L) int64, written: order[q, r] = the prior ranked r (L = max_per_class);
      count: (Q,) int64, written: how many of order[q] are filled, min(L, candidates).
    """
    scratch = cuda.shared.array(SCRATCH_SIZE, np.int64)
    q = cuda.blockIdx.x
    C = scores.shape[2] - 1
    b, c = q // C, q % C + 1
    lo, hi = chunk(scores.shape[1])
    mine = 0
    for p in range(lo, hi):  # candidates get a key > 0, the others 0
        s = scores[b, p, c]
        keys[q, p] = order_key(s) if s > conf_threshold else 0
        mine += s > conf_threshold
    k = min(block_sum(mine, scratch), order.shape[1])
    if cuda.threadIdx.x == 0:
        count[q] = k
    if k > 0:  # the same for every thread of the block
        sorted_selection(keys[q], k, packed[q], order[q], scratch)


@cuda.jit
def top_k_kernel(boxes, scores, order, count, suppressed, keys, packed, picks,
                 out_boxes, out_labels, out_scores, out_count):
    """Image b = ``cuda.blockIdx.x``: its top_k kept detections over all classes, best first.

    Another algorithm for the final ``np.argsort`` of ``nms.per_class_nms``: the same selection.

    - boxes (B, P, 4) and scores (B, P, C+1); order, count from ``candidates_kernel``;
      suppressed from ``_suppress_kernel``;
    - keys (B, C*L) uint32, packed and picks (B, top_k) int64: scratch; detection e of
      image b is position a = e % L of class c = e // L + 1 (so equal scores: lower class,
      then earlier position first, the order in which the CPU concatenates them);
    - out_boxes (B, top_k, 4), out_labels (B, top_k), out_scores (B, top_k): written;
      out_count (B,): how many of each image's rows are filled.
    """
    scratch = cuda.shared.array(SCRATCH_SIZE, np.int64)
    b = cuda.blockIdx.x
    C, L = scores.shape[2] - 1, order.shape[1]
    lo, hi = chunk(C * L)
    mine = 0
    for e in range(lo, hi):  # kept detections get a key > 0
        q, a = b * C + e // L, e % L
        keys[b, e] = 0
        if a < count[q] and not suppressed[q, a]:
            keys[b, e] = order_key(scores[b, order[q, a], e // L + 1])
            mine += 1
    k = min(block_sum(mine, scratch), out_labels.shape[1])
    if cuda.threadIdx.x == 0:
        out_count[b] = k
    if k > 0:
        sorted_selection(keys[b], k, packed[b], picks[b], scratch)
        for r in range(cuda.threadIdx.x, k, cuda.blockDim.x):  # copy the picks out, in rank order
            e = picks[b, r]
            c, p = e // L + 1, order[b * C + e // L, e % L]
            for j in range(4):
                out_boxes[b, r, j] = boxes[b, p, j]
            out_labels[b, r] = c
            out_scores[b, r] = scores[b, p, c]


def detect(loc, conf, priors, conf_threshold=0.01, nms_threshold=0.45, top_k=200,
           variances=VARIANCES, max_per_class=200):
    """Detections for a batch, on the GPU (twin of ``minissd.nms.detect``, same arguments).

    - loc: (B, P, 4) offsets; conf: (B, P, C+1) logits; priors: (P, 4) centre form
      (NumPy or device arrays; NumPy ones are checked as on the CPU).
    - returns: a list of B tuples (boxes (K, 4) float32 corner form clipped to [0, 1],
      labels (K,) int64 in 1..C, scores (K,) float32), best first, K <= top_k; the only copy
      back to the host is these (B, top_k) results.
    """
    if not any(is_device_array(a) for a in (loc, conf, priors)):
        loc, conf = np.asarray(loc), np.asarray(conf)
        if conf.ndim != 3 or conf.shape[2] < 2 or loc.shape != conf.shape[:2] + (4,):
            raise ValueError(f"detect: expected loc (B, P, 4) and conf (B, P, C+1), "
                             f"got {loc.shape} and {conf.shape}")
        if not (np.all(np.isfinite(loc)) and np.all(np.isfinite(conf))):
            raise ValueError("loc or conf: contains NaN or inf")
        priors = cpu_boxes._check_priors(priors)
    v0, v1 = cpu_boxes._check_variances(variances)
    if top_k < 1 or max_per_class < 1:
        raise ValueError(f"top_k and max_per_class: expected >= 1, got {top_k}, {max_per_class}")
    B, P, K = conf.shape
    C, L = K - 1, int(max_per_class)
    if B == 0:  # (a GPU refuses a grid with no blocks)
        return []

    boxes = cuda.device_array((B * P, 4), dtype=np.float32)  # decoded, images one after another
    _decode_rows_kernel[launch_1d(B * P)](on_device(loc, np.float32).reshape(B * P, 4),
                                    on_device(priors, np.float32), np.float32(v0), np.float32(v1), boxes)
    clip_kernel[launch_1d(B * P * 4)](boxes.reshape(B * P * 4), np.float32(0.0), np.float32(1.0))
    boxes = boxes.reshape(B, P, 4)
    scores = cuda.device_array((B, P, K), dtype=np.float32)
    softmax_kernel[launch_1d(B * P)](on_device(conf, np.float32), scores)

    Q = B * C  # one problem per (image, class)
    order = cuda.device_array((Q, L), dtype=np.int64)
    count = cuda.device_array(Q, dtype=np.int64)
    keys, packed = cuda.device_array((Q, P), np.uint32), cuda.device_array((Q, L), np.int64)  # scratch
    candidates_kernel[Q, select.SELECT_THREADS](scores, np.float32(conf_threshold), keys, packed,
                                                order, count)  # a block per problem
    image = cuda.to_device(np.repeat(np.arange(B, dtype=np.int64), C))  # (Q,) image of each problem
    suppressed = cuda.device_array((Q, L), dtype=np.bool_)
    _suppress_kernel[Q, NMS_THREADS](boxes, image, order, count, float(nms_threshold), suppressed)

    out_boxes = cuda.device_array((B, top_k, 4), dtype=np.float32)
    out_labels = cuda.device_array((B, top_k), dtype=np.int64)
    out_scores = cuda.device_array((B, top_k), dtype=np.float32)
    out_count = cuda.device_array(B, dtype=np.int64)
    keys, packed, picks = (cuda.device_array((B, C * L), np.uint32), cuda.device_array((B, top_k), np.int64),
                           cuda.device_array((B, top_k), np.int64))  # scratch
    top_k_kernel[B, select.SELECT_THREADS](boxes, scores, order, count, suppressed, keys, packed, picks,
                                           out_boxes, out_labels, out_scores, out_count)  # a block per image
    n = out_count.copy_to_host()
    bx, lb, sc = out_boxes.copy_to_host(), out_labels.copy_to_host(), out_scores.copy_to_host()
    return [(bx[b, :n[b]], lb[b, :n[b]], sc[b, :n[b]]) for b in range(B)]
