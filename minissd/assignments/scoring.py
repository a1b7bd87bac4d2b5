"""From test outcomes to points: shared by the pytest plugin and the grade command.

- outcomes: dict node id -> (outcome, message), outcome one of "passed", "failed",
  "skipped", "error"; only "passed" earns points (a skipped graded test earns nothing, so a
  graded test must not skip on the grading machine).
- collection_errors: dict test file -> message, for files pytest could not import.
A part scores ``points * sum(w * passed/run of the pattern) / sum(w)`` over its patterns that
selected a test (each pattern, a test function with all its cases, weighs ``w``); a part with a
test file that failed to import scores zero (its tests did not run, and a part must not earn
full marks from the half that happened to load).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def pattern_regex(pattern: str) -> str:
    """A node-id pattern (``*`` wildcard, everything else literal) as a regular expression."""
    return "".join(".*" if c == "*" else re.escape(c) for c in pattern)


def tests_regex(patterns) -> str:
    """One regular expression for node-id patterns; each also takes its cases ``[...]``."""
    return "(?:" + "|".join(pattern_regex(p) for p in patterns) + r")(?:\[.*\])?\Z"


def part_matcher(part):
    """A function node_id -> bool that says whether the test belongs to ``part``."""
    regex = re.compile(tests_regex(part.patterns))
    return lambda node_id: regex.match(node_id) is not None


def pattern_finder(part):
    """A function node_id -> the index of the first of ``part``'s patterns that selects it,
    or None when none does (the test is not the part's)."""
    regexes = [re.compile(tests_regex([pattern])) for pattern in part.patterns]
    return lambda node_id: next((k for k, r in enumerate(regexes) if r.match(node_id)), None)


def test_files(part) -> list[str]:
    """The file part of each pattern (``tests/test_boxes.py``), possibly with ``*``."""
    return sorted({p.split("::")[0] for p in part.patterns})


@dataclass
class PartScore:
    """What one part earned, and the lines that explain it to the student."""

    part: object
    passed: int = 0
    run: int = 0
    broken: int = 0  # test files of the part that could not be imported
    score: float = 0.0
    lines: list = field(default_factory=list)

    @property
    def max_score(self) -> float:
        return float(self.part.points)


def _file_matches(pattern_file: str, path: str) -> bool:
    return re.fullmatch(pattern_regex(pattern_file), path) is not None


def score_parts(parts, outcomes: dict, collection_errors: dict | None = None) -> list:
    """One PartScore per part, in table order."""
    collection_errors = collection_errors or {}
    scores = []
    for part in parts:
        s = PartScore(part)
        pattern_of = pattern_finder(part)
        broken = [f for f in collection_errors
                  if any(_file_matches(pf, f) for pf in test_files(part))]
        s.broken = len(broken)
        for f in broken:
            s.lines.append(f"ERROR {f} could not be imported: {collection_errors[f]}")
        failures = []
        passed, run = [0] * len(part.tests), [0] * len(part.tests)
        for node_id, (outcome, message) in outcomes.items():
            k = pattern_of(node_id)
            if k is None:
                continue
            s.run += 1
            run[k] += 1
            if outcome == "passed":
                s.passed += 1
                passed[k] += 1
            else:
                failures.append(f"{outcome.upper()} {node_id}"
                                + (f": {message}" if message else ""))
        weights = [w for w, n in zip(part.weights, run) if n]
        if s.run and not broken:
            earned = sum(w * p / n for w, p, n in zip(part.weights, passed, run) if n)
            s.score = round(part.points * earned / sum(weights), 2)
        s.lines.append(f"{s.passed} of {s.run} tests passed" if s.run
                       else "no test of this part ran")
        s.lines += failures
        scores.append(s)
    return scores


def points_table(scores, chapters) -> list:
    """Lines of the points table: one row per chapter with its parts, then the total."""
    rows, total, best = [], 0.0, 0.0
    for chapter in sorted({s.part.chapter for s in scores}):
        mine = [s for s in scores if s.part.chapter == chapter]
        got, out_of = sum(s.score for s in mine), sum(s.max_score for s in mine)
        detail = ", ".join(f"{s.part.name} {s.score:g}/{s.max_score:g}" for s in mine)
        title = f"{chapter} {chapters.get(chapter, '')}"
        rows.append(f"{title:34.34} {got:6g} / {out_of:<5g} {detail}")
        total, best = total + got, best + out_of
    rows.append(f"{'total':34} {total:6g} / {best:g}")
    return rows


# docs/students.md shows what the end of a run looks like between these two lines; the
# student copy and ``python -m minissd.assignments docs`` write it from the parts table.
EXAMPLE_BEGIN = "<!-- points example: generated from minissd/assignments/parts.py " \
                "(python -m minissd.assignments docs); do not edit -->"
EXAMPLE_END = "<!-- /points example -->"


def example_points(parts, chapters) -> list:
    """The points table of a copy where only the first part is done, as pytest prints it."""
    scores = [PartScore(p, passed=int(k == 0), run=1, score=float(p.points) if k == 0 else 0.0)
              for k, p in enumerate(parts)]
    return [f"{' assignment points ':=^80}"] + points_table(scores, chapters)


def example_points_block(text: str, parts, chapters) -> str:
    """``text`` with the lines between EXAMPLE_BEGIN and EXAMPLE_END rewritten (unchanged
    when the markers are missing)."""
    if EXAMPLE_BEGIN not in text or EXAMPLE_END not in text:
        return text
    head, rest = text.split(EXAMPLE_BEGIN, 1)
    _, tail = rest.split(EXAMPLE_END, 1)
    block = "\n".join(["```", *example_points(parts, chapters), "```"])
    return f"{head}{EXAMPLE_BEGIN}\n{block}\n{EXAMPLE_END}{tail}"
