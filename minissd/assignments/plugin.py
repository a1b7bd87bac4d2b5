"""pytest plugin: mark the graded tests and print the points per chapter at the end of a run.

Registered by tests/conftest.py. At collection it marks every test of a part with
``graded(PART)`` (so ``pytest -m graded`` runs only graded tests) and ``--part NAME`` keeps
only the tests of that part. At the very end of the run, below pytest's own summary, it
prints one row per chapter and a total, counting the graded tests that ran; it prints
nothing when none ran. In a student
copy (one with ``assignment.json`` at its root) a test file that fails to import does not
stop the run, since unfinished functions are expected there.

The parts come from the module named by the ini option ``assignment_parts``
(default ``minissd.assignments.parts``), which must define PARTS and CHAPTERS.
The plugin costs one regular-expression match per collected test.
"""

from __future__ import annotations

import importlib

import pytest

from .scoring import part_matcher, points_table, score_parts


def pytest_addoption(parser):
    parser.addini("assignment_parts", "module defining the graded PARTS and CHAPTERS",
                  default="minissd.assignments.parts")
    group = parser.getgroup("minissd assignments")
    group.addoption("--part", action="append", default=[], metavar="NAME",
                    help="run only the tests of this graded part (repeatable)")
    group.addoption("--no-points", action="store_true",
                    help="do not print the assignment points table at the end")


class _Points:
    """The state of one run: which tests belong to which part, and how each one went."""

    def __init__(self, config):
        table = importlib.import_module(config.getini("assignment_parts"))
        self.parts, self.chapters = table.PARTS, table.CHAPTERS
        self.matchers = [(part, part_matcher(part)) for part in self.parts]
        self.graded = {}  # node id -> names of its parts
        self.outcomes = {}  # node id -> (outcome, message), first phase that did not pass
        self.collection_errors = {}
        self.config = config
        unknown = set(config.getoption("part")) - {part.name for part in self.parts}
        if unknown:
            raise pytest.UsageError(f"--part: no part named {', '.join(sorted(unknown))}; "
                                    f"the parts are {', '.join(p.name for p in self.parts)}")

    def pytest_collection_modifyitems(self, config, items):
        wanted = set(config.getoption("part"))
        for item in items:
            names = [part.name for part, belongs in self.matchers if belongs(item.nodeid)]
            if names:
                self.graded[item.nodeid] = names
                item.add_marker(pytest.mark.graded(*names))
        if wanted:
            keep = [i for i in items if wanted & set(self.graded.get(i.nodeid, ()))]
            kept = {id(i) for i in keep}
            config.hook.pytest_deselected(items=[i for i in items if id(i) not in kept])
            items[:] = keep

    def pytest_collectreport(self, report):
        if report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            self.collection_errors[report.nodeid] = crash.message if crash else "import failed"

    def pytest_runtest_logreport(self, report):
        if report.nodeid in self.graded:
            if report.nodeid not in self.outcomes and not report.passed:
                crash = getattr(report.longrepr, "reprcrash", None)
                message = " ".join(crash.message.split())[:300] if crash else ""
                self.outcomes[report.nodeid] = ("skipped" if report.skipped else "failed", message)
            elif report.when == "teardown":
                self.outcomes.setdefault(report.nodeid, ("passed", ""))

    # The table must be the last thing a run prints, below pytest's failures, its short test
    # summary and its "N failed, M passed" line (a student's run prints ~200 lines of failures).
    # pytest prints all of those from the terminal reporter's own pytest_sessionfinish wrapper,
    # after the pytest_terminal_summary hooks, so the table is printed from an outer wrapper
    # (tryfirst: outermost, so the code after its yield runs after the reporter has finished).
    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_sessionfinish(self, session, exitstatus):
        yield
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and not self.config.getoption("no_points"):
            self.write_table(reporter)

    def write_table(self, reporter):
        scores = [s for s in score_parts(self.parts, self.outcomes, self.collection_errors)
                  if s.run or s.broken]
        if not scores:
            return
        reporter.write_sep("=", "assignment points")
        if len(scores) < len(self.parts) or len(self.outcomes) < len(self.graded):
            reporter.write_line("(only the graded tests that ran count; plain `pytest` runs "
                                "them all)")
        for row in points_table(scores, self.chapters):
            reporter.write_line(row)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "graded(part): the test counts for that assignment part (set from the "
        "parts table by minissd.assignments.plugin; run only these with -m graded)")
    if (config.rootpath / "assignment.json").is_file():  # a student copy
        config.option.continue_on_collection_errors = True
    config.pluginmanager.register(_Points(config), "minissd-assignment-points")
