"""Read a COCO-style JSON annotation file: images + categories + annotations -> minissd's arrays.

The file (the COCO "instances" format; CVAT, Label Studio and Roboflow export it)::

    {"images":      [{"id": 7, "file_name": "a.jpg", "width": 400, "height": 300}, ...],
     "categories":  [{"id": 1, "name": "car"}, ...],
     "annotations": [{"image_id": 7, "category_id": 1, "bbox": [x, y, w, h], "iscrowd": 0}, ...]}

- ``bbox`` is [x, y, width, height] in pixels, continuous coordinates with the origin at the
  top-left corner of the image (no VOC "+1"): the box spans [x, x + w] x [y, y + h], so
  ``(x / W, y / H, (x + w) / W, (y + h) / H)`` are minissd's normalised corners.
- Classes are the categories sorted by id: label 1 is the category with the smallest id. Ids
  need not be consecutive (COCO's run 1..90 with gaps for 80 classes).
- ``iscrowd: 1`` (a region of many objects) becomes minissd's ``difficult``: evaluation
  neither counts nor penalises it, as VOC does for its difficult objects.
- An image with no annotation is kept, with no boxes (a background image).
- ``file_name`` is relative to the image folder: the folder given after the comma in
  ``coco:ANN.json,IMAGES``, or by default the JSON file's own folder.
- Image ids (``ds.ids``) are the file names without their extension ("sub/a" for "sub/a.jpg").

Splits: one JSON file per split. In a spec the placeholder ``{split}`` stands for the split's
name, in the file and (optionally) the image folder: ``coco:ann/instances_{split}.json,{split}``
opens ``ann/instances_train.json`` with images in ``train/`` for the train split (see
``minissd.data.open``). ``CocoDataset`` itself takes the resolved paths.

Bad input raises DatasetError naming the file and the entry (``annotations[12].bbox``). A box
may overshoot the image by up to one pixel (exporters round); it is clipped. Anything further
out, empty, negative, non-finite, or naming an unknown image or category is refused.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from ..errors import DatasetError
from .dataset import RecordDataset, check_image, finite_number, make_record

OVERSHOOT_PX = 1.0  # a box may leave the image by this much (then it is clipped)


def _field(entry, key, where, kinds):
    if not isinstance(entry, dict):
        raise DatasetError(f"{where} is {type(entry).__name__}, expected an object")
    if key not in entry:
        raise DatasetError(f"{where} has no {key!r}")
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise DatasetError(f"{where}.{key} is {value!r}, expected {' or '.join(k.__name__ for k in kinds)}")
    return value


def read_coco_json(path):
    """The parsed JSON object of a COCO file, with its three lists checked to be lists."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: COCO annotation file is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object with images, categories, annotations; "
                           f"found a {type(data).__name__}")
    for key in ("images", "categories", "annotations"):
        if not isinstance(data.get(key, []), list):
            raise DatasetError(f"{path}: {key!r} is not a list")
    if "images" not in data or "categories" not in data:
        missing = [k for k in ("images", "categories") if k not in data]
        raise DatasetError(f"{path}: no {' or '.join(repr(k) for k in missing)} list")
    return data


def coco_box_to_normalised(bbox, width, height):
    """[x, y, w, h] pixels -> (xmin, ymin, xmax, ymax) normalised by the image's width and height."""
    x, y, w, h = bbox
    return (x / width, y / height, (x + w) / width, (y + h) / height)


