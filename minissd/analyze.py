"""Where a detector's errors come from: error types, what fixing each is worth, size and shape.

``python -m minissd.analyze --checkpoint C (--tiny-voc | --voc-root R | --data SPEC) --split val
[--detections F.json] [--json OUT] [--out DIR]`` prints the breakdown, writes it as JSON and
draws it (docs/ch10-errors.md, notebook 10). The analysis follows Hoiem, Chodpathumwan and Dai,
"Diagnosing Error in Object Detectors" (ECCV 2012), the tool behind the SSD paper's Fig. 3 and 4,
and TIDE (Bolya et al., ECCV 2020) for "the mAP gained if one error type were fixed", both
under the VOC rules of ``minissd.evaluate`` (IoU 0.5, difficult objects ignored, 11-point AP).

Each detection, taken class by class in decreasing score as VOC ranks them, is one of:

- ``correct``: IoU >= 0.5 with an object of its class not yet taken by a higher-scored detection
  (the object it overlaps most, as in the devkit);
- ``duplicate``: IoU >= 0.5 with an object of its class that a higher-scored detection took;
- ``localisation``: right class, 0.1 <= IoU < 0.5 with an object of its class;
- ``confusion``: IoU >= 0.1 with an object of another class (and < 0.1 with its own class);
- ``background``: IoU < 0.1 with every object;
- ignored (no type): its best object of its class (IoU >= 0.5) is difficult, as in VOC.

Objects (not difficult) that no ``correct`` detection above the score threshold finds are
``missed``. The tests run first in that order: a detection that could be several (a poorly
placed box on a star next to a cross) is the first that applies, right class before wrong.

What fixing a type means (each applied alone to the original detections, TIDE's oracles):
localisation: the box is moved onto its object, and becomes the correct detection of that
object if no detection finds it, else is dropped (it would be a duplicate); duplicate,
confusion, background: those detections are dropped; missed: objects that no detection finds
at any score are taken out of the count (recall's ceiling rises; a class that found none of
its objects keeps its AP). ``delta_map[type]`` is the
mAP after the fix minus the mAP before.

Data structures (those of ``minissd.evaluate``):
- detections: list over images of ``(boxes (K, 4) corner [0, 1], labels (K,) 1..C, scores (K,))``;
- ground_truths: list over images of ``(boxes (G, 4), labels (G,), difficult (G,) bool)``.
"""

import argparse
import json
import math
import os
import sys

import numpy as np

from .boxes import iou
from .errors import ConfigError, DatasetError
from .evaluate import _check_inputs, voc_ap

ERROR_TYPES = ("correct", "localisation", "duplicate", "confusion", "background")
FALSE_POSITIVES = ERROR_TYPES[1:]
FIXES = ("localisation", "duplicate", "confusion", "background", "missed")
IGNORED = -1  # the type code of a detection on a difficult object
LOW_IOU = 0.1  # below this a detection does not touch an object (Hoiem et al. 2012)

# Hoiem et al. 2012 (and the SSD paper's Fig. 4): per class, the objects sorted by area (or by
# aspect ratio w/h) fall into five buckets at the 10th, 30th, 70th and 90th percentiles.
SIZE_BUCKETS = ("XS", "S", "M", "L", "XL")
ASPECT_BUCKETS = ("XT", "T", "M", "W", "XW")  # extra tall ... extra wide
PERCENTILES = (10, 30, 70, 90)


# ---- 1. the type of every detection -----------------------------------------------------------------

