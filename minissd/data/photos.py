"""Generated photo-like folders: 400x400 JPEGs with many small objects, in VOC layout.

What the loader benchmark (``python -m minissd.bench data``) and the own-data tests read: a
stand-in for a user's folder of aerial photographs, one class ("vehicle"), 20-60 objects of
10-50 px per image, on a textured background with the detail and JPEG size of a real photo
(smooth fields and structures at several scales plus sensor noise; quality 90, ~60-90 KB
each), so decoding costs what a real photo costs. It is read through the normal VOC reader.

    make_photos(root, n_train=64, n_val=16, seed=0, size=400) -> root

The folder is written under a temporary name and renamed into place with a marker
(``photos.json``) written last; a folder with the same marker is reused as it is, any other
existing folder is refused (minissd never writes into a folder it did not make).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import DatasetError

MARKER = "photos.json"
WRITTEN_BY = "minissd photos"
CLASSES = ("vehicle",)


def _field(rng, size, cells, amplitude):
    """A smooth random field: (cells x cells) noise upsampled bicubically to (size, size, 3)."""
    small = rng.normal(0, amplitude, (cells, cells, 3)).astype(np.float32)
    channels = [np.asarray(Image.fromarray(small[..., c], mode="F").resize((size, size), Image.BICUBIC))
                for c in range(3)]
    return np.stack(channels, axis=-1)  # (size, size, 3)


def draw_photo(rng, size=400, objects=(20, 60), sides=(10, 50)):
    """One photo-like image and its boxes.

    - returns image (size, size, 3) uint8 and a list of (xmin, ymin, xmax, ymax) VOC pixels
      (1-based inclusive)
    """
    base = rng.uniform(60, 170, 3).astype(np.float32)
    img = base + _field(rng, size, 4, 35) + _field(rng, size, 24, 18) + _field(rng, size, 96, 10)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(4, 10))):  # roads and field edges: long straight structures
        x0, y0, x1, y1 = rng.uniform(-50, size + 50, 4)
        draw.line((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.uniform(40, 220, 3)),
                  width=int(rng.integers(3, 14)))
    boxes = []
    for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
        long_side = rng.uniform(*sides)
        short = long_side * rng.uniform(0.45, 1.0)
        w, h = (long_side, short) if rng.random() < 0.5 else (short, long_side)
        x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
        shadow = (x0 + 2, y0 + 2, x0 + w + 2, y0 + h + 2)
        draw.rectangle(shadow, fill=(25, 25, 25))
        colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
        draw.rounded_rectangle((x0, y0, x0 + w, y0 + h), radius=min(w, h) / 4, fill=colour)
        draw.rectangle((x0 + w * 0.25, y0 + h * 0.25, x0 + w * 0.75, y0 + h * 0.75),
                       fill=tuple(int(c * 0.6) for c in colour))  # a roof / windscreen
        x0i, y0i = int(np.floor(x0)) + 1, int(np.floor(y0)) + 1
        x1i, y1i = min(int(np.ceil(x0 + w)), size), min(int(np.ceil(y0 + h)), size)
        boxes.append((x0i, y0i, x1i, y1i))
    im = im.filter(ImageFilter.GaussianBlur(0.6))  # lens softness
    arr = np.asarray(im).astype(np.float32) + rng.normal(0, 6, (size, size, 3)).astype(np.float32)  # sensor noise
    return np.clip(arr, 0, 255).astype(np.uint8), boxes


def _xml(image_id, size, boxes):
    objs = "".join(
        f"<object><name>{CLASSES[0]}</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>" for a, b, c, d in boxes)
    return (f"<annotation><filename>{image_id}.jpg</filename><size><width>{size}</width><height>{size}</height>"
            f"<depth>3</depth></size>{objs}</annotation>\n")


def make_photos(root, n_train=64, n_val=16, seed=0, size=400, quality=90):
    """Write (or reuse) a photo-like VOC folder at ``root``; returns its Path."""
    root = Path(root)
    config = dict(written_by=WRITTEN_BY, n_train=n_train, n_val=n_val, seed=seed, size=size, quality=quality)
    if root.exists():
        try:
            marker = json.loads((root / MARKER).read_text())
        except (OSError, ValueError):
            marker = None
        if marker == config:
            return root
        raise DatasetError(f"{root}: exists and is not a photos folder with this config ({MARKER}); "
                           "choose another folder (minissd does not write into folders it did not make)")
    tmp = root.parent / f".{root.name}.minissd-partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (tmp / d).mkdir(parents=True)
        (tmp / "classes.txt").write_text("".join(c + "\n" for c in CLASSES))
        ids = []
        for i in range(n_train + n_val):
            rng = np.random.default_rng([seed, i])
            image, boxes = draw_photo(rng, size)
            image_id = f"{i:06d}"
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="JPEG", quality=quality)
            (tmp / "JPEGImages" / f"{image_id}.jpg").write_bytes(buf.getvalue())
            (tmp / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, size, boxes))
            ids.append(image_id)
        (tmp / "ImageSets/Main/train.txt").write_text("".join(i + "\n" for i in ids[:n_train]))
        (tmp / "ImageSets/Main/val.txt").write_text("".join(i + "\n" for i in ids[n_train:]))
        (tmp / MARKER).write_text(json.dumps(config))
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