class CocoDataset(RecordDataset):
    """A COCO JSON file as a dataset: ``image, boxes, labels, difficult = ds[i]``.

    - annotation_file: the JSON file
    - images: the folder ``file_name`` is relative to (default: the JSON file's folder)
    - split: only a name to show (``repr``); the file is the split
    - classes: class names to use (a checkpoint's); None: the categories in id order. With
      names given, each category maps to the label of its name (an unknown name is an error)
    - keep_difficult: False drops iscrowd objects
    - skip_bad: True warns about each bad image (missing, unreadable, wrong size, bad box) and
      leaves it out instead of raising; a broken file structure always raises

    The whole file is checked when the dataset is built; pixels are decoded on access.
    """

    def __init__(self, annotation_file, images=None, split="", classes=None, keep_difficult=True,
                 skip_bad=False):
        self.source = Path(annotation_file)
        self.split = split
        self.images_dir = Path(images) if images else self.source.parent
        self._start(keep_difficult, skip_bad)
        data = read_coco_json(self.source)
        src = self.source

        # categories, by id
        cats = {}
        for k, c in enumerate(data["categories"]):
            where = f"{src}: categories[{k}]"
            cid = _field(c, "id", where, (int,))
            name = _field(c, "name", where, (str,)).strip()
            if not name:
                raise DatasetError(f"{where}.name is empty")
            if cid in cats:
                raise DatasetError(f"{where}.id {cid} repeats")
            cats[cid] = name
        names = [cats[i] for i in sorted(cats)]
        if len(set(names)) != len(names):
            raise DatasetError(f"{src}: categories repeat a name: {names}")
        if classes is None:
            if not names:
                raise DatasetError(f"{src}: 'categories' is empty (no classes)")
            self.classes = names
        else:
            self.classes = list(classes)
            unknown = [n for n in names if n not in self.classes]
            if unknown:
                raise DatasetError(f"{src}: categories {unknown} are not among the classes {self.classes}")
        label_of = {cid: self.classes.index(name) + 1 for cid, name in cats.items()}

        # images, by id
        images, order = {}, []
        for k, im in enumerate(data["images"]):
            where = f"{src}: images[{k}]"
            iid = _field(im, "id", where, (int, str))
            file_name = _field(im, "file_name", where, (str,))
            if iid in images:
                raise DatasetError(f"{where}.id {iid!r} repeats")
            size = []
            for key in ("width", "height"):
                v = im.get(key)
                if v is None:
                    size.append(None)
                elif isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                    raise DatasetError(f"{where}.{key} is {v!r}, expected a positive integer")
                else:
                    size.append(v)
            images[iid] = dict(index=k, file_name=file_name, size=size, objects=[])
            order.append(iid)

        # annotations, grouped by image (structure checked here; boxes per image below)
        for k, a in enumerate(data.get("annotations", [])):
            where = f"{src}: annotations[{k}]"
            iid = _field(a, "image_id", where, (int, str))
            if iid not in images:
                raise DatasetError(f"{where}.image_id {iid!r} is not among the images")
            cid = _field(a, "category_id", where, (int,))
            if cid not in label_of:
                raise DatasetError(f"{where}.category_id {cid} is not among the categories")
            bbox = _field(a, "bbox", where, (list,))
            if len(bbox) != 4:
                raise DatasetError(f"{where}.bbox has {len(bbox)} numbers, expected [x, y, w, h]")
            bbox = [finite_number(v, f"{where}.bbox[{j}]") for j, v in enumerate(bbox)]
            crowd = a.get("iscrowd", 0)
            if isinstance(crowd, str) or crowd not in (0, 1):
                raise DatasetError(f"{where}.iscrowd is {crowd!r}, expected 0 or 1")
            images[iid]["objects"].append((k, bbox, label_of[cid], bool(crowd)))

        for iid in order:
            im = images[iid]
            image_id = str(PurePosixPath(im["file_name"]).with_suffix(""))
            self._add(image_id, lambda im=im, image_id=image_id: self._record(im, image_id))
        self._finish()

    def _record(self, im, image_id):
        where = f"{self.source.name} images[{im['index']}]"
        path = self.images_dir / im["file_name"]
        width, height = check_image(path, where, *(im["size"] if None not in im["size"] else (None, None)))
        boxes, labels, difficult = [], [], []
        for k, (x, y, w, h), label, crowd in im["objects"]:
            at = f"{self.source}: annotations[{k}].bbox {[x, y, w, h]}"
            if w <= 0 or h <= 0:
                raise DatasetError(f"{at} is empty: needs width > 0 and height > 0")
            if x < -OVERSHOOT_PX or y < -OVERSHOOT_PX or x + w > width + OVERSHOOT_PX or y + h > height + OVERSHOOT_PX:
                raise DatasetError(f"{at} lies outside the {width}x{height} image {im['file_name']}")
            x0, y0, x1, y1 = coco_box_to_normalised((x, y, w, h), width, height)
            x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, 1.0), min(y1, 1.0)
            if not (x1 > x0 and y1 > y0):
                raise DatasetError(f"{at} has no area inside the {width}x{height} image")
            boxes.append((x0, y0, x1, y1))
            labels.append(label)
            difficult.append(crowd)
        return make_record(image_id, path, width, height, boxes, labels, difficult)
