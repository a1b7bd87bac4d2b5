"""The generated photo folder: VOC layout read by the normal reader, many small objects, reused
when complete, and never written into a folder minissd did not make."""

import numpy as np
import pytest

from minissd.data import DatasetError, VOCDataset
from minissd.data.photos import make_photos


def test_photos_are_a_voc_folder_of_small_objects(tmp_path):
    root = make_photos(tmp_path / "p", n_train=3, n_val=1, seed=0)
    ds = VOCDataset(root, "train")
    assert ds.classes == ["vehicle"] and len(ds) == 3 and len(VOCDataset(root, "val")) == 1
    image, boxes, labels, _ = ds[0]
    assert image.shape == (400, 400, 3) and 20 <= len(boxes) <= 60 and set(labels) == {1}
    sides = np.concatenate([a.boxes_px[:, 2:] - a.boxes_px[:, :2] + 1 for a in ds.annotations])
    assert sides.min() >= 4 and sides.max() <= 52
    assert image.std() > 20  # texture, not a flat background
    assert make_photos(tmp_path / "p", n_train=3, n_val=1, seed=0) == root  # complete: reused


def test_photos_refuse_a_foreign_or_different_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("keep")
    with pytest.raises(DatasetError, match="not a photos folder"):
        make_photos(tmp_path / "mine", n_train=1, n_val=1)
    assert (tmp_path / "mine" / "a.txt").read_text() == "keep"
    make_photos(tmp_path / "p", n_train=1, n_val=1)
    with pytest.raises(DatasetError, match="not a photos folder with this config"):
        make_photos(tmp_path / "p", n_train=2, n_val=1)
