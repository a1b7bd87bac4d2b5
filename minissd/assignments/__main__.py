"""python -m minissd.assignments {student,grade,check,docs,capstone}: see docs/instructors.md."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import minissd

from .. import cli
from ..errors import ConfigError
from . import parts as table
from .check import numba_trap_problems, parts_problems
from .grade import grade
from .markers import scan_tree
from .scoring import example_points_block
from .student import STUDENTS_GUIDE, INSTRUCTOR_ONLY, _excluded, make_student_copy, source_files


def _reference_root() -> Path:
    """The checkout this minissd was installed from (where the solutions are)."""
    root = Path(minissd.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise ConfigError(f"minissd is not installed from a checkout ({root}); give --source")
    return root


def _regions(source: Path):
    files = [f for f in source_files(source) if not _excluded(f, INSTRUCTOR_ONLY)]
    return files, scan_tree(source, files)


def cmd_student(args) -> int:
    source = Path(args.source) if args.source else _reference_root()
    only = None
    if args.only is not None:  # region names, or part names standing for their regions
        regions_of = {part.name: part.regions for part in table.PARTS}
        names = [name.strip() for name in args.only.split(",") if name.strip()]
        only = {region for name in names for region in regions_of.get(name, (name,))}
    blanked = make_student_copy(source, args.out, table.PARTS, table.CHAPTERS, only=only)
    files, regions = _regions(source)
    for problem in parts_problems(source, regions, table.PARTS):
        print(f"warning: {problem}", file=sys.stderr)
    print(f"wrote {args.out}: {len(blanked)} regions blanked "
          f"({', '.join(sorted({r.name for r in blanked})) or 'none'})")
    return 0


def cmd_grade(args) -> int:
    parts = table.PARTS
    if args.part:
        parts = [p for p in parts if p.name in args.part]
        if len(parts) != len(set(args.part)):
            raise ConfigError(f"--part: the parts are {', '.join(p.name for p in table.PARTS)}")
    report = grade(args.dir, parts, table.CHAPTERS, tests_from=args.tests_from,
                   timeout=args.timeout)
    if args.verbose:
        for test in report.gradescope()["tests"]:
            print(f"--- {test['name']}: {test['score']:g}/{test['max_score']:g}\n{test['output']}")
    print(report.table())
    if report.run.stopped:
        print(f"the run did not finish: {report.run.stopped}\n{report.run.log[-2000:]}")
    if args.json:
        Path(args.json).write_text(json.dumps(report.gradescope(), indent=1) + "\n",
                                   encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def cmd_check(args) -> int:
    source = Path(args.source) if args.source else _reference_root()
    files, regions = _regions(source)
    for r in regions:
        print(f"{r.where:32} {r.name:24} in {r.function}: {r.hint}")
    problems = numba_trap_problems(source, files, regions) + parts_problems(
        source, regions, table.PARTS)
    for problem in problems:
        print(f"problem: {problem}")
    print(f"{len(regions)} regions, {len(table.PARTS)} parts, "
          f"{sum(p.points for p in table.PARTS):g} points, {len(problems)} problems")
    return 1 if problems else 0


def cmd_docs(args) -> int:
    """Rewrite the generated points example of docs/students.md from the parts table."""
    source = Path(args.source) if args.source else _reference_root()
    guide = source / STUDENTS_GUIDE
    text = guide.read_text(encoding="utf-8")
    new = example_points_block(text, table.PARTS, table.CHAPTERS)
    if new == text:
        print(f"{guide}: up to date")
        return 0
    if args.check:
        print(f"{guide}: the points example is stale; run python -m minissd.assignments docs")
        return 1
    guide.write_text(new, encoding="utf-8")
    print(f"rewrote the points example of {guide}")
    return 0


def cmd_capstone(args) -> int:
    """Train in the copy with its own code, evaluate with this one, print (and write) the score."""
    from dataclasses import replace

    from ..data import default_data_dir
    from .capstone import CAPSTONE, run_capstone, write_result

    changes = {k: v for k, v in (("iters", args.iters), ("target", args.target)) if v is not None}
    rules = replace(CAPSTONE, **changes)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    out = Path(args.out) if args.out else Path(args.dir) / "runs" / "capstone"
    print(f"capstone: training the tiny SSD for {rules.iters} iterations with the code in {args.dir} "
          f"(a few minutes); output in {out}")
    result = run_capstone(args.dir, out, data_dir, rules, timeout=args.timeout, echo=sys.stdout)
    print(result["output"])
    if args.json:
        write_result(args.json, result)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minissd.assignments",
                                     description="Course assignments cut from minissd.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("student", help="write the student copy")
    p.add_argument("out", help="folder to create (must not exist, or be empty)")
    p.add_argument("--only", help="comma-separated regions or parts to blank (default: all)")
    p.add_argument("--source", help="the reference checkout (default: this minissd's)")
    p.set_defaults(run=cmd_student)
    p = sub.add_parser("grade", help="grade a copy; print the table, write results.json")
    p.add_argument("dir", help="the root of the copy to grade")
    p.add_argument("--json", help="write Gradescope's results.json here")
    p.add_argument("--tests-from", help="grade with this checkout's tests/ instead of the "
                   "copy's own (the submission is not modified)")
    p.add_argument("--part", action="append", help="grade only this part (repeatable)")
    p.add_argument("--timeout", type=float, default=900, help="seconds (default 900)")
    p.add_argument("-v", "--verbose", action="store_true", help="print each part's output")
    p.set_defaults(run=cmd_grade)
    p = sub.add_parser("check", help="list regions and parts; report problems")
    p.add_argument("--source", help="the reference checkout (default: this minissd's)")
    p.set_defaults(run=cmd_check)
    p = sub.add_parser("docs", help="rewrite docs/students.md's points example from the parts")
    p.add_argument("--check", action="store_true", help="only say whether it is up to date")
    p.add_argument("--source", help="the reference checkout (default: this minissd's)")
    p.set_defaults(run=cmd_docs)
    p = sub.add_parser("capstone", help="train the tiny SSD with the copy's code; score its val mAP")
    p.add_argument("dir", nargs="?", default=".", help="the student's copy (default: this folder)")
    p.add_argument("--json", help="write the result here (score, max_score, output: Gradescope's fields)")
    p.add_argument("--out", help="the training run's folder (default DIR/runs/capstone)")
    p.add_argument("--data-dir", help="where the capstone's tiny-voc subset is written (default $MINISSD_DATA)")
    p.add_argument("--iters", type=int, help="instructors: another budget (measure a new --target with it)")
    p.add_argument("--target", type=float, help="instructors: the mAP that earns full points")
    p.add_argument("--timeout", type=float, default=3600, help="seconds (default 3600)")
    p.set_defaults(run=cmd_capstone)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except FileExistsError as err:  # the student copy's folder: bad input too
        raise ConfigError(str(err)) from None


if __name__ == "__main__":
    sys.exit(cli.run(main))
