"""The capstone (minissd.assignments.capstone): points worked by hand, a run of the reference
on a tiny budget scored by the grader's own evaluation, and a failing copy scored 0 with the
reason shown."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

import minissd
from minissd.assignments.__main__ import main
from minissd.assignments.capstone import CAPSTONE, CapstoneError, capstone_points, run_capstone

REFERENCE = Path(minissd.__file__).resolve().parent.parent
# 2 iterations on 16 + 4 images: the whole path in seconds (the score itself means nothing)
TINY = replace(CAPSTONE, iters=2, n_train=16, n_val=4)


def test_points_worked_by_hand():
    rules = replace(CAPSTONE, points=20, target=0.30, floor=0.05)
    assert capstone_points(0.30, rules) == 20 and capstone_points(0.9, rules) == 20
    assert capstone_points(0.05, rules) == 0 and capstone_points(0.0, rules) == 0
    assert capstone_points(0.175, rules) == 10  # half way
    assert capstone_points(0.10, rules) == 4    # (0.10 - 0.05) / 0.25 = 0.2 of 20
    with pytest.raises(CapstoneError, match="target"):
        capstone_points(0.2, replace(rules, target=0.05))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The reference trained by the capstone on the TINY budget: (result, data dir, run folder)."""
    tmp = tmp_path_factory.mktemp("capstone")
    return run_capstone(REFERENCE, tmp / "run", tmp / "data", TINY), tmp / "data", tmp / "run"


def fake_copy(path, train_py):
    """A copy whose minissd/train.py is ``train_py``: what ``python -m minissd.train`` runs there."""
    (path / "minissd").mkdir(parents=True)
    (path / "minissd" / "__init__.py").write_text("")
    (path / "minissd" / "train.py").write_text(train_py)
    return path


def test_the_reference_trains_and_the_grader_evaluates_it(reference_run):
    result, _, run = reference_run
    assert result["mAP"] is not None and 0 <= result["mAP"] <= 1
    assert result["score"] == capstone_points(result["mAP"], TINY)
    # the grader's evaluation is the one the training run printed, for the reference's code
    with open(run / "metrics.json") as f:
        assert json.load(f)["mAP"] == pytest.approx(result["mAP"], abs=1e-12)
    assert result["rules"]["iters"] == 2 and "val mAP" in result["output"]


def test_a_copy_whose_training_fails_scores_0_and_shows_why(tmp_path):
    copy = fake_copy(tmp_path / "copy", 'raise NotImplementedError("[assignment match] Each ground truth '
                                        'claims its best prior")\n')
    result = run_capstone(copy, tmp_path / "run", tmp_path / "data", TINY)
    assert result["score"] == 0 and result["mAP"] is None
    assert "exited with status 1" in result["output"] and "[assignment match]" in result["output"]


def test_a_training_that_hangs_is_stopped_by_the_timeout(tmp_path):
    copy = fake_copy(tmp_path / "copy", "import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    result = run_capstone(copy, tmp_path / "run", tmp_path / "data", TINY, timeout=2)
    assert result["score"] == 0 and "did not finish in 2 s" in result["output"] and "started" in result["output"]
    assert result["seconds"] < 30


def test_a_checkpoint_of_another_budget_is_refused(reference_run, tmp_path):
    # a copy whose training "finishes" without training: the reference's 2-iteration
    # checkpoint stays in the folder, and the rules say 3
    _, data, run = reference_run
    copy = fake_copy(tmp_path / "copy", "")
    result = run_capstone(copy, run, data, replace(TINY, iters=3))
    assert result["score"] == 0 and "trained 2 iterations, the capstone trains 3" in result["output"]


def test_cli_prints_the_score_and_writes_the_json(reference_run, tmp_path, capsys, monkeypatch):
    from minissd.assignments import capstone
    _, data, _ = reference_run
    monkeypatch.setattr(capstone, "CAPSTONE", TINY)  # the subset of the fixture; --iters overrides
    copy = fake_copy(tmp_path / "copy", "import sys\nsys.exit(3)\n")
    assert main(["capstone", str(copy), "--iters", "7", "--target", "0.5", "--data-dir", str(data),
                 "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["rules"]["iters"] == 7 and result["rules"]["target"] == 0.5 and result["max_score"] == 20
    assert result["score"] == 0 and "status 3" in result["output"]
    assert result["output"] in capsys.readouterr().out
