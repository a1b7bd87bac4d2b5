"""Evaluation: PASCAL VOC average precision (AP), mean AP over classes, recall by object size.

The rules are those of the VOC development kit (Everingham et al., "The PASCAL Visual Object
Classes (VOC) Challenge", IJCV 2010, sec. 4.2, and the devkit's VOCevaldet.m):
- per class, the detections of all images are ranked by decreasing score;
- a detection is a true positive when its best-overlapping ground truth of that class in
  its image has IoU >= 0.5 and was not already taken by a higher-scored detection; a
  second detection of the same object is a false positive (duplicates are penalised);
- a detection whose best ground truth is marked "difficult" counts as neither: difficult
  objects are not required, and finding them is not punished;
- recall = TP / (number of non-difficult ground truths), precision = TP / (TP + FP) along
  the ranking, and AP summarises the precision/recall curve: VOC2007's 11-point average
  (``use_07_metric=True``, the number SSD reports) or the area under the curve made
  monotone (VOC2010 onwards).
Coordinates are continuous (normalised corners, no "+1" as in the devkit's pixel boxes).

Data structures (what ``minissd.nms.detect`` returns and ``minissd.data`` loads):
- detections: a list over images of ``(boxes (K, 4) corner, labels (K,) in 1..C, scores (K,))``;
- ground_truths: a list over images of ``(boxes (G, 4) corner, labels (G,) in 1..C,
  difficult (G,) bool)``; a 2-tuple ``(boxes, labels)`` means nothing is difficult.
"""

import math

import numpy as np

from .boxes import _as_boxes, iou

SIZE_BINS = (0.1, 0.3)  # sqrt(area) as a fraction of the image: small < 0.1 <= medium < 0.3 <= large


# ---- AP from a precision/recall curve -----------------------------------------------------------

