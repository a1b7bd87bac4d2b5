"""python -m minissd.data inspect: counts, histograms, pictures, and the share of objects that get a
positive default box, on a hand-built case whose IoUs are worked out by hand."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from minissd.data.inspect import inspect_dataset, main
from minissd.model import TINY_CONFIG
from minissd.priors import prior_coverage


@pytest.fixture
def hand_built(tmp_path):
    """One 128x128 image (tiny's input size, so pixels are the network's) with three objects:
    - exactly tiny's prior at row 2, column 2 of the 16x16 map: centre 2.5 * 8 = 20 px, side 12.8 px;
    - the whole image: best is the 1x1 map's extra square, side sqrt(0.8 * 1.0): IoU 0.8;
    - a 2x2 px object in the corner: inside the first prior (12.8 px square at 4 px, partly off
      the image): IoU 4 / 12.8^2 = 0.0244.
    And a second image without objects."""
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    Image.new("RGB", (128, 128), (90, 90, 90)).save(tmp_path / "images" / "train" / "a.jpg")
    Image.new("RGB", (64, 32), (0, 90, 90)).save(tmp_path / "images" / "train" / "b.jpg")
    (tmp_path / "classes.txt").write_text("dot\nblob\n")
    (tmp_path / "labels" / "train" / "a.txt").write_text(
        f"0 {20 / 128} {20 / 128} 0.1 0.1\n1 0.5 0.5 1 1\n0 {1 / 128} {1 / 128} {2 / 128} {2 / 128}\n")
    return tmp_path


def test_share_with_a_positive_hand_worked(hand_built):
    report, sets = inspect_dataset(f"yolo:{hand_built}", iou_threshold=0.4)
    st = report["splits"]["train"]
    assert st["images"] == 2 and st["empty_images"] == 1 and st["objects"] == 3
    assert st["per_class"] == {"dot": dict(objects=2, difficult=0, images=1),
                               "blob": dict(objects=1, difficult=0, images=1)}
    _, best = prior_coverage(sets["train"], TINY_CONFIG.priors)
    np.testing.assert_allclose(best, [1.0, 0.8, 4 / 12.8 ** 2], rtol=1e-4)
    assert st["with_positive"]["share"] == pytest.approx(2 / 3)
    # sides at the input: 12.8 px, 128 px, 2 px
    assert st["with_positive"]["by_side_px"] == {"<4": 0.0, "8-16": 1.0, "128-256": 1.0}
    assert st["box_side_px_at_input"]["<4"] == 1 and st["box_side_px_at_input"]["8-16"] == 1
    assert st["aspect_w_over_h"]["0.67-1.5"] == 3
    # at threshold 0.9 only the object placed exactly on a prior has a positive
    assert inspect_dataset(f"yolo:{hand_built}", iou_threshold=0.9)[0]["splits"]["train"]["with_positive"][
        "share"] == pytest.approx(1 / 3)


def test_a_larger_input_changes_the_pixel_sizes(hand_built):
    report, _ = inspect_dataset(f"yolo:{hand_built}", input_size=256, iou_threshold=0.4, fit_priors=True)
    st = report["splits"]["train"]
    assert report["input_size"] == 256 and st["box_side_px_at_input"]["<4"] == 0  # 2 px -> 4 px
    assert st["with_positive_fitted"]["share"] >= st["with_positive"]["share"]
    assert len(report["fitted_scales"]["pairs"]) == 6


def test_cli_writes_summary_and_pictures_and_keeps_foreign_folders(hand_built, tmp_path, capsys):
    out = tmp_path / "look"
    assert main([f"yolo:{hand_built}", "--out", str(out), "--iou-threshold", "0.4"]) == 0
    text = capsys.readouterr().out
    assert "objects with a positive (default boxes): 66.7%" in text
    assert json.loads((out / "summary.json").read_text())["written_by"] == "minissd inspect"
    for name in ("histograms.png", "samples.png"):
        assert Image.open(out / name).size[0] > 100
    assert main([f"yolo:{hand_built}", "--out", str(out)]) == 0  # its own folder: may write again
    (out / "notes.txt").write_text("mine")
    r = subprocess.run([sys.executable, "-m", "minissd.data", "inspect", f"yolo:{hand_built}", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--out" in r.stderr and "Traceback" not in r.stderr
    assert (out / "notes.txt").read_text() == "mine"