def classify(dets, gts, num_classes, iou_threshold=0.5, low_iou=LOW_IOU):
    """The error type of every detection, VOC's ranking class by class.

    - dets, gts: checked lists (``evaluate._check_inputs``).
    - returns ``(types, targets, ious)``: lists over images of (K,) arrays:
      types int (index into ERROR_TYPES, or IGNORED), targets int (the object the detection
      is about, an index into that image's ground truth; -1 for background), ious float
      (its IoU with that object).
    """
    types = [np.full(len(d[0]), IGNORED, np.int64) for d in dets]
    targets = [np.full(len(d[0]), -1, np.int64) for d in dets]
    ious = [np.zeros(len(d[0])) for d in dets]
    overlaps = [iou(db, gb) if len(db) and len(gb) else np.zeros((len(db), len(gb)))
                for (db, _, _), (gb, _, _) in zip(dets, gts)]  # (K, G) per image
    for c in range(1, num_classes + 1):
        order = [(-float(s), i, k) for i, (_, dl, ds) in enumerate(dets)
                 for k, s in zip(np.flatnonzero(dl == c), ds[dl == c])]
        order.sort()  # best first; ties: image order, then detection order (as evaluate)
        taken = [np.zeros(len(g[0]), bool) for g in gts]
        for _, i, k in order:
            gl, gd = gts[i][1], gts[i][2]
            row = overlaps[i][k]  # (G,)
            same = np.where(gl == c, row, -1.0)
            j = int(np.argmax(same)) if len(row) else -1
            if j >= 0 and same[j] >= iou_threshold:
                if gd[j]:
                    kind = IGNORED
                elif not taken[i][j]:
                    kind, taken[i][j] = 0, True
                else:
                    kind = ERROR_TYPES.index("duplicate")
            elif j >= 0 and same[j] >= low_iou:
                kind = ERROR_TYPES.index("localisation")
            else:
                other = np.where(gl != c, row, -1.0)
                j = int(np.argmax(other)) if len(row) else -1
                if j >= 0 and other[j] >= low_iou:
                    kind = ERROR_TYPES.index("confusion")
                else:
                    kind, j = ERROR_TYPES.index("background"), -1
            types[i][k], targets[i][k] = kind, j
            ious[i][k] = row[j] if j >= 0 else (row.max() if len(row) else 0.0)
    return types, targets, ious


# ---- 2. AP from typed detections, with or without a fix ----------------------------------------------

def _class_ap(dets, gts, types, targets, c, fix=None, ignore=None, fp_bucket=None, use_07_metric=True):
    """AP of class c from the typed detections; ``fix`` applies one of FIXES.

    - ignore: optional list over images of (G,) bool: objects that count neither way (an
      out-of-bucket object is treated as difficult); fp_bucket: optional list over images of
      (K,) bool: which false positives count (the others are dropped).
    """
    correct, loc = 0, ERROR_TYPES.index("localisation")
    about_object = (correct, loc, ERROR_TYPES.index("duplicate"))  # kinds whose target is of class c
    dropped = {"duplicate", "confusion", "background"} & {fix}
    found = [np.zeros(len(g[0]), bool) for g in gts]  # objects that some correct detection finds
    for i, (t, tg) in enumerate(zip(types, targets)):
        found[i][tg[t == correct]] = True
    n_objects = 0
    for i, (gb, gl, gd) in enumerate(gts):
        counted = (gl == c) & ~gd
        if ignore is not None:
            counted &= ~ignore[i]
        if fix == "missed":
            counted &= found[i]
        n_objects += int(counted.sum())
    if n_objects == 0:
        if fix == "missed":  # every object of the class was missed: nothing to re-rank, no gain
            return _class_ap(dets, gts, types, targets, c, None, ignore, fp_bucket, use_07_metric)
        return math.nan
    rows = []  # (-score, image, detection index)
    for i, (_, dl, ds) in enumerate(dets):
        rows.extend((-float(ds[k]), i, k) for k in np.flatnonzero(dl == c))
    rows.sort()
    fixed = [f.copy() for f in found]  # localisation fix: objects that now have their detection
    hits = []
    for _, i, k in rows:
        kind, j = types[i][k], targets[i][k]
        if kind == IGNORED or (kind >= 0 and ERROR_TYPES[kind] in dropped):
            continue
        if kind == loc and fix == "localisation":
            if fixed[i][j] or gts[i][2][j]:
                continue  # its object is already found (or difficult): dropped, not a duplicate
            fixed[i][j] = True
            kind = correct
        if ignore is not None:
            # a detection on an object of its class belongs to that object's bucket (another
            # bucket's object counts neither way, like a difficult one); the others to their own box's
            if (ignore[i][j] if kind in about_object else not fp_bucket[i][k]):
                continue
        hits.append(kind == correct)
    tp = np.cumsum(hits, dtype=np.float64)
    fp = np.cumsum(np.logical_not(hits), dtype=np.float64)
    return voc_ap(tp / n_objects, tp / np.maximum(tp + fp, 1.0), use_07_metric)


