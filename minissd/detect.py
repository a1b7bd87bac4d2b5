"""Detect objects with a trained SSD: ``python -m minissd.detect --checkpoint C IMAGE_OR_FOLDER... [--out DIR]``.

Takes image files and folders of images (the images directly inside a folder, sorted by
name), writes each image with its labelled boxes drawn (``DIR/<name>.png``, default
``detections/``) and one ``DIR/detections.json`` for the whole set, in the format of
``python -m minissd.evaluate --save-detections`` (``minissd.evaluate.write_detections``:
``image_id`` is the image's path as given), and prints the detections.

A user's files are theirs: a picture's name never collides with another's (two ``x.jpg`` in
different folders get their folder in the name), and an output never replaces a file that
minissd.detect did not write: every picture carries ``Software: minissd.detect`` in its PNG
text, and an existing file without it (an input, a user's own picture) stops the command
before anything is written.

The functions here are also what training and evaluation use to run a model over a dataset:

- ``load_model(checkpoint)``: rebuild the network a checkpoint was trained with, and its classes.
- ``predict(model, images)``: one batch of network inputs -> detections per image.
- ``predict_dataset(model, dataset)``: every image of a dataset -> detections and ground truth.

Detections are ``(boxes (N, 4) float32 corner form normalised to [0, 1], labels (N,) int64
1..C, scores (N,) float32)`` per image, best first: decode against the default boxes,
softmax, per-class NMS (IoU 0.45), top 200 (``minissd.nms.detect``).
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from . import cli
from .checkpoint import CheckpointError, expected_shapes, read_checkpoint, read_meta
from .data.augment import eval_transform
from .data.loader import DataLoader
from .errors import ConfigError, DatasetError, MinissdError
from .model import CONFIGS, SSD, SSDConfig
from .nms import detect as postprocess

SOFTWARE = "minissd.detect"  # the PNG text every picture carries: proof that detect wrote it
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DETECTIONS_FILE = "detections.json"


def _model_config(path, extra):
    """The SSDConfig a checkpoint's ``extra`` describes; CheckpointError naming the file."""
    if "model_config" in extra:
        try:
            return SSDConfig.from_dict(extra["model_config"])
        except (MinissdError, KeyError, TypeError, ValueError, AttributeError) as err:
            reason = f"missing field {err}" if isinstance(err, KeyError) else str(err)
            raise CheckpointError(f"{path}: its model config is not usable ({reason})") from None
    if extra.get("model") in CONFIGS:  # older checkpoints name a built-in config
        return CONFIGS[extra["model"]]
    raise CheckpointError(f"{path}: no model config in it; was it written by minissd.train?")


def load_model(path):
    """(model in eval mode, class names) from a checkpoint written by ``minissd.train``.

    The meta entry is read first; the weights are read only once the network it describes is
    built, each entry's shape checked against it from its header (``read_checkpoint``).
    Raises CheckpointError naming the file for anything that does not fit.
    """
    meta = read_meta(path)
    extra = meta.get("extra", {})
    classes = extra.get("classes")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{path}: no class names in it (extra['classes'] is {classes!r}); "
                              "was it written by minissd.train?")
    # the checkpoint carries the whole network description, so it rebuilds exactly what was
    # trained even if the built-in configs change later (older ones name a built-in config)
    config = _model_config(path, extra)
    try:
        model = SSD(config, len(classes))
    except (MinissdError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its model config does not build a network ({err})") from None
    state, _, _ = read_checkpoint(path, expected_shapes(model))
    try:
        model.load_state_dict(state)
    except ValueError as err:
        raise CheckpointError(f"{path}: weights do not fit the network it describes: {err}") from err
    return model.eval(), list(classes)


def predict(model, images, conf_threshold=0.01, nms_threshold=0.45, top_k=200):
    """Detections for one batch.

    - images: (B, 3, S, S) float32, normalised as in training (``eval_transform``).
    - returns: list of B tuples (boxes (N, 4), labels (N,), scores (N,)), best first.
    """
    loc, conf = model.forward(images)  # (B, P, 4), (B, P, C+1)
    return postprocess(loc, conf, model.priors, conf_threshold=conf_threshold,
                       nms_threshold=nms_threshold, top_k=top_k)


def predict_dataset(model, dataset, max_images=None, batch_size=32, workers=1):
    """Run ``model`` (put it in eval mode first) over the first ``max_images`` of ``dataset``.

    - returns (detections, ground_truth): two lists with one entry per image, detections as
      in ``predict``, ground truth ``(boxes (G, 4), labels (G,), difficult (G,) bool)``.
    """
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    subset = dataset if n == len(dataset) else _First(dataset, n)
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, with_difficult=True,
                        transform=eval_transform(model.config.input_size, model.config.mean,
                                                 model.config.std), num_workers=workers)
    detections, ground_truth = [], []
    for images, targets in loader:
        detections.extend(predict(model, images))
        ground_truth.extend(targets)
    return detections, ground_truth


class _First:
    """The first n items of a dataset (classes kept)."""

    def __init__(self, dataset, n):
        self.dataset, self.n, self.classes = dataset, n, dataset.classes

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.dataset[i]


