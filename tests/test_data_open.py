"""open_dataset and dataset_spec: every spec gives the one contract; the old flags keep working."""

import shutil
from pathlib import Path

import pytest

from minissd.data import VOCDataset, dataset_spec, list_splits, open_dataset
from minissd.data.open import parse_spec
from minissd.errors import ConfigError, DatasetError

FIXTURE = Path(__file__).parent / "fixtures" / "voc"


def test_old_flags_map_to_specs():
    assert dataset_spec() == "tiny-voc"
    assert dataset_spec(tiny_voc=True) == "tiny-voc"
    assert dataset_spec(voc_root="/d/VOC2007") == "voc:/d/VOC2007"
    assert dataset_spec(data="coco:a.json,img") == "coco:a.json,img"
    with pytest.raises(ConfigError, match="choose one of --data, --voc-root and --tiny-voc"):
        dataset_spec(data="yolo:x", voc_root="y")
    with pytest.raises(ConfigError, match="--data 'cocoa:x': unknown format 'cocoa'"):
        dataset_spec(data="cocoa:x")


def test_parse_spec():
    assert parse_spec("coco:a/{split}.json,img/{split}") == ("coco", "a/{split}.json", "img/{split}")
    assert parse_spec("coco:a.json") == ("coco", "a.json", None)
    assert parse_spec("voc:/x") == ("voc", "/x", None)
    assert parse_spec("tiny-voc") == ("tiny-voc", None, None)
    with pytest.raises(ConfigError, match="no path after yolo:"):
        parse_spec("yolo:")


def test_voc_spec_is_the_voc_reader(tmp_path):
    ds = open_dataset(f"voc:{FIXTURE}", "train")
    assert isinstance(ds, VOCDataset) and ds.ids == VOCDataset(FIXTURE, "train").ids
    assert open_dataset(str(FIXTURE), "val").ids == ["000003"]  # guessed from Annotations/
    assert list_splits(f"voc:{FIXTURE}") == ["train", "trainval", "val"]
    with pytest.raises(DatasetError, match="VOC folder is missing"):
        open_dataset(f"voc:{tmp_path}/nope", "train")
    with pytest.raises(DatasetError, match="no such file or folder"):
        open_dataset(f"{tmp_path}/nope", "train")


def test_voc_per_class_lists_are_not_splits(tmp_path):
    root = tmp_path / "VOC"
    shutil.copytree(FIXTURE, root)
    (root / "ImageSets" / "Main" / "dog_train.txt").write_text("000001  1\n")
    assert list_splits(f"voc:{root}") == ["train", "trainval", "val"]
