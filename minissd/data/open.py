"""One opener for every dataset format: a spec string -> a dataset with the one contract.

    ds = open_dataset("voc:data/VOC2007", "train")
    image, boxes, labels, difficult = ds[i];  ds.classes;  ds.ids      (see minissd/data/dataset.py)

Specs (what ``--data`` takes in train, evaluate, analyze, bench and ``python -m minissd.data``):

    tiny-voc                     the generated teaching set (written on first use, ~20 s)
    voc:PATH                     a VOC year folder; split S is ImageSets/Main/S.txt
    coco:ANN.json[,IMAGES]       COCO JSON; put {split} where the split's name goes, e.g.
                                 coco:ann/instances_{split}.json,images/{split}
                                 (IMAGES defaults to the JSON file's folder)
    yolo:PATH                    a YOLO folder; split S is images/S + labels/S, or the list S.txt
    PATH                         no prefix: guessed from what is there (Annotations/ -> voc,
                                 a .json -> coco, images/ or a names file -> yolo)

A COCO spec without ``{split}`` is one file holding one split: opening it for a named split
("train") is refused, because training and validating on the same file would report a mAP
that means nothing. Open it with ``split=None``, or split it in two with
``python -m minissd.data convert coco:all.json --to coco OUT --val-share 0.2``.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

from ..errors import ConfigError, DatasetError
from .coco import CocoDataset
from .voc import VOCDataset
from .yolo import NAMES_FILES, YoloDataset

FORMATS = ("tiny-voc", "voc", "coco", "yolo")


def dataset_spec(data="", tiny_voc=False, voc_root=""):
    """The spec that train's flags ask for: ``--data`` as given, ``--voc-root DIR`` as
    ``voc:DIR``, ``--tiny-voc`` (or nothing at all) as ``tiny-voc``.

    Raises ConfigError naming the flags when more than one is given, or when ``--data`` does
    not start with a known format.
    """
    given = [flag for flag, v in (("--data", data), ("--tiny-voc", tiny_voc), ("--voc-root", voc_root)) if v]
    if len(given) > 1:
        raise ConfigError(f"choose one of --data, --voc-root and --tiny-voc (got {' and '.join(given)})")
    if voc_root:
        return f"voc:{voc_root}"
    if not data or tiny_voc:
        return "tiny-voc"
    parse_spec(data, flag="--data")
    return data


def parse_spec(spec, flag="spec"):
    """(format, path, images) of a spec; images is None except for coco. Guesses a bare path."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"{flag}: empty dataset spec (expected tiny-voc, voc:PATH, coco:ANN.json[,IMAGES] or yolo:PATH)")
    spec = spec.strip()
    if spec == "tiny-voc":
        return "tiny-voc", None, None
    kind, sep, rest = spec.partition(":")
    if sep and kind in FORMATS and kind != "tiny-voc" and len(kind) > 1:  # "C:\..." is a path
        if not rest:
            raise ConfigError(f"{flag} {spec!r}: no path after {kind}:")
        if kind == "coco":
            ann, _, images = rest.partition(",")
            return "coco", ann, images or None
        return kind, rest, None
    if sep and re.fullmatch(r"[a-z]+", kind) and len(kind) > 1:
        raise ConfigError(f"{flag} {spec!r}: unknown format {kind!r}; expected one of tiny-voc, voc:, coco:, yolo:")
    return _guess(spec, flag)


def _guess(path, flag):
    p = Path(path)
    first = Path(path.replace("{split}", "*"))
    if path.endswith(".json"):
        return "coco", path, None
    if (p / "Annotations").is_dir() or (p / "ImageSets").is_dir():
        return "voc", path, None
    if (p / "images").is_dir() or (p / "labels").is_dir() or any((p / n).is_file() for n in NAMES_FILES):
        return "yolo", path, None
    if not p.exists() and not glob.glob(str(first)):
        raise DatasetError(f"{flag} {path!r}: no such file or folder")
    raise ConfigError(f"{flag} {path!r}: cannot tell the format; write voc:{path}, coco:{path} or yolo:{path}")


def open_dataset(spec, split, data_dir=None, classes=None, keep_difficult=True, skip_bad=False):
    """The dataset a spec names, for one split.

    - spec: see the module docstring ("tiny-voc", "voc:PATH", "coco:ANN.json[,IMAGES]", "yolo:PATH")
    - split: "train", "val", ...; None for a COCO file without {split} (the file as it is)
    - data_dir: where tiny-voc lives (default minissd.data.default_data_dir())
    - classes: class names to read labels with (a checkpoint's), None: the dataset's own
    - keep_difficult, skip_bad: as in VOCDataset
    Returns a VOCDataset, CocoDataset or YoloDataset.
    """
    kind, path, images = parse_spec(spec)
    opts = dict(classes=classes, keep_difficult=keep_difficult, skip_bad=skip_bad)
    if kind == "tiny-voc":
        from .tiny_voc import make_tiny_voc, tiny_voc_path

        return VOCDataset(make_tiny_voc(tiny_voc_path(data_dir)), split or "train", **opts)
    if kind == "voc":
        if not Path(path).is_dir():
            raise DatasetError(f"{path}: VOC folder is missing")
        return VOCDataset(path, split or "train", **opts)
    if kind == "yolo":
        return YoloDataset(path, split or "train", **opts)
    if "{split}" not in path:
        if split is not None:
            raise DatasetError(
                f"{spec}: one COCO file cannot serve the {split!r} split (training and validating on "
                "the same images would make the mAP meaningless). Give one file per split with "
                "{split} where the name goes (coco:ann_{split}.json), or split this one: "
                f"python -m minissd.data convert {spec} --to coco OUT --val-share 0.2")
        return CocoDataset(path, images, split="", **opts)
    if split is None:
        raise DatasetError(f"{spec}: name a split for the {{split}} placeholder")
    fill = lambda s: s.replace("{split}", split)  # noqa: E731
    return CocoDataset(fill(path), fill(images) if images else None, split=split, **opts)


def list_splits(spec, data_dir=None):
    """The split names a spec offers, sorted ([None] for a COCO file without {split})."""
    kind, path, _ = parse_spec(spec)
    if kind == "tiny-voc":
        from .tiny_voc import tiny_voc_path

        path = tiny_voc_path(data_dir)
        kind = "voc"
    if kind == "voc":
        folder = Path(path) / "ImageSets" / "Main"
        names = [p.stem for p in folder.glob("*.txt")]
        # VOC's per-class lists (aeroplane_train.txt) are not splits
        return sorted(n for n in names if not any(n.endswith("_" + m) and n != m for m in names))
    if kind == "yolo":
        root = Path(path)
        folders = sorted(p.name for p in (root / "images").iterdir() if p.is_dir()) \
            if (root / "images").is_dir() else []
        lists = sorted(p.stem for p in root.glob("*.txt") if p.name not in NAMES_FILES)
        return folders or lists
    if "{split}" not in path:
        return [None]
    head, tail = path.split("{split}", 1)
    found = []
    for f in glob.glob(glob.escape(head) + "*" + glob.escape(tail.replace("{split}", "*"))):
        name = f[len(head):len(f) - len(tail)] if tail else f[len(head):]
        if "{split}" not in tail and name and "/" not in name:
            found.append(name)
    return sorted(set(found))
