"""The assignment tool itself: markers, the student copy, grading and the points plugin.

Most cases run on a tiny synthetic repository (``toy``) with one plain-Python region and one
region inside a Numba function, so the tool is tested apart from minissd's own code; the
minissd parts are graded in test_assignments_parts.py.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from minissd.assignments import MarkerError, find_regions, grade, make_student_copy, strip_regions
from minissd.assignments.check import numba_trap_problems
from minissd.assignments.parts import Part
from minissd.assignments.scoring import score_parts

ROOT = Path(__file__).resolve().parent.parent
# The toy's pytest runs load this checkout's minissd (its plugin), whatever minissd is installed.
THIS_CHECKOUT = {"PYTHONPATH": str(ROOT)}

# ---- markers -----------------------------------------------------------------------------------

AREA = '''\
def area(box):
    """Area of a box; the syntax is '# [assignment NAME] hint' (a docstring: ignored)."""
    w = box[2] - box[0]
    # [assignment area] Width times height, each "clamped" at 0.
    w = max(w, 0.0)
    h = max(box[3] - box[1], 0.0)
    return w * h
    # [/assignment]
'''


def test_find_regions_reads_name_hint_lines_and_function():
    (r,) = find_regions(AREA, "toy.py")
    assert (r.name, r.start, r.end, r.indent, r.function) == ("area", 4, 8, "    ", "area")
    assert r.hint == 'Width times height, each "clamped" at 0.'


def test_strip_keeps_markers_and_raises_the_hint():
    stripped, regions = strip_regions(AREA, "toy.py")
    assert len(regions) == 1
    assert stripped.splitlines()[3:] == [
        '    # [assignment area] Width times height, each "clamped" at 0.',
        '    raise NotImplementedError("[assignment area] Width times height, each \\"clamped\\" at 0.")',
        "    # [/assignment]",
    ]
    namespace = {}
    exec(stripped, namespace)
    with pytest.raises(NotImplementedError, match=r'\[assignment area\] Width times height, each "clamped"'):
        namespace["area"]((0, 0, 1, 1))
    # Stripping a student copy again changes nothing, and only= leaves other regions alone.
    assert strip_regions(stripped, "toy.py")[0] == stripped
    assert strip_regions(AREA, "toy.py", only={"other"}) == (AREA, [])


def test_region_opened_before_the_first_statement_of_a_nested_function():
    source = textwrap.dedent('''\
        def outer():
            def inner(x):
                # [assignment twice] Return 2x.
                return 2 * x
                # [/assignment]
            return inner
        ''')
    (r,) = find_regions(source)
    assert (r.function, r.indent) == ("inner", " " * 8)


@pytest.mark.parametrize("source, message", [
    ("def f():\n    # [assignment a] h\n    x = 1\n    # [assignment b] h\n    y = 2\n"
     "    # [/assignment]\n    # [/assignment]\n", r"t.py:4: region 'b' opens inside region 'a' opened at line 2"),
    ("def f():\n    # [assignment a] h\n    return 1\n", r"t.py:2: region 'a' is never closed"),
    ("def f():\n    return 1\n    # [/assignment]\n", r"t.py:3: .* without an opening marker"),
    ("def f():\n    #[assignment a] h\n    return 1\n", r"t.py:2: malformed assignment marker"),
    ("def f():\n    # [assignment 2a] h\n    return 1\n", r"t.py:2: malformed"),
    ("def f():\n    # [assignment a]\n    return 1\n    # [/assignment]\n", r"t.py:2: region 'a' has no hint"),
    ("def f():\n    # [assignment a] h\n    # only a comment\n    # [/assignment]\n    pass\n", r"t.py:4: region 'a' .* holds no code"),
    ("def f(x):\n    if x:\n        # [assignment a] h\n        return 1\n    # [/assignment]\n",
     r"t.py:5: .* indented 4 columns but region 'a' opened at line 3 with 8"),
    ("# [assignment a] h\nX = 1\n# [/assignment]\n", r"t.py:1: region 'a' is not inside a function"),
    ("def f(x):\n    if x:\n        pass\n        # [assignment a] h\n        return 1\n"
     "        # [/assignment]\n    else:\n        return 2\n", None),
])
def test_bad_markers_name_file_and_line(source, message):
    if message is None:  # the control: a region inside a branch is fine
        assert len(find_regions(source, "t.py")) == 1
        return
    with pytest.raises(MarkerError, match=message):
        strip_regions(source, "t.py")


def test_a_stub_that_leaves_invalid_python_is_reported():
    # The region swallows the only statement of a block whose header sits inside it.
    source = "def f(x):\n    # [assignment a] h\n    for i in x:\n        pass\n    # [/assignment]\n"
    assert strip_regions(source, "t.py")[0].count("raise") == 1  # valid: the loop is gone
    source = ("def f(x):\n    try:\n        # [assignment a] h\n        return 1\n"
              "        # [/assignment]\n    finally:\n        pass\n")
    assert "raise NotImplementedError" in strip_regions(source, "t.py")[0]


# ---- the Numba trap ----------------------------------------------------------------------------

TRAPS = {
    "decorated": '''\
from numba import njit

@njit(cache=True)
def _leaf(x):
    # [assignment leaf] Return x + 1.
    return x + 1
    # [/assignment]

@njit
def _caller(x):
    return _leaf(x) * 2
''',
    "compiled by call": '''\
import numba

def _scalar(a, b):
    # [assignment scalar] Return a * b.
    return a * b
    # [/assignment]

_scalar_cpu = numba.njit(cache=True)(_scalar)

@numba.njit
def _loop(x, out):
    for i in range(x.shape[0]):
        out[i] = _scalar_cpu(x[i], 2.0)
''',
    "safe: called from Python only": '''\
from numba import njit

@njit(cache=True)
def _leaf(x):
    # [assignment leaf] Return x + 1.
    return x + 1
    # [/assignment]

def leaf(x):
    return _leaf(x)
''',
}


@pytest.mark.parametrize("case", sorted(TRAPS))
def test_numba_trap_is_found_before_a_copy_is_written(case, tmp_path):
    (tmp_path / "m.py").write_text(TRAPS[case])
    problems = numba_trap_problems(tmp_path, ["m.py"], find_regions(TRAPS[case], "m.py"))
    if case.startswith("safe"):
        assert problems == []
    else:
        (problem,) = problems
        caller = "_caller" if case == "decorated" else "_loop"
        assert problem.startswith("m.py:") and f"the compiled `{caller}` (m.py:" in problem
        assert "TypingError" in problem


# ---- a toy repository --------------------------------------------------------------------------

TOY = {
    "toypkg/__init__.py": "",
    "toypkg/shapes.py": '''\
def area(box):
    """Area of a corner-form box."""
    # [assignment area] Width times height, each clamped at 0.
    w = max(box[2] - box[0], 0.0)
    h = max(box[3] - box[1], 0.0)
    return w * h
    # [/assignment]
''',
    "toypkg/loops.py": '''\
import numpy as np
from numba import njit


@njit(cache=True)
def _running_sum(x, out):
    # [assignment running_sum] out[i] = x[0] + ... + x[i].
    acc = 0.0
    for i in range(x.shape[0]):
        acc += x[i]
        out[i] = acc
    # [/assignment]


def running_sum(x):
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    _running_sum(x, out)
    return out
''',
    "toyparts.py": '''\
from minissd.assignments.parts import Part

CHAPTERS = {1: "Shapes", 2: "Loops"}
PARTS = (
    Part("area", 1, "area of a box", 4, ("area",), ("tests/test_shapes.py::test_area_*",)),
    Part("running_sum", 2, "a running sum in Numba", 6, ("running_sum",),
         ("tests/test_loops.py::test_running_sum*",)),
)
''',
    "pytest.ini": "[pytest]\nassignment_parts = toyparts\n",
    "tests/conftest.py": 'pytest_plugins = ["minissd.assignments.plugin"]\n',
    "tests/test_shapes.py": '''\
import os

from toypkg.shapes import area


def test_area_of_a_unit_box():
    assert area((0.0, 0.0, 1.0, 2.0)) == 2.0


def test_area_of_an_inside_out_box_is_zero():
    assert area((1.0, 1.0, 0.0, 0.5)) == 0.0  # unclamped: (-1) * (-0.5) = 0.5


def test_ungraded_in_a_graded_file():
    os._exit(3)  # the grader must never run an ungraded test
''',
    "tests/test_loops.py": '''\
from toypkg.loops import running_sum


def test_running_sum_small():
    assert running_sum([1, 2, 3]).tolist() == [1, 3, 6]


def test_running_sum_empty():
    assert running_sum([]).tolist() == []
''',
    "tests/test_ungraded.py": "import os\n\n\ndef test_other():\n    os._exit(3)\n",
    "tests/test_assignments_toy.py": "def test_instructor_only():\n    pass\n",
    "notebooks/01_toy.ipynb": json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                          "nbformat_minor": 5}),
    "README.md": "# toy\n\nThe project README.\n",
    "toypkg/__pycache__/old.nbi": "a stale Numba cache",
}


def _toy_parts():
    namespace = {}
    exec(TOY["toyparts.py"], namespace)
    return namespace["PARTS"], namespace["CHAPTERS"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(reference root, untouched student copy root) of the toy repository."""
    base = tmp_path_factory.mktemp("toy")
    ref = base / "ref"
    for rel, text in TOY.items():
        (ref / rel).parent.mkdir(parents=True, exist_ok=True)
        (ref / rel).write_text(text)
    parts, chapters = _toy_parts()
    make_student_copy(ref, base / "student", parts, chapters)
    return ref, base / "student"


