"""minissd.pretrained: the shipped tiny-voc detector loads, is small, records how it was made,
and reproduces its recorded val mAP on tiny-voc's 400 validation images."""

import json

import numpy as np
import pytest

from minissd import pretrained
from minissd.checkpoint import read_checkpoint
from minissd.errors import DatasetError


def test_info_records_how_it_was_made():
    info = json.loads(pretrained.INFO.read_text())
    assert info["command"] == "python -m minissd.train --tiny-voc --out /tmp/ckrun/run"
    assert info["seed"] == 0 and info["commit"] == "e4d21ef" and info["date"].startswith("2026-")
    assert info["iterations"] == 3600 and info["classes"] == list(pretrained.load()[1])
    assert 0.0 < info["val_mAP"] <= 1.0
    # float16 weights lose (almost) nothing against the float32 checkpoint
    assert abs(info["val_mAP"] - info["val_mAP_float32"]) < 0.005


def test_shipped_file_is_small_float16_with_float32_batchnorm_buffers():
    assert pretrained.WEIGHTS.stat().st_size < 4_000_000
    state, optim, meta = read_checkpoint(pretrained.WEIGHTS)
    assert optim == {} and meta["rng_state"] is None
    for name, value in state.items():
        want = np.float32 if "running_" in name else np.float16
        assert value.dtype == want, name
    model, classes, _ = pretrained.load()
    assert all(p.data.dtype == np.float32 for p in model.parameters())  # cast into the float32 network
    assert not model.training


def test_environment_variable_picks_another_checkpoint(tmp_path, monkeypatch):
    copy = tmp_path / "mine.npz"
    copy.write_bytes(pretrained.WEIGHTS.read_bytes())
    monkeypatch.setenv(pretrained.ENV_VAR, str(copy))
    _, _, info = pretrained.load()
    assert info["checkpoint"] == str(copy) and info["iteration"] == 3600
    monkeypatch.delenv(pretrained.ENV_VAR)
    assert "command" in pretrained.load()[2]


def test_val_folder_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("a user's file")
    with pytest.raises(DatasetError, match="refusing"):
        pretrained.tiny_voc_val(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "a user's file"


def test_the_no_zoom_detector_is_the_default_run_without_zoom_out():
    info = json.loads(pretrained.NO_ZOOM.with_suffix(".json").read_text())
    assert info["command"] == "python -m minissd.train --tiny-voc --max-expand 1.0 --out /tmp/nozoom/run"
    assert info["seed"] == 0 and info["iterations"] == 3600 and info["commit"] == "f367bec"
    _, _, meta = read_checkpoint(pretrained.NO_ZOOM)
    default = read_checkpoint(pretrained.WEIGHTS)[2]["config"]
    # where both configs have a field, they differ in these two only (the later run also has
    # the switches added since, at their defaults)
    changed = {k for k in default.keys() & meta["config"].keys() if meta["config"][k] != default[k]}
    assert changed == {"max_expand", "out"} and meta["config"]["max_expand"] == 1.0
    model, classes, loaded = pretrained.load(pretrained.NO_ZOOM)
    assert loaded == info and classes == info["classes"] and not model.training


@pytest.mark.slow
@pytest.mark.parametrize("weights", [pretrained.WEIGHTS, pretrained.NO_ZOOM], ids=["default", "no-zoom"])
def test_reproduces_its_recorded_val_map(weights):
    # 400 images through the tiny network (about 20 s on a 2-core machine)
    model, classes, info = pretrained.load(weights)
    assert pretrained.val_map(model, classes) == pytest.approx(info["val_mAP"], abs=1e-6)
