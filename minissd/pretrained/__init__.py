"""The trained tiny-voc detector that ships with minissd, for the notebooks and for analysis.

    model, classes, info = minissd.pretrained.load()       # the shipped weights (eval mode)
    model, classes, info = minissd.pretrained.load(path)   # any checkpoint.npz of minissd.train

- ``tiny-voc.npz``: the weights of the project's default run (``python -m minissd.train
  --tiny-voc``) as it was at commit e4d21ef, with the recipe's earlier peak lr 0.02 (val mAP
  0.813; the default since 2026-12-04, lr 0.06, reaches about 0.84, docs/training-results.md:
  chapters 8-10's figures are measured on this one, so it stays until they are re-measured),
  parameters in float16 (half the bytes, detections the same to the eye),
  BatchNorm running statistics in float32; read with ``allow_pickle=False``. Loaded into the
  float32 network it describes.
- ``tiny-voc.json``: how it was made and what it scores: the command, seed, commit, date, the
  training run's own val mAP, the float32 checkpoint's and this float16 copy's val mAP on tiny-voc's 400
  validation images (``info["val_mAP"]``, VOC07 11-point, IoU 0.5), which
  tests/test_pretrained.py reproduces.
- ``tiny-voc-no-zoom.npz`` / ``.json`` (``NO_ZOOM``): the same command with ``--max-expand 1.0``
  (no zoom out), so that chapter 9 can show what zoom out changes; ``load(NO_ZOOM)``.

``$MINISSD_CHECKPOINT``: when set, ``load()`` (and so every notebook) uses that checkpoint
instead, e.g. the one of your own run: ``MINISSD_CHECKPOINT=runs/tiny-voc/checkpoint.npz
jupyter lab notebooks/``.

``python -m minissd.pretrained CHECKPOINT --command "..." --commit SHA`` writes the two files
from a training checkpoint and measures the float16 copy (how the shipped one was made).
"""

import datetime
import json
import os
from pathlib import Path

import numpy as np

from ..checkpoint import read_checkpoint, savez_atomic
from ..errors import CheckpointError

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "tiny-voc.npz"
INFO = HERE / "tiny-voc.json"
NO_ZOOM = HERE / "tiny-voc-no-zoom.npz"  # the default run without zoom out (--max-expand 1.0)
ENV_VAR = "MINISSD_CHECKPOINT"
VAL_IDS = range(10000, 10400)  # tiny-voc's validation images (seed 0, default config): indices 10000..10399
VAL_MARKER = "minissd-pretrained-val.json"


def load(path=None):
    """(model in eval mode, class names, info) of a trained detector.

    - path: a checkpoint (``.npz`` from minissd.train, or a file written by ``export``); None
      means ``$MINISSD_CHECKPOINT`` if set, else the shipped tiny-voc weights.
    - info: the ``.json`` beside a shipped file (``WEIGHTS``, ``NO_ZOOM``); for another
      checkpoint {"checkpoint": path, "iteration", "config"} from its meta.
    """
    from ..detect import load_model

    path = Path(path or os.environ.get(ENV_VAR) or WEIGHTS)
    model, classes = load_model(path)  # casts float16 parameters into the float32 network
    if path.resolve() in (WEIGHTS, NO_ZOOM):
        info = json.loads(path.resolve().with_suffix(".json").read_text())
    else:
        _, _, meta = read_checkpoint(path)
        info = {"checkpoint": str(path), "iteration": meta.get("iteration"), "config": meta.get("config")}
    return model, classes, info


def export(checkpoint, out=WEIGHTS):
    """Write a checkpoint's model as the small shipped file: float16 parameters, float32
    buffers (BatchNorm running mean and variance), the meta without optimizer or RNG state.

    - returns: the meta dict that was written.
    """
    state, _, meta = read_checkpoint(checkpoint)
    extra = meta.get("extra", {})
    if "classes" not in extra or "model_config" not in extra:
        raise CheckpointError(f"{checkpoint}: no classes / model_config; was it written by minissd.train?")
    small = {}
    for name, value in state.items():
        buffer = "running_" in name or "num_batches" in name
        small[f"model/{name}"] = value if buffer or value.dtype.kind != "f" else value.astype(np.float16)
    keep = {"format_version": meta.get("format_version"), "iteration": meta.get("iteration"),
            "config": meta.get("config"), "rng_state": None,
            "extra": {k: extra[k] for k in ("classes", "model", "model_config") if k in extra}}
    savez_atomic(out, {"meta": np.array(json.dumps(keep)), **small})
    return keep


