"""A first look at a dataset: ``python -m minissd.data inspect SPEC``.

    python -m minissd.data inspect SPEC [--split S] [--model tiny --input-size N]
                                        [--iou-threshold T] [--fit-priors] [--out DIR]

Prints, per split: images, objects and difficult objects per class; histograms of box sizes
(sqrt(w h) in pixels of the network input, after the square resize training does) and of
aspect ratios (w / h in the original image's pixels); and the number that says whether a
model's default boxes fit these objects: the share of objects that at least one default box
overlaps with IoU >= the matching threshold (``minissd.priors.prior_coverage``), overall and by
size. ``--fit-priors`` adds the same share for scales fitted to the first split
(``fit_prior_scales``), as ``python -m minissd.train --fit-priors`` would choose them.

With ``--out DIR`` it also writes DIR/summary.json (everything printed), DIR/histograms.png and
DIR/samples.png (the first images of the first split with their boxes drawn). DIR must be new,
empty, or an earlier inspect's output (its summary.json says so); nothing else is replaced.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .open import list_splits, open_dataset

SIZE_EDGES = (0, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1e9)  # pixels of the network input
ASPECT_EDGES = (0, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 2, 2, 3, 4, 1e9)  # w / h
MARKER = "minissd inspect"  # in summary.json: this folder is inspect's own
OUTPUTS = ("summary.json", "histograms.png", "samples.png")


def _default_threshold():
    try:
        from ..config import TrainConfig  # train's default match threshold, if train has one

        return float(TrainConfig().iou_threshold)
    except Exception:  # noqa: BLE001 - any trouble: the paper's number
        return 0.5


def _edges_label(edges, k, fmt):
    lo, hi = edges[k], edges[k + 1]
    return f"<{fmt(hi)}" if k == 0 else (f">={fmt(lo)}" if hi >= 1e9 else f"{fmt(lo)}-{fmt(hi)}")


def split_stats(ds):
    """Counts and box arrays of one dataset (from its annotations: no pixels decoded)."""
    C = len(ds.classes)
    objects, difficult, images_with = np.zeros(C, int), np.zeros(C, int), np.zeros(C, int)
    boxes, pixel_aspect = [], []
    for r in ds.annotations:
        for k in range(C):
            images_with[k] += int(np.any(r.labels == k + 1))
        np.add.at(objects, r.labels - 1, 1)
        np.add.at(difficult, r.labels[r.difficult] - 1, 1)
        b = np.asarray(r.boxes, np.float64).reshape(-1, 4)
        boxes.append(b)
        pixel_aspect.append((b[:, 2] - b[:, 0]) * r.width / np.maximum((b[:, 3] - b[:, 1]) * r.height, 1e-12))
    boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    return dict(
        images=len(ds), empty_images=sum(len(r.labels) == 0 for r in ds.annotations),
        per_class={name: dict(objects=int(objects[k]), difficult=int(difficult[k]), images=int(images_with[k]))
                   for k, name in enumerate(ds.classes)},
        boxes=boxes, aspect=np.concatenate(pixel_aspect) if pixel_aspect else np.zeros(0),
        image_sizes=sorted({(r.width, r.height) for r in ds.annotations})[:5])


def histogram(values, edges, fmt):
    counts, _ = np.histogram(values, bins=edges)
    return {_edges_label(edges, k, fmt): int(c) for k, c in enumerate(counts)}


def inspect_dataset(spec, splits=None, model="tiny", input_size=None, iou_threshold=None,
                    fit_priors=False, data_dir=None):
    """The numbers ``inspect`` prints, as a dict (JSON-able).

    - splits: list of split names (default: every split of the spec)
    - model, input_size: whose default boxes to measure (``minissd.model.model_config``)
    - iou_threshold: the matching threshold (default: train's)
    - fit_priors: also measure scales fitted to the first split
    """
    from ..model import model_config
    from ..priors import PriorConfig, fit_prior_scales, prior_coverage

    thr = _default_threshold() if iou_threshold is None else float(iou_threshold)
    if not 0 < thr <= 1:
        raise ConfigError(f"--iou-threshold: expected a number in (0, 1], got {thr}")
    config = model_config(model, input_size)
    S = config.input_size
    names = list(splits) if splits else list_splits(spec, data_dir)
    sets, out = {}, {"spec": spec, "model": config.name, "input_size": S, "iou_threshold": thr, "splits": {}}
    fitted = None
    for n in names:
        ds = open_dataset(spec, n, data_dir=data_dir, classes=next(iter(sets.values())).classes if sets else None)
        sets[n] = ds
        st = split_stats(ds)
        boxes = st.pop("boxes")
        side_px = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) * S
        share, best = prior_coverage(boxes, config.priors, thr)
        st["box_side_px_at_input"] = histogram(side_px, SIZE_EDGES, lambda v: f"{v:g}")
        st["aspect_w_over_h"] = histogram(st.pop("aspect"), ASPECT_EDGES, lambda v: f"{v:.2g}")
        st["objects"] = int(len(boxes))
        st["with_positive"] = {"share": share, "by_side_px": _share_by_size(side_px, best >= thr)}
        if fit_priors:
            if fitted is None:  # fitted to the first split (train's would be the training split)
                pairs = fit_prior_scales(boxes, config.priors, thr)
                fitted = PriorConfig.from_scale_list(S, config.priors.feature_maps, pairs,
                                                     config.priors.aspect_ratios)
                out["fitted_scales"] = {"fitted_on": n, "pairs": [list(p) for p in pairs]}
            fshare, fbest = prior_coverage(boxes, fitted, thr)
            st["with_positive_fitted"] = {"share": fshare, "by_side_px": _share_by_size(side_px, fbest >= thr)}
        st["image_sizes"] = [f"{w}x{h}" for w, h in st["image_sizes"]]
        out["splits"]["all" if n is None else n] = st
    out["classes"] = next(iter(sets.values())).classes if sets else []
    return out, sets


def _share_by_size(side_px, ok):
    counts, _ = np.histogram(side_px, bins=SIZE_EDGES)
    hit, _ = np.histogram(side_px[ok], bins=SIZE_EDGES)
    return {_edges_label(SIZE_EDGES, k, lambda v: f"{v:g}"): round(float(h / c), 3)
            for k, (h, c) in enumerate(zip(hit, counts)) if c}


def format_report(r):
    """The summary as the text ``inspect`` prints."""
    lines = [f"{r['spec']}: {len(r['classes'])} classes; default boxes of {r['model']} "
             f"({r['input_size']} px input), positive at IoU >= {r['iou_threshold']:g}"]
    for split, st in r["splits"].items():
        lines.append(f"\n[{split}] {st['images']} images ({st['empty_images']} without objects), "
                     f"{st['objects']} objects; image sizes {', '.join(st['image_sizes'])}"
                     f"{' ...' if len(st['image_sizes']) == 5 else ''}")
        width = max([len(c) for c in st["per_class"]] + [5])
        lines.append(f"  {'class':{width}}  objects  difficult  images")
        for name, c in st["per_class"].items():
            lines.append(f"  {name:{width}}  {c['objects']:7d}  {c['difficult']:9d}  {c['images']:6d}")
        for title, h in (("box side at the input (px)", st["box_side_px_at_input"]),
                         ("aspect w/h", st["aspect_w_over_h"])):
            top = max(h.values()) or 1
            lines.append(f"  {title}:")
            for k, v in h.items():
                if v:
                    lines.append(f"    {k:>9}  {v:7d}  {'#' * max(1, round(30 * v / top))}")
        for key, what in (("with_positive", "default boxes"), ("with_positive_fitted", "fitted boxes")):
            if key in st:
                wp = st[key]
                by = ", ".join(f"{k} px {v:.0%}" for k, v in wp["by_side_px"].items())
                lines.append(f"  objects with a positive ({what}): {wp['share']:.1%}  ({by})")
    if "fitted_scales" in r:
        pairs = ", ".join(f"({a:.3g}, {b:.3g})" for a, b in r["fitted_scales"]["pairs"])
        lines.append(f"\nfitted scales (on {r['fitted_scales']['fitted_on']}): {pairs}")
    return "\n".join(lines)


def _check_out(out):
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"--out {out}: exists and is not a folder")
        entries = {p.name for p in out.iterdir()}
        ours = False
        if "summary.json" in entries:
            try:
                ours = json.loads((out / "summary.json").read_text()).get("written_by") == MARKER
            except (ValueError, OSError, AttributeError):
                ours = False
        if entries and not (ours and entries <= set(OUTPUTS)):
            raise ConfigError(f"--out {out}: holds files that an earlier inspect did not write; "
                              "choose a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_pictures(report, sets, out, samples=8):
    """histograms.png and samples.png under ``out``."""
    from .. import viz

    plt = viz.plt
    splits = list(report["splits"].items())
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, key, title in ((axes[0], "box_side_px_at_input", f"box side at the {report['input_size']} px input"),
                           (axes[1], "aspect_w_over_h", "aspect ratio w / h")):
        for k, (split, st) in enumerate(splits):
            h = st[key]
            x = np.arange(len(h)) + k * 0.8 / max(len(splits), 1)
            ax.bar(x, list(h.values()), width=0.8 / max(len(splits), 1), label=split, align="edge")
            ax.set_xticks(np.arange(len(h)) + 0.4, list(h.keys()), rotation=45, fontsize=7)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    viz.save_figure(fig, out / "histograms.png")

    ds = next(iter(sets.values()))
    n = min(samples, len(ds))
    if n:
        cols = min(4, n)
        rows = (n + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < n:
                image, boxes, labels, _ = ds[i]
                viz.draw_boxes(image, boxes, labels, class_names=ds.classes, ax=ax,
                               title=f"{ds.ids[i]} ({len(boxes)})", show_text=len(boxes) <= 12, linewidth=1)
        fig.tight_layout()
        viz.save_figure(fig, out / "samples.png")


def main(argv=None):
    from ..model import MODELS

    p = argparse.ArgumentParser(prog="python -m minissd.data inspect", description=__doc__.split("\n")[0])
    p.add_argument("spec", help="tiny-voc, voc:PATH, coco:ANN.json[,IMAGES] or yolo:PATH")
    p.add_argument("--split", action="append", default=None, help="a split to look at (repeat; default all)")
    p.add_argument("--model", default="tiny", choices=sorted(MODELS))
    p.add_argument("--input-size", type=int, default=None, help="network input side (tiny family)")
    p.add_argument("--iou-threshold", type=float, default=None, help="matching threshold (default: train's)")
    p.add_argument("--fit-priors", action="store_true", help="also measure scales fitted to the first split")
    p.add_argument("--out", default="", help="folder for summary.json, histograms.png, samples.png")
    p.add_argument("--data-dir", default=None, help="where tiny-voc lives")
    args = p.parse_args(argv)
    out = _check_out(args.out) if args.out else None
    report, sets = inspect_dataset(args.spec, args.split, args.model, args.input_size, args.iou_threshold,
                                   args.fit_priors, args.data_dir)
    print(format_report(report))
    if out is not None:
        (out / "summary.json").write_text(json.dumps({"written_by": MARKER, **report}, indent=1))
        write_pictures(report, sets, out)
        print(f"\nwrote {out / 'summary.json'}, {out / 'histograms.png'}, {out / 'samples.png'}")
    return 0
