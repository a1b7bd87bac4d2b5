"""Pictures of SSD: boxes on images, default boxes per feature map, matches, mined negatives,
loss curves and precision/recall curves.

Conventions (the same as the rest of minissd):

- image: (H, W, 3) uint8, or float in [0, 1]; an NCHW network input can be turned back into
  one with ``to_image``.
- boxes: (N, 4) corner form ``(xmin, ymin, xmax, ymax)`` normalised to [0, 1]; the drawing
  scales them by the image's width and height.
- priors: (P, 4) centre form ``(cx, cy, w, h)`` normalised, in ``default_boxes`` order.
- labels: (N,) int, 1..C (0 = background); ``class_names[label - 1]`` is the name.

Every function draws on the ``ax`` (a matplotlib Axes) it is given, or makes a new figure,
and returns the Axes (or the Figure when it makes several panels), so that notebooks can
show them and scripts can save them with ``save_figure``. Nothing here calls ``plt.show``.
"""

import os

import matplotlib

if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
    # A headless run (python -m minissd.train on a server) must never try to open a window.
    # Jupyter sets MPLBACKEND itself, so notebooks keep their inline backend.
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

# A qualitative palette (matplotlib's tab10), one colour per class label.
PALETTE = plt.get_cmap("tab10").colors


def class_color(label):
    """The colour of class ``label`` (1..C): tab10, cycling."""
    return PALETTE[(int(label) - 1) % len(PALETTE)]


def to_image(chw, mean=None, std=None):
    """A network input (3, H, W) float32 back to an (H, W, 3) float image in [0, 1].

    - chw: (3, H, W) array, normalised as the loader did: ``(pixel/255 - mean) / std`` when
      mean/std are given (per-channel sequences), else pixel/255 or raw 0..255 (guessed
      from the range).
    """
    img = np.asarray(chw, dtype=np.float32).transpose(1, 2, 0)  # (H, W, 3)
    if std is not None:
        img = img * np.asarray(std, np.float32)
    if mean is not None:
        img = img + np.asarray(mean, np.float32)
    if img.max() > 1.5:  # 0..255 range
        img = img / 255.0
    return np.clip(img, 0.0, 1.0)


