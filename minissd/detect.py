"""Detect objects with a trained SSD: ``python -m minissd.detect --checkpoint C IMAGE... [--out DIR]``.

Writes each image with its labelled boxes drawn (``DIR/<name>.png``, default ``detections/``)
and prints the detections. The functions here are also what training and evaluation use to
run a model over a dataset:

- ``load_model(checkpoint)``: rebuild the network a checkpoint was trained with, and its classes.
- ``predict(model, images)``: one batch of network inputs -> detections per image.
- ``predict_dataset(model, dataset)``: every image of a VOCDataset -> detections and ground truth.

Detections are ``(boxes (N, 4) float32 corner form normalised to [0, 1], labels (N,) int64
1..C, scores (N,) float32)`` per image, best first: decode against the default boxes,
softmax, per-class NMS (IoU 0.45), top 200 (``minissd.nms.detect``).
"""

import argparse
import os
import sys

import numpy as np

from .checkpoint import CheckpointError, read_checkpoint
from .data.augment import eval_transform
from .data.loader import DataLoader
from .model import CONFIGS, SSD, SSDConfig
from .nms import detect as postprocess


def load_model(path):
    """(model in eval mode, class names) from a checkpoint written by ``minissd.train``."""
    state, _, meta = read_checkpoint(path)
    extra = meta.get("extra", {})
    if "classes" not in extra or not ("model_config" in extra or extra.get("model") in CONFIGS):
        raise CheckpointError(f"{path}: no model config / class names in it; was it written by minissd.train?")
    # the checkpoint carries the whole network description, so it rebuilds exactly what was
    # trained even if the built-in configs change later (older ones name a built-in config)
    config = SSDConfig.from_dict(extra["model_config"]) if "model_config" in extra else CONFIGS[extra["model"]]
    model = SSD(config, len(extra["classes"]))
    try:
        model.load_state_dict(state)
    except ValueError as err:
        raise CheckpointError(f"{path}: weights do not fit the network it describes: {err}") from err
    return model.eval(), list(extra["classes"])


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


def main(argv=None):
    from . import viz
    from .data.voc import load_image

    parser = argparse.ArgumentParser(prog="python -m minissd.detect", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint.npz written by minissd.train")
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG...)")
    parser.add_argument("--out", default="detections", help="folder for the drawn images")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="draw boxes scoring at least this")
    args = parser.parse_args(argv)

    model, classes = load_model(args.checkpoint)
    transform = eval_transform(model.config.input_size, model.config.mean, model.config.std)
    os.makedirs(args.out, exist_ok=True)
    for path in args.images:
        try:
            image = load_image(path)  # (H, W, 3) uint8
        except (OSError, ValueError) as err:
            print(f"{path}: cannot read the image ({err})", file=sys.stderr)
            return 2
        x, _, _ = transform(image, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), None)
        boxes, labels, scores = predict(model, x[None])[0]
        keep = scores >= args.score_threshold
        ax = viz.draw_boxes(image, boxes[keep], labels[keep], scores[keep], class_names=classes,
                            title=os.path.basename(path))
        name = os.path.splitext(os.path.basename(path))[0] + ".png"
        viz.save_figure(ax, os.path.join(args.out, name))
        print(f"{path}: {int(keep.sum())} detections -> {os.path.join(args.out, name)}")
        for b, l, s in zip(boxes[keep], labels[keep], scores[keep]):
            print(f"  {classes[l - 1]:>12s} {s:.3f}  [{b[0]:.3f}, {b[1]:.3f}, {b[2]:.3f}, {b[3]:.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
