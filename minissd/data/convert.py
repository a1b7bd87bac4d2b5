"""Write a dataset in another format: ``python -m minissd.data convert SPEC --to voc|coco|yolo OUT``.

Every split of the source (or those chosen) is read through the normal reader (so a bad file
stops the conversion with the reader's message) and written as:

    voc    OUT/JPEGImages/ID.jpg, OUT/Annotations/ID.xml, OUT/ImageSets/Main/SPLIT.txt,
           OUT/classes.txt                                      -> voc:OUT
    coco   OUT/SPLIT.json (one per split), OUT/images/ID.ext     -> coco:OUT/{split}.json,OUT/images
    yolo   OUT/images/ID.ext, OUT/labels/ID.txt, OUT/SPLIT.txt (image paths), OUT/classes.txt
                                                                 -> yolo:OUT

Images are copied byte for byte (VOC needs JPEG: other formats are re-encoded at quality 95);
an image in several splits (VOC's trainval) is written once. Ids with "/" become "_" in file
names. What each format can hold:

- VOC stores whole pixels, 1-based inclusive: each edge is rounded to the nearest pixel
  (at most half a pixel off; a box keeps at least one pixel).
- COCO stores [x, y, w, h] in pixels, here with 2 decimals; difficult becomes iscrowd.
- YOLO stores centre and size as fractions with 6 decimals; it has no difficult flag, so
  difficult objects become ordinary objects (the command says how many).

``--val-share F`` splits a source with one split (a single COCO file, say) into "train" and
"val", taking a seeded random F of the images for val.

OUT must not exist or be an empty folder: the dataset is written into a temporary folder
beside it and renamed to OUT at the end, so a failed conversion leaves nothing half-written
and nothing of the user's is ever replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ConfigError, DatasetError
from .open import list_splits, open_dataset

FORMATS = ("voc", "coco", "yolo")


def voc_pixels(box, width, height):
    """Normalised corners -> VOC's 1-based inclusive whole pixels (xmin, ymin, xmax, ymax)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    xmin, ymin = int(round(x0 * width)) + 1, int(round(y0 * height)) + 1
    xmax, ymax = int(round(x1 * width)), int(round(y1 * height))
    xmin, ymin = min(max(xmin, 1), width), min(max(ymin, 1), height)
    xmax, ymax = max(min(xmax, width), xmin), max(min(ymax, height), ymin)  # at least one pixel
    if xmax == xmin:  # the VOC reader wants xmax > xmin: widen by one pixel, inside the image
        xmin, xmax = (xmin - 1, xmax) if xmax == width else (xmin, xmax + 1)
    if ymax == ymin:
        ymin, ymax = (ymin - 1, ymax) if ymax == height else (ymin, ymax + 1)
    return xmin, ymin, xmax, ymax


def coco_bbox(box, width, height):
    """Normalised corners -> COCO's [x, y, w, h] in pixels (2 decimals)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [round(x0 * width, 2), round(y0 * height, 2), round((x1 - x0) * width, 2), round((y1 - y0) * height, 2)]


def yolo_line(box, label):
    """Normalised corners and a 1..C label -> "class cx cy w h" (6 decimals)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return f"{label - 1} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}"


def _file_id(image_id):
    return image_id.replace("/", "_").replace("\\", "_")


def _voc_xml(record, classes, filename):
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, v in (("width", record.width), ("height", record.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    for box, label, diff in zip(record.boxes, record.labels, record.difficult):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = classes[label - 1]
        ET.SubElement(obj, "difficult").text = str(int(diff))
        bnd = ET.SubElement(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), voc_pixels(box, record.width, record.height)):
            ET.SubElement(bnd, tag).text = str(v)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _copy_image(src, dst, need_jpeg):
    if need_jpeg:
        with Image.open(src) as im:
            if im.format != "JPEG":
                im.convert("RGB").save(dst, quality=95)
                return
    shutil.copyfile(src, dst)


def _check_out(out, sources):
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"OUT {out}: exists and is not an empty folder (convert never writes over files)")
    for s in sources:
        s = Path(s).resolve()
        o = out.resolve()
        if o == s or s in o.parents:
            raise ConfigError(f"OUT {out}: inside the source {s}; choose a folder outside it")
    return out