def _python(code, cwd):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), str(ROOT)])})


def test_student_copy_holds_the_project_without_caches_or_instructor_files(toy):
    ref, student = toy
    files = sorted(p.relative_to(student).as_posix() for p in student.rglob("*") if p.is_file())
    assert files == sorted(["README.md", "assignment.json", "notebooks/01_toy.ipynb", "pytest.ini",
                            "tests/conftest.py", "tests/test_shapes.py", "tests/test_loops.py",
                            "tests/test_ungraded.py", "toypkg/__init__.py", "toypkg/shapes.py",
                            "toypkg/loops.py", "toyparts.py"])
    json.loads((student / "notebooks/01_toy.ipynb").read_text())  # still a notebook
    meta = json.loads((student / "assignment.json").read_text())
    assert sorted((r["name"], r["file"], r["line"]) for r in meta["regions"]) == [
        ("area", "toypkg/shapes.py", 3), ("running_sum", "toypkg/loops.py", 7)]
    readme = (student / "README.md").read_text()
    assert "## What to write (10 points)" in readme and "`toypkg/shapes.py:3` `area`" in readme
    assert readme.rstrip().endswith("The project README.")
    assert not list(student.parent.glob(".student.*"))  # the temporary folder is gone


def test_student_copy_imports_and_each_blank_fails_with_its_hint(toy):
    ref, student = toy
    run = _python("from toypkg.shapes import area\nfrom toypkg.loops import running_sum\n"
                  "for f, x in ((area, (0, 0, 1, 1)), (running_sum, [1.0])):\n"
                  "    try:\n        f(x)\n    except NotImplementedError as e:\n"
                  "        print(e)\n", cwd=student)
    assert run.stdout.splitlines() == [
        "[assignment area] Width times height, each clamped at 0.",
        "[assignment running_sum] out[i] = x[0] + ... + x[i]."], run.stderr


