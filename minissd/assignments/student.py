"""Write the student copy: the whole repository with every marked region blanked, and no
other copy of a solution.

The copy holds what git shows in the source repository (tracked files plus new files that
are not ignored), read from the working tree, minus build and cache files (``__pycache__``,
Numba's ``*.nbi``/``*.nbc`` caches, which would otherwise hand out compiled solutions), the
instructor's files (``INSTRUCTOR_ONLY``) and the files that hold other copies of the solutions
(``LEFT_OUT``, each with its reason; a package left out is replaced by a stub that says so).
In the files it copies it

- blanks every ``# [assignment NAME]`` region (markers.strip_regions);
- drops every ``# [instructor-only] why`` block (markers.strip_instructor_only): the wrong
  implementations that test the tests, one character away from a solution;
- leaves out the bodies of the test oracles decorated ``@recorded`` (tests/naive.py's loops
  of the graded functions) and writes the answers they gave to every call of the reference's
  tests beside them (oracles.py), so the copy's tests still compare against them.

It then scans the copy for what is left of the solutions (leaks.py) and refuses to finish if
it finds any. It gets a README for students (what to write, where in the copy, for how many
points, all generated from the markers and the parts table) and an ``assignment.json`` that
records what it was made from. It is written to a temporary folder beside OUT and renamed at
the end, so a copy that exists is complete.
"""

from __future__ import annotations

import ast
import datetime
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .check import numba_trap_problems
from .markers import (MarkerError, find_regions, scan_tree, strip_instructor_only,
                      strip_regions)
from .oracles import ANSWERS, RECORD_VARIABLE

# Never copied: build outputs and caches.
CACHE_PATTERNS = ("*/__pycache__/*", "__pycache__/*", "*.pyc", "*.nbi", "*.nbc",
                  "*/.ipynb_checkpoints/*", "*.egg-info/*", ".pytest_cache/*", ".git/*")
# Kept from students: the tests of this tool, the wrong answers it grades, the instructor guide.
INSTRUCTOR_ONLY = ("tests/test_assignments*.py", "tests/assignment_mistakes/*",
                   "docs/instructors.md")
# Other copies of the solutions, left out of the student copy (docs/instructors.md, "What the
# student copy leaves out"): (pattern, why).
LEFT_OUT = (
    ("minissd/cuda/*", "the GPU twins: readable kernels of IoU, encode/decode, matching, "
     "mining, the loss, the layers' backward passes, SGD, NMS and the heads"),
    ("tests/test_cuda_*.py", "the tests of the GPU twins"),
    ("docs/cuda.md", "the guide to the GPU twins"),
    ("scripts/gpu_check.sh", "runs the GPU twins' tests on a GPU"),
    ("minissd/bench/*", "benchmarks, with NumPy twins of matching and mining "
     "(bench/core.py) and a PyTorch twin of the network's heads (bench/torch_twin.py)"),
    ("tests/test_bench_*.py", "the tests of the benchmarks"),
)
_CUDA_STUB = '''"""minissd.cuda, the GPU twins, is left out of the student copy.

Its kernels are readable CUDA versions of the functions you write (IoU, encoding, matching,
mining, the loss, the backward passes, SGD, NMS): they would be the answers. Train on the
CPU (the default, --device cpu). Your instructor's checkout has them.
"""

REASON = ("minissd.cuda (the GPU twins) is left out of the student copy: its kernels are "
          "readable versions of the functions you write; train on the CPU (--device cpu)")


def require():
    """Always fails here: there are no GPU twins in the student copy."""
    raise RuntimeError(REASON)


def simulating():
    return False


def __getattr__(name):
    raise AttributeError(f"minissd.cuda.{name}: {REASON}")
'''
_BENCH_STUB = '''"""minissd.bench is left out of the student copy (it holds NumPy twins of matching and
mining, and a PyTorch twin of the network's heads: answers to the assignments)."""

raise ImportError("minissd.bench (the benchmarks) is left out of the student copy: it holds "
                  "twins of functions you write")
'''
# What a left-out package becomes in the copy (so an import says why instead of "no module").
STUBS = {"minissd/cuda/__init__.py": _CUDA_STUB, "minissd/bench/__init__.py": _BENCH_STUB}
METADATA = "assignment.json"
STUDENTS_GUIDE = "docs/students.md"
_ORACLE_STUB = ("# left out of the student copy (it answers a graded part); the tests' calls are\n"
                "{indent}# answered from {answers} (minissd/assignments/oracles.py)\n"
                "{indent}raise NotImplementedError(\"left out of the student copy\")")


