"""GPU twin of ``minissd.matching``: match a whole batch of images to the default boxes at once.

The rule is the paper's and the CPU's (Liu et al. 2016, sec. 2.2): each ground truth claims
the prior it overlaps most, whatever the IoU; every other prior takes the ground truth it
overlaps most, as a positive when that IoU >= 0.5. A batch is matched with six launches:

1. ``iou_batch_kernel``    ious (B, G, P), one thread per (image, ground truth, prior);
2. ``best_prior_kernel``   best_prior (B, G): the argmax of each row of ious, a *reduction*:
                           one block per (image, ground truth); its threads each scan a
                           stride of the priors, then halve the candidates in shared memory
                           until one is left (ties go to the lower prior index, as
                           ``np.argmax`` does on the CPU);
3. ``_match_one_kernel`` best_gt, labels (B, P): ``_match_one``'s two steps, in its order,
                           every loop over priors a grid-stride loop, one row of blocks per image;
4. ``gather_kernel``       matched (B, P, 4) = the ground-truth box of each prior;
5. ``boxes._encode_rows_kernel`` the targets, encoded against the priors;
6. ``zero_background_kernel`` background rows set to 0, as on the CPU.

Images have different numbers of ground truths: they are padded to G = the largest count,
``num_gt[b]`` says how many are real, and the padding rows are never read as objects.
"""

import numpy as np

from minissd import matching as cpu
from minissd.boxes import VARIANCES
from minissd.cuda import blocks_for, launch_1d, require, on_device, on_host
from minissd.cuda.boxes import TILE_2D, _box_iou_gpu, _encode_rows_kernel

cuda = require()

REDUCE_THREADS = 128  # threads of a best_prior_kernel block (at most; a power of two for the halving)


@cuda.jit
def iou_batch_kernel(gt_boxes, num_gt, corners_t, ious):
    """``ious[b, g, p]`` = IoU of ground truth g of image b with prior p; the grid's z is the image.

    The ``_iou_matrix`` call of ``matching._match_image``, for every image of a batch at once.

    - gt_boxes: (B, G, 4) corner, padded; num_gt: (B,); corners_t: (4, P) the priors'
      corners stored transposed (as ``boxes._iou_matrix_kernel`` reads them); ious: (B, G, P).
    """
    p, g = cuda.grid(2)
    b = cuda.blockIdx.z
    if g < num_gt[b] and p < corners_t.shape[1]:
        box = gt_boxes[b, g]
        ious[b, g, p] = _box_iou_gpu(box[0], box[1], box[2], box[3],
                                     corners_t[0, p], corners_t[1, p], corners_t[2, p], corners_t[3, p])


@cuda.jit
def best_prior_kernel(ious, num_gt, best_prior):
    """``best_prior[b, g]`` = argmax over p of ``ious[b, g, p]``; block (g, b) reduces row (b, g).

    The ``ious.argmax(axis=1)`` of ``matching._match_image``, as a block reduction.

    The CPU computes ``ious.argmax(axis=1)``. Here a block of T threads shares the row
    (T = ``cuda.blockDim.x``, a power of two <= REDUCE_THREADS, the shared arrays' size):
    thread t first keeps the best of priors t, t + T, t + 2T, ..., then the T candidates are
    halved in shared memory, T/2, T/4, ... 1, with a ``cuda.syncthreads()`` after each
    halving so that every thread reads finished values.
    """
    best_iou = cuda.shared.array(REDUCE_THREADS, np.float32)  # candidates of this block
    best_p = cuda.shared.array(REDUCE_THREADS, np.int64)
    g, b, t, T = cuda.blockIdx.x, cuda.blockIdx.y, cuda.threadIdx.x, cuda.blockDim.x
    if g >= num_gt[b]:  # a padding row: the whole block leaves together (no one waits below)
        return
    P = ious.shape[2]
    best_iou[t], best_p[t] = -1.0, P  # "nothing yet": loses to any real prior
    for p in range(t, P, T):
        if ious[b, g, p] > best_iou[t]:  # strict: the first (lowest) p of equals stays
            best_iou[t], best_p[t] = ious[b, g, p], p
    cuda.syncthreads()
    half = T // 2
    while half > 0:
        if t < half:
            o = t + half  # thread t merges its candidate with thread o's
            if best_iou[o] > best_iou[t] or (best_iou[o] == best_iou[t] and best_p[o] < best_p[t]):
                best_iou[t], best_p[t] = best_iou[o], best_p[o]
        cuda.syncthreads()
        half //= 2
    if t == 0:
        best_prior[b, g] = best_p[0]


