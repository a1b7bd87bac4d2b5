"""Images in: the dataset readers and their opener, the tiny-voc generator, SSD's augmentation
and the batch loader.

    open_dataset(spec, split)    "tiny-voc" | "voc:PATH" | "coco:ANN.json[,IMAGES]" | "yolo:PATH"
    dataset_spec(data, tiny_voc, voc_root)   train's flags -> a spec
    VOCDataset(root, split)      image (H,W,3) uint8, boxes (G,4) corner [0,1], labels 1..C, difficult
    CocoDataset(ann, images), YoloDataset(root, split)   the same contract (minissd/data/dataset.py)
    make_tiny_voc(root, seed)    writes tiny-voc in VOC layout (deterministic, idempotent)
    tiny_voc_path(), default_data_dir()
    train_transform(size), eval_transform(size)   SSD's augmentation; each step f(image, boxes, labels, rng)
    DataLoader(ds, batch_size, ...)               images (B,3,S,S) float32, targets [(boxes, labels), ...]
    DecodeCache(ds, max_side)                     each image decoded once (optionally reduced)
    python -m minissd.data convert | inspect      other formats; a first look (docs/own-data.md)

See docs/data-and-augmentation.md and the dataset card docs/tiny-voc.md.
"""

from .augment import (Compose, eval_transform, expand, hflip, normalize, photometric_distort,
                      random_flip, random_iou_crop, resize, train_transform)
from .coco import CocoDataset
from .loader import DataLoader, DecodeCache
from .open import dataset_spec, list_splits, open_dataset
from .tiny_voc import (TINY_VOC_CLASSES, TinyVOCConfig, default_data_dir, make_tiny_voc,
                       tiny_voc_path, verify_tiny_voc)
from .voc import VOC_CLASSES, Annotation, ConcatDataset, DatasetError, VOCDataset
from .yolo import YoloDataset

__all__ = [
    "open_dataset", "dataset_spec", "list_splits", "CocoDataset", "YoloDataset",
    "VOCDataset", "ConcatDataset", "DatasetError", "Annotation", "VOC_CLASSES",
    "make_tiny_voc", "TinyVOCConfig", "TINY_VOC_CLASSES", "tiny_voc_path", "default_data_dir",
    "verify_tiny_voc",
    "Compose", "train_transform", "eval_transform", "photometric_distort", "expand",
    "random_iou_crop", "random_flip", "hflip", "resize", "normalize",
    "DataLoader", "DecodeCache",
]