def test_student_copy_inside_the_checkout_is_not_copied_again(toy, tmp_path):
    ref = shutil.copytree(toy[0], tmp_path / "ref")
    parts, chapters = _toy_parts()
    make_student_copy(ref, ref / "handout", parts, chapters)
    make_student_copy(ref, ref / "handout2", parts, chapters)
    assert not (ref / "handout2/handout").exists()
    assert sorted(p.name for p in (ref / "handout").iterdir()) == sorted(
        p.name for p in (ref / "handout2").iterdir())


def test_student_copy_refuses_a_folder_that_is_not_empty(toy, tmp_path):
    ref, _ = toy
    (tmp_path / "keep.txt").write_text("mine")
    parts, chapters = _toy_parts()
    with pytest.raises(FileExistsError, match="not empty"):
        make_student_copy(ref, tmp_path, parts, chapters)
    with pytest.raises(MarkerError, match="no region named nope"):
        make_student_copy(ref, tmp_path / "new", parts, chapters, only={"nope"})


def test_grade_reference_full_untouched_zero_wrong_answer_partial(toy, tmp_path):
    ref, student = toy
    parts, chapters = _toy_parts()
    full = grade(ref, parts, chapters, package="toypkg", env=THIS_CHECKOUT)
    assert [(s.part.name, s.score, s.run) for s in full.scores] == [("area", 4, 2), ("running_sum", 6, 2)]
    untouched = grade(student, parts, chapters, package="toypkg", env=THIS_CHECKOUT)
    assert untouched.total == 0
    out = untouched.gradescope()
    assert [t["max_score"] for t in out["tests"]] == [4, 6] and out["score"] == 0
    assert "[assignment area] Width times height" in out["tests"][0]["output"]
    assert "write it in toypkg/shapes.py:3 (area)" in out["tests"][0]["output"]

    # A student who forgets the clamp loses the inside-out case: 2 of 4 points.
    wrong = tmp_path / "wrong"
    make_student_copy(ref, wrong, parts, chapters, only={"area"})
    path = wrong / "toypkg/shapes.py"
    path.write_text(path.read_text().replace(
        '    raise NotImplementedError("[assignment area] Width times height, each clamped at 0.")',
        "    return (box[2] - box[0]) * (box[3] - box[1])"))
    report = grade(wrong, parts[:1], chapters, package="toypkg", env=THIS_CHECKOUT)
    assert report.scores[0].score == 2
    assert report.scores[0].lines[1].startswith(
        "FAILED tests/test_shapes.py::test_area_of_an_inside_out_box_is_zero: assert 0.5 == 0.0")


