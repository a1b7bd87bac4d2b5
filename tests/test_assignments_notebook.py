"""minissd.assignments.notebook: what a chapter notebook calls in a student copy.

A fake copy (a folder holding minissd/boxes.py with the ``iou`` region blanked, as the
student command blanks it) stands in for a student's checkout; notebook.root is pointed at it.
"""

from pathlib import Path

import numpy as np
import pytest

import minissd
from minissd.assignments import PartNotDone, notebook, oracles, strip_regions
from minissd.assignments.scoring import EXAMPLE_BEGIN, EXAMPLE_END

REFERENCE = Path(minissd.__file__).resolve().parent.parent
BOXES = "minissd/boxes.py"


@pytest.fixture
def copy(tmp_path, monkeypatch):
    """A fake student copy whose ``iou`` is blank and whose ``encode``/``decode`` are written."""
    text = (REFERENCE / BOXES).read_text(encoding="utf-8")
    blanked, regions = strip_regions(text, BOXES, only={"iou"})
    assert [r.name for r in regions] == ["iou"]
    (tmp_path / "minissd").mkdir()
    (tmp_path / BOXES).write_text(blanked, encoding="utf-8")
    monkeypatch.setattr(notebook, "root", lambda: tmp_path)
    return tmp_path


def test_the_reference_has_every_part_written():
    assert notebook.written("iou", "encode_decode", "match")
    notebook.needs("iou", "match")  # no raise


def test_a_blank_part_is_seen_and_named_with_its_place(copy):
    assert not notebook.written("iou") and notebook.written("encode_decode")
    assert not notebook.written("encode_decode", "iou")
    with pytest.raises(PartNotDone) as err:
        notebook.needs("encode_decode", "iou")
    message = str(err.value)
    assert "`iou`" in message and "chapter 1" in message and f"{BOXES}:" in message
    assert "encode_decode" not in message  # a written part is not listed
    with pytest.raises(PartNotDone, match="Not written yet: `iou`"):
        notebook.check_part("iou")  # no test run for a blank part


def test_writing_the_part_is_seen_at_once(copy):
    assert not notebook.written("iou")
    (copy / BOXES).write_text((REFERENCE / BOXES).read_text(encoding="utf-8"), encoding="utf-8")
    assert notebook.written("iou")  # re-read although the file was read a moment ago


def test_jupyter_shows_the_message_not_a_traceback():
    lines = PartNotDone("first\nsecond")._render_traceback_()
    assert len(lines) == 2 and "first" in lines[0] and "second" in lines[1]


def test_or_recorded_computes_when_written_and_replays_the_recording_before(copy, tmp_path, monkeypatch):
    value = (np.arange(6.0).reshape(2, 3), {"n": 3, "names": ["a", "b"]}, np.float32(0.5))
    calls = []

    def compute():
        calls.append(1)
        return value

    # written parts: compute() runs, and with the student command's variable set it is saved
    record = tmp_path / "recordings"
    monkeypatch.setenv(notebook.RECORD_VARIABLE, str(record))
    assert notebook.or_recorded("net", compute, ["encode_decode"]) is value and calls == [1]
    assert (record / "net.npz").is_file()
    monkeypatch.delenv(notebook.RECORD_VARIABLE)
    # a blank part and no recording: stop naming the part
    with pytest.raises(PartNotDone, match="`iou`"):
        notebook.or_recorded("net", compute, ["iou"])
    # a blank part and the recording in the copy: the reference's value, compute() not called
    (copy / notebook.RECORDINGS).mkdir(parents=True)
    (record / "net.npz").rename(copy / notebook.RECORDINGS / "net.npz")
    got = notebook.or_recorded("net", compute, ["iou"])
    assert calls == [1]
    np.testing.assert_array_equal(got[0], value[0])
    assert got[1] == value[1] and got[2] == value[2] and got[2].dtype == np.float32


def test_encode_refuses_what_it_cannot_record():
    with pytest.raises(TypeError, match="set cannot be recorded"):
        oracles.encode({1, 2}, {})


def test_the_students_guide_points_example_is_kept_in_step_with_the_parts(tmp_path):
    import subprocess
    import sys

    def docs(*args):
        return subprocess.run([sys.executable, "-m", "minissd.assignments", "docs", *args],
                              capture_output=True, text=True, cwd=REFERENCE)

    assert docs("--check").returncode == 0  # the committed guide matches the parts table
    guide = tmp_path / "docs" / "students.md"
    guide.parent.mkdir()
    real = (REFERENCE / "docs/students.md").read_text(encoding="utf-8")
    begin = real.index(EXAMPLE_BEGIN)  # the generated block is marked (else nothing is checked)
    end = real.index(EXAMPLE_END, begin)
    stale_text = real[:begin] + real[begin:end].replace(" / ", " of ") + real[end:]  # an old table
    assert stale_text != real
    guide.write_text(stale_text, encoding="utf-8")
    stale = docs("--check", "--source", str(tmp_path))
    assert stale.returncode == 1 and "stale" in stale.stdout
    assert guide.read_text(encoding="utf-8") != real  # --check writes nothing
    assert docs("--source", str(tmp_path)).returncode == 0
    assert guide.read_text(encoding="utf-8") == real