@cuda.jit
def _match_one_kernel(ious, gt_labels, num_gt, threshold, best_prior, best_iou, best_gt, labels_out):
    """Match every image's priors to its ground truths; twin of ``matching._match_one``.

    - ious: (B, G, P) float32; gt_labels: (B, G) int64; num_gt: (B,) real ground truths of
      each image; threshold: float; best_prior: (B, G) from ``best_prior_kernel``;
    - best_iou: (B, P) float32 scratch (the CPU's ``best_iou = ious[0].copy()``);
    - best_gt, labels_out: (B, P) int64, written.
    The CPU loop's arguments (plus num_gt and the scratch) and steps, in its order, for image
    b = ``cuda.blockIdx.y``: every ``for p in range(P)`` is the grid-stride loop over the
    priors, so each thread owns the priors p = start, start + stride, ... and no two threads
    ever write the same entry; step 2's ``best_gt[best_prior[g]] = g`` is done by the
    thread that owns prior best_prior[g].
    """
    b = cuda.blockIdx.y
    G, P = num_gt[b], ious.shape[2]
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    if G == 0:  # no objects: every prior is background
        for p in range(start, P, stride):
            best_gt[b, p] = 0
            labels_out[b, p] = 0
        return
    # 1. every prior takes the ground truth it overlaps most; positive if IoU >= threshold.
    for p in range(start, P, stride):
        best_iou[b, p] = ious[b, 0, p]  # best IoU so far of each prior
        best_gt[b, p] = 0
    for g in range(1, G):
        for p in range(start, P, stride):  # a warp reads 32 neighbouring entries of row g
            if ious[b, g, p] > best_iou[b, p]:  # strict: ties keep the earlier ground truth
                best_iou[b, p] = ious[b, g, p]
                best_gt[b, p] = g
    for p in range(start, P, stride):
        labels_out[b, p] = gt_labels[b, best_gt[b, p]] if best_iou[b, p] >= threshold else 0
    # 2. every ground truth claims the prior it overlaps most, even below the threshold
    for g in range(G):
        p = best_prior[b, g]
        if p % stride == start:  # a prior of this thread's grid-stride loop
            best_gt[b, p] = g
            labels_out[b, p] = gt_labels[b, g]


@cuda.jit
def gather_kernel(gt_boxes, best_gt, matched):
    """``matched[b, p]`` = ``gt_boxes[b, best_gt[b, p]]``: each prior's ground-truth box (corner),
    the ``boxes[best_gt[pos]]`` of ``matching._match_image`` (here for every prior)."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    B, P = best_gt.shape
    for e in range(start, B * P, stride):
        b, p = e // P, e % P
        for k in range(4):
            matched[b, p, k] = gt_boxes[b, best_gt[b, p], k]


@cuda.jit
def zero_background_kernel(labels, loc_t):
    """``loc_t[b, p] = 0`` where ``labels[b, p] == 0``: background rows stay 0, as in ``matching._match_image``."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    B, P = labels.shape
    for e in range(start, B * P, stride):
        b, p = e // P, e % P
        if labels[b, p] == 0:
            for k in range(4):
                loc_t[b, p, k] = 0.0


def _pad(checked):
    """[(boxes (G_b, 4), labels (G_b,))] -> boxes (B, G, 4), labels (B, G), num_gt (B,).

    Padding rows are the unit box [0, 0, 1, 1] (so that an image without objects still
    encodes to finite numbers before its rows are zeroed) and label 0; never read as objects.
    """
    B = len(checked)
    G = max([1] + [boxes.shape[0] for boxes, _ in checked])
    boxes = np.tile(np.array([0, 0, 1, 1], np.float32), (B, G, 1))  # (B, G, 4)
    labels = np.zeros((B, G), dtype=np.int64)
    num_gt = np.zeros(B, dtype=np.int64)
    for b, (bx, lb) in enumerate(checked):
        boxes[b, :len(bx)], labels[b, :len(lb)], num_gt[b] = bx, lb, len(bx)
    return boxes, labels, num_gt


