"""python -m minissd.evaluate: the per-class table (11-point and area AP) and the detections JSON.

A detector that returns exactly the ground truth must score AP 1 on every class present;
one that returns nothing must score 0; the JSON holds one record per detection with the
class name and a normalised corner box."""

import json
import subprocess
import sys

import numpy as np
import pytest

import minissd.detect
from minissd import cli, evaluate
from minissd.checkpoint import CheckpointError, save_checkpoint
from minissd.data import make_tiny_voc
from minissd.model import SSD, SSDConfig
from minissd.priors import PriorConfig

MINI = SSDConfig(name="mini", tables=((("conv", 4, 3, 2, 1, 1), "M"), ("M",)),  # 16 -> 4 -> 2
                 priors=PriorConfig.from_scales(16, (4, 2), s_min=0.3, s_max=0.8), batch_norm=True)
CLASSES = ["circle", "square", "triangle", "star", "cross", "ring"]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return str(make_tiny_voc(tmp_path_factory.mktemp("data") / "tiny-voc", n_train=2, n_val=6, workers=1))


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, SSD(MINI, len(CLASSES)), extra={"classes": CLASSES, "model_config": MINI.to_dict()})
    return str(path)


def oracle(model, dataset, max_images=None, batch_size=32):
    """A perfect detector: every ground-truth object, score 1 (difficult ones too)."""
    truths = [dataset[i][1:] for i in range(len(dataset))]
    return [(b, l, np.ones(len(l), np.float32)) for b, l, _ in truths], truths


def blind(model, dataset, max_images=None, batch_size=32):
    truths = [dataset[i][1:] for i in range(len(dataset))]
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32))
    return [empty] * len(truths), truths


def table_rows(out):
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] in CLASSES + ["mAP"]:
            rows[parts[0]] = (int(parts[1]), float(parts[2]), float(parts[3]))
    return rows


def test_perfect_detections_score_one_and_are_saved(voc, checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(minissd.detect, "predict_dataset", oracle)
    saved = tmp_path / "dets.json"
    assert evaluate.main(["--checkpoint", checkpoint, "--voc-root", voc, "--split", "val",
                          "--save-detections", str(saved)]) == 0
    rows = table_rows(capsys.readouterr().out)
    present = [c for c in CLASSES if rows[c][0] > 0]
    assert present and rows["mAP"][1:] == (1.0, 1.0)
    for c in present:
        assert rows[c][1:] == (1.0, 1.0)  # both the 11-point and the area AP
    records = json.loads(saved.read_text())
    assert records and set(records[0]) == {"image_id", "label", "score", "box"}
    assert {r["label"] for r in records} <= set(CLASSES)
    assert all(0 <= v <= 1 for r in records for v in r["box"]) and all(r["score"] == 1.0 for r in records)
    assert all(isinstance(r["image_id"], str) for r in records)  # VOC ids from the split file


def test_no_detections_score_zero(voc, checkpoint, monkeypatch, capsys):
    monkeypatch.setattr(minissd.detect, "predict_dataset", blind)
    assert evaluate.main(["--checkpoint", checkpoint, "--voc-root", voc]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows["mAP"][1:] == (0.0, 0.0)


def test_real_model_runs_end_to_end(voc, checkpoint, capsys):
    # an untrained network: the numbers are near 0, but every stage runs for real
    assert evaluate.main(["--checkpoint", checkpoint, "--voc-root", voc, "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "AP (07, 11-pt)" in out and "recall by object size" in out


def test_source_is_required(checkpoint):
    with pytest.raises(SystemExit):
        evaluate.main(["--checkpoint", checkpoint])


def test_data_spec_is_the_same_as_the_old_flags(voc, checkpoint, capsys):
    assert evaluate.main(["--checkpoint", checkpoint, "--voc-root", voc]) == 0
    old = table_rows(capsys.readouterr().out)
    assert evaluate.main(["--checkpoint", checkpoint, "--data", f"voc:{voc}"]) == 0
    assert table_rows(capsys.readouterr().out) == old and old


def test_bad_input_is_one_line_and_status_2(voc, tmp_path):
    # the project's own errors print their message alone (minissd.cli.run), no traceback
    (tmp_path / "meta.npz").write_bytes(b"")
    np.savez(tmp_path / "list.npz", meta=np.array("[1, 2]"))
    cases = [
        (["--checkpoint", str(tmp_path / "nope.npz"), "--voc-root", voc], "nope.npz: checkpoint file not found"),
        (["--checkpoint", str(tmp_path / "list.npz"), "--voc-root", voc],
         "list.npz: its 'meta' entry is JSON list, expected an object"),
        (["--checkpoint", str(tmp_path / "list.npz"), "--data", "nonsense:x"], "--data"),
    ]
    for argv, message in cases:
        run = subprocess.run([sys.executable, "-m", "minissd.evaluate", *argv], capture_output=True, text=True)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), run.stderr
        assert message in lines[0]


def test_a_bad_model_config_in_a_checkpoint_is_named(voc, tmp_path):
    config = MINI.to_dict()
    del config["priors"]  # KeyError 'priors' before
    path = tmp_path / "c.npz"
    save_checkpoint(path, SSD(MINI, len(CLASSES)), extra={"classes": CLASSES, "model_config": config})
    with pytest.raises(CheckpointError, match="c.npz: its model config is not usable"):
        minissd.detect.load_model(path)
    assert cli.run(evaluate.main, ["--checkpoint", str(path), "--voc-root", voc]) == 2
