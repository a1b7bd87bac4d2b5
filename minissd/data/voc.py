"""Read a Pascal VOC year folder: XML annotations + JPEG images -> arrays in minissd's conventions.

A VOC year folder (``VOCdevkit/VOC2007`` or a generated ``tiny-voc``) looks like::

    Annotations/000005.xml        one XML file per image: size, and one <object> per box
    JPEGImages/000005.jpg
    ImageSets/Main/train.txt      one image id per line (also val.txt, trainval.txt, test.txt)
    classes.txt                   optional, minissd's own: the class names, one per line

Coordinate convention (see docs/data-and-augmentation.md). VOC writes pixel indices that are
1-based and inclusive: a box with ``xmin=1, xmax=W`` covers the whole width. minissd's boxes are
continuous and normalised, pixel column c (0-based) spanning [c, c+1). So a VOC box covering the
1-based columns xmin..xmax covers the continuous interval [xmin - 1, xmax]:

    xmin_norm = (xmin - 1) / width        xmax_norm = xmax / width
    ymin_norm = (ymin - 1) / height       ymax_norm = ymax / height

and the whole image maps to [0, 1] exactly.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .dataset import RecordDataset, check_image

# The 20 Pascal VOC classes in the order every SSD implementation uses (alphabetical, as in the
# VOC devkit's VOCinit.m); label k (1..20) means VOC_CLASSES[k - 1], label 0 is background.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

CLASSES_FILE = "classes.txt"  # minissd's addition: a dataset may list its own classes here


@dataclass
class Annotation:
    """Everything one VOC XML file says about its image, already checked.

    - image_id: str, the id listed in ImageSets/Main/{split}.txt ("000005")
    - image_path: Path of the JPEG
    - width, height: int, from <size> (checked against the JPEG's own header)
    - boxes_px: (G, 4) float64, VOC's 1-based inclusive pixel corners (xmin, ymin, xmax, ymax)
    - boxes: (G, 4) float32, normalised continuous corners (see the module docstring)
    - labels: (G,) int64 in 1..C
    - difficult, truncated, occluded: (G,) bool (a missing tag means 0, as in the devkit)
    """

    image_id: str
    image_path: Path
    width: int
    height: int
    boxes_px: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    truncated: np.ndarray
    occluded: np.ndarray


def read_classes(root) -> list[str] | None:
    """The class names listed in ``root/classes.txt`` (one per line), or None without that file."""
    path = Path(root) / CLASSES_FILE
    if not path.exists():
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    names = [n for n in names if n]
    if not names or len(set(names)) != len(names):
        raise DatasetError(f"{path}: expected distinct class names, one per line, got {names!r}")
    return names


def voc_box_to_normalised(boxes_px, width, height):
    """1-based inclusive VOC pixel corners -> continuous corners normalised to [0, 1].

    - boxes_px: (G, 4) (xmin, ymin, xmax, ymax) as written in VOC XML
    - returns (G, 4) float32; column c (1-based) covers [c - 1, c), so xmin loses 1, xmax not
    """
    # [assignment voc_to_normalised] VOC pixels are 1-based and inclusive: subtract 1 from the min corner only, then divide by width/height.
    b = np.asarray(boxes_px, dtype=np.float64).reshape(-1, 4)
    out = np.empty_like(b)
    out[:, 0] = (b[:, 0] - 1.0) / width
    out[:, 1] = (b[:, 1] - 1.0) / height
    out[:, 2] = b[:, 2] / width
    out[:, 3] = b[:, 3] / height
    return out.astype(np.float32)
    # [/assignment]


def _text(node, tag, path, default=None):
    """The stripped text of child ``tag``; a missing tag is an error unless a default is given."""
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if default is not None:
            return default
        raise DatasetError(f"{path}: missing <{tag}> in <{node.tag}>")
    return child.text.strip()


def _number(node, tag, path, kind=float, default=None):
    """The finite number in child ``tag`` (an int for kind=int); DatasetError naming the tag."""
    text = _text(node, tag, path, default=None if default is None else str(default))
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{path}: <{tag}> is {text!r}, not a number") from None
    if not np.isfinite(value):
        raise DatasetError(f"{path}: <{tag}> is {text!r}, not a finite number")
    return int(value) if kind is int else kind(value)


def _flag(node, tag, path):
    value = _number(node, tag, path, int, default=0)
    if value not in (0, 1):
        raise DatasetError(f"{path}: <{tag}> is {value}, expected 0 or 1")
    return bool(value)


def parse_annotation(xml_path, image_path, image_id, class_index) -> Annotation:
    """Parse and check one VOC XML file; raise DatasetError naming the file on anything wrong.

    - class_index: dict name -> label (1..C)
    Checks: well-formed XML, a positive <size>, every <object> a known class with
    1 <= xmin < xmax <= width and 1 <= ymin < ymax <= height.
    """
    xml_path = Path(xml_path)
    if not xml_path.exists():
        raise DatasetError(f"{xml_path}: annotation file is missing (image id {image_id!r})")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise DatasetError(f"{xml_path}: malformed or truncated XML ({e})") from None
    size = root.find("size")
    if size is None:
        raise DatasetError(f"{xml_path}: missing <size>")
    width = _number(size, "width", xml_path, int)
    height = _number(size, "height", xml_path, int)
    if width <= 0 or height <= 0:
        raise DatasetError(f"{xml_path}: image size {width}x{height} is not positive")

    boxes, labels, difficult, truncated, occluded = [], [], [], [], []
    for k, obj in enumerate(root.findall("object")):
        name = _text(obj, "name", xml_path)
        if name not in class_index:
            raise DatasetError(f"{xml_path}: object {k} has unknown class {name!r}")
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DatasetError(f"{xml_path}: object {k} ({name}) has no <bndbox>")
        x0, y0, x1, y1 = (_number(bnd, t, xml_path) for t in ("xmin", "ymin", "xmax", "ymax"))
        if not (x1 > x0 and y1 > y0):
            raise DatasetError(
                f"{xml_path}: object {k} ({name}) box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) "
                "is empty: needs xmax > xmin and ymax > ymin")
        if x0 < 1 or y0 < 1 or x1 > width or y1 > height:
            raise DatasetError(
                f"{xml_path}: object {k} ({name}) box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies "
                f"outside the {width}x{height} image (VOC pixels run 1..width, 1..height)")
        boxes.append((x0, y0, x1, y1))
        labels.append(class_index[name])
        difficult.append(_flag(obj, "difficult", xml_path))
        truncated.append(_flag(obj, "truncated", xml_path))
        occluded.append(_flag(obj, "occluded", xml_path))

    boxes_px = np.array(boxes, dtype=np.float64).reshape(-1, 4)  # (G, 4)
    return Annotation(
        image_id=image_id,
        image_path=Path(image_path),
        width=width,
        height=height,
        boxes_px=boxes_px,
        boxes=voc_box_to_normalised(boxes_px, width, height),
        labels=np.array(labels, dtype=np.int64),
        difficult=np.array(difficult, dtype=bool),
        truncated=np.array(truncated, dtype=bool),
        occluded=np.array(occluded, dtype=bool),
    )


def check_image_file(path, width, height, xml_name="its XML"):
    """Check a JPEG without decoding its pixels: it exists, its header reads, its size matches the
    XML (named ``xml_name`` in errors), and its last kilobyte holds the end-of-image marker (a
    cut-off download lacks it)."""
    check_image(path, xml_name, width, height, formats=("JPEG",))
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - 1024))
        if b"\xff\xd9" not in f.read():
            raise DatasetError(f"{path}: JPEG is truncated (no end-of-image marker)")


class VOCDataset(RecordDataset):
    """A VOC split as an indexable dataset: ``image, boxes, labels, difficult = ds[i]``.

    - root: the VOC year folder (the one holding Annotations/, JPEGImages/, ImageSets/)
    - split: name of ImageSets/Main/{split}.txt ("train", "val", "trainval", "test")
    - classes: class names, label k meaning classes[k - 1]; None reads root/classes.txt if
      present (tiny-voc writes one), else the 20 VOC classes
    - keep_difficult: False drops difficult objects (ssd.pytorch trains that way); evaluation
      wants them kept, flagged, so that they are neither counted nor penalised
    - skip_bad: False raises DatasetError on the first bad file; True warns (warnings + logging)
      about each bad image and leaves it out

    ``ds[i]`` returns
    - image: (H, W, 3) uint8 RGB
    - boxes: (G, 4) float32, corner form (xmin, ymin, xmax, ymax) normalised to [0, 1]
    - labels: (G,) int64 in 1..C
    - difficult: (G,) bool

    Annotations are parsed and checked when the dataset is built (so a bad file surfaces at once,
    not an hour into training); pixels are decoded on access.
    """

    def __init__(self, root, split="train", classes=None, keep_difficult=True, skip_bad=False):
        self.root = self.source = Path(root)
        self.split = split
        if classes is None:
            classes = read_classes(self.root) or VOC_CLASSES
        self.classes = list(classes)
        self._start(keep_difficult, skip_bad)

        split_file = self.root / "ImageSets" / "Main" / f"{split}.txt"
        if not split_file.exists():
            raise DatasetError(f"{split_file}: split file is missing (no split {split!r} under {self.root})")
        # VOC's split files hold one id per line; the per-class files add " 1"/"-1": keep the id.
        # utf-8-sig: a split file saved by an editor that writes a byte-order mark reads the same
        ids = [line.split()[0] for line in split_file.read_text(encoding="utf-8-sig").splitlines()
               if line.strip()]

        class_index = {name: k + 1 for k, name in enumerate(self.classes)}
        for image_id in ids:
            self._add(image_id, lambda: self._read(image_id, class_index))
        self._finish()

    def _read(self, image_id, class_index) -> Annotation:
        """The checked Annotation of one image (DatasetError naming the file if it is bad)."""
        xml = self.root / "Annotations" / f"{image_id}.xml"
        ann = parse_annotation(xml, self.root / "JPEGImages" / f"{image_id}.jpg", image_id, class_index)
        check_image_file(ann.image_path, ann.width, ann.height, xml.name)
        return ann


class ConcatDataset:
    """Several datasets with the same classes, read as one: SSD's "07+12" training set is
    ``ConcatDataset([VOCDataset(voc07, "trainval"), VOCDataset(voc12, "trainval")])``.

    ``ds[i]`` and ``ds.ids`` follow the parts in order; ``ds.classes`` is their common list.
    """

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: no datasets given")
        self.classes = list(self.datasets[0].classes)
        for d in self.datasets[1:]:
            if list(d.classes) != self.classes:
                raise ValueError(f"ConcatDataset: {d!r} has classes {list(d.classes)}, "
                                 f"the first has {self.classes}; labels would not agree")
        self.ids = [i for d in self.datasets for i in d.ids]
        self._ends = np.cumsum([len(d) for d in self.datasets])  # (D,) one past each part's last index

    def __len__(self):
        return int(self._ends[-1])

    def __getitem__(self, i):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        i = i % len(self)
        part = int(np.searchsorted(self._ends, i, side="right"))  # the part holding item i
        start = 0 if part == 0 else int(self._ends[part - 1])
        return self.datasets[part][i - start]