def match_batch(gt_boxes_list, gt_labels_list, priors, iou_threshold=0.5, variances=VARIANCES,
                num_classes=None, rule="per-prediction", device_out=False):
    """``match`` for every image of a batch, on the GPU (twin of ``matching.match_batch``).

    - gt_boxes_list: B arrays (G_b, 4) corner form; gt_labels_list: B arrays (G_b,) in 1..C.
    - priors: (P, 4) centre form; iou_threshold, variances, num_classes as on the CPU (and
      checked by the CPU's checks).
    - rule: only "per-prediction" (the default): the GPU has no bipartite kernels.
    - device_out: return device arrays (for a training step that stays on the GPU).
    - returns loc_t: (B, P, 4) float32 (0 at background priors), conf_t: (B, P) int64.
    """
    if len(gt_boxes_list) != len(gt_labels_list):
        raise ValueError(f"gt_labels_list: {len(gt_labels_list)} images, but gt_boxes_list has "
                         f"{len(gt_boxes_list)}")
    if rule != "per-prediction":
        raise ValueError(f"rule: the GPU matches with 'per-prediction' only, got {rule!r} "
                         "(the CPU's matching.match_batch has 'bipartite')")
    threshold = cpu._check_threshold(iou_threshold)
    v0, v1 = cpu._check_variances(variances)
    priors, corners_t = cpu._prepare_priors(priors)  # (P, 4) centre, (4, P) corners
    boxes, labels, num_gt = _pad(cpu._check_gt_batch(gt_boxes_list, gt_labels_list, num_classes))
    (B, G), P = labels.shape, priors.shape[0]

    loc_t, conf_t = match_on_device(on_device(boxes, np.float32), on_device(labels, np.int64),
                                    on_device(num_gt, np.int64), on_device(priors, np.float32),
                                    on_device(corners_t, np.float32), threshold, v0, v1)
    return on_host(loc_t, not device_out), on_host(conf_t, not device_out)


def match_on_device(boxes, labels, num_gt, priors, corners_t, threshold, v0, v1):
    """The six launches of ``match_batch`` on checked device arrays; returns (loc_t, conf_t) on the device.

    - boxes (B, G, 4) float32, labels (B, G) int64, num_gt (B,) int64: padded ground truth;
    - priors (P, 4) centre and corners_t (4, P) float32; threshold, v0, v1: floats.
    """
    (B, G), P = labels.shape, priors.shape[0]
    ious = cuda.device_array((B, G, P), dtype=np.float32)
    grid = (blocks_for(P, TILE_2D[0]), blocks_for(G, TILE_2D[1]), B)  # x: priors, y: objects, z: images
    iou_batch_kernel[grid, TILE_2D](boxes, num_gt, corners_t, ious)
    best_prior = cuda.device_array((B, G), dtype=np.int64)
    best_prior_kernel[(G, B), REDUCE_THREADS](ious, num_gt, best_prior)  # a block per (g, b)
    best_iou = cuda.device_array((B, P), dtype=np.float32)  # scratch
    best_gt = cuda.device_array((B, P), dtype=np.int64)
    conf_t = cuda.device_array((B, P), dtype=np.int64)
    blocks, threads = launch_1d(P)
    _match_one_kernel[(blocks, B), threads](ious, labels, num_gt, np.float64(threshold), best_prior, best_iou,
                                            best_gt, conf_t)  # x: priors, y: images
    matched = cuda.device_array((B, P, 4), dtype=np.float32)
    gather_kernel[launch_1d(B * P)](boxes, best_gt, matched)
    loc_t = cuda.device_array((B * P, 4), dtype=np.float32)
    _encode_rows_kernel[launch_1d(B * P)](matched.reshape(B * P, 4), priors, np.float32(v0), np.float32(v1), loc_t)
    loc_t = loc_t.reshape(B, P, 4)
    zero_background_kernel[launch_1d(B * P)](conf_t, loc_t)
    return loc_t, conf_t


def match(gt_boxes, gt_labels, priors, iou_threshold=0.5, variances=VARIANCES, num_classes=None,
          rule="per-prediction"):
    """One image's targets on the GPU (twin of ``matching.match``): loc_t (P, 4), conf_t (P,)."""
    loc_t, conf_t = match_batch([gt_boxes], [gt_labels], priors, iou_threshold, variances, num_classes, rule)
    return loc_t[0], conf_t[0]