def test_grade_with_trusted_tests_ignores_edited_tests(toy, tmp_path):
    ref, student = toy
    parts, chapters = _toy_parts()
    cheat = tmp_path / "cheat"
    make_student_copy(ref, cheat, parts, chapters)
    (cheat / "tests/test_shapes.py").write_text("def test_area_a():\n    pass\n")
    (cheat / "conftest.py").write_text(  # a root conftest that would turn failures into passes
        "import pytest\n\n@pytest.hookimpl(wrapper=True)\ndef pytest_runtest_makereport(item, call):\n"
        "    report = yield\n    report.outcome = 'passed'\n    return report\n")
    report = grade(cheat, parts[:1], chapters, package="toypkg", env=THIS_CHECKOUT, tests_from=ref)
    assert report.total == 0 and (cheat / "tests/test_shapes.py").read_text().startswith("def test_area_a")


def test_grade_reports_import_errors_timeouts_and_the_wrong_package(toy, tmp_path):
    ref, _ = toy
    parts, chapters = _toy_parts()
    broken = tmp_path / "broken"
    make_student_copy(ref, broken, parts, chapters, only=set())
    tests = broken / "tests/test_shapes.py"
    tests.write_text("import toypkg.nothere\n" + tests.read_text())
    sleepy = Part("sleepy", 1, "sleeps", 2, (), ("tests/test_sleep.py::*",))
    (broken / "tests/test_sleep.py").write_text(
        "import time\n\ndef test_quick():\n    pass\n\ndef test_slow():\n    time.sleep(60)\n")
    report = grade(broken, (parts[0], sleepy), chapters, package="toypkg", env=THIS_CHECKOUT, timeout=8)
    assert [s.score for s in report.scores] == [0, 1]  # the test that finished still counts
    assert report.scores[0].lines[0] == ("ERROR tests/test_shapes.py could not be imported: "
                                         "ModuleNotFoundError: No module named 'toypkg.nothere'")
    assert "did not finish: the test run was stopped after 8 s" in report.scores[1].lines[1]

    with pytest.raises(Exception, match="has no nothere/ folder"):
        grade(broken, parts, chapters, package="nothere")


def test_scores_are_proportional_and_a_broken_file_gives_zero():
    part = Part("p", 1, "p", 3, (), ("tests/test_a.py::test_p*",))
    outcomes = {"tests/test_a.py::test_p1": ("passed", ""), "tests/test_a.py::test_p2[x]": ("failed", "boom"),
                "tests/test_a.py::test_p3": ("passed", ""), "tests/test_a.py::test_q": ("failed", "")}
    (s,) = score_parts([part], outcomes)
    assert (s.passed, s.run, s.score) == (2, 3, 2.0)
    assert s.lines == ["2 of 3 tests passed", "FAILED tests/test_a.py::test_p2[x]: boom"]
    (s,) = score_parts([part], outcomes, {"tests/test_a.py": "ImportError"})
    assert s.score == 0


def test_weights_count_a_test_function_once_whatever_its_cases():
    # "core" weighs 3 and is half passed over its 4 cases; "corner" weighs 1 and fails:
    # 10 * (3 * 0.5 + 1 * 0) / 4 = 3.75. Counting cases alike would give 10 * 2 / 5 = 4.
    part = Part("p", 1, "p", 10, (), (("tests/test_a.py::test_core", 3), "tests/test_a.py::test_corner",
                                      ("tests/test_a.py::test_never_selected", 100)))
    outcomes = {f"tests/test_a.py::test_core[{k}]": ("passed" if k < 2 else "failed", "")
                for k in range(4)}
    outcomes["tests/test_a.py::test_corner"] = ("failed", "")
    (s,) = score_parts([part], outcomes)
    assert (s.passed, s.run, s.score) == (2, 5, 3.75)
    assert part.patterns[0] == "tests/test_a.py::test_core" and part.weights == (3.0, 1.0, 100.0)


# ---- the pytest plugin ----------------------------------------------------------------------------

def _pytest(cwd, *args):
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                         cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), str(ROOT)])})
    return run.stdout + run.stderr