def image_files(paths):
    """The image files named by ``paths`` (files, and folders: the images directly inside).

    - returns: list of Path, in the order given, each folder's images sorted by name; PNGs that
      minissd.detect wrote itself (an earlier run's pictures) are left out of a folder.
    Raises ConfigError for a path that does not exist, a folder without images or no image.
    """
    files = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = [p for p in sorted(path.iterdir())
                     if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not _ours(p)]
            if not found:
                raise ConfigError(f"{path}: no image files in this folder "
                                  f"({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{path}: no such image file or folder")
    return files


def _ours(path):
    """True when ``path`` is a PNG that minissd.detect wrote (its PNG text says so)."""
    from PIL import Image

    if path.suffix.lower() != ".png":
        return False
    try:
        with Image.open(path) as im:
            return getattr(im, "text", {}).get("Software") == SOFTWARE
    except Exception:  # not an image at all: not ours
        return False


def picture_names(files):
    """One output name per input, never two alike (compared without case).

    ``<stem>.png`` when the stem is the input's alone; else the folders below the common
    folder of the inputs sharing it are joined in (``a/x.jpg``, ``b/x.jpg`` -> ``a_x.png``,
    ``b_x.png``), then the suffix (``x.jpg``, ``x.png`` -> ``x_jpg.png``, ``x_png.png``), and
    ``-2``, ``-3``... where even that does not tell them apart.
    """
    paths = [Path(os.path.abspath(f)) for f in files]
    stems = [p.stem.lower() for p in paths]
    names = []
    for p, stem in zip(paths, stems):
        group = [q for q, t in zip(paths, stems) if t == stem]
        if len(group) == 1:
            names.append(p.stem)
            continue
        common = Path(os.path.commonpath([str(q.parent) for q in group]))
        name = "_".join(p.parent.relative_to(common).parts + (p.stem,))
        same = [q for q in group if q.parent == p.parent]
        names.append(name if len(same) == 1 else f"{name}_{p.suffix[1:]}")
    out, seen = [], set()
    for name in names:
        unique, k = name, 1
        while unique.lower() in seen:
            k += 1
            unique = f"{name}-{k}"
        seen.add(unique.lower())
        out.append(unique + ".png")
    return out


def _check_outputs(out, names, files):
    """Refuse (ConfigError naming the file) any output that would replace a file minissd.detect
    did not write: an input, or anything else already there."""
    from .evaluate import is_detections_file

    inputs = {os.path.realpath(f) for f in files}
    for name in names:
        target = out / name
        if os.path.realpath(target) in inputs:
            raise ConfigError(f"--out {out}: {target} is one of the input images; choose "
                              "another --out folder (minissd never replaces an input)")
        if os.path.lexists(target) and not (target.is_file() and _ours(target)):
            raise ConfigError(f"--out {out}: {target} exists and was not written by "
                              "minissd.detect; choose another --out folder")
    target = out / DETECTIONS_FILE
    if os.path.realpath(target) in inputs or (os.path.lexists(target) and not is_detections_file(target)):
        raise ConfigError(f"--out {out}: {target} exists and is not a detections file that "
                          "minissd wrote; choose another --out folder")


def _save_picture(ax, path):
    import matplotlib.pyplot as plt

    fig = ax.figure
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=100, format="png", metadata={"Software": SOFTWARE})
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None):
    from PIL import Image

    from . import viz
    from .data.images import load_image
    from .evaluate import write_detections

    parser = argparse.ArgumentParser(prog="python -m minissd.detect", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint.npz written by minissd.train")
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG...) and folders of images")
    parser.add_argument("--out", default="detections",
                        help="folder for the drawn images and detections.json (default detections)")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="draw boxes scoring at least this")
    args = parser.parse_args(argv)
    if not 0 <= args.score_threshold <= 1:
        raise ConfigError(f"--score-threshold: {args.score_threshold} is not in [0, 1]")

    files = image_files(args.images)
    for path in files:  # every header first: a bad file stops the run before anything is written
        try:
            with Image.open(path):
                pass
        except Exception as err:
            raise DatasetError(f"{path}: cannot read the image ({err})") from None
    out = Path(args.out)
    names = picture_names(files)
    _check_outputs(out, names, files)
    model, classes = load_model(args.checkpoint)
    transform = eval_transform(model.config.input_size, model.config.mean, model.config.std)
    out.mkdir(parents=True, exist_ok=True)
    detections = []
    for path, name in zip(files, names):
        image = load_image(path)  # (H, W, 3) uint8; DatasetError naming the file
        x, _, _ = transform(image, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), None)
        boxes, labels, scores = predict(model, x[None])[0]
        detections.append((boxes, labels, scores))
        keep = scores >= args.score_threshold
        ax = viz.draw_boxes(image, boxes[keep], labels[keep], scores[keep], class_names=classes,
                            title=path.name)
        _save_picture(ax, out / name)
        print(f"{path}: {int(keep.sum())} detections -> {out / name}")
        for b, l, s in zip(boxes[keep], labels[keep], scores[keep]):
            print(f"  {classes[l - 1]:>12s} {s:.3f}  [{b[0]:.3f}, {b[1]:.3f}, {b[2]:.3f}, {b[3]:.3f}]")
    n = write_detections(out / DETECTIONS_FILE, [str(f) for f in files], detections, classes)
    print(f"wrote {n} detections (every score >= 0.01, not only those drawn) to {out / DETECTIONS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