def read_splits(spec, splits=None, val_share=0.0, seed=0, data_dir=None):
    """{split name: dataset} of a spec: all its splits (or ``splits``), or with val_share a
    seeded train/val split of its only split (as {"train": ids..., "val": ...} subsets)."""
    names = list(splits) if splits else list_splits(spec, data_dir)
    if not names:
        raise DatasetError(f"{spec}: no splits found")
    first = open_dataset(spec, names[0], data_dir=data_dir)
    sets = {names[0]: first}
    for n in names[1:]:
        sets[n] = open_dataset(spec, n, data_dir=data_dir, classes=first.classes)
    if val_share:
        if not 0 < val_share < 1:
            raise ConfigError(f"--val-share: expected a fraction between 0 and 1, got {val_share}")
        if len(sets) != 1:
            raise ConfigError(f"--val-share: the source has splits {names}; choose one with --splits")
        (ds,) = sets.values()
        order = np.random.default_rng(seed).permutation(len(ds))
        n_val = max(1, int(round(val_share * len(ds))))
        if n_val >= len(ds):
            raise ConfigError(f"--val-share {val_share}: leaves no training image of {len(ds)}")
        sets = {"train": _Subset(ds, sorted(order[n_val:])), "val": _Subset(ds, sorted(order[:n_val]))}
    return {("all" if k is None else k): v for k, v in sets.items()}


class _Subset:
    def __init__(self, ds, indices):
        self.classes = ds.classes
        self.annotations = [ds.annotations[i] for i in indices]
        self.ids = [a.image_id for a in self.annotations]


def convert(spec, to, out, splits=None, val_share=0.0, seed=0, data_dir=None, log=print):
    """Write ``spec``'s splits in format ``to`` under ``out``; returns the new dataset's spec."""
    if to not in FORMATS:
        raise ConfigError(f"--to: expected one of {', '.join(FORMATS)}, got {to!r}")
    sets = read_splits(spec, splits, val_share, seed, data_dir)
    classes = next(iter(sets.values())).classes
    sources = {str(Path(a.image_path).parent) for ds in sets.values() for a in ds.annotations[:1]}
    out = _check_out(out, sources)
    tmp = out.parent / f".{out.name}.minissd-partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)  # our own leftover (pid in the name) from a run of this same process
    tmp.mkdir(parents=True)
    try:
        n_images, n_difficult = _write(sets, classes, to, tmp)
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    new_spec = {"voc": f"voc:{out}", "coco": f"coco:{out}/{{split}}.json,{out}/images", "yolo": f"yolo:{out}"}[to]
    log(f"wrote {n_images} images, splits {', '.join(sets)}, {len(classes)} classes: {new_spec}")
    if to == "yolo" and n_difficult:
        log(f"note: YOLO has no difficult flag; {n_difficult} difficult objects are ordinary objects there")
    return new_spec


def _write(sets, classes, to, root):
    written, names, n_difficult = {}, {}, 0  # file id -> image id, file id -> file name
    if to == "voc":
        for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (root / d).mkdir(parents=True)
        (root / "classes.txt").write_text("".join(c + "\n" for c in classes), encoding="utf-8")
    else:
        (root / "images").mkdir()
        if to == "yolo":
            (root / "labels").mkdir()
            (root / "classes.txt").write_text("".join(c + "\n" for c in classes), encoding="utf-8")
    for split, ds in sets.items():
        file_ids, coco_images, coco_anns = [], [], []
        for r in ds.annotations:
            fid = _file_id(r.image_id)
            if written.setdefault(fid, r.image_id) != r.image_id:
                raise DatasetError(f"ids {written[fid]!r} and {r.image_id!r} give the same file name {fid!r}")
            first_time = fid not in names  # an image of several splits (VOC's trainval) is written once
            name = names.setdefault(fid, fid + (".jpg" if to == "voc" else Path(r.image_path).suffix.lower()))
            if first_time:
                _copy_image(r.image_path, root / ("JPEGImages" if to == "voc" else "images") / name, to == "voc")
                n_difficult += int(np.sum(r.difficult))
                if to == "voc":
                    (root / "Annotations" / f"{fid}.xml").write_text(_voc_xml(r, classes, name), encoding="utf-8")
                elif to == "yolo":
                    (root / "labels" / f"{fid}.txt").write_text(
                        "".join(yolo_line(b, l) + "\n" for b, l in zip(r.boxes, r.labels)), encoding="utf-8")
            file_ids.append(fid)
            if to == "coco":
                image_id = len(coco_images) + 1
                coco_images.append({"id": image_id, "file_name": name, "width": r.width, "height": r.height})
                for b, l, d in zip(r.boxes, r.labels, r.difficult):
                    bbox = coco_bbox(b, r.width, r.height)
                    coco_anns.append({"id": len(coco_anns) + 1, "image_id": image_id, "category_id": int(l),
                                      "bbox": bbox, "area": round(bbox[2] * bbox[3], 2), "iscrowd": int(d)})
        if to == "voc":
            (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f + "\n" for f in file_ids))
        elif to == "yolo":
            (root / f"{split}.txt").write_text("".join(f"images/{names[f]}\n" for f in file_ids))
        else:
            data = {"images": coco_images, "annotations": coco_anns,
                    "categories": [{"id": k + 1, "name": c} for k, c in enumerate(classes)]}
            (root / f"{split}.json").write_text(json.dumps(data), encoding="utf-8")
    return len(written), n_difficult