def voc_ap(recall, precision, use_07_metric=True):
    """Average precision of one class from its precision/recall curve.

    - recall, precision: (D,) float, after each of the D ranked detections.
    - use_07_metric: True: VOC2007's 11-point AP, the mean over t = 0, 0.1, ..., 1 of the
      best precision at recall >= t (0 where recall never reaches t); False: the area under
      the interpolated curve (precision at r replaced by the best precision at recall >= r).
    - returns: AP in [0, 1], a float.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if recall.shape != precision.shape or recall.ndim != 1:
        raise ValueError(f"recall, precision: expected two (D,) arrays, got {recall.shape} and {precision.shape}")
    # [assignment voc_ap] 11-point: mean over t in 0, 0.1, ..., 1 of max precision where recall >= t; area: make precision non-increasing from the right, then sum (delta recall) * precision.
    if use_07_metric:
        ap = 0.0
        for t in np.linspace(0.0, 1.0, 11):
            above = recall >= t
            ap += (precision[above].max() if above.any() else 0.0) / 11
        return float(ap)
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # the envelope: best precision at recall >= r
    steps = np.flatnonzero(r[1:] != r[:-1])  # where recall moves
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))
    # [/assignment]


# ---- one class -----------------------------------------------------------------------------------

def _check_inputs(detections, ground_truths, num_classes):
    """Validate both lists; return them as arrays (difficult filled in with False)."""
    if len(detections) != len(ground_truths):
        raise ValueError(f"detections: {len(detections)} images, but ground_truths has {len(ground_truths)}")
    dets, gts = [], []
    for i, (d, g) in enumerate(zip(detections, ground_truths)):
        if len(d) != 3:
            raise ValueError(f"detections[{i}]: expected (boxes, labels, scores)")
        if len(g) not in (2, 3):
            raise ValueError(f"ground_truths[{i}]: expected (boxes, labels) or (boxes, labels, difficult)")
        db, dl, ds = (np.asarray(x) for x in d)
        db = _as_boxes(db.reshape(-1, 4) if db.size == 0 else db, f"detections[{i}] boxes")
        gb = np.asarray(g[0])
        gb = _as_boxes(gb.reshape(-1, 4) if gb.size == 0 else gb, f"ground_truths[{i}] boxes")
        gl = np.asarray(g[1])
        gd = np.asarray(g[2], dtype=bool) if len(g) == 3 else np.zeros(len(gb), dtype=bool)
        if dl.shape != (len(db),) or ds.shape != (len(db),):
            raise ValueError(f"detections[{i}]: labels {dl.shape} and scores {ds.shape} must be ({len(db)},)")
        if gl.shape != (len(gb),) or gd.shape != (len(gb),):
            raise ValueError(f"ground_truths[{i}]: labels {gl.shape} and difficult {gd.shape} must be ({len(gb)},)")
        if not np.all(np.isfinite(ds.astype(np.float64))):
            raise ValueError(f"detections[{i}] scores: contains NaN or inf")
        for name, lab in ((f"detections[{i}] labels", dl), (f"ground_truths[{i}] labels", gl)):
            if lab.size and (np.any(lab < 1) or (num_classes is not None and np.any(lab > num_classes))):
                raise ValueError(f"{name}: labels must be in 1..{num_classes or 'C'}, got {np.unique(lab).tolist()}")
        dets.append((db, dl.astype(np.int64), ds.astype(np.float64)))
        gts.append((gb, gl.astype(np.int64), gd))
    return dets, gts


def voc_tp_fp(scores, images, overlaps, difficult, iou_threshold=0.5):
    """True and false positives of one class's detections, ranked, by the VOC devkit's rules.

    - scores: (D,) float, the class's detections over all images;
    - images: (D,) int, the image of each detection (an index into ``difficult``);
    - overlaps: D arrays, ``overlaps[k]`` (G_i,) float: the IoU of detection k with each
      object of the class in its image ``i = images[k]`` (empty when the image has none);
    - difficult: one (G_i,) bool array per image: which of its objects are difficult;
    - iou_threshold: a detection must overlap its object by IoU >= this (0.5).
    - returns: tp (D,) bool, fp (D,) bool, entry r for the r-th detection by decreasing score
      (ties: lower k first). A detection takes the object of its image it overlaps most (the
      first on equal IoU): a true positive if IoU >= threshold and no higher-ranked detection
      took that object; a false positive if the IoU is lower or the object was taken; neither
      (tp = fp = False) if that object is difficult.
    """
    scores = np.asarray(scores, dtype=np.float64)
    images = np.asarray(images, dtype=np.int64)
    if images.shape != scores.shape or scores.ndim != 1 or len(overlaps) != len(scores):
        raise ValueError(f"scores, images, overlaps: expected D of each, got {scores.shape}, "
                         f"{images.shape} and {len(overlaps)}")
    overlaps = [np.asarray(o, dtype=np.float64) for o in overlaps]
    difficult = [np.asarray(d, dtype=bool) for d in difficult]
    # [assignment voc_tp_fp] Rank by decreasing score (stable); each detection takes the object of its image with the highest IoU: >= threshold and difficult: neither; >= threshold and not yet taken: TP (now taken); taken already or below the threshold (or no object): FP.
    tp = np.zeros(len(scores), dtype=bool)
    fp = np.zeros(len(scores), dtype=bool)
    taken = [np.zeros(len(d), dtype=bool) for d in difficult]  # object already detected?
    for r, k in enumerate(np.argsort(-scores, kind="stable")):  # best first; ties: lower k
        i, o = images[k], overlaps[k]
        j = int(np.argmax(o)) if o.size else -1
        if j >= 0 and o[j] >= iou_threshold:
            if difficult[i][j]:
                continue  # a difficult object: neither right nor wrong
            tp[r], fp[r] = not taken[i][j], taken[i][j]
            taken[i][j] = True
        else:
            fp[r] = True
    return tp, fp
    # [/assignment]


def _evaluate_class(dets, gts, label, iou_threshold):
    """recall (D,), precision (D,), number of non-difficult objects: checked inputs, one class."""
    scores, images, rows = [], [], []  # one entry per detection of this class
    difficult = []
    num_objects = 0
    for i, ((db, dl, ds), (gb, gl, gd)) in enumerate(zip(dets, gts)):
        mine = gl == label
        difficult.append(gd[mine])
        num_objects += int(np.sum(~gd[mine]))
        d = np.flatnonzero(dl == label)
        if d.size:
            overlaps = iou(db[d], gb[mine])  # (n, G_c)
            scores.extend(ds[d])
            images.extend([i] * d.size)
            rows.extend(overlaps)
    tp, fp = voc_tp_fp(scores, images, rows, difficult, iou_threshold)  # (D,), by rank
    counted = tp | fp  # detections on difficult objects leave the curve
    tp, fp = np.cumsum(tp[counted], dtype=np.float64), np.cumsum(fp[counted], dtype=np.float64)
    recall = tp / num_objects if num_objects else np.zeros_like(tp)
    precision = tp / np.maximum(tp + fp, 1.0)
    return recall, precision, num_objects


def evaluate_class(detections, ground_truths, label, iou_threshold=0.5, use_07_metric=True):
    """Precision/recall curve and AP of one class, VOC devkit rules (see the module docstring).

    - detections, ground_truths: lists over images, as in the module docstring.
    - label: the class, 1..C.
    - iou_threshold: a detection must overlap its object by IoU >= this (0.5).
    - returns (recall (D,), precision (D,), ap): one entry per ranked detection of the class
      that did not land on a difficult object; ap is NaN when the class has no non-difficult
      object (recall is undefined then).
    """
    dets, gts = _check_inputs(detections, ground_truths, None)
    recall, precision, n = _evaluate_class(dets, gts, int(label), float(iou_threshold))
    ap = voc_ap(recall, precision, use_07_metric) if n else math.nan
    return recall, precision, ap


def evaluate_detections(detections, ground_truths, num_classes=None, class_names=None,
                        iou_threshold=0.5, use_07_metric=True):
    """Per-class AP and their mean over all classes (mAP), VOC devkit rules.

    - detections, ground_truths: lists over images, as in the module docstring.
    - num_classes: C (labels are 1..C); or give ``class_names`` (C names, label i is
      ``class_names[i - 1]``).
    - iou_threshold: 0.5; use_07_metric: True for VOC2007's 11-point AP (as in the paper).
    - returns a dict: "mAP" (float, mean over the classes that have at least one
      non-difficult object), "ap" (list of C floats, class 1 first, NaN for a class with no
      object), "AP" ({name: ap}), "num_objects" (list of C ints, non-difficult objects).
    """
    if class_names is not None:
        class_names = [str(n) for n in class_names]
        if num_classes is not None and num_classes != len(class_names):
            raise ValueError(f"num_classes: {num_classes}, but class_names has {len(class_names)} names")
        num_classes = len(class_names)
    if num_classes is None or int(num_classes) < 1:
        raise ValueError("num_classes: give the number of object classes C >= 1 (or class_names)")
    num_classes = int(num_classes)
    names = class_names or [str(c) for c in range(1, num_classes + 1)]
    dets, gts = _check_inputs(detections, ground_truths, num_classes)
    aps, counts = [], []
    for c in range(1, num_classes + 1):
        recall, precision, n = _evaluate_class(dets, gts, c, float(iou_threshold))
        aps.append(voc_ap(recall, precision, use_07_metric) if n else math.nan)
        counts.append(n)
    present = [a for a in aps if not math.isnan(a)]
    return {
        "mAP": float(np.mean(present)) if present else math.nan,
        "ap": aps,
        "AP": dict(zip(names, aps)),
        "num_objects": counts,
    }


# ---- recall by object size -------------------------------------------------------------------------

def recall_by_size(detections, ground_truths, iou_threshold=0.5, bins=SIZE_BINS, min_score=0.0):
    """How many of the non-difficult objects are found, per object size.

    - detections, ground_truths: lists over images, as in the module docstring.
    - iou_threshold: an object is found when a detection of its class with score >=
      ``min_score`` overlaps it by IoU >= this (0.5). Unlike AP, several objects may be found
      by the same detection: this measures what the detector can localise, not its ranking.
    - bins: edges on sqrt(object area) in image fractions (normalised coordinates), default
      (0.1, 0.3): "small" below 0.1 (under 30 pixels on a 300-pixel input, close to COCO's 32),
      "medium" from 0.1 to 0.3, "large" from 0.3. More edges give more buckets (named by range).
    - returns: {bucket name: {"recall": float (NaN if empty), "found": int, "total": int,
      "range": (low, high)}}, in increasing size.
    """
    dets, gts = _check_inputs(detections, ground_truths, None)
    edges = [0.0] + [float(b) for b in bins] + [math.inf]
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"bins: expected increasing positive edges, got {bins!r}")
    names = (["small", "medium", "large"] if len(edges) == 4
             else [f"[{a:g}, {b:g})" for a, b in zip(edges, edges[1:])])
    found = np.zeros(len(names), dtype=np.int64)
    total = np.zeros(len(names), dtype=np.int64)
    for (db, dl, ds), (gb, gl, gd) in zip(dets, gts):
        keep = ~gd
        gb, gl = gb[keep], gl[keep]
        if not len(gb):
            continue
        size = np.sqrt((gb[:, 2] - gb[:, 0]) * (gb[:, 3] - gb[:, 1]))  # (G,)
        bucket = np.searchsorted(edges, size, side="right") - 1  # (G,)
        np.add.at(total, bucket, 1)
        confident = ds >= min_score
        overlaps = iou(gb, db[confident])  # (G, K)
        same_class = gl[:, None] == dl[confident][None, :]  # (G, K)
        hit = np.any((overlaps >= iou_threshold) & same_class, axis=1)  # (G,)
        np.add.at(found, bucket[hit], 1)
    return {
        name: {"recall": float(f / t) if t else math.nan, "found": int(f), "total": int(t),
               "range": (edges[k], edges[k + 1])}
        for k, (name, f, t) in enumerate(zip(names, found, total))
    }


# ---- the detections file ------------------------------------------------------------------------
#
# One JSON list for a whole set of images, written by ``evaluate --save-detections`` and by
# ``detect`` (and read by ``minissd.analyze``): one row per detection,
# {"image_id": str, "label": class name, "score": float, "box": [xmin, ymin, xmax, ymax]}
# with the box in normalised corner form.

DETECTION_KEYS = ("image_id", "label", "score", "box")


def detection_rows(image_ids, detections, class_names):
    """The rows of the detections file: one dict per detection, images in order, best first.

    - image_ids: one str per image; detections: as in the module docstring (labels 1..C).
    """
    if len(image_ids) != len(detections):
        raise ValueError(f"image_ids: {len(image_ids)}, but detections has {len(detections)} images")
    return [{"image_id": str(image_id), "label": class_names[int(label) - 1],
             "score": float(score), "box": [float(v) for v in box]}
            for image_id, (boxes, labels, scores) in zip(image_ids, detections)
            for box, label, score in zip(boxes, labels, scores)]


def write_detections(path, image_ids, detections, class_names):
    """Write the detections file (written next to ``path``, then renamed: never half a file).

    Returns the number of rows written.
    """
    import json
    import os

    from .checkpoint import write_atomic

    rows = detection_rows(image_ids, detections, class_names)
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    write_atomic(path, lambda f: f.write(json.dumps(rows).encode("utf-8")), ".json")
    return len(rows)


def is_detections_file(path):
    """True when ``path`` holds what ``write_detections`` writes (a list of rows with exactly
    its keys): the proof that overwriting it loses nothing of the user's."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(rows, list) and all(
        isinstance(r, dict) and tuple(sorted(r)) == tuple(sorted(DETECTION_KEYS)) for r in rows)