def _excluded(rel: str, patterns) -> bool:
    return any(fnmatch.fnmatch(rel, p) for p in patterns)


def source_files(root: Path) -> list[str]:
    """Files of the repository at ``root`` (relative posix paths), caches left out."""
    root = Path(root)
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], cwd=root, capture_output=True, check=True)
        files = sorted(set(out.stdout.decode().split("\0")) - {""})
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk it
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return [f for f in files if (root / f).is_file() and not _excluded(f, CACHE_PATTERNS)]


def source_version(root: Path) -> str:
    """``git describe``-like text for assignment.json: the commit, '+dirty' if edited."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True,  # noqa: E731
                                        text=True, check=True).stdout.strip()
        dirty = "+dirty" if run("status", "--porcelain") else ""
        return run("rev-parse", "--short", "HEAD") + dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def copied_files(source: Path) -> list[str]:
    """The files of ``source`` that go to a student copy (before stubs are added)."""
    return [f for f in source_files(source) if not _excluded(f, INSTRUCTOR_ONLY)
            and not _excluded(f, [pattern for pattern, _ in LEFT_OUT])]


def make_student_copy(source: Path, out: Path, parts, chapters, only=None,
                      record_timeout: float = 900.0) -> list:
    """Write the student copy of ``source`` to ``out``; return the regions it blanked.

    - only: names of regions to blank (None: all), e.g. to hand out one chapter at a time
    - record_timeout: seconds for the run of the reference's tests that records the
      oracles' answers (only when the copy has ``@recorded`` oracles)
    Returns the blanked regions with their lines in the copy. Raises MarkerError (a
    ValueError) naming the file and line of any bad marker, a region that would fall into
    the Numba trap, an ``only`` name that no region has, a failed recording run, or a copy
    in which a solution is still found (leaks.py); FileExistsError if ``out`` exists and is
    not empty.
    """
    from .leaks import find_leaks
    from .scoring import example_points_block

    source, out = Path(source).resolve(), Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    files = copied_files(source)
    # Never copy a student copy made inside the checkout (OUT itself, or an earlier one).
    copies = {f[:-len(METADATA)] for f in files if f.endswith("/" + METADATA)}
    if out.is_relative_to(source):
        copies.add(out.relative_to(source).as_posix() + "/")
    files = [f for f in files if not f.startswith(tuple(copies))]
    regions = scan_tree(source, files)
    unknown = set(only or ()) - {r.name for r in regions}
    if unknown:
        raise MarkerError(f"--only: no region named {', '.join(sorted(unknown))}; the regions "
                          f"are {', '.join(sorted({r.name for r in regions}))}")
    chosen = [r for r in regions if only is None or r.name in only]
    problems = numba_trap_problems(source, files, chosen)
    if problems:
        raise MarkerError("the student copy would not grade fairly:\n" + "\n".join(problems))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        blanked, oracle_files = _write_files(source, tmp, files, only)
        for rel, text in STUBS.items():
            if (source / rel).is_file():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_text(text, encoding="utf-8")
        if oracle_files:
            _record_oracles(source, tmp, files, oracle_files, record_timeout)
        _record_notebooks(source, tmp, files, record_timeout)
        guide = tmp / STUDENTS_GUIDE
        if guide.is_file():
            guide.write_text(example_points_block(guide.read_text(encoding="utf-8"), parts,
                                                  chapters), encoding="utf-8")
        present = source_files(source)
        left_out = [(pattern, why) for pattern, why in LEFT_OUT
                    if any(fnmatch.fnmatch(f, pattern) for f in present)]
        readme = (source / "README.md").read_text(encoding="utf-8") if "README.md" in files else ""
        (tmp / "README.md").write_text(
            student_readme(blanked, parts, chapters, readme, left_out, oracle_files),
            encoding="utf-8")
        meta = {"source": source_version(source),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"),
                "regions": [{"name": r.name, "file": r.path, "line": r.start, "hint": r.hint}
                            for r in blanked],
                "parts": [p.name for p in parts],
                "left_out": [{"files": pattern, "why": why} for pattern, why in left_out],
                "oracles_replayed": oracle_files}
        (tmp / METADATA).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        leaks = find_leaks(source, tmp, chosen)
        if leaks:
            raise MarkerError("the student copy would still hold solutions:\n" + "\n".join(leaks))
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return blanked


def _write_files(source: Path, dest: Path, files, only) -> tuple:
    """Copy ``files``, blanking regions, instructor-only blocks and oracle bodies.

    Returns (the blanked regions, with their lines in the copy; the files with oracles)."""
    blanked, oracle_files = [], []
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".py"):
            text = (source / rel).read_text(encoding="utf-8")
            stripped, regions = strip_regions(text, rel, only)
            stripped, _ = strip_instructor_only(stripped, rel)
            stripped, oracles = strip_oracles(stripped, rel)
            if oracles:
                oracle_files.append(rel)
            target.write_text(stripped, encoding="utf-8")
            if regions:  # where they are in the copy: each blanked region above is one line now
                blanked += [r for r in find_regions(stripped, rel) if only is None or r.name in only]
        else:
            shutil.copy2(source / rel, target)
    return blanked, oracle_files


def _is_recorded(decorator) -> bool:
    node = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(node, ast.Name) and node.id == "recorded") or (
        isinstance(node, ast.Attribute) and node.attr == "recorded")


def strip_oracles(source: str, path: str = "<string>") -> tuple[str, list]:
    """Leave out the body (after its docstring) of every function decorated ``@recorded``.

    Returns the new source and the names of those functions."""
    if "recorded" not in source:
        return source, []
    tree = ast.parse(source, filename=path)
    found = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
             and any(map(_is_recorded, node.decorator_list))]
    lines = source.splitlines(keepends=True)
    for node in sorted(found, key=lambda n: n.lineno, reverse=True):
        body = node.body
        if isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                        ast.Constant) and len(body) > 1:
            body = body[1:]  # keep the docstring
        first = body[0]
        indent = " " * first.col_offset
        stub = indent + _ORACLE_STUB.format(
            indent=indent, answers=f"{Path(path).parent.as_posix()}/{ANSWERS}")
        lines[first.lineno - 1:node.end_lineno] = [stub + "\n"]
    return "".join(lines), [node.name for node in found]


# Runs a notebook's code cells in order in one namespace, as "Run all" does (no Jupyter needed).
_RUN_NOTEBOOK = """\
import json, sys
cells = json.load(open(sys.argv[1], encoding="utf-8"))["cells"]
namespace = {"__name__": "__main__"}
for k, cell in enumerate(cells):
    if cell["cell_type"] == "code":
        exec(compile("".join(cell["source"]), f"{sys.argv[1]} cell {k}", "exec"), namespace)
