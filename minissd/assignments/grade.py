"""Grade a copy of minissd: run its graded tests in a fresh pytest and score the parts.

pytest runs in a subprocess whose working folder is the graded copy and whose import path
puts the copy first, so ``import minissd`` loads the copy even where another minissd is
installed (checked: the run records where the package came from, and a mismatch stops the
grading). Only the test files named in the parts table are given to pytest, and a small
reporter plugin (the grader's own, ``_reporter.py``) deselects every ungraded test in them, so
the ungraded tests (data, notebooks, CUDA twins) neither run nor matter. Outcomes are
streamed to a file, so a run stopped by the timeout still scores the tests that finished.

The grader's own code cannot be replaced by files of the copy: the subprocess starts in
Python's isolated mode (``-I``: no current folder, no ``PYTHONPATH`` on the path) with a
small bootstrap (``_BOOTSTRAP``) that imports pytest and loads the reporter from the
grader's file by its path, and only then puts the copy on the path and runs pytest. A copy
that ships its own ``_reporter.py``, a module of the reporter's name, or a ``pytest.py``
changes nothing. This is not a sandbox: the copy's code still runs inside the test process
(grade untrusted work in a container, with ``--tests-from``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MinissdError
from .markers import MarkerError, scan_tree
from .scoring import points_table, tests_regex, score_parts, test_files
from .student import CACHE_PATTERNS, INSTRUCTOR_ONLY, _excluded, source_files


class GradeError(MinissdError, RuntimeError):
    """The grading itself could not run (a missing folder, the wrong package imported)."""


@dataclass
class Run:
    """What one pytest run of the graded tests gave.

    - outcomes: node id -> (outcome, message) for every graded test collected
    - collection_errors: test file -> message, for files pytest could not import
    - stopped: why the run ended early ("" when it finished)
    - log: the end of pytest's own output, for when something went wrong
    """

    outcomes: dict = field(default_factory=dict)
    collection_errors: dict = field(default_factory=dict)
    stopped: str = ""
    log: str = ""
    seconds: float = 0.0


def run_graded_tests(root, parts, *, package="minissd", pytest_args=(), env=None,
                     timeout=900.0) -> Run:
    """Run the tests of ``parts`` in the repository at ``root`` (in place) and collect outcomes.

    - pytest_args: extra arguments for pytest (e.g. ``-p`` a plugin)
    - env: extra environment variables for the run
    - timeout: seconds before the run is stopped; tests not finished by then fail
    """
    root = Path(root).resolve()
    files = sorted({str(p.relative_to(root)) for part in parts for pattern in test_files(part)
                    for p in root.glob(pattern)})
    if not files:
        return Run(stopped="no test file of these parts exists")
    regex = tests_regex([p for part in parts for p in part.patterns])
    with tempfile.TemporaryDirectory(prefix="minissd-grade-") as tmp:
        reporter = Path(tmp, "reporter.py")
        shutil.copy(Path(__file__).with_name("_reporter.py"), reporter)
        bootstrap = Path(tmp, "bootstrap.py")
        bootstrap.write_text(_BOOTSTRAP, encoding="utf-8")
        records = Path(tmp, "records.jsonl")
        spec = Path(tmp, "spec.json")
        spec.write_text(json.dumps({"regex": regex, "out": str(records), "package": package}))
        run_env = {**os.environ, **(env or {})}
        # the copy first, for the tests' own subprocesses too; the bootstrap sets its own path
        path = [str(root)] + [p for p in run_env.get("PYTHONPATH", "").split(os.pathsep) if p]
        run_env["PYTHONPATH"] = os.pathsep.join(path)
        run_env["MINISSD_GRADE_SPEC"] = str(spec)
        run_env.setdefault("NUMBA_ENABLE_CUDASIM", "1")
        command = [sys.executable, "-I", str(bootstrap), str(reporter), os.pathsep.join(path),
                   *files, "-p", "no:cacheprovider", "--continue-on-collection-errors", "-q",
                   "--tb=short", *pytest_args]
        start = time.perf_counter()
        log, stopped = _run(command, root, run_env, timeout)
        run = _read_records(records, root, package)
    run.seconds = time.perf_counter() - start
    run.stopped = stopped or run.stopped
    run.log = log[-4000:]
    unfinished = ("failed", f"did not finish: {run.stopped or 'pytest ended before it ran'}")
    run.outcomes = {k: v or unfinished for k, v in run.outcomes.items()}
    return run


# Run as ``python -I bootstrap.py REPORTER PATH pytest-args...`` in the graded copy. Isolated
# mode leaves the copy off sys.path, so pytest and the reporter load from the grader's
# installation; the copy goes first on the path only after that, for the tests to import it.
_BOOTSTRAP = """\
import importlib.util
import os
import sys

import pytest

reporter_file, path, args = sys.argv[1], sys.argv[2], sys.argv[3:]
spec = importlib.util.spec_from_file_location("_minissd_grade_reporter_loaded", reporter_file)
reporter = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reporter)  # reads $MINISSD_GRADE_SPEC and opens its records file
os.remove(os.environ.pop("MINISSD_GRADE_SPEC"))  # read: the tests need not find it
sys.path[:0] = [p for p in path.split(os.pathsep) if p]
sys.exit(pytest.main(args, plugins=[reporter]))
"""


def _run(command, cwd, env, timeout) -> tuple:
    """Run pytest in its own process group (so a timeout kills what it started too)."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        return log, f"the test run was stopped after {timeout:g} s"
    return log, ""


