"""The COCO JSON reader: pixel [x, y, w, h] -> normalised corners, categories in id order,
iscrowd as difficult, and a named error for every bad field. Files are written in tmp_path
(real JPEGs through Pillow)."""

import json

import numpy as np
import pytest
from PIL import Image

from minissd.data import CocoDataset, DatasetError, open_dataset


def jpeg(path, w, h, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), colour).save(path, quality=95)


def coco_files(tmp_path, **change):
    """ann.json + two JPEGs: a.jpg 40x20 with a car and a crowd of people, b.jpg 10x10 empty.
    Category ids 7 (person) and 3 (car): id order makes car label 1, person label 2."""
    jpeg(tmp_path / "a.jpg", 40, 20)
    jpeg(tmp_path / "b.jpg", 10, 10, (0, 0, 255))
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 20},
                   {"id": 2, "file_name": "b.jpg", "width": 10, "height": 10}],
        "categories": [{"id": 7, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [4, 2, 10, 8], "iscrowd": 0},
                        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [20, 0, 20, 20], "iscrowd": 1}],
    }
    data.update(change)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_boxes_labels_crowd_and_empty_image(tmp_path):
    ds = CocoDataset(coco_files(tmp_path))
    assert ds.classes == ["car", "person"] and ds.ids == ["a", "b"] and len(ds) == 2
    image, boxes, labels, difficult = ds[0]
    assert image.shape == (20, 40, 3) and image.dtype == np.uint8
    # car [4, 2, 10, 8] on 40x20: (4/40, 2/20, 14/40, 10/20); person covers the right half
    np.testing.assert_allclose(boxes, [[0.1, 0.1, 0.35, 0.5], [0.5, 0.0, 1.0, 1.0]], atol=1e-7)
    assert boxes.dtype == np.float32
    assert labels.tolist() == [1, 2] and difficult.tolist() == [False, True]
    _, boxes, labels, difficult = ds[1]
    assert boxes.shape == (0, 4) and labels.shape == (0,) and difficult.shape == (0,)
    assert CocoDataset(coco_files(tmp_path), keep_difficult=False)[0][2].tolist() == [1]


def test_images_folder_and_split_placeholder(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "ann").mkdir(exist_ok=True)
        coco_files(tmp_path / split)  # images in train/, val/
        (tmp_path / split / "ann.json").rename(tmp_path / "ann" / f"{split}.json")
    ds = open_dataset(f"coco:{tmp_path}/ann/{{split}}.json,{tmp_path}/{{split}}", "val")
    assert ds.images_dir == tmp_path / "val" and len(ds) == 2 and ds.split == "val"
    # one file without {split} cannot be both train and val
    with pytest.raises(DatasetError, match=r"\{split\}"):
        open_dataset(f"coco:{tmp_path}/ann/train.json,{tmp_path}/train", "train")
    assert len(open_dataset(f"coco:{tmp_path}/ann/train.json,{tmp_path}/train", None)) == 2


def test_a_one_pixel_overshoot_is_clipped(tmp_path):
    ann = [{"image_id": 1, "category_id": 3, "bbox": [-0.5, 0, 40.9, 20.5]}]
    _, boxes, _, _ = CocoDataset(coco_files(tmp_path, annotations=ann))[0]
    np.testing.assert_array_equal(boxes, [[0, 0, 1, 1]])


def bad_annotation(**fields):
    a = {"image_id": 1, "category_id": 3, "bbox": [4, 2, 10, 8], "iscrowd": 0}
    a.update(fields)
    return {"annotations": [a]}


@pytest.mark.parametrize("change, message", [
    (bad_annotation(bbox=[4, 2, 0, 8]), r"annotations\[0\]\.bbox .* empty"),
    (bad_annotation(bbox=[4, 2, -3, 8]), r"annotations\[0\]\.bbox .* empty"),
    (bad_annotation(bbox=[30, 2, 20, 8]), r"annotations\[0\]\.bbox .* outside the 40x20 image a.jpg"),
    (bad_annotation(bbox=[4, 2, 10]), r"annotations\[0\]\.bbox has 3 numbers"),
    (bad_annotation(bbox=[4, "x", 10, 8]), r"annotations\[0\]\.bbox\[1\] is 'x', not a number"),
    (bad_annotation(bbox=[4, 2, float("inf"), 8]), r"annotations\[0\]\.bbox\[2\] .* not a finite"),
    (bad_annotation(category_id=5), r"annotations\[0\]\.category_id 5 is not among the categories"),
    (bad_annotation(image_id=9), r"annotations\[0\]\.image_id 9 is not among the images"),
    (bad_annotation(iscrowd=2), r"annotations\[0\]\.iscrowd is 2"),
    ({"annotations": [{"image_id": 1, "category_id": 3}]}, r"annotations\[0\] has no 'bbox'"),
    ({"categories": [{"id": 3, "name": "car"}, {"id": 3, "name": "bus"}]}, r"categories\[1\]\.id 3 repeats"),
    ({"categories": [{"id": "3", "name": "car"}]}, r"categories\[0\]\.id is '3', expected int"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "width": 41, "height": 20}]}, r"a.jpg: image is 40x20 but .* says 41x20"),
    ({"images": [{"id": 1, "file_name": "gone.jpg"}], "annotations": []}, r"gone.jpg: image file is missing"),
    ({"images": [{"id": 1, "width": 40, "height": 20}]}, r"images\[0\] has no 'file_name'"),
    ({"images": {"id": 1}}, r"'images' is not a list"),
])
def test_bad_input_names_the_file_and_field(tmp_path, change, message):
    with pytest.raises(DatasetError, match=message) as e:
        CocoDataset(coco_files(tmp_path, **change))
    assert "ann.json" in str(e.value) or "jpg" in str(e.value)


def test_broken_json_and_missing_file(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text('{"images": [')
    with pytest.raises(DatasetError, match="ann.json: not valid JSON"):
        CocoDataset(path)
    path.write_text("[]")
    with pytest.raises(DatasetError, match="expected a JSON object"):
        CocoDataset(path)
    with pytest.raises(DatasetError, match="missing"):
        CocoDataset(tmp_path / "nope.json")


def test_skip_bad_leaves_the_bad_image_out(tmp_path):
    (tmp_path / "b.jpg").parent.mkdir(exist_ok=True)
    path = coco_files(tmp_path)
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="b.jpg: not a readable image"):
        CocoDataset(path)
    with pytest.warns(UserWarning, match="b.jpg"):
        ds = CocoDataset(path, skip_bad=True)
    assert ds.ids == ["a"] and ds.skipped[0][0] == "b"


def test_checkpoint_classes_map_by_name(tmp_path):
    ds = CocoDataset(coco_files(tmp_path), classes=["bus", "person", "car"])
    assert ds[0][2].tolist() == [3, 2]
    with pytest.raises(DatasetError, match=r"categories \['car'\] are not among"):
        CocoDataset(coco_files(tmp_path), classes=["person"])