"""


def _record_notebooks(source: Path, dest: Path, files, timeout) -> None:
    """Run, in the reference, each notebook that calls ``or_recorded`` and put what it
    recorded in the copy's notebooks/recorded/ (notebook.py)."""
    from .notebook import RECORD_VARIABLE, RECORDINGS

    notebooks = [rel for rel in files if rel.endswith(".ipynb")
                 and "or_recorded(" in (source / rel).read_text(encoding="utf-8")]
    if not notebooks:
        return
    with tempfile.TemporaryDirectory(prefix="minissd-notebooks-") as tmp:
        recordings, cwd = Path(tmp, "recorded"), Path(tmp, "notebooks")
        cwd.mkdir()
        env = {**os.environ, RECORD_VARIABLE: str(recordings), "MPLBACKEND": "Agg",
               "PYTHONPATH": os.pathsep.join([str(source)] + [
                   p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
        env.setdefault("MINISSD_DATA", str(Path(tmp, "data")))
        for rel in notebooks:
            try:
                run = subprocess.run([sys.executable, "-c", _RUN_NOTEBOOK, str(source / rel)],
                                     cwd=cwd, env=env, capture_output=True, text=True,
                                     timeout=timeout)
            except subprocess.TimeoutExpired:
                raise MarkerError(f"recording {rel}: it did not finish in {timeout:g} s") from None
            if run.returncode != 0:
                raise MarkerError(f"recording {rel} for the student copy: it failed in the "
                                  f"reference:\n{(run.stdout + run.stderr)[-3000:]}")
        if recordings.is_dir():
            shutil.copytree(recordings, dest / RECORDINGS, dirs_exist_ok=True)


def _record_oracles(source: Path, dest: Path, files, oracle_files, timeout) -> None:
    """Run the reference's tests that call the oracles, recording every answer, and write
    the answers beside each oracle module in the copy."""
    modules = {Path(f).stem for f in oracle_files}
    users = []
    for rel in files:
        if rel.endswith(".py") and Path(rel).name.startswith("test_"):
            text = (source / rel).read_text(encoding="utf-8")
            if any(f"import {m}" in text or f"from {m} import" in text for m in modules):
                users.append(rel)
    with tempfile.TemporaryDirectory(prefix="minissd-oracles-") as tmp:
        answers = Path(tmp, ANSWERS)
        env = {**os.environ, RECORD_VARIABLE: str(answers),
               "PYTHONPATH": os.pathsep.join([str(source)] + [
                   p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
        env.setdefault("NUMBA_ENABLE_CUDASIM", "1")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "-o", "addopts=", *users]
        try:
            run = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True,
                                 timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MarkerError(f"recording the oracles' answers: the reference's tests "
                              f"({', '.join(users)}) did not finish in {timeout:g} s") from None
        if run.returncode != 0 or not answers.is_file():
            raise MarkerError(
                "recording the oracles' answers: the reference's tests that call them failed "
                f"(exit {run.returncode}), so the student copy would lack answers; fix them "
                f"first:\n{(run.stdout + run.stderr)[-3000:]}")
        for rel in oracle_files:
            shutil.copy2(answers, dest / Path(rel).parent / ANSWERS)


def student_readme(regions, parts, chapters, project_readme: str, left_out=(),
                   oracle_files=()) -> str:
    """The README of the student copy: how to work, what to write, then the project's README.

    ``regions`` are the blanked regions with their lines in the copy; the points come from
    ``parts``, so nothing in it is typed by hand. ``left_out``: the (pattern, why) of LEFT_OUT
    that matched files; ``oracle_files``: the files whose ``@recorded`` oracles are replayed."""
    by_name = {}
    for r in regions:
        by_name.setdefault(r.name, []).append(r)
    rows = []
    for part in parts:
        where = [f"`{r.path}:{r.start}` `{r.function}`" for n in part.regions
                 for r in by_name.get(n, [])]
        if where:
            chapter = f"{part.chapter} {chapters.get(part.chapter, '')}".strip()
            rows.append(f"| {chapter} | `{part.name}`: {part.title} | {part.points:g} | "
                        f"{'<br>'.join(where)} |")
    total = sum(p.points for p in parts if any(n in by_name for n in p.regions))
    table = "\n".join(rows) if rows else "| | (no region is blanked in this copy) | | |"
    first = next((p.name for p in parts if any(n in by_name for n in p.regions)), "iou")
    left_out = [f"- `{pattern}`: {why}" for pattern, why in left_out]
    left_out += [f"- the bodies of the oracles of graded functions in `{rel}` (slow plain-Python "
                 f"versions): the tests' calls are answered from `{Path(rel).parent.as_posix()}/"
                 f"{ANSWERS}`, recorded from the instructor's copy" for rel in oracle_files]
    left_out = ("\n\nLeft out of this copy, because they hold other copies of the solutions:\n\n"
                + "\n".join(left_out)) if left_out else ""
    return f"""# minissd: course assignments

This is the student copy of minissd. The key functions of SSD are blank: each one raises
`NotImplementedError` with a hint until you write its body, between the markers
`# [assignment NAME] hint` and `# [/assignment]`. The tests grade your work: `pytest` ends
with your points per chapter and a total. docs/students.md tells you more.

```
pip install -e ".[test]"                                 # once
pytest                                                   # every test; the last lines are your points
pytest --part {first:<38}  # only the tests of one part
python -m minissd.assignments grade . --json results.json   # what the grader will give you
```

In a notebook, `from minissd.assignments import check_part; check_part("{first}")` runs one
part's graded tests and shows its points and first failure.

## What to write ({total:g} points)

| chapter | part | points | where |
|---|---|---|---|
{table}

Work in chapter order: each chapter's notebook (notebooks/) runs once the parts of the
chapters up to its own are written, and says which part it waits for otherwise. Each part is
graded on its own (its tests use stored inputs, not your other functions), but the ungraded
tests (data, notebooks, training) use your functions, so some of them fail until your code
is done; that costs no points.{left_out}

---

{project_readme}"""