def _read_records(path: Path, root: Path, package: str) -> Run:
    run, results, collected = Run(), {}, None
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the last line of a run killed while writing it
            continue
        if "collected" in record:
            collected = record["collected"]
        elif "collection_error" in record:
            run.collection_errors[record["collection_error"]] = record["message"]
        elif "test" in record:
            results[record["test"]] = (record["outcome"], record["message"])
        elif "package_file" in record and record["package_file"]:
            where = Path(record["package_file"]).resolve()
            if root not in where.parents:
                raise GradeError(f"pytest imported {package} from {where}, not from {root}; "
                                 "the grade would be of the wrong code")
    if collected is None:
        run.stopped = "pytest stopped before it collected the tests (see its output)"
    run.outcomes = {node_id: results.get(node_id) for node_id in collected or []}
    return run


@dataclass
class Report:
    """A graded copy: the score of each part and the run they came from."""

    scores: list
    run: Run
    chapters: dict
    where: dict  # region name -> ["file:line function", ...] in the graded copy

    @property
    def total(self) -> float:
        return round(sum(s.score for s in self.scores), 2)

    @property
    def max_total(self) -> float:
        return sum(s.max_score for s in self.scores)

    def table(self) -> str:
        return "\n".join(points_table(self.scores, self.chapters))

    def gradescope(self) -> dict:
        """Gradescope's results.json: score, execution_time, output and one test per part."""
        tests, numbers = [], {}
        for s in self.scores:
            numbers[s.part.chapter] = numbers.get(s.part.chapter, 0) + 1
            number = f"{s.part.chapter}.{numbers[s.part.chapter]}"
            where = [f"write it in {w}" for name in s.part.regions
                     for w in self.where.get(name, [])]
            tests.append({"name": f"{number} {s.part.title} ({s.part.name})", "number": number,
                          "score": s.score, "max_score": s.max_score,
                          "status": "passed" if s.score == s.max_score else "failed",
                          "output": "\n".join(where + s.lines)})
        output = self.table()
        if self.run.stopped:
            output += f"\n\nThe run did not finish: {self.run.stopped}\n{self.run.log[-1500:]}"
        return {"score": self.total, "execution_time": round(self.run.seconds, 1),
                "output": output, "tests": tests}


# What pytest reads besides the code: taken from the trusted checkout when grading with it.
TEST_SETUP = ("tests/*", "conftest.py", "pyproject.toml", "pytest.ini", "tox.ini", "setup.cfg")


def prepare_copy(submission: Path, tests_from: Path, dest: Path) -> None:
    """Copy ``submission`` to ``dest`` with the tests and test configuration of ``tests_from``.

    The submission's tests/, its pytest configuration files and any conftest.py of its own are
    left out, so editing them changes nothing. This is not a sandbox: the submission's code
    still runs inside the test process.
    """
    def ours(rel):
        return not _excluded(rel, TEST_SETUP) and not rel.endswith("conftest.py")

    def theirs(rel):
        return _excluded(rel, TEST_SETUP) and not _excluded(rel, INSTRUCTOR_ONLY)

    for base, keep in ((submission, ours), (tests_from, theirs)):
        for rel in source_files(base):
            if keep(rel) and not _excluded(rel, CACHE_PATTERNS):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(base / rel, dest / rel)


def grade(root, parts, chapters, *, tests_from=None, package="minissd", timeout=900.0,
          pytest_args=(), env=None) -> Report:
    """Grade the copy at ``root``; with ``tests_from``, against that repository's tests.

    The copy is graded in place unless ``tests_from`` is given; then a temporary copy with
    the trusted tests is graded and the submission is left untouched.
    """
    root = Path(root).resolve()
    if not (root / package).is_dir():
        raise GradeError(f"{root} has no {package}/ folder: give the root of a minissd copy")
    if tests_from is not None and root in Path(__file__).resolve().parents:
        raise GradeError(f"the grader itself would come from {root}, the copy being graded "
                         "(python -m minissd.assignments was run inside it); run it from your "
                         "own checkout, outside the submission")
    if tests_from is None:
        run = run_graded_tests(root, parts, package=package, timeout=timeout,
                               pytest_args=pytest_args, env=env)
    else:
        with tempfile.TemporaryDirectory(prefix="minissd-submission-") as tmp:
            prepare_copy(root, Path(tests_from).resolve(), Path(tmp))
            run = run_graded_tests(tmp, parts, package=package, timeout=timeout,
                                   pytest_args=pytest_args, env=env)
    scores = score_parts(parts, run.outcomes, run.collection_errors)
    return Report(scores, run, chapters, _where(root))


def _where(root: Path) -> dict:
    """Where each region is in the graded copy (empty if its markers were removed or broken)."""
    try:
        regions = scan_tree(root, [f for f in source_files(root) if f.endswith(".py")])
    except (MarkerError, OSError, UnicodeDecodeError):
        return {}
    where = {}
    for r in regions:
        where.setdefault(r.name, []).append(f"{r.where} ({r.function})")
    return where
