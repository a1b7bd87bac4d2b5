"""tiny-voc: same bytes for a seed, reused when complete, rebuilt when half-written, honest content."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minissd.data import (TINY_VOC_CLASSES, DatasetError, TinyVOCConfig, VOCDataset, make_tiny_voc,
                          tiny_voc_path, verify_tiny_voc)
from minissd.data.tiny_voc import MARKER, default_data_dir, draw_image
from minissd.data.voc import CLASSES_FILE

SMALL = dict(n_train=10, n_val=4, workers=1)


def files(root):
    """{relative path: bytes} of every file under root."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return make_tiny_voc(tmp_path_factory.mktemp("a") / "tiny-voc", seed=3, **SMALL)


def test_layout_and_reader(built):
    got = files(built)
    assert len([k for k in got if k.startswith("Annotations/")]) == 14
    assert len([k for k in got if k.startswith("JPEGImages/")]) == 14
    for split in ("train", "val", "trainval"):
        assert f"ImageSets/Main/{split}.txt" in got
    train, val = VOCDataset(built, "train"), VOCDataset(built, "val")
    assert len(train) == 10 and len(val) == 4 and not set(train.ids) & set(val.ids)
    assert train.classes == list(TINY_VOC_CLASSES)  # from classes.txt
    for i in range(len(train)):
        image, boxes, labels, difficult = train[i]
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert 160 <= image.shape[0] <= 240 and 160 <= image.shape[1] <= 240
        assert ((boxes >= 0) & (boxes <= 1)).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        assert ((labels >= 1) & (labels <= len(TINY_VOC_CLASSES))).all()


def test_same_bytes_for_a_seed_with_worker_processes(built, tmp_path, monkeypatch):
    monkeypatch.setattr("minissd.data.tiny_voc.POOL_MIN_IMAGES", 0)  # use the pool even for 14
    again = make_tiny_voc(tmp_path / "b", seed=3, n_train=10, n_val=4, workers=2)
    assert files(again) == files(built)
    assert verify_tiny_voc(again)


def test_another_seed_differs(built, tmp_path):
    other = make_tiny_voc(tmp_path / "c", seed=4, **SMALL)
    a, b = files(built), files(other)
    assert a.keys() == b.keys()
    assert a["JPEGImages/000001.jpg"] != b["JPEGImages/000001.jpg"]


def test_image_i_does_not_depend_on_the_total(built, tmp_path):
    fewer = make_tiny_voc(tmp_path / "d", seed=3, n_train=5, n_val=0, workers=1)
    a, b = files(built), files(fewer)
    for i in range(1, 6):
        assert a[f"JPEGImages/{i:06d}.jpg"] == b[f"JPEGImages/{i:06d}.jpg"]


def test_complete_copy_is_reused(tmp_path):
    root = make_tiny_voc(tmp_path / "t", seed=0, **SMALL)
    jpg = root / "JPEGImages" / "000001.jpg"
    stamp = jpg.stat().st_mtime_ns
    os.utime(jpg, ns=(stamp - 10**9, stamp - 10**9))  # a rewrite would change this
    assert make_tiny_voc(root, seed=0, **SMALL) == root
    assert jpg.stat().st_mtime_ns == stamp - 10**9


@pytest.mark.parametrize("damage", ["missing images", "other config"])
def test_damaged_copy_is_rebuilt(tmp_path, damage):
    root = make_tiny_voc(tmp_path / "t", seed=0, **SMALL)
    before = files(root)
    kwargs = dict(SMALL)
    if damage == "missing images":
        for p in sorted((root / "JPEGImages").iterdir())[5:]:
            p.unlink()
    else:  # a copy of another size is not this dataset
        kwargs["n_val"] = 5
    make_tiny_voc(root, seed=0, **kwargs)
    after = files(root)
    marker = json.loads((root / MARKER).read_text())
    assert marker["images"] == 10 + kwargs["n_val"]
    if damage != "other config":
        assert after == before  # rebuilt to exactly the same bytes


def test_verify_notices_a_changed_file(tmp_path):
    root = make_tiny_voc(tmp_path / "t", seed=0, **SMALL)
    assert verify_tiny_voc(root)
    (root / "Annotations" / "000002.xml").write_text("<annotation/>")
    assert not verify_tiny_voc(root)


