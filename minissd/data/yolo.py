"""Read a YOLO-format folder: one text file of normalised boxes per image -> minissd's arrays.

A label file holds one object per line, five numbers separated by spaces::

    class cx cy w h        e.g.  0 0.5125 0.3000 0.0750 0.1000

- ``class``: the 0-based index into the names file (minissd's label is class + 1);
- ``cx cy w h``: box centre and size, normalised by the image's width and height, so
  minissd's corners are ``(cx - w/2, cy - h/2, cx + w/2, cy + h/2)``.
- An image without a label file, or with an empty one, has no objects (a background image).
- YOLO has no "difficult" flag: every object counts.

Two layouts (Ultralytics' and darknet's), for a split named S::

    PATH/images/S/a.jpg    PATH/labels/S/a.txt        (checked first)
    PATH/S.txt             one image path per line, relative to PATH (or absolute); each
                           image's labels sit where "images" in its path becomes "labels"
                           and the extension ".txt" (beside the image if there is no "images")

Class names: PATH/classes.txt (or obj.names, the darknet name), one per line; else the
``names:`` entry of PATH/data.yaml (a list ``[a, b]``, ``- a`` lines or ``0: a`` lines).
Image ids (``ds.ids``): the image path relative to images/S (or to PATH) without extension.

Bad input raises DatasetError naming the label file and line: a line without exactly five
fields (a segmentation polygon, say), a non-number, a class outside the names, an empty box,
a box outside the image by more than OVERSHOOT (rounding; such boxes are clipped).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from ..errors import DatasetError
from .dataset import RecordDataset, check_image, finite_number, make_record, read_names

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
NAMES_FILES = ("classes.txt", "obj.names")
OVERSHOOT = 1e-3  # normalised units a box may leave the image by (6-decimal rounding), clipped


def _yaml_names(path):
    """The ``names:`` of a data.yaml, read without a YAML library (the three usual spellings)."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    for k, line in enumerate(lines):
        m = re.match(r"^names\s*:\s*(.*)$", line)
        if not m:
            continue
        rest = m.group(1).split("#")[0].strip()
        if rest.startswith("["):  # names: [a, 'b c']
            inner = rest.strip("[]")
            return [n.strip().strip("'\"") for n in inner.split(",") if n.strip()]
        names = []
        for item in lines[k + 1:]:
            if not item.strip():
                continue
            if not item.startswith((" ", "\t", "-")):
                break
            item = item.split("#")[0].strip()
            item = re.sub(r"^(-|\d+\s*:)\s*", "", item)  # "- car" or "0: car"
            names.append(item.strip().strip("'\""))
        return names
    return []


def read_yolo_names(root):
    """The class names of a YOLO folder (see the module docstring for where they are looked for)."""
    root = Path(root)
    for name in NAMES_FILES:
        if (root / name).is_file():
            return read_names(root / name)
    for name in ("data.yaml", "dataset.yaml"):
        if (root / name).is_file():
            names = _yaml_names(root / name)
            if not names:
                raise DatasetError(f"{root / name}: no 'names:' list of class names")
            return names
    raise DatasetError(f"{root}: no class names file (expected {' or '.join(NAMES_FILES)}, one name "
                       "per line, or a data.yaml with 'names:')")