def _mean(values):
    present = [v for v in values if not math.isnan(v)]
    return float(np.mean(present)) if present else math.nan


# ---- 3. buckets by size and aspect ratio ---------------------------------------------------------------

def _bucket_edges(values_per_class):
    """Per class, the 10/30/70/90th percentiles of the objects' values (area or aspect)."""
    return {c: (np.percentile(v, PERCENTILES) if len(v) else np.full(4, np.nan))
            for c, v in values_per_class.items()}


def _measure(boxes, size):
    """(area in pixels^2, aspect w/h) of (N, 4) normalised boxes on an image of size (H, W)."""
    h, w = size
    bw = (boxes[:, 2] - boxes[:, 0]) * w
    bh = (boxes[:, 3] - boxes[:, 1]) * h
    return bw * bh, bw / np.maximum(bh, 1e-9)


def _by_bucket(dets, gts, types, targets, num_classes, sizes, score_threshold, which, names,
               use_07_metric):
    """{bucket: {"recall", "max_recall", "ap", "objects"}} for which = 0 (area) or 1 (aspect)."""
    values = {c: [] for c in range(1, num_classes + 1)}
    for (gb, gl, gd), size in zip(gts, sizes):
        measure = _measure(gb, size)[which]
        for c, v in zip(gl[~gd], measure[~gd]):
            values[int(c)].append(v)
    edges = _bucket_edges({c: np.asarray(v) for c, v in values.items()})

    def bucket_of(labels, measure):
        return np.array([int(np.searchsorted(edges[int(c)], v, side="right")) if not
                         np.isnan(edges[int(c)][0]) else 2 for c, v in zip(labels, measure)], np.int64)

    gt_bucket = [bucket_of(gl, _measure(gb, s)[which]) for (gb, gl, _), s in zip(gts, sizes)]
    det_bucket = [bucket_of(dl, _measure(db, s)[which]) for (db, dl, _), s in zip(dets, sizes)]
    out = {}
    for b, name in enumerate(names):
        ignore = [gbk != b for gbk in gt_bucket]
        fp_in = [dbk == b for dbk in det_bucket]
        aps = [_class_ap(dets, gts, types, targets, c, ignore=ignore, fp_bucket=fp_in,
                         use_07_metric=use_07_metric) for c in range(1, num_classes + 1)]
        found = total = found_any = 0
        for (gb, gl, gd), gbk, (_, _, ds), t, tg in zip(gts, gt_bucket, dets, types, targets):
            mine = (gbk == b) & ~gd
            total += int(mine.sum())
            hit_any = np.zeros(len(gl), bool)
            hit_any[tg[t == 0]] = True
            hit = np.zeros(len(gl), bool)
            hit[tg[(t == 0) & (ds >= score_threshold)]] = True
            found += int((hit & mine).sum())
            found_any += int((hit_any & mine).sum())
        out[name] = {"recall": found / total if total else math.nan,
                     "max_recall": found_any / total if total else math.nan,
                     "ap": _mean(aps), "objects": total}
    return out


# ---- 4. the whole analysis ----------------------------------------------------------------------------