def test_refuses_to_delete_a_foreign_folder(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "thesis.tex").write_text("precious")
    with pytest.raises(DatasetError, match="refusing to delete or overwrite"):
        make_tiny_voc(root, **SMALL)
    assert (root / "thesis.tex").read_text() == "precious"


def test_a_users_voc_dataset_is_never_deleted(tmp_path):
    # A VOC folder holding only names that tiny-voc also writes (the reader's own fixture):
    # without minissd's marker it is the user's, and must survive a call that wants to rebuild.
    root = shutil.copytree(Path(__file__).parent / "fixtures" / "voc", tmp_path / "VOC2007")
    (root / CLASSES_FILE).write_text("person\n")
    before = files(root)
    with pytest.raises(DatasetError, match=f"{root}: has no tiny-voc.json marker"):
        make_tiny_voc(root, **SMALL)
    assert files(root) == before
    # the command line refuses in one line too (exit status 2), and leaves it as it was
    run = subprocess.run([sys.executable, "-m", "minissd.data", str(root)],
                         capture_output=True, text=True)
    assert files(root) == before
    assert run.returncode != 0 and "refusing to delete or overwrite" in run.stderr


def test_marker_alone_does_not_license_deleting_a_users_files(tmp_path):
    root = make_tiny_voc(tmp_path / "t", seed=0, **SMALL)
    (root / "Annotations" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="notes.txt: is not a file that tiny-voc writes"):
        make_tiny_voc(root, seed=1, **SMALL)
    assert (root / "Annotations" / "notes.txt").read_text() == "mine"
    (root / MARKER).write_text("[1, 2]")  # not minissd's marker: not ours any more
    (root / "Annotations" / "notes.txt").unlink()
    with pytest.raises(DatasetError, match="has no tiny-voc.json marker"):
        make_tiny_voc(root, seed=1, **SMALL)


def test_an_older_marker_is_still_recognised(tmp_path):
    # Copies written before 2026-12-02 have no "written_by" in the marker: reused when they
    # match, rebuilt (they are minissd's) when they do not.
    root = make_tiny_voc(tmp_path / "t", seed=0, **SMALL)
    marker = json.loads((root / MARKER).read_text())
    del marker["written_by"]
    (root / MARKER).write_text(json.dumps(marker))
    stamp = (root / MARKER).stat().st_mtime_ns
    assert make_tiny_voc(root, seed=0, **SMALL) == root and (root / MARKER).stat().st_mtime_ns == stamp
    make_tiny_voc(root, seed=1, **SMALL)
    assert json.loads((root / MARKER).read_text())["seed"] == 1