# ---- command line ---------------------------------------------------------------------------------
#
# python -m minissd.evaluate --checkpoint C (--data SPEC | --tiny-voc | --voc-root R) --split val
#                            [--save-detections F.json]
# Runs a trained checkpoint over a split and prints the per-class AP table, both metrics.

def format_ap_table(class_names, ap07, ap_area, counts):
    """Per-class AP as a text table (11-point and area), with the mean on the last line."""
    lines = [f"{'class':>14s} {'objects':>8s} {'AP (07, 11-pt)':>15s} {'AP (area)':>10s}"]
    for name, a, b, n in zip(class_names, ap07, ap_area, counts):
        lines.append(f"{name:>14s} {n:8d} {a:15.4f} {b:10.4f}")
    mean07 = np.nanmean(ap07) if len(ap07) else math.nan
    mean_area = np.nanmean(ap_area) if len(ap_area) else math.nan
    lines.append(f"{'mAP':>14s} {sum(counts):8d} {mean07:15.4f} {mean_area:10.4f}")
    return "\n".join(lines)


def main(argv=None):
    import argparse
    import os

    from .data import dataset_spec, open_dataset
    from .detect import load_model, predict_dataset
    from .errors import ConfigError

    parser = argparse.ArgumentParser(prog="python -m minissd.evaluate",
                                     description="VOC AP of a trained checkpoint on a dataset split.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint.npz written by minissd.train")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="a dataset spec: tiny-voc, voc:PATH, coco:ANN.json[,IMAGES], "
                        "yolo:PATH (docs/own-data.md)")
    source.add_argument("--tiny-voc", action="store_true", help="tiny-voc (generated if absent)")
    source.add_argument("--voc-root", help="a VOC year folder (Annotations/, JPEGImages/, ImageSets/)")
    parser.add_argument("--data-dir", default=None, help="where tiny-voc lives (default $MINISSD_DATA or ~/.cache/minissd)")
    parser.add_argument("--split", default="val", help="the split to evaluate (default val)")
    parser.add_argument("--save-detections", metavar="F.json", help="write every detection as JSON")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size: {args.batch_size} is not a positive number of images")
    if args.save_detections and os.path.isdir(args.save_detections):
        raise ConfigError(f"--save-detections: {args.save_detections} is a folder; give a file name")

    spec = dataset_spec(data=args.data or "", tiny_voc=args.tiny_voc, voc_root=args.voc_root or "")
    model, classes = load_model(args.checkpoint)
    dataset = open_dataset(spec, args.split, data_dir=args.data_dir, classes=classes)
    if len(dataset) == 0:
        raise ConfigError(f"{spec} ({args.split}): no images to evaluate")
    detections, ground_truths = predict_dataset(model, dataset, batch_size=args.batch_size)
    result07 = evaluate_detections(detections, ground_truths, class_names=classes)
    result_area = evaluate_detections(detections, ground_truths, class_names=classes, use_07_metric=False)
    where = getattr(dataset, "root", spec)
    print(f"{args.checkpoint} on {where} ({args.split}, {len(dataset)} images), IoU 0.5, difficult ignored:")
    print(format_ap_table(classes, result07["ap"], result_area["ap"], result07["num_objects"]))
    sizes = recall_by_size(detections, ground_truths)
    print("recall by object size: " + ", ".join(
        f"{name} {r['recall']:.3f} ({r['found']}/{r['total']})" for name, r in sizes.items()))
    if args.save_detections:
        n = write_detections(args.save_detections, dataset.ids, detections, classes)
        print(f"wrote {n} detections to {args.save_detections}")
    return 0


if __name__ == "__main__":
    import sys

    from . import cli

    sys.exit(cli.run(main))