def analyze(detections, ground_truths, classes, score_threshold=0.3, iou_threshold=0.5,
            image_sizes=None, use_07_metric=True, top_false_positives=20):
    """The error analysis of one set of detections (see the module docstring).

    - detections, ground_truths: lists over images (the module docstring).
    - classes: the C class names (label k is ``classes[k - 1]``).
    - score_threshold: the counts, recall and confusion matrix use the detections scoring at
      least this (0.3, the threshold the pictures draw); AP and delta_map use all of them.
    - image_sizes: optional list of (H, W) per image, so that areas and aspect ratios are in
      pixels; None measures in normalised coordinates.
    - returns a JSON-able dict:
      "map" (VOC07 11-point mAP, as ``evaluate_detections``), "ap" {class: AP},
      "counts" {type: n} for the five types above the threshold and "missed",
      "counts_per_class" {class: {type: n}}, "delta_map" {fix: mAP gain},
      "by_size" / "by_aspect" {bucket: {"recall", "max_recall", "ap", "objects"}},
      "confusion" {"rows": C names + "background", "columns": C names + "missed",
      "matrix": (C+1) x (C+1) ints: row = the object's class, column = the predicted class:
      correct detections on the diagonal, confusions off it, background false positives in
      the last row, missed objects in the last column},
      "ranking" {"detections": [N...], type: [share of the N best-scored detections]},
      "false_positives": the ``top_false_positives`` best-scored ones, each {"image",
      "box", "label", "score", "type", "iou", "object_label"}.
    """
    classes = [str(c) for c in classes]
    C = len(classes)
    dets, gts = _check_inputs(detections, ground_truths, C)
    if image_sizes is None:
        image_sizes = [(1.0, 1.0)] * len(gts)
    if len(image_sizes) != len(gts):
        raise ValueError(f"image_sizes: {len(image_sizes)} sizes for {len(gts)} images")
    types, targets, ious = classify(dets, gts, C, iou_threshold)

    aps = [_class_ap(dets, gts, types, targets, c, use_07_metric=use_07_metric) for c in range(1, C + 1)]
    base = _mean(aps)
    delta = {}
    for fix in FIXES:
        fixed = [_class_ap(dets, gts, types, targets, c, fix=fix, use_07_metric=use_07_metric)
                 for c in range(1, C + 1)]
        delta[fix] = _mean(fixed) - base

    # counts, per class, and the confusion matrix, above the score threshold
    counts = dict.fromkeys(ERROR_TYPES + ("missed",), 0)
    per_class = {name: dict.fromkeys(ERROR_TYPES + ("missed",), 0) for name in classes}
    matrix = np.zeros((C + 1, C + 1), np.int64)  # rows: object class 1..C, background; cols: 1..C, missed
    for (db, dl, ds), (gb, gl, gd), t, tg in zip(dets, gts, types, targets):
        keep = (ds >= score_threshold) & (t != IGNORED)
        for kind, label, j in zip(t[keep], dl[keep], tg[keep]):
            name = ERROR_TYPES[kind]
            counts[name] += 1
            per_class[classes[label - 1]][name] += 1
            if name == "correct":
                matrix[label - 1, label - 1] += 1
            elif name == "confusion":
                matrix[gl[j] - 1, label - 1] += 1
            elif name == "background":
                matrix[C, label - 1] += 1
        found = np.zeros(len(gl), bool)
        found[tg[keep & (t == 0)]] = True
        for label in gl[~gd & ~found]:
            counts["missed"] += 1
            per_class[classes[label - 1]]["missed"] += 1
            matrix[label - 1, C] += 1

    # the share of each type among the N best-scored detections (Hoiem's Fig. 3 / SSD's Fig. 3)
    all_types = np.concatenate([t for t in types]) if types else np.zeros(0, np.int64)
    all_scores = np.concatenate([d[2] for d in dets]) if dets else np.zeros(0)
    ranked = all_types[np.argsort(-all_scores, kind="stable")]
    ranked = ranked[ranked != IGNORED]
    n_objects = int(sum((~g[2]).sum() for g in gts))
    steps = sorted({int(n) for n in np.unique(np.geomspace(1, max(len(ranked), 1), 40).round())})
    ranking = {"detections": steps, "objects": n_objects}
    for k, name in enumerate(ERROR_TYPES):
        share = np.cumsum(ranked == k) / np.arange(1, len(ranked) + 1) if len(ranked) else np.zeros(0)
        ranking[name] = [float(share[n - 1]) for n in steps] if len(ranked) else []

    # the best-scored false positives, for pictures
    fps = []
    for i, ((db, dl, ds), (gb, gl, _), t, tg, ov) in enumerate(zip(dets, gts, types, targets, ious)):
        for k in np.flatnonzero(t >= 1):
            fps.append({"image": i, "box": [float(v) for v in db[k]], "label": classes[dl[k] - 1],
                        "score": float(ds[k]), "type": ERROR_TYPES[t[k]], "iou": float(ov[k]),
                        "object_label": classes[gl[tg[k]] - 1] if tg[k] >= 0 else None})
    fps.sort(key=lambda f: -f["score"])

    return {
        "map": base,
        "ap": dict(zip(classes, aps)),
        "score_threshold": float(score_threshold),
        "counts": counts,
        "counts_per_class": per_class,
        "delta_map": delta,
        "by_size": _by_bucket(dets, gts, types, targets, C, image_sizes, score_threshold, 0,
                              SIZE_BUCKETS, use_07_metric),
        "by_aspect": _by_bucket(dets, gts, types, targets, C, image_sizes, score_threshold, 1,
                                ASPECT_BUCKETS, use_07_metric),
        "confusion": {"rows": classes + ["background"], "columns": classes + ["missed"],
                      "matrix": matrix.tolist()},
        "ranking": ranking,
        "false_positives": fps[:top_false_positives],
    }


