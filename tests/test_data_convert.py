"""python -m minissd.data convert: VOC -> COCO -> YOLO -> VOC gives back the same boxes and labels,
each format holds what it can, and nothing of the user's is written over."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minissd.data import open_dataset
from minissd.data.__main__ import main
from minissd.data.convert import convert, voc_pixels, yolo_line

FIXTURE = Path(__file__).parent / "fixtures" / "voc"


def random_voc(root, n=6, seed=0):
    """A VOC folder of n real JPEGs of odd sizes, 0-4 boxes each with whole-pixel corners."""
    rng = np.random.default_rng(seed)
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    (root / "classes.txt").write_text("cat\nboat\nkite\n")
    ids = []
    for i in range(n):
        W, H = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"im{i}.jpg")
        objs = []
        for _ in range(int(rng.integers(0, 5))):
            x0, x1 = sorted(rng.choice(np.arange(1, W + 1), 2, replace=False))
            y0, y1 = sorted(rng.choice(np.arange(1, H + 1), 2, replace=False))
            objs.append(f"<object><name>{rng.choice(['cat', 'boat', 'kite'])}</name><difficult>{int(rng.random() < .2)}"
                        f"</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax>"
                        "</bndbox></object>")
        (root / "Annotations" / f"im{i}.xml").write_text(
            f"<annotation><size><width>{W}</width><height>{H}</height></size>{''.join(objs)}</annotation>")
        ids.append(f"im{i}")
    (root / "ImageSets/Main/train.txt").write_text("\n".join(ids[:4]) + "\n")
    (root / "ImageSets/Main/val.txt").write_text("\n".join(ids[4:]) + "\n")
    return root


def same(a, b, atol, difficult=True):
    assert a.classes == b.classes and a.ids == b.ids
    for ra, rb in zip(a.annotations, b.annotations):
        np.testing.assert_allclose(ra.boxes, rb.boxes, atol=atol)
        assert ra.labels.tolist() == rb.labels.tolist()
        if difficult:
            assert ra.difficult.tolist() == rb.difficult.tolist()
        assert (ra.width, ra.height) == (rb.width, rb.height)


@pytest.mark.parametrize("source", ["fixture", "random"])
def test_voc_coco_yolo_voc_round_trip(tmp_path, source):
    voc = FIXTURE if source == "fixture" else random_voc(tmp_path / "src")
    splits = ["train", "val"]
    coco = convert(f"voc:{voc}", "coco", tmp_path / "coco", splits=splits, log=lambda *a: None)
    yolo = convert(coco, "yolo", tmp_path / "yolo", log=lambda *a: None)
    back = convert(yolo, "voc", tmp_path / "back", log=lambda *a: None)
    for split in splits:
        orig = open_dataset(f"voc:{voc}", split)
        same(orig, open_dataset(coco, split), atol=1e-6)                   # COCO keeps iscrowd = difficult
        same(orig, open_dataset(yolo, split), atol=1e-6, difficult=False)  # 6 decimals; no difficult
        again = open_dataset(back, split)
        same(orig, again, atol=0, difficult=False)  # whole pixels again: exactly the same boxes
        for ra, rb in zip(orig.annotations, again.annotations):
            np.testing.assert_array_equal(ra.boxes_px, rb.boxes_px)
            assert Image.open(rb.image_path).size == (ra.width, ra.height)


def test_one_coco_file_split_in_two(tmp_path, capsys):
    coco = convert(f"voc:{FIXTURE}", "coco", tmp_path / "c", splits=["trainval"], log=lambda *a: None)
    single = coco.replace("{split}", "trainval")
    assert main(["convert", single, "--to", "yolo", str(tmp_path / "y"), "--val-share", "0.34"]) == 0
    tr, va = open_dataset(f"yolo:{tmp_path}/y", "train"), open_dataset(f"yolo:{tmp_path}/y", "val")
    assert len(tr) == 2 and len(va) == 1 and not set(tr.ids) & set(va.ids)
    assert "difficult objects are ordinary objects" in capsys.readouterr().out


def test_out_must_be_new_or_empty_and_outside_the_source(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep me")
    r = subprocess.run([sys.executable, "-m", "minissd.data", "convert", f"voc:{FIXTURE}", "--to", "coco",
                        str(tmp_path / "full")], capture_output=True, text=True)
    assert r.returncode == 2 and "not an empty folder" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    convert(f"voc:{FIXTURE}", "voc", tmp_path / "empty", log=lambda *a: None)  # an empty folder is fine
    assert (tmp_path / "empty" / "Annotations" / "000001.xml").is_file()
    with pytest.raises(Exception, match="inside the source"):
        convert(f"voc:{tmp_path}/empty", "coco", tmp_path / "empty" / "JPEGImages" / "x", log=lambda *a: None)
    assert not list(tmp_path.glob(".*minissd-partial*"))


def test_a_bad_source_leaves_nothing_behind(tmp_path):
    src = random_voc(tmp_path / "src", n=3)
    (src / "Annotations" / "im1.xml").write_text("<annotation>")
    with pytest.raises(Exception, match="im1.xml"):
        convert(f"voc:{src}", "coco", tmp_path / "out", log=lambda *a: None)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".*minissd-partial*"))


def test_format_rounding():
    assert voc_pixels((0, 0, 1, 1), 16, 12) == (1, 1, 16, 12)
    assert voc_pixels((0.5, 0.5, 0.5, 0.5), 10, 10) == (6, 6, 7, 7)  # an empty box keeps one pixel
    assert voc_pixels((0.99, 0.0, 1.0, 0.01), 10, 10) == (9, 1, 10, 2)
    assert yolo_line((0.1, 0.2, 0.4, 0.8), 2) == "1 0.250000 0.500000 0.300000 0.600000"


def test_the_old_tiny_voc_command_is_unchanged(tmp_path, monkeypatch):
    import minissd.data.__main__ as m

    calls = []
    monkeypatch.setattr(m, "make_tiny_voc", lambda root, seed: calls.append((root, seed)) or tmp_path)
    monkeypatch.setattr(m, "describe", lambda path: {"images": 0})
    assert main([str(tmp_path / "t"), "--seed", "3"]) == 0
    assert calls == [(str(tmp_path / "t"), 3)]


def test_the_data_command_names_its_other_commands(capsys):
    from minissd.data.__main__ import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "minissd.data convert --help" in out and "minissd.data inspect --help" in out
