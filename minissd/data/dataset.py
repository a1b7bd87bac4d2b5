"""The one dataset contract every reader (VOC, COCO, YOLO) keeps, and what the COCO and YOLO readers share.

    image, boxes, labels, difficult = ds[i]
    - image: (H, W, 3) uint8 RGB
    - boxes: (G, 4) float32, corner form (xmin, ymin, xmax, ymax) normalised to [0, 1]
    - labels: (G,) int64 in 1..C (0 is background and never appears)
    - difficult: (G,) bool (VOC's <difficult>, COCO's iscrowd; YOLO has none: all False)
    ds.classes   list of C names, label k meaning classes[k - 1]
    ds.ids       list of str, one per image, in ds[i] order
    len(ds)

Readers also expose ``ds.annotations``: one record per image with ``image_id``, ``image_path``,
``width``, ``height``, ``boxes``, ``labels``, ``difficult`` (VOCDataset's ``Annotation`` has
the same names), so that tools that need only the boxes (inspect, fit_prior_scales) or only
the file (the loader's decode cache) never decode pixels.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetError
from .images import load_image

log = logging.getLogger(__name__)

IMAGE_FORMATS = ("JPEG", "PNG", "BMP")  # what the COCO and YOLO readers accept


@dataclass
class Record:
    """One image and its objects, already checked.

    - image_id: str; image_path: Path; width, height: int (pixels, from the image header)
    - boxes: (G, 4) float32 corner [0, 1]; labels: (G,) int64 1..C; difficult: (G,) bool
    """

    image_id: str
    image_path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray


def check_image(path, where, width=None, height=None, formats=IMAGE_FORMATS):
    """(width, height) of an image file read from its header (no pixels decoded).

    - where: what to name in the error after the image path ("listed in ann.json images[3]")
    - width, height: the size the annotations claim, checked if given
    - formats: the Pillow format names accepted (VOC: only "JPEG")
    Raises DatasetError naming the image (and ``where``) when it is missing, unreadable, not
    one of ``formats``, or of another size.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image file is missing ({where})")
    try:
        with Image.open(path) as im:
            fmt, size = im.format, im.size
    except Exception as e:  # Pillow raises several types for a bad header
        raise DatasetError(f"{path}: not a readable image ({e}; {where})") from None
    if fmt not in formats:
        raise DatasetError(f"{path}: expected one of {', '.join(formats)}, found {fmt} ({where})")
    if width is not None and size != (width, height):
        raise DatasetError(f"{path}: image is {size[0]}x{size[1]} but {where} says {width}x{height}")
    return size


def finite_number(value, where):
    """``value`` as a float; DatasetError naming ``where`` for a non-number, bool, nan or inf."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DatasetError(f"{where} is {value!r}, not a number")
    try:
        x = float(value)
    except ValueError:
        raise DatasetError(f"{where} is {value!r}, not a number") from None
    if not math.isfinite(x):
        raise DatasetError(f"{where} is {value!r}, not a finite number")
    return x


def read_names(path):
    """Class names from a text file, one per line (blank lines ignored); distinct, at least one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a BOM is not part of the first name
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e})") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{path}: no class names (expected one per line)")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DatasetError(f"{path}: class names repeat: {dup}")
    return names


class RecordDataset:
    """A list of checked ``Record``s as a dataset (the contract in this module's docstring).

    Subclasses (the VOC, COCO and YOLO readers) set ``self.source``, ``self.split`` and
    ``self.classes``, build ``self.annotations`` (calling ``self._add`` per image so that
    ``skip_bad`` works the same everywhere), and call ``self._finish()``.
    """

    def _start(self, keep_difficult, skip_bad):
        self.keep_difficult = keep_difficult
        self.skip_bad = skip_bad
        self.skipped: list[tuple[str, str]] = []  # (image id, reason) for each left-out image
        self.annotations: list[Record] = []

    def _add(self, image_id, make):
        """Append ``make()``'s Record; with skip_bad, a DatasetError leaves the image out."""
        try:
            self.annotations.append(make())
        except DatasetError as e:
            if not self.skip_bad:
                raise
            self.skipped.append((image_id, str(e)))
            warnings.warn(f"skipping bad image: {e}", stacklevel=3)
            log.warning("skipping bad image: %s", e)

    def _finish(self):
        self.ids = [r.image_id for r in self.annotations]
        dup = sorted(i for i, n in Counter(self.ids).items() if n > 1)
        if dup:
            raise DatasetError(f"{self.source}: image ids repeat: {dup[:5]}")

    def __len__(self):
        return len(self.annotations)

    def __getitem__(self, i):
        r = self.annotations[i]
        image = load_image(r.image_path)  # (H, W, 3) uint8
        keep = slice(None) if self.keep_difficult else ~r.difficult
        return image, r.boxes[keep], r.labels[keep], r.difficult[keep]

    def __repr__(self):
        return (f"{type(self).__name__}({str(self.source)!r}, split={self.split!r}: {len(self)} images, "
                f"{len(self.classes)} classes)")


def make_record(image_id, image_path, width, height, boxes, labels, difficult):
    """A Record from lists (boxes already normalised corners)."""
    return Record(image_id=image_id, image_path=Path(image_path), width=int(width), height=int(height),
                  boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
                  labels=np.array(labels, dtype=np.int64),
                  difficult=np.array(difficult, dtype=bool))