def format_report(result):
    """The analysis as a few lines of text (what the command prints)."""
    c, d = result["counts"], result["delta_map"]
    found = c["correct"] + c["missed"]
    recall = f"  (recall {c['correct'] / found:.3f})" if found else ""
    lines = [f"mAP (VOC07 11-point, IoU 0.5): {result['map']:.4f}",
             f"at score >= {result['score_threshold']:g}: " + ", ".join(f"{k} {v}" for k, v in c.items()) + recall]
    lines.append("mAP gained if one error type were fixed: " + ", ".join(
        f"{k} {v:+.4f}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])))
    for key, title in (("by_size", "by size (area)"), ("by_aspect", "by aspect ratio")):
        lines.append(f"{title}: " + ", ".join(
            f"{name} AP {r['ap']:.3f} recall {r['recall']:.3f}" for name, r in result[key].items()))
    rows, cols, m = result["confusion"]["rows"], result["confusion"]["columns"], result["confusion"]["matrix"]
    width = max(len(n) for n in rows + cols) + 1
    lines.append("confusion (rows: object, columns: predicted):")
    lines.append(" " * width + "".join(f"{n:>{width}s}" for n in cols))
    for name, row in zip(rows, m):
        lines.append(f"{name:>{width}s}" + "".join(f"{v:>{width}d}" for v in row))
    return "\n".join(lines)


# ---- 5. reading detections and ground truth --------------------------------------------------------------

def ground_truth(dataset):
    """(ground_truths, image_sizes) of a dataset: VOC annotations when it has them (no JPEG is
    decoded), else each item's image shape."""
    annotations = getattr(dataset, "annotations", None)
    if annotations is not None:
        return ([(a.boxes, a.labels, a.difficult) for a in annotations],
                [(a.height, a.width) for a in annotations])
    gts, sizes = [], []
    for i in range(len(dataset)):
        image, boxes, labels, difficult = dataset[i]
        gts.append((boxes, labels, difficult))
        sizes.append(image.shape[:2])
    return gts, sizes


def read_detections(path, ids, classes):
    """Detections per image from the JSON that ``python -m minissd.evaluate --save-detections``
    writes: a list of ``{"image_id", "label" (class name), "score", "box" [x0, y0, x1, y1]}``.

    - ids: the dataset's image ids, in order; classes: its class names.
    - returns: a list over ``ids`` of (boxes (K, 4) float32, labels (K,) int64, scores (K,) float32).
    Raises DatasetError naming the file on anything it cannot read.
    """
    try:
        with open(path) as f:
            rows = json.load(f)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read the detections ({err})") from err
    if not isinstance(rows, list):
        raise DatasetError(f"{path}: expected a JSON list of detections, got {type(rows).__name__}")
    index = {str(image_id): n for n, image_id in enumerate(ids)}
    label_of = {name: k + 1 for k, name in enumerate(classes)}
    per_image = [([], [], []) for _ in ids]
    for n, row in enumerate(rows):
        try:
            image, label, score, box = row["image_id"], row["label"], float(row["score"]), row["box"]
            box = [float(v) for v in box]
        except (TypeError, KeyError, ValueError) as err:
            raise DatasetError(f"{path}: detection {n}: expected image_id, label, score, box ({err!r})") from err
        if str(image) not in index:
            raise DatasetError(f"{path}: detection {n}: image_id {image!r} is not in the dataset split")
        if label not in label_of:
            raise DatasetError(f"{path}: detection {n}: label {label!r} is not one of {classes}")
        if len(box) != 4 or not all(math.isfinite(v) for v in box + [score]):
            raise DatasetError(f"{path}: detection {n}: box must be 4 finite numbers and score finite")
        boxes, labels, scores = per_image[index[str(image)]]
        boxes.append(box)
        labels.append(label_of[label])
        scores.append(score)
    return [(np.asarray(b, np.float32).reshape(-1, 4), np.asarray(l, np.int64), np.asarray(s, np.float32))
            for b, l, s in per_image]


# ---- 6. command line ---------------------------------------------------------------------------------------

def _open_dataset(args, classes):
    """The dataset the flags name (one opener for every format: minissd.data.open_dataset)."""
    from .data import dataset_spec, open_dataset

    spec = dataset_spec(data=args.data or "", tiny_voc=args.tiny_voc, voc_root=args.voc_root or "")
    return open_dataset(spec, args.split, data_dir=args.data_dir, classes=classes), spec


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minissd.analyze",
                                     description="Where a detector's errors come from (VOC rules).")
    parser.add_argument("--checkpoint", help="checkpoint.npz written by minissd.train (or 'pretrained': "
                        "the one shipped with minissd); optional with --detections")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tiny-voc", action="store_true", help="tiny-voc (generated if absent)")
    source.add_argument("--voc-root", help="a VOC year folder (Annotations/, JPEGImages/, ImageSets/)")
    source.add_argument("--data", help="a dataset spec: tiny-voc | voc:PATH | coco:ANN.json[,IMAGES] | yolo:PATH")
    parser.add_argument("--data-dir", default=None, help="where tiny-voc lives (default $MINISSD_DATA or ~/.cache/minissd)")
    parser.add_argument("--split", default="val", help="the split to analyse (default val)")
    parser.add_argument("--detections", metavar="F.json",
                        help="analyse these detections (python -m minissd.evaluate --save-detections) instead of running the model")
    parser.add_argument("--json", metavar="OUT", help="write the analysis as JSON")
    parser.add_argument("--out", metavar="DIR", help="draw the analysis into DIR (errors.png, sensitivity.png, "
                        "confusion.png, false_positives.png)")
    parser.add_argument("--score-threshold", type=float, default=0.3,
                        help="counts, recall and the confusion matrix use detections scoring at least this (0.3)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    if not args.checkpoint and not args.detections:
        raise ConfigError("--checkpoint: give a checkpoint (or --detections F.json)")
    if not 0.0 <= args.score_threshold <= 1.0:
        raise ConfigError(f"--score-threshold: expected a number in [0, 1], got {args.score_threshold}")

    model = classes = None
    if args.checkpoint:
        if args.checkpoint == "pretrained":
            from . import pretrained

            model, classes, _ = pretrained.load()
        else:
            from .detect import load_model

            model, classes = load_model(args.checkpoint)
    dataset, where = _open_dataset(args, classes)
    classes = classes or list(dataset.classes)
    if args.detections:
        detections = read_detections(args.detections, dataset.ids, classes)
    else:
        from .detect import predict_dataset

        detections, _ = predict_dataset(model, dataset, batch_size=args.batch_size)
    gts, sizes = ground_truth(dataset)
    result = analyze(detections, gts, classes, score_threshold=args.score_threshold, image_sizes=sizes)
    result["source"] = {"checkpoint": args.checkpoint, "detections": args.detections, "data": where,
                        "split": args.split, "images": len(dataset)}
    print(f"{args.detections or args.checkpoint} on {where} ({args.split}, {len(dataset)} images):")
    print(format_report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")
    if args.out:
        from . import viz

        os.makedirs(args.out, exist_ok=True)
        viz.save_figure(viz.plot_error_ranking(result), os.path.join(args.out, "errors.png"))
        viz.save_figure(viz.plot_sensitivity(result), os.path.join(args.out, "sensitivity.png"))
        viz.save_figure(viz.plot_confusion(result), os.path.join(args.out, "confusion.png"))
        viz.save_figure(viz.false_positive_grid(dataset, result["false_positives"][:12]),
                        os.path.join(args.out, "false_positives.png"))
        print(f"wrote {args.out}/: errors.png, sensitivity.png, confusion.png, false_positives.png")
    return 0


if __name__ == "__main__":
    from . import cli

    sys.exit(cli.run(main))