def _new_ax(ax, figsize=(5, 5)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def show_image(image, ax=None, title=None):
    """Draw an (H, W, 3) image with no axis ticks; return the Axes."""
    ax = _new_ax(ax)
    image = np.asarray(image)
    ax.imshow(image, extent=(0, image.shape[1], image.shape[0], 0))
    ax.set_xlim(0, image.shape[1])
    ax.set_ylim(image.shape[0], 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def draw_boxes(image, boxes, labels=None, scores=None, class_names=None, ax=None, color=None,
               linestyle="-", linewidth=1.5, title=None, show_text=True):
    """Draw corner-form boxes with their labels (and scores) on an image.

    - image: (H, W, 3) uint8 or float in [0, 1], or None to draw on ``ax`` as it is (then
      the boxes are scaled by the axes' current image size, or by 1 if there is none).
    - boxes: (N, 4) float, normalised corner form.
    - labels: (N,) int 1..C or None; picks the colour and the text.
    - scores: (N,) float or None; appended to the text as ``name 0.87``.
    - class_names: sequence of C names, ``class_names[label - 1]``; None prints the number.
    - color: one colour for every box (e.g. ground truth in white), else per class.
    - returns: the Axes.
    """
    if image is not None:
        ax = show_image(image, ax=ax, title=title)
        H, W = np.asarray(image).shape[:2]
    else:
        ax = _new_ax(ax)
        W, H = (abs(np.diff(ax.get_xlim())[0]), abs(np.diff(ax.get_ylim())[0])) if ax.images else (1, 1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    tags = []  # (priority, box in pixels, text, colour): placed after every box is drawn
    for n, (x0, y0, x1, y1) in enumerate(boxes):
        label = None if labels is None else int(labels[n])
        c = color if color is not None else (class_color(label) if label is not None else "yellow")
        ax.add_patch(Rectangle((x0 * W, y0 * H), (x1 - x0) * W, (y1 - y0) * H, fill=False,
                               edgecolor=c, linewidth=linewidth, linestyle=linestyle))
        if not show_text or (label is None and scores is None):
            continue
        text = "" if label is None else (class_names[label - 1] if class_names else str(label))
        if scores is not None:
            text = f"{text} {float(scores[n]):.2f}".strip()
        priority = -float(scores[n]) if scores is not None else n
        tags.append((priority, (x0 * W, y0 * H, x1 * W, y1 * H), text, c))
    place_labels(ax, [t[1:] for t in sorted(tags, key=lambda t: t[0])])
    return ax


def place_labels(ax, tags, fontsize=7):
    """Write box labels where they overlap no other label; a label with no free place is left out.

    - tags: sequence of (box (x0, y0, x1, y1) in data coordinates, text, colour), the most
      important first (``draw_boxes`` orders them by score).
    Each label tries, in turn: above the box's top-left corner, inside it, below the box's
    bottom-left corner, inside it; the first place whose text overlaps no label placed before
    (measured on the figure as it is laid out now) is kept. Lay the figure out first
    (``tight_layout``): moving the axes afterwards can bring labels together again.
    - returns: the number of labels left out.
    """
    try:
        renderer = ax.figure.canvas.get_renderer()
    except AttributeError:  # a backend that cannot measure text: place every label above its box
        renderer = None
    placed, left_out = [], 0
    for (x0, y0, x1, y1), text, colour in tags:
        artist = ax.text(x0, y0, text, fontsize=fontsize, color="white", va="bottom", clip_on=True,
                         bbox=dict(facecolor=colour, edgecolor="none", pad=1, alpha=0.8))
        if renderer is None:
            continue
        for x, y, va in ((x0, y0, "bottom"), (x0, y0, "top"), (x0, y1, "top"), (x0, y1, "bottom")):
            artist.set_position((x, y))
            artist.set_va(va)
            extent = artist.get_window_extent(renderer=renderer).expanded(1.0, 1.1)
            if not any(extent.overlaps(other) for other in placed):
                placed.append(extent)
                break
        else:
            artist.remove()
            left_out += 1
    return left_out


def _center_to_corner(b):
    b = np.asarray(b, dtype=np.float64)
    return np.concatenate([b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2], axis=-1)


def split_priors(priors, feature_maps, boxes_per_location):
    """Cut the (P, 4) prior array into one (f, f, k, 4) block per feature map.

    - feature_maps: sequence of map sizes f (square maps, as in SSD).
    - boxes_per_location: sequence of k per map.
    - returns: list of arrays (f, f, k, 4), the default_boxes order (map, row, column, box).
    """
    total = sum(f * f * k for f, k in zip(feature_maps, boxes_per_location))
    if total != len(priors):
        raise ValueError(f"priors: {len(priors)} boxes, but the maps {list(feature_maps)} with "
                         f"k={list(boxes_per_location)} give {total}")
    blocks, start = [], 0
    for f, k in zip(feature_maps, boxes_per_location):
        n = f * f * k
        blocks.append(np.asarray(priors[start:start + n]).reshape(f, f, k, 4))  # (row, col, box, 4)
        start += n
    return blocks


def draw_priors(priors, feature_maps, boxes_per_location, image=None, location=None,
                image_size=300, ncols=3, panel_size=3.2):
    """One panel per feature map: the grid of prior centres and the k boxes of one location.

    - priors: (P, 4) centre form, ``default_boxes`` order.
    - feature_maps, boxes_per_location: as in ``split_priors``.
    - image: (H, W, 3) to draw on, or None for a blank ``image_size`` square.
    - location: (row, col) in relative terms (0..1), default the centre of each map.
    - returns: the Figure.
    """
    blocks = split_priors(priors, feature_maps, boxes_per_location)
    if image is None:
        image = np.full((image_size, image_size, 3), 0.92)
    nrows = int(np.ceil(len(blocks) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows), squeeze=False)
    H, W = np.asarray(image).shape[:2]
    ry, rx = location if location is not None else (0.5, 0.5)
    for m, (block, ax) in enumerate(zip(blocks, axes.flat)):
        f, k = block.shape[0], block.shape[2]
        show_image(image, ax=ax, title=f"map {m}: {f}x{f}, k={k}, {f * f * k} boxes")
        centres = block[:, :, 0, :2].reshape(-1, 2)
        ax.scatter(centres[:, 0] * W, centres[:, 1] * H, s=max(1.0, 60.0 / f), c="k", alpha=0.5)
        i, j = min(int(ry * f), f - 1), min(int(rx * f), f - 1)
        corners = _center_to_corner(block[i, j])
        for n, c in enumerate(corners):
            ax.add_patch(Rectangle((c[0] * W, c[1] * H), (c[2] - c[0]) * W, (c[3] - c[1]) * H,
                                   fill=False, edgecolor=PALETTE[n % len(PALETTE)], linewidth=1.5))
    for ax in axes.flat[len(blocks):]:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    # one legend for the figure: box n of a location is the same kind of box on every map
    widest = max(range(len(blocks)), key=lambda m: (blocks[m].shape[2], -m))  # most boxes, smallest first
    handles = [Rectangle((0, 0), 1, 1, fill=False, edgecolor=PALETTE[n % len(PALETTE)], linewidth=1.5)
               for n in range(blocks[widest].shape[2])]
    fig.legend(handles, prior_names(blocks[widest][0, 0]), loc="lower center", ncol=len(handles),
               fontsize=8, frameon=False)
    return fig


def prior_names(boxes):
    """Names for the k default boxes of one location, in ``default_boxes`` order: the square
    s_k, the square s'_k = sqrt(s_k s_k+1), then w:h of each aspect-ratio box (from its shape).

    - boxes: (k, 4) centre form, the boxes of one location.
    """
    names = []
    for n, (_, _, w, h) in enumerate(np.asarray(boxes, dtype=np.float64)):
        if n < 2:
            names.append(["square s_k", "square sqrt(s_k s_k+1)"][n])
            continue
        a = w / h
        names.append(f"w:h {a:.0f}:1" if a >= 1 else f"w:h 1:{1 / a:.0f}")
    return names


def draw_matches(image, gt_boxes, priors, conf_t, gt_labels=None, class_names=None, ax=None,
                 title=None):
    """Ground truth (thick) with the default boxes matched to it as positives (thin, dashed).

    - gt_boxes: (G, 4) corner form; gt_labels: (G,) 1..C or None.
    - priors: (P, 4) centre form; conf_t: (P,) int, the matched label per prior (0 = bg),
      as returned by ``minissd.matching.match``.
    - returns: the Axes; the title counts positives.
    """
    conf_t = np.asarray(conf_t)
    pos = np.flatnonzero(conf_t > 0)
    ax = draw_boxes(image, _center_to_corner(np.asarray(priors)[pos]), labels=conf_t[pos],
                    ax=ax, linestyle="--", linewidth=0.8, show_text=False,
                    title=title or f"{len(pos)} positive default boxes")
    draw_boxes(image, gt_boxes, labels=gt_labels, class_names=class_names, ax=ax, linewidth=2.5)
    return ax


def draw_mined_negatives(image, priors, mask, conf_t, ax=None, title=None, max_boxes=200):
    """The negatives kept by hard negative mining (red) and the positives (green).

    - mask: (P,) bool from ``hard_negative_mining`` (positives plus mined negatives).
    - conf_t: (P,) int, 0 = background.
    - max_boxes: draw at most this many negatives (the first ones, in prior order).
    - returns: the Axes.
    """
    mask, conf_t = np.asarray(mask, bool), np.asarray(conf_t)
    neg = np.flatnonzero(mask & (conf_t == 0))
    pos = np.flatnonzero(conf_t > 0)
    priors = np.asarray(priors)
    ax = draw_boxes(image, _center_to_corner(priors[neg[:max_boxes]]), ax=ax, color="red",
                    linewidth=0.7, show_text=False,
                    title=title or f"{len(pos)} positives, {len(neg)} mined negatives")
    draw_boxes(None, _center_to_corner(priors[pos]), ax=ax, color="lime", linewidth=1.0, show_text=False)
    return ax


def plot_loss_curves(history, ax=None):
    """Training curves: loss_l, loss_c (left axis), validation mAP (right axis).

    - history: dict with lists "iteration", "loss_l", "loss_c" (per logged step) and
      optionally "eval_iteration", "mAP" (per validation).
    - returns: the Figure.
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    it = np.asarray(history.get("iteration", []))
    for key, colour in (("loss_l", "tab:blue"), ("loss_c", "tab:orange")):
        values = np.asarray(history.get(key, []), dtype=np.float64)
        if len(values):
            ax.plot(it, values, color=colour, alpha=0.3, linewidth=0.8)
            ax.plot(it, _smooth(values), color=colour, label=key)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    if history.get("mAP"):
        ax2 = ax.twinx()
        h = ax2.plot(history["eval_iteration"], history["mAP"], "o-", color="tab:green", label="val mAP")
        ax2.set_ylabel("val mAP (VOC07 11-point)")
        ax2.set_ylim(0, 1)
        handles, names = handles + h, names + ["val mAP"]
    ax.legend(handles, names, loc="upper center")
    fig.tight_layout()
    return fig


def _smooth(values, window=20):
    """A trailing moving average (the first points average what exists so far)."""
    c = np.cumsum(np.insert(values, 0, 0.0))
    n = np.arange(1, len(values) + 1)
    lo = np.maximum(n - window, 0)
    return (c[n] - c[lo]) / (n - lo)


def plot_pr_curves(curves, class_names=None, ax=None, title=None, legend=True):
    """Precision/recall curves, one per class.

    - curves: sequence of (recall (K,), precision (K,)) pairs, one per class (None or empty
      arrays for a class with no detections), or a dict name -> pair.
    - class_names: names in the same order (ignored for a dict).
    - legend: draw the legend beside the axes (never over the curves).
    - returns: the Axes.
    """
    ax = _new_ax(ax, figsize=(5, 4))
    items = curves.items() if isinstance(curves, dict) else zip(
        class_names or [str(c + 1) for c in range(len(curves))], curves)
    for n, (name, pair) in enumerate(items):
        if pair is None or len(pair[0]) == 0:
            continue
        recall, precision = pair
        ax.plot(recall, precision, color=PALETTE[n % len(PALETTE)], label=name)
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        # beside the axes, so that it never hides a curve
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    if title:
        ax.set_title(title)
    return ax


def detection_grid(images, detections, class_names=None, ground_truth=None, ncols=4,
                   panel_size=2.6, score_threshold=0.3):
    """A grid of images with their detections (and ground truth as thin white boxes).

    - images: sequence of (H, W, 3) images.
    - detections: sequence (one per image) of (boxes (N,4), labels (N,), scores (N,)).
    - ground_truth: optional sequence of (boxes (G,4), labels (G,)).
    - score_threshold: detections below it are not drawn.
    - returns: the Figure.
    """
    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            show_image(images[i], ax=ax)
    fig.tight_layout()  # before the labels: place_labels measures them on the final layout
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        if ground_truth is not None:
            draw_boxes(None, ground_truth[i][0], ax=ax, color="white", linewidth=0.8,
                       linestyle=":", show_text=False)
        boxes, labels, scores = detections[i]
        keep = np.asarray(scores) >= score_threshold
        draw_boxes(None, np.asarray(boxes)[keep], np.asarray(labels)[keep],
                   np.asarray(scores)[keep], class_names=class_names, ax=ax)
    return fig


# ---- the error analysis (minissd.analyze) ---------------------------------------------------------

ERROR_COLORS = {"correct": "tab:green", "localisation": "tab:orange", "duplicate": "gold",
                "confusion": "tab:purple", "background": "tab:red", "missed": "tab:gray"}


def plot_error_ranking(result, ax=None):
    """The SSD paper's Fig. 3 (after Hoiem et al.): the share of each detection type among the N
    best-scored detections, against N (in units of the number of objects), stacked.

    - result: the dict of ``minissd.analyze.analyze`` (its "ranking").
    - returns: the Axes.
    """
    ax = _new_ax(ax, figsize=(6, 3.6))
    ranking = result["ranking"]
    n = np.asarray(ranking["detections"], dtype=np.float64) / max(ranking["objects"], 1)
    names = ["correct", "localisation", "duplicate", "confusion", "background"]
    shares = [np.asarray(ranking[name]) for name in names]
    if len(n):
        ax.stackplot(n, shares, labels=names, colors=[ERROR_COLORS[k] for k in names], alpha=0.85)
    ax.set_xscale("log")
    ax.set_xlim(n[0] if len(n) else 0.01, n[-1] if len(n) else 1)
    ax.set_ylim(0, 1)
    ax.axvline(1.0, color="k", linewidth=0.8, linestyle=":")
    ax.set_xlabel("best-scored detections kept, per object")
    ax.set_ylabel("share of those detections")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.figure.tight_layout()
    return ax


def plot_delta_map(result, ax=None):
    """The mAP gained if one error type alone were fixed (TIDE), as horizontal bars."""
    ax = _new_ax(ax, figsize=(5, 2.8))
    items = sorted(result["delta_map"].items(), key=lambda kv: kv[1])
    names, gains = [k for k, _ in items], [v for _, v in items]
    ax.barh(names, gains, color=[ERROR_COLORS[k] for k in names])
    for y, g in enumerate(gains):
        ax.text(g, y, f" +{g:.3f}", va="center", fontsize=8)
    ax.set_xlim(0, max(gains + [0.01]) * 1.3)
    ax.set_xlabel(f"mAP gained if fixed (mAP now {result['map']:.3f})")
    ax.figure.tight_layout()
    return ax


def plot_sensitivity(result, key="ap"):
    """The SSD paper's Fig. 4 (after Hoiem et al.): AP (or recall) per size and aspect bucket.

    - key: "ap", "recall" (at the analysis' score threshold) or "max_recall" (at any score).
    - returns: the Figure (two panels: size, aspect ratio).
    """
    fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharey=True)
    for ax, part, title in ((axes[0], "by_size", "object area"), (axes[1], "by_aspect", "aspect ratio w/h")):
        names = list(result[part])
        values = [result[part][b][key] for b in names]
        ax.bar(names, values, color="tab:blue")
        for x, (v, b) in enumerate(zip(values, names)):
            ax.text(x, v, f"{v:.2f}\n{result[part][b]['objects']}", ha="center", va="bottom", fontsize=7)
        ax.axhline(result["map"] if key == "ap" else np.nanmean(values), color="k", linewidth=0.8, linestyle=":")
        ax.set_title(f"{key} by {title}", fontsize=9)
        ax.set_ylim(0, 1.15)
    axes[0].set_ylabel(key + " (numbers: value, objects)")
    fig.tight_layout()
    return fig


def plot_confusion(result, ax=None):
    """The confusion matrix of ``analyze``: rows the object's class (and background), columns the
    predicted class (and missed); counts written in each cell."""
    conf = result["confusion"]
    m = np.asarray(conf["matrix"])
    ax = _new_ax(ax, figsize=(5.5, 4.8))
    ax.imshow(np.log1p(m), cmap="Blues")
    for (r, c), v in np.ndenumerate(m):
        if v:
            ax.text(c, r, str(v), ha="center", va="center", fontsize=7,
                    color="white" if np.log1p(v) > 0.6 * np.log1p(m.max()) else "black")
    ax.set_xticks(range(len(conf["columns"])), conf["columns"], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(conf["rows"])), conf["rows"], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("object")
    ax.set_title(f"detections scoring >= {result['score_threshold']:g}", fontsize=9)
    ax.figure.tight_layout()
    return ax


def false_positive_grid(dataset, false_positives, ncols=4, panel_size=2.6):
    """The best-scored false positives, each on its image: the detection (thick, with its type,
    label and score) and the image's objects (thin white, dotted).

    - dataset: what the analysis ran on (``dataset[i]`` gives image, boxes, labels, ...).
    - false_positives: entries of ``analyze(...)["false_positives"]``.
    - returns: the Figure.
    """
    n = max(len(false_positives), 1)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows + 0.2),
                             squeeze=False)
    for ax, fp in zip(axes.flat, false_positives):
        image, boxes = dataset[fp["image"]][:2]
        about = f" on {fp['object_label']}" if fp["type"] == "confusion" else ""
        show_image(image, ax=ax, title=f"{fp['type']}{about}, IoU {fp['iou']:.2f}")
        draw_boxes(None, boxes, ax=ax, color="white", linewidth=0.8, linestyle=":", show_text=False)
    fig.tight_layout()
    for ax, fp in zip(axes.flat, false_positives):
        box = np.asarray(fp["box"])[None]
        draw_boxes(None, box, ax=ax, color=ERROR_COLORS[fp["type"]], linewidth=2.0,
                   scores=[fp["score"]], labels=None, show_text=False)
        H, W = abs(np.diff(ax.get_ylim())[0]), abs(np.diff(ax.get_xlim())[0])
        place_labels(ax, [((box[0, 0] * W, box[0, 1] * H, box[0, 2] * W, box[0, 3] * H),
                           f"{fp['label']} {fp['score']:.2f}", ERROR_COLORS[fp["type"]])])
    for ax in axes.flat[len(false_positives):]:
        ax.axis("off")
    return fig


def save_figure(fig, path, dpi=100):
    """Save a Figure (or the Figure of an Axes) to ``path`` and close it; return the path."""
    fig = getattr(fig, "figure", fig)
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
