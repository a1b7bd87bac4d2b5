"""The YOLO reader: normalised cx cy w h lines -> corners, both layouts (images/labels folders and
split lists), the names file, and a named error for every bad line. Files written in tmp_path."""

import numpy as np
import pytest
from PIL import Image

from minissd.data import DatasetError, YoloDataset, list_splits, open_dataset
from minissd.data.yolo import _yaml_names


def jpeg(path, w=40, h=20):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (10, 200, 10)).save(path, quality=95)


def yolo_folder(root, lines="1 0.25 0.5 0.3 0.6\n0 0.75 0.25 0.5 0.5\n"):
    """images/train/a.jpg with two boxes, images/train/sub/b.jpg without a label file."""
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("boat\nplane\n")
    jpeg(root / "images" / "train" / "a.jpg")
    jpeg(root / "images" / "train" / "sub" / "b.jpg", 10, 10)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text(lines)
    return root


def test_folder_layout(tmp_path):
    ds = YoloDataset(yolo_folder(tmp_path), "train")
    assert ds.classes == ["boat", "plane"] and ds.ids == ["a", "sub/b"]
    image, boxes, labels, difficult = ds[0]
    assert image.shape == (20, 40, 3)
    # (0.25, 0.5, 0.3, 0.6) -> (0.25 - 0.15, 0.5 - 0.3, 0.25 + 0.15, 0.5 + 0.3)
    np.testing.assert_allclose(boxes, [[0.1, 0.2, 0.4, 0.8], [0.5, 0.0, 1.0, 0.5]], atol=1e-7)
    assert labels.tolist() == [2, 1] and difficult.tolist() == [False, False]
    assert ds[1][1].shape == (0, 4)  # no label file: a background image
    assert list_splits(f"yolo:{tmp_path}") == ["train"]
    assert len(open_dataset(f"yolo:{tmp_path}", "train")) == 2
    assert type(open_dataset(str(tmp_path), "train")).__name__ == "YoloDataset"  # guessed


def test_split_list_layout_and_obj_names(tmp_path):
    jpeg(tmp_path / "data" / "images" / "x.jpg")
    (tmp_path / "data" / "labels").mkdir(parents=True)
    (tmp_path / "data" / "labels" / "x.txt").write_text("0 0.5 0.5 1 1\n")
    jpeg(tmp_path / "flat" / "y.jpg")
    (tmp_path / "flat" / "y.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "val.txt").write_text("data/images/x.jpg\n\nflat/y.jpg\n")
    (tmp_path / "obj.names").write_text("ship\n")
    ds = YoloDataset(tmp_path, "val")
    assert ds.classes == ["ship"] and ds.ids == ["data/images/x", "flat/y"]
    np.testing.assert_allclose(ds[0][1], [[0, 0, 1, 1]])
    np.testing.assert_allclose(ds[1][1], [[0.25, 0.25, 0.75, 0.75]])
    assert list_splits(f"yolo:{tmp_path}") == ["val"]


@pytest.mark.parametrize("text, names", [
    ("path: x\nnames: [car, 'big truck']\n", ["car", "big truck"]),
    ("names:\n  0: car\n  1: truck\nnc: 2\n", ["car", "truck"]),
    ("names:\n- car\n- truck\n", ["car", "truck"]),
])
def test_data_yaml_names(tmp_path, text, names):
    (tmp_path / "data.yaml").write_text(text)
    assert _yaml_names(tmp_path / "data.yaml") == names


@pytest.mark.parametrize("line, message", [
    ("1 0.5 0.5 0.2", r"a.txt: line 1 has 4 fields, expected 5"),
    ("0 0.1 0.1 0.2 0.1 0.3 0.3 0.4", r"line 1 has 8 fields, .*polygons"),
    ("2 0.5 0.5 0.2 0.2", r"line 1: class is '2', expected an integer 0..1"),
    ("0.5 0.5 0.5 0.2 0.2", r"line 1: class is '0.5'"),
    ("0 0.5 abc 0.2 0.2", r"line 1: cy is 'abc', not a number"),
    ("0 0.5 0.5 nan 0.2", r"line 1: w is 'nan', not a finite number"),
    ("0 0.5 0.5 0 0.2", r"line 1: box .* empty"),
    ("0 0.9 0.5 0.4 0.2", r"line 1: box .* outside the image"),
    ("0 50 60 20 10", r"line 1: box .* fractions of the image"),
])
def test_bad_lines_name_the_file_and_line(tmp_path, line, message):
    with pytest.raises(DatasetError, match=message):
        YoloDataset(yolo_folder(tmp_path, line + "\n"), "train")


def test_bad_folders(tmp_path):
    with pytest.raises(DatasetError, match="YOLO folder is missing"):
        YoloDataset(tmp_path / "nope", "train")
    root = yolo_folder(tmp_path / "y")
    with pytest.raises(DatasetError, match="no split 'val'"):
        YoloDataset(root, "val")
    (root / "labels" / "train" / "a.txt").unlink()
    with pytest.raises(DatasetError, match="none of the 2 images has a label file"):
        YoloDataset(root, "train")
    (root / "classes.txt").write_text("a\na\n")
    with pytest.raises(DatasetError, match=r"classes.txt: class names repeat: \['a'\]"):
        YoloDataset(root, "train")
    (root / "classes.txt").unlink()
    with pytest.raises(DatasetError, match="no class names file"):
        YoloDataset(root, "train")
