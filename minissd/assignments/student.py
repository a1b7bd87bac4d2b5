"""Write the student copy: the whole repository with every marked region blanked.

The copy holds what git shows in the source repository (tracked files plus new files that
are not ignored), read from the working tree, minus build and cache files (``__pycache__``,
Numba's ``*.nbi``/``*.nbc`` caches, which would otherwise hand out compiled solutions) and
minus the instructor-only files below. It gets a README for students and an
``assignment.json`` that records what it was made from. It is written to a temporary folder
beside OUT and renamed at the end, so a copy that exists is complete.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .check import numba_trap_problems
from .markers import MarkerError, scan_tree, strip_regions

# Never copied: build outputs and caches.
CACHE_PATTERNS = ("*/__pycache__/*", "__pycache__/*", "*.pyc", "*.nbi", "*.nbc",
                  "*/.ipynb_checkpoints/*", "*.egg-info/*", ".pytest_cache/*", ".git/*")
# Kept from students: the tests of this tool, the wrong answers it grades, the instructor guide.
INSTRUCTOR_ONLY = ("tests/test_assignments*.py", "tests/assignment_mistakes/*",
                   "docs/instructors.md")
METADATA = "assignment.json"


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


def make_student_copy(source: Path, out: Path, parts, chapters, only=None) -> list:
    """Write the student copy of ``source`` to ``out``; return the regions it blanked.

    - only: names of regions to blank (None: all), e.g. to hand out one chapter at a time
    Raises MarkerError (a ValueError) naming the file and line of any bad marker, a region
    that would fall into the Numba trap, or an ``only`` name that no region has; FileExistsError
    if ``out`` exists and is not empty.
    """
    source, out = Path(source).resolve(), Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    files = [f for f in source_files(source) if not _excluded(f, INSTRUCTOR_ONLY)]
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
        blanked = _write_files(source, tmp, files, only)
        readme = (source / "README.md").read_text(encoding="utf-8") if "README.md" in files else ""
        (tmp / "README.md").write_text(student_readme(blanked, parts, chapters, readme),
                                       encoding="utf-8")
        meta = {"source": source_version(source),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"),
                "regions": [{"name": r.name, "file": r.path, "line": r.start, "hint": r.hint}
                            for r in blanked],
                "parts": [p.name for p in parts]}
        (tmp / METADATA).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return blanked


def _write_files(source: Path, dest: Path, files, only) -> list:
    blanked = []
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".py"):
            text = (source / rel).read_text(encoding="utf-8")
            stripped, regions = strip_regions(text, rel, only)
            target.write_text(stripped, encoding="utf-8")
            blanked += regions
        else:
            shutil.copy2(source / rel, target)
    return blanked


def student_readme(regions, parts, chapters, project_readme: str) -> str:
    """The README of the student copy: how to work, what to write, then the project's README."""
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
    return f"""# minissd: course assignments

This is the student copy of minissd. The key functions of SSD are blank: each one raises
`NotImplementedError` with a hint until you write its body, between the markers
`# [assignment NAME] hint` and `# [/assignment]`. The tests grade your work: `pytest` ends
with your points per chapter and a total. docs/students.md tells you more.

```
pip install -e ".[test]"                                 # once
pytest                                                   # every test, then the points table
pytest --part iou                                        # only the tests of one part
python -m minissd.assignments grade . --json results.json   # what the grader will give you
```

## What to write ({total:g} points)

| chapter | part | points | where |
|---|---|---|---|
{table}

Work in chapter order: later parts call earlier ones (`match` uses your `iou` and `encode`).
Tests that are not graded (data, notebooks, CUDA twins, training) also use these functions,
so some of them fail until your code is done; that costs no points.

---

{project_readme}"""