def test_an_empty_folder_is_filled_and_a_failed_build_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / "t").mkdir()
    assert (make_tiny_voc(tmp_path / "t", seed=0, **SMALL) / MARKER).exists()
    monkeypatch.setattr("minissd.data.tiny_voc.encode_jpeg", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        make_tiny_voc(tmp_path / "u", seed=0, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]  # no temporary folder left


def test_data_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MINISSD_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    assert tiny_voc_path() == tmp_path / "tiny-voc"
    assert tiny_voc_path(tmp_path / "x") == tmp_path / "x" / "tiny-voc"
    monkeypatch.delenv("MINISSD_DATA")
    assert default_data_dir() == Path.home() / ".cache" / "minissd"


def test_content_is_honest():
    """Over 150 default images (drawn, not written): every class, sizes from < 10% to > 40% of
    the image side, crowds, empty images, and the truncated/occluded/difficult flags all occur."""
    cfg = TinyVOCConfig()
    names, rel_sizes, counts, flags = [], [], [], {"truncated": 0, "occluded": 0, "difficult": 0}
    for i in range(150):
        image, objects = draw_image(cfg, 0, i)
        H, W = image.shape[:2]
        counts.append(len(objects))
        for o in objects:
            xmin, ymin, xmax, ymax = o["bbox"]
            assert 1 <= xmin < xmax <= W and 1 <= ymin < ymax <= H  # valid VOC pixels
            names.append(o["name"])
            rel_sizes.append(max(xmax - xmin + 1, ymax - ymin + 1) / min(W, H))
            for k in flags:
                flags[k] += o[k]
    assert set(names) == set(TINY_VOC_CLASSES)
    rel_sizes = np.array(rel_sizes)
    assert (rel_sizes < 0.10).mean() > 0.03 and (rel_sizes > 0.40).mean() > 0.10
    assert counts.count(0) >= 2 and max(counts) >= 4
    n = len(names)
    assert 0 < flags["difficult"] < 0.1 * n
    assert 0 < flags["truncated"] < 0.3 * n and 0 < flags["occluded"] < 0.4 * n


def test_colour_does_not_name_the_class():
    """Guessing the class from the mean colour in the box (nearest class centroid, fitted on the
    same data, so if anything optimistic) does little better than chance (1/6)."""
    cfg = TinyVOCConfig()
    colours, labels = [], []
    for i in range(80):
        image, objects = draw_image(cfg, 1, i)
        for o in objects:
            x0, y0, x1, y1 = o["bbox"]
            colours.append(image[y0 - 1:y1, x0 - 1:x1].reshape(-1, 3).mean(0))
            labels.append(TINY_VOC_CLASSES.index(o["name"]))
    colours, labels = np.array(colours), np.array(labels)  # (N, 3), (N,)
    centroids = np.stack([colours[labels == k].mean(0) for k in range(len(TINY_VOC_CLASSES))])
    guess = np.argmin(((colours[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert len(labels) > 150 and (guess == labels).mean() < 0.3


def test_describe_counts_agree_with_the_reader(built):
    from minissd.data.tiny_voc import describe

    stats = describe(built)
    ds = VOCDataset(built, "train")
    n_objects = sum(len(a.labels) for a in ds.annotations)
    train = stats["train"]
    assert train["images"] == 10 and train["objects"] == n_objects
    assert sum(train["per_class"].values()) == n_objects
    assert sum(train["relative_size_histogram"].values()) == n_objects
    assert sum(k * v for k, v in train["objects_per_image"].items()) == n_objects
    assert train["difficult"] == sum(int(a.difficult.sum()) for a in ds.annotations)


@pytest.mark.parametrize("bad", [dict(n_train=-1), dict(n_train=0, n_val=0), dict(min_side=300),
                                 dict(empty_fraction=1.5), dict(max_objects=0)])
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError, match="TinyVOCConfig"):
        TinyVOCConfig(**bad)


def test_a_build_killed_midway_is_cleaned_up_at_the_next_call(tmp_path):
    # What kill -9 leaves: the build folder with its marker naming a dead process.
    from minissd.data.tiny_voc import BUILD_MARKER, WRITTEN_BY, remove_stale_builds

    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    stale = tmp_path / ".t.tmp-abcd1234"
    (stale / "JPEGImages").mkdir(parents=True)
    (stale / "JPEGImages" / "000001.jpg").write_bytes(b"half")
    (stale / BUILD_MARKER).write_text(json.dumps({"written_by": WRITTEN_BY, "pid": dead}))
    live = tmp_path / ".t.tmp-live0000"  # a build still being written by a running process
    live.mkdir()
    (live / BUILD_MARKER).write_text(json.dumps({"written_by": WRITTEN_BY, "pid": os.getpid()}))
    foreign = tmp_path / ".t.tmp-mine0000"  # the right name, but no marker: not ours
    foreign.mkdir()
    (foreign / "000001.jpg").write_bytes(b"mine")
    odd = tmp_path / ".t.tmp-odd00000"  # a dead build holding a file tiny-voc never writes
    odd.mkdir()
    (odd / BUILD_MARKER).write_text(json.dumps({"written_by": WRITTEN_BY, "pid": dead}))
    (odd / "thesis.tex").write_text("mine")
    make_tiny_voc(tmp_path / "t", seed=0, **SMALL)
    assert not stale.exists() and live.exists() and foreign.exists() and odd.exists()
    assert not (tmp_path / "t" / BUILD_MARKER).exists()
    assert remove_stale_builds(tmp_path / "t") == []
