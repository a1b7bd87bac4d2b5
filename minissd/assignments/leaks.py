"""Find what is left of the solutions in a student copy.

``find_leaks(reference, copy, regions)`` returns one line per problem (empty: none found):

- the body of a blanked region, found in a file of the copy: half or more of its distinctive
  lines (code lines of 12 characters or more once whitespace and comments are dropped, that
  its own file does not show outside the regions anyway) in one file, the region's own file
  included (a region that was not blanked). A region of a single distinctive line counts
  only if that line has 30 characters or more;
- a twin: a function in the copy, outside the region's own file, with the same parameters
  (3 or more, ``self`` aside) as the function that holds a blanked region, and a body that
  does more than raise (the GPU twins and the wrong implementations in the tests had them);
- a file the copy should leave out (student.LEFT_OUT) other than its stub;
- an oracle decorated ``@recorded`` whose body is still there.

It compares text, so it finds copies and near copies, not a solution rewritten from scratch;
the copies it knows of are listed in docs/instructors.md ("What the student copy leaves out").
"""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path

TEXT_SUFFIXES = {".py", ".md", ".ipynb", ".txt", ".rst", ".sh", ".cfg", ".toml"}
MIN_LINE = 12  # shorter lines (`return out`, `for i in range(n):`) are everywhere
MIN_SINGLE = 30  # a region with one distinctive line: that line must be this long to count
MIN_PARAMS = 3


def _normal(line: str) -> str:
    """A line without whitespace and without a trailing comment (roughly: `#` after a space)."""
    line = line.strip()
    if line.startswith("#"):
        return ""
    line = re.split(r"\s#\s", line, maxsplit=1)[0]
    return re.sub(r"\s+", "", line)


def _lines(text: str) -> set:
    return {n for n in map(_normal, text.splitlines()) if n}


def _text(path: Path) -> str | None:
    if path.suffix not in TEXT_SUFFIXES:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    if path.suffix == ".ipynb":
        try:
            cells = json.loads(text)["cells"]
            return "\n".join("".join(c.get("source", [])) for c in cells)
        except (ValueError, KeyError, TypeError):
            return text
    return text


def _region_body(reference: Path, region) -> list:
    lines = (reference / region.path).read_text(encoding="utf-8").splitlines()
    return lines[region.start:region.end - 1]


def _outside_regions(reference: Path, path: str, regions) -> set:
    """Normalised lines of a reference file outside every region of it."""
    lines = (reference / path).read_text(encoding="utf-8").splitlines()
    inside = {k for r in regions if r.path == path for k in range(r.start - 1, r.end)}
    return _lines("\n".join(line for k, line in enumerate(lines) if k not in inside))


def _params(node) -> tuple:
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return tuple(n for n in names if n not in ("self", "cls"))


def _does_something(node) -> bool:
    """More than a docstring and a raise/pass/...: a body that computes."""
    body = [s for s in node.body if not (isinstance(s, ast.Expr) and
                                         isinstance(s.value, ast.Constant))]
    return any(not isinstance(s, (ast.Raise, ast.Pass)) for s in body)


def _functions(tree):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def find_leaks(reference, copy, regions) -> list:
    """Problems of the copy at ``copy`` (see the module docstring); ``regions``: the regions
    of ``reference`` that the copy blanks."""
    from .student import LEFT_OUT, STUBS, _is_recorded, _excluded

    reference, copy = Path(reference), Path(copy)
    files = sorted(p for p in copy.rglob("*") if p.is_file())
    texts = {p.relative_to(copy).as_posix(): t for p in files if (t := _text(p)) is not None}
    line_sets = {rel: _lines(t) for rel, t in texts.items()}
    trees = {}
    for rel, t in texts.items():
        if rel.endswith(".py"):
            try:
                trees[rel] = ast.parse(t)
            except SyntaxError:
                pass
    problems = []

    shown = {}  # file -> lines it shows outside the regions
    for r in regions:
        if r.path not in shown:
            shown[r.path] = _outside_regions(reference, r.path, regions)
        body = [n for n in map(_normal, _region_body(reference, r)) if len(n) >= MIN_LINE]
        body = [n for n in dict.fromkeys(body) if n not in shown[r.path]]
        if not body or (len(body) == 1 and len(body[0]) < MIN_SINGLE):
            continue
        need = max(1, math.ceil(len(body) / 2))
        for rel, lines in line_sets.items():
            found = [n for n in body if n in lines]
            if len(found) >= need:
                problems.append(f"{rel}: holds {len(found)} of the {len(body)} distinctive lines "
                                f"of region '{r.name}' ({r.where}), e.g. {found[0]!r}")

    holders = {}  # parameters -> (region, its file) for the functions holding regions
    for r in regions:
        tree = ast.parse((reference / r.path).read_text(encoding="utf-8"))
        for node in _functions(tree):
            if node.name == r.function and node.lineno < r.start <= node.end_lineno:
                params = _params(node)
                if len(params) >= MIN_PARAMS:
                    holders.setdefault(params, []).append(r)
    for rel, tree in trees.items():
        for node in _functions(tree):
            for r in holders.get(_params(node), []):
                if rel != r.path and _does_something(node):
                    problems.append(
                        f"{rel}:{node.lineno}: `{node.name}` takes the parameters of "
                        f"`{r.function}` ({r.where}, region '{r.name}') and computes: a twin "
                        "or a near copy of the solution? Leave it out of the copy (LEFT_OUT or "
                        "an [instructor-only] block)")

    for rel in texts.keys() | {p.relative_to(copy).as_posix() for p in files}:
        if _excluded(rel, [pattern for pattern, _ in LEFT_OUT]) and rel not in STUBS:
            problems.append(f"{rel}: should be left out of the student copy")
    for rel, tree in trees.items():
        for node in _functions(tree):
            if any(map(_is_recorded, node.decorator_list)) and _does_something(node):
                problems.append(f"{rel}:{node.lineno}: the body of the oracle `{node.name}` "
                                "is still there")
    return sorted(set(problems))