def tiny_voc_val(root=None):
    """A VOC folder holding only tiny-voc's 400 validation images (the same bytes as in the full
    dataset), written once into ``root`` (default ``$MINISSD_DATA/tiny-voc-val``): a few seconds
    instead of the 10,400 images of the whole set. Returns the path.

    A folder that exists without this function's marker is refused (DatasetError), not touched.
    """
    from ..data.tiny_voc import (TINY_VOC_CLASSES, TinyVOCConfig, annotation_xml, default_data_dir,
                                 draw_image, encode_jpeg)
    from ..errors import DatasetError

    root = Path(root) if root is not None else default_data_dir() / "tiny-voc-val"
    config = TinyVOCConfig()
    marker = {"written_by": "minissd.pretrained.tiny_voc_val", "seed": 0, "indices": [VAL_IDS[0], VAL_IDS[-1]]}
    if (root / VAL_MARKER).exists() and json.loads((root / VAL_MARKER).read_text()) == marker:
        return root
    if root.exists() and any(root.iterdir()) and not (root / VAL_MARKER).exists():
        raise DatasetError(f"{root}: exists and was not written by minissd.pretrained.tiny_voc_val; "
                           "refusing to write into it")
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for i in VAL_IDS:
        image_id = f"{i + 1:06d}"
        image, objects = draw_image(config, 0, i)
        (root / "JPEGImages" / f"{image_id}.jpg").write_bytes(encode_jpeg(image, config.jpeg_quality))
        (root / "Annotations" / f"{image_id}.xml").write_text(
            annotation_xml(image_id, image.shape[1], image.shape[0], objects), encoding="utf-8")
        ids.append(image_id)
    (root / "ImageSets" / "Main" / "val.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in TINY_VOC_CLASSES))
    (root / VAL_MARKER).write_text(json.dumps(marker))  # last: its presence means complete
    return root


def val_map(model, classes, root=None, batch_size=32):
    """VOC07 11-point mAP (IoU 0.5, difficult ignored) of ``model`` on tiny-voc's 400 val images."""
    from ..data.voc import VOCDataset
    from ..detect import predict_dataset
    from ..evaluate import evaluate_detections

    dataset = VOCDataset(tiny_voc_val(root), "val", classes=classes)
    detections, ground_truths = predict_dataset(model, dataset, batch_size=batch_size)
    return evaluate_detections(detections, ground_truths, class_names=classes)["mAP"]


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m minissd.pretrained",
                                     description="Write the shipped float16 weights from a training checkpoint.")
    parser.add_argument("checkpoint", help="checkpoint.npz of a finished minissd.train run")
    parser.add_argument("--command", required=True, help="the command that trained it (recorded)")
    parser.add_argument("--commit", required=True, help="the git commit it was trained on (recorded)")
    parser.add_argument("--out", default=str(WEIGHTS), help="where to write the weights (the .json goes beside)")
    args = parser.parse_args(argv)

    meta = export(args.checkpoint, args.out)
    _, _, full = read_checkpoint(args.checkpoint)
    history = full.get("extra", {}).get("history", {})
    run_dir = Path(args.checkpoint).parent
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    model, classes, _ = load(args.out)
    measured = val_map(model, classes)
    full_model, _, _ = load(args.checkpoint)
    measured_float32 = val_map(full_model, classes)
    info = {
        "command": args.command,
        "seed": meta["config"].get("seed"),
        "commit": args.commit,
        "date": datetime.datetime.fromtimestamp(os.path.getmtime(args.checkpoint), datetime.timezone.utc)
        .strftime("%Y-%m-%d %H:%M UTC"),
        "iterations": meta["iteration"],
        "model": meta["extra"].get("model"),
        "classes": classes,
        "run_val_mAP": metrics.get("mAP", (history.get("mAP") or [None])[-1]),
        "val_mAP": measured,
        "val_mAP_float32": measured_float32,
        "val": "tiny-voc val (400 images, seed 0), VOC07 11-point mAP at IoU 0.5, difficult ignored, "
               "measured on this float16 copy",
        "weights": "parameters float16, BatchNorm running statistics float32",
    }
    Path(args.out).with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info, indent=1))
    return 0