def test_plugin_prints_points_per_chapter_and_total(toy):
    ref, student = toy
    out = _pytest(ref, "-m", "graded")
    assert "4 passed, 3 deselected" in out
    table = out[out.index("assignment points"):].splitlines()[1:4]
    assert [row.split()[:5] for row in table] == [
        ["1", "Shapes", "4", "/", "4"], ["2", "Loops", "6", "/", "6"], ["total", "10", "/", "10"]]
    assert "area 4/4" in table[0] and "running_sum 6/6" in table[1]
    assert out.rstrip().splitlines()[-1] == table[-1]  # the last line of the run, below pytest's


    # In the student copy, a test file that fails to import does not stop the run.
    (student / "tests/test_broken.py").write_text("import nothere\n")
    try:
        out = _pytest(student, "-m", "graded", "-q")
    finally:
        (student / "tests/test_broken.py").unlink()
    assert "4 failed" in out and "1 error" in out and "total" in out and "0 / 10" in out
    # below the failures, the short test summary and pytest's "4 failed, 1 error" line
    lines = out.rstrip().splitlines()
    assert lines[-1].split()[:4] == ["total", "0", "/", "10"], out[-2000:]
    where = {key: next(k for k, line in enumerate(lines) if key in line)
             for key in ("short test summary", "4 failed", "assignment points")}
    assert where["short test summary"] < where["4 failed"] < where["assignment points"]


def test_plugin_runs_one_part(toy):
    ref, _ = toy
    out = _pytest(ref, "--part", "area", "-q", "--no-points")
    assert "2 passed, 5 deselected" in out and "assignment points" not in out
    out = _pytest(ref, "--part", "area", "-q", "tests/test_shapes.py")
    assert "2 passed, 1 deselected" in out and "area 4/4" in out and "Loops" not in out
    assert "only the graded tests that ran count" in out
    assert "--part: no part named nope; the parts are area, running_sum" in _pytest(ref, "--part", "nope")


# ---- hostile submissions ---------------------------------------------------------------------------

def _forging_reporter():
    """The grader's reporter with one change: every graded test is recorded as passed."""
    source = (ROOT / "minissd/assignments/_reporter.py").read_text()
    honest = 'outcome, message = _worst.get(report.nodeid, ("passed", ""))'
    assert honest in source
    return source.replace(honest, 'outcome, message = "passed", ""')


@pytest.mark.parametrize("where", ["_minissd_grade_reporter.py", "tests/_minissd_grade_reporter.py",
                                   "toypkg/_minissd_grade_reporter.py", "pytest.py"])
def test_a_submission_cannot_replace_the_graders_reporter(toy, tmp_path, where):
    # Before 2026-12-02 the reporter was loaded by name (-p _minissd_grade_reporter) with the
    # submission first on the path: a copy shipped at the submission's root scored a blank
    # part 4/4, even against trusted tests.
    ref, _ = toy
    parts, chapters = _toy_parts()
    cheat = tmp_path / "cheat"
    make_student_copy(ref, cheat, parts, chapters, only={"area"})  # area left blank
    forged = _forging_reporter() if where != "pytest.py" else "raise SystemExit('hijacked')\n"
    (cheat / where).write_text(forged)
    for tests_from in (ref, None):
        report = grade(cheat, parts[:1], chapters, package="toypkg", env=THIS_CHECKOUT,
                       tests_from=tests_from)
        if where.startswith("tests/") and tests_from is None:
            continue  # graded in place, the submission's tests/ are its own (docs/instructors.md)
        assert report.scores[0].score == 0, (where, tests_from, report.scores[0].lines)
        assert report.scores[0].run == 2  # the real tests ran, and failed on the blank


def test_the_grader_refuses_to_run_from_the_submission_it_grades(toy, tmp_path, monkeypatch):
    # `python -m minissd.assignments grade .` run inside a submission imports the submission's
    # own grader; with --tests-from (a distrusted submission) that is refused.
    grading = sys.modules["minissd.assignments.grade"]  # the package's `grade` is the function
    ref, student = toy
    parts, chapters = _toy_parts()
    monkeypatch.setattr(grading, "__file__", str(student / "minissd/assignments/grade.py"))
    with pytest.raises(grading.GradeError, match="the grader itself would come from"):
        grade(student, parts[:1], chapters, package="toypkg", env=THIS_CHECKOUT, tests_from=ref)


def test_cli_bad_input_is_one_line_and_status_2(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    for argv, message in ((["grade", str(tmp_path)], f"{tmp_path} has no minissd/ folder"),
                          (["student", str(tmp_path / "full")], "exists and is not empty")):
        run = subprocess.run([sys.executable, "-m", "minissd.assignments", *argv],
                             capture_output=True, text=True, cwd=tmp_path)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1 and message in lines[0], run.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
