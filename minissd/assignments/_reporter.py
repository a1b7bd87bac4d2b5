"""The pytest plugin that the grade command loads to record outcomes (self-contained).

The grade command loads this file by its path (grade.py's bootstrap, in Python's isolated
mode, before the graded copy is on the import path) and hands it to ``pytest.main``, so the
outcomes it scores come from the grader's code, not from whatever module of that name the
graded copy ships. It reads a JSON spec from ``$MINISSD_GRADE_SPEC`` when it is loaded:

- regex: node ids to keep; every other collected test is deselected (ungraded tests never run)
- out: a JSON-lines file it appends to as the run goes, so a run stopped by a timeout or a
  crash still leaves what finished
- package: the package whose import location is recorded at the end (to check that pytest
  imported the graded copy, not another installation)

Records: {"collected": [ids]}, {"collection_error": file, "message"},
{"test": id, "outcome": passed|failed|skipped|error, "message"}, {"package_file": path}.
This module imports only the standard library and pytest.
"""

import json
import os
import re
import sys

_SPEC = json.loads(open(os.environ["MINISSD_GRADE_SPEC"], encoding="utf-8").read())
_KEEP = re.compile(_SPEC["regex"])
_OUT = open(_SPEC["out"], "a", encoding="utf-8")
_worst = {}  # node id -> (outcome, message) of the first phase that did not pass


def _write(record):
    _OUT.write(json.dumps(record) + "\n")
    _OUT.flush()


def _message(report, limit=600):
    """One line that says why: the exception line for a failure, the reason for a skip."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (file, line, reason)
        text = str(longrepr[2])
    else:
        crash = getattr(longrepr, "reprcrash", None)
        lines = str(longrepr).strip().splitlines() or [""]
        errors = [line[1:] for line in lines if line.startswith("E ")]  # pytest's "E   ..." lines
        text = crash.message if crash is not None else (errors or lines)[-1]
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " ..."


def pytest_collection_modifyitems(session, config, items):
    keep = [item for item in items if _KEEP.match(item.nodeid)]
    dropped = [item for item in items if not _KEEP.match(item.nodeid)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep
    _write({"collected": [item.nodeid for item in keep]})


def pytest_collectreport(report):
    if report.failed:
        _write({"collection_error": report.nodeid, "message": _message(report)})


def pytest_runtest_logreport(report):
    if report.nodeid not in _worst and not report.passed:
        if report.skipped:
            outcome = "skipped"
        else:
            outcome = "failed" if report.when == "call" else "error"
        _worst[report.nodeid] = (outcome, _message(report))
    if report.when == "teardown":
        outcome, message = _worst.get(report.nodeid, ("passed", ""))
        _write({"test": report.nodeid, "outcome": outcome, "message": message})


def pytest_sessionfinish(session, exitstatus):
    module = sys.modules.get(_SPEC.get("package", ""))
    _write({"package_file": getattr(module, "__file__", None)})
    _OUT.close()
