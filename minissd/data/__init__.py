"""Images in: the VOC reader, the tiny-voc generator, SSD's augmentation and the batch loader.

    VOCDataset(root, split)      image (H,W,3) uint8, boxes (G,4) corner [0,1], labels 1..C, difficult
    make_tiny_voc(root, seed)    writes tiny-voc in VOC layout (deterministic, idempotent)
    tiny_voc_path(), default_data_dir()
    train_transform(size), eval_transform(size)   SSD's augmentation; each step f(image, boxes, labels, rng)
    DataLoader(ds, batch_size, ...)               images (B,3,S,S) float32, targets [(boxes, labels), ...]

See docs/data-and-augmentation.md and the dataset card docs/tiny-voc.md.
"""

from .augment import (Compose, eval_transform, expand, hflip, normalize, photometric_distort,
                      random_flip, random_iou_crop, resize, train_transform)
from .loader import DataLoader
from .tiny_voc import (TINY_VOC_CLASSES, TinyVOCConfig, default_data_dir, make_tiny_voc,
                       tiny_voc_path, verify_tiny_voc)
from .voc import VOC_CLASSES, Annotation, ConcatDataset, DatasetError, VOCDataset

__all__ = [
    "VOCDataset", "ConcatDataset", "DatasetError", "Annotation", "VOC_CLASSES",
    "make_tiny_voc", "TinyVOCConfig", "TINY_VOC_CLASSES", "tiny_voc_path", "default_data_dir",
    "verify_tiny_voc",
    "Compose", "train_transform", "eval_transform", "photometric_distort", "expand",
    "random_iou_crop", "random_flip", "hflip", "resize", "normalize",
    "DataLoader",
]
