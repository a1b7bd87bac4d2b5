"""minissd's own assignments: the markers are sound, the reference grades at full marks, an
untouched student copy near zero, and each common mistake (tests/assignment_mistakes/) loses
points in its part.

The mistakes run the parts' graded tests on this repository in one subprocess, each with
the reference function swapped for the wrong one (assignment_mistakes/run.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from assignment_mistakes import MISTAKES
from minissd.assignments import grade, make_student_copy
from minissd.assignments.__main__ import _regions
from minissd.assignments.check import numba_trap_problems, parts_problems
from minissd.assignments.parts import CHAPTERS, PARTS

ROOT = Path(__file__).resolve().parent.parent


def test_markers_parts_and_numba_trap_are_clean():
    files, regions = _regions(ROOT)
    assert numba_trap_problems(ROOT, files, regions) == []
    assert parts_problems(ROOT, regions, PARTS) == []


def test_each_common_mistake_loses_points(tmp_path):
    out = tmp_path / "mistakes.json"
    # -x: each mistake's own part stops at its first failure (enough to show points lost);
    # --elsewhere: every other part its function reaches is graded in full with it swapped in
    run = subprocess.run([sys.executable, "-m", "assignment_mistakes.run", "-x", "--elsewhere", str(out)], cwd=ROOT,
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert [r["mistake"] for r in results] == [m[2] for m in MISTAKES]
    kept = [r for r in results if not r["score"] < r["max_score"]]
    assert not kept, "these wrong answers kept full marks:\n" + json.dumps(kept, indent=1)
    assert all(r["caught_by_an_assertion"] for r in results), json.dumps(results, indent=1)
    full = {part.name: part.points for part in PARTS}
    elsewhere = {r["mistake"]: {k: v for k, v in r["other_parts"].items() if v < full[k]} for r in results}
    assert not any(elsewhere.values()), f"charged in another part too: {elsewhere}"
    assert len(results) >= 40
    for r in results:
        print(f"{r['part']:22} {r['mistake']:42} {r['score']:5g} / {r['max_score']:g}  {r['lines'][0]}")


@pytest.mark.slow
def test_reference_full_marks_untouched_copy_near_zero(tmp_path):
    reference = grade(ROOT, PARTS, CHAPTERS)
    print("reference\n" + reference.table())
    assert [(s.part.name, s.score) for s in reference.scores] == [
        (s.part.name, s.max_score) for s in reference.scores], reference.gradescope()

    make_student_copy(ROOT, tmp_path / "student", PARTS, CHAPTERS)
    untouched = grade(tmp_path / "student", PARTS, CHAPTERS)
    print("untouched student copy\n" + untouched.table())
    assert untouched.total <= 0.05 * untouched.max_total
    results = untouched.gradescope()
    assert json.loads(json.dumps(results))["score"] == untouched.total
    outputs = "\n".join(t["output"] for t in results["tests"])
    assert "TypingError" not in outputs  # the Numba trap: a compiled caller of a blank function
    assert "NotImplementedError: [assignment" in outputs


def test_cli_writes_a_student_copy_whose_notebooks_and_package_load(tmp_path):
    out = tmp_path / "student"
    run = subprocess.run([sys.executable, "-m", "minissd.assignments", "student", str(out)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert not list(out.rglob("*.nbi")) and not list(out.rglob("__pycache__"))
    assert not (out / "tests/assignment_mistakes").exists()
    for notebook in out.glob("notebooks/*.ipynb"):
        json.loads(notebook.read_text())
    for part in PARTS:  # every graded test file is there, and the README lists every part
        assert f"`{part.name}`" in (out / "README.md").read_text()
    meta = json.loads((out / "assignment.json").read_text())
    assert {r["name"] for r in meta["regions"]} == {n for p in PARTS for n in p.regions}
    # chapter 4's network outputs were recorded in the reference for the blank copy to show
    assert sorted(p.name for p in (out / "notebooks/recorded").glob("*.npz")) == [
        "04_after_40_steps.npz", "04_untrained.npz"]
    check = subprocess.run([sys.executable, "-c", "from minissd.assignments import needs, written\n"
                            "print(written('iou'))\nneeds('iou')"], cwd=tmp_path, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(out)})
    assert check.stdout.strip() == "False" and "PartNotDone" in check.stderr and "minissd/boxes.py:" in check.stderr