def yolo_box_to_normalised(cx, cy, w, h):
    """(cx, cy, w, h) normalised centre form -> (xmin, ymin, xmax, ymax) normalised corners."""
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def split_images(root, split):
    """[(image id, image path, label path)] of one split, in sorted order, and the layout's name."""
    root = Path(root)
    folder, listing = root / "images" / split, root / f"{split}.txt"
    out = []
    if folder.is_dir():
        for p in sorted(folder.rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                rel = p.relative_to(folder)
                out.append((str(PurePosixPath(rel.as_posix()).with_suffix("")), p,
                            root / "labels" / split / rel.with_suffix(".txt")))
        return out, f"{folder}"
    if listing.is_file():
        for n, line in enumerate(listing.read_text(encoding="utf-8-sig").splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            p = Path(line) if Path(line).is_absolute() else root / line
            parts = list(p.parts)
            if "images" in parts:
                i = len(parts) - 1 - parts[::-1].index("images")
                parts[i] = "labels"
            label = Path(*parts).with_suffix(".txt")
            try:
                rel = p.relative_to(root)
            except ValueError:
                rel = Path(p.name)
            rel = PurePosixPath(rel.as_posix())
            if rel.parts and rel.parts[0] == "images":
                rel = PurePosixPath(*rel.parts[1:])
            out.append((str(rel.with_suffix("")), p, label))
        return out, f"{listing}"
    raise DatasetError(f"{root}: no split {split!r}: expected a folder {folder} or a list {listing}")


def parse_label_file(path, num_classes):
    """(boxes, labels) of one label file; DatasetError naming the file and line on anything wrong."""
    boxes, labels = [], []
    text = Path(path).read_text(encoding="utf-8-sig")
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        at = f"{path}: line {n}"
        if len(fields) != 5:
            raise DatasetError(f"{at} has {len(fields)} fields, expected 5: class cx cy w h "
                               "(segmentation polygons are not read)")
        cls = finite_number(fields[0], f"{at}: class")
        if cls != int(cls) or not 0 <= cls < num_classes:
            raise DatasetError(f"{at}: class is {fields[0]!r}, expected an integer 0..{num_classes - 1} "
                               f"(the names file lists {num_classes})")
        cx, cy, w, h = (finite_number(v, f"{at}: {k}") for k, v in zip(("cx", "cy", "w", "h"), fields[1:]))
        if w <= 0 or h <= 0:
            raise DatasetError(f"{at}: box w {w:g}, h {h:g} is empty: needs w > 0 and h > 0")
        x0, y0, x1, y1 = yolo_box_to_normalised(cx, cy, w, h)
        if min(x0, y0) < -OVERSHOOT or max(x1, y1) > 1 + OVERSHOOT:
            raise DatasetError(f"{at}: box ({cx:g}, {cy:g}, {w:g}, {h:g}) lies outside the image "
                               "(YOLO's numbers are fractions of the image, 0..1)")
        boxes.append((max(x0, 0.0), max(y0, 0.0), min(x1, 1.0), min(y1, 1.0)))
        labels.append(int(cls) + 1)
    return boxes, labels


class YoloDataset(RecordDataset):
    """A YOLO folder's split as a dataset: ``image, boxes, labels, difficult = ds[i]``.

    - root: the folder (holding images/ and labels/, or {split}.txt, and the names file)
    - split: "train", "val", ... (see the module docstring for how it maps to files)
    - classes: names to use instead of the names file (a checkpoint's); they must agree in
      number with the class indices found
    - skip_bad: True warns about each bad image or label file and leaves it out

    Label files are parsed and images' headers read when the dataset is built.
    """

    def __init__(self, root, split="train", classes=None, keep_difficult=True, skip_bad=False):
        self.source = Path(root)
        self.split = split
        self._start(keep_difficult, skip_bad)
        if not self.source.is_dir():
            raise DatasetError(f"{self.source}: YOLO folder is missing")
        self.classes = list(classes) if classes is not None else read_yolo_names(self.source)
        items, self.layout = split_images(self.source, split)
        if not items:
            raise DatasetError(f"{self.layout}: no images in split {split!r}")
        if not any(label.is_file() for _, _, label in items):
            raise DatasetError(f"{self.layout}: none of the {len(items)} images has a label file "
                               f"(looked for e.g. {items[0][2]})")
        for image_id, image, label in items:
            self._add(image_id, lambda i=image_id, im=image, lb=label: self._record(i, im, lb))
        self._finish()

    def _record(self, image_id, image, label):
        where = f"listed in split {self.split!r} of {self.source}"
        width, height = check_image(image, where)
        boxes, labels = parse_label_file(label, len(self.classes)) if label.is_file() else ([], [])
        return make_record(image_id, image, width, height, boxes, labels, [False] * len(labels))
