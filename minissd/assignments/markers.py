"""Find, check and blank out the solution regions marked in the reference code.

- A region starts with a comment line ``# [assignment NAME] hint for the student`` and ends
  with a comment line ``# [/assignment]`` at the same indentation, both inside a function.
- Only real comments count (found with ``tokenize``): the same text inside a docstring or a
  string is left alone, so documentation can show the syntax.
- ``strip_regions`` keeps both marker lines (the student sees where to write) and replaces the
  lines between them with ``raise NotImplementedError("[assignment NAME] hint")`` at the
  marker's indentation, so an unfinished function fails with its hint.

Any marker that is malformed, nested, unclosed, stray, empty, outside a function or that
leaves code that no longer compiles raises ``MarkerError`` naming the file and line.
"""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path

from ..errors import MinissdError

OPEN = re.compile(r"^# \[assignment ([A-Za-z_][A-Za-z0-9_]*)\](.*)$")
CLOSE = re.compile(r"^# \[/assignment\]\s*$")
SYNTAX = "'# [assignment NAME] hint' ... '# [/assignment]', NAME a Python identifier"


class MarkerError(MinissdError):
    """A marker that cannot be used; the message names the file and line (a ValueError)."""


@dataclass(frozen=True)
class Region:
    """One marked solution region.

    - name: the assignment name after ``[assignment``
    - hint: the text after the name (shown to the student)
    - path: the file, as given to ``find_regions``
    - start, end: 1-based line numbers of the opening and closing markers
    - indent: the whitespace before the opening marker (the ``raise`` gets the same)
    - function: the name of the innermost function that holds the region
    """

    name: str
    hint: str
    path: str
    start: int
    end: int
    indent: str
    function: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.start}"

    def stub(self) -> str:
        """The line that replaces the solution: a raise carrying the hint."""
        message = json.dumps(f"[assignment {self.name}] {self.hint}", ensure_ascii=False)
        return f"{self.indent}raise NotImplementedError({message})\n"


def _comments(source: str, path: str):
    """Yield (line number, column, text) of every comment that is alone on its line."""
    lines = source.splitlines()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                row, col = tok.start
                if lines[row - 1][:col].strip() == "":
                    yield row, col, tok.string
    except (tokenize.TokenError, SyntaxError) as err:
        raise MarkerError(f"{path}: cannot read the file as Python: {err}") from None


def _functions(tree: ast.AST):
    """(line of the def, last line of code, column of the def, name) of every function."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.lineno, node.end_lineno, node.col_offset, node.name


def _first_code_line(lines, start, end):
    """The first line strictly between ``start`` and ``end`` (1-based) that is code."""
    for row in range(start + 1, end):
        text = lines[row - 1].strip()
        if text and not text.startswith("#"):
            return row
    return None


def find_regions(source: str, path: str = "<string>") -> list[Region]:
    """Every marked region of one Python source, in file order; MarkerError if any is bad."""
    if "[assignment" not in source and "[/assignment" not in source:
        return []  # the common case: no markers, no parsing
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as err:
        raise MarkerError(f"{path}:{err.lineno}: not valid Python: {err.msg}") from None
    functions = list(_functions(tree))
    lines = source.splitlines()
    regions, opened = [], None  # opened: (line, col, name, hint) of the region being read
    for row, col, text in _comments(source, path):
        if "[assignment" not in text and "[/assignment" not in text:
            continue
        where = f"{path}:{row}"
        if m := OPEN.match(text):
            if opened:
                raise MarkerError(f"{where}: region '{m[1]}' opens inside region "
                                  f"'{opened[2]}' opened at line {opened[0]}; regions cannot nest")
            hint = m[2].strip()
            if not hint:
                raise MarkerError(f"{where}: region '{m[1]}' has no hint after the name; "
                                  "write what the student should implement")
            opened = (row, col, m[1], hint)
        elif CLOSE.match(text):
            if not opened:
                raise MarkerError(f"{where}: '# [/assignment]' without an opening marker")
            start, start_col, name, hint = opened
            if col != start_col:
                raise MarkerError(f"{where}: '# [/assignment]' is indented {col} columns but "
                                  f"region '{name}' opened at line {start} with {start_col}")
            code = _first_code_line(lines, start, row)
            if code is None:
                raise MarkerError(f"{where}: region '{name}' (line {start}) holds no code")
            inside = [f for f in functions if f[0] < start and code <= f[1] and f[2] < col]
            if not inside:
                raise MarkerError(f"{path}:{start}: region '{name}' is not inside a function "
                                  "body (the stub would raise when the module is imported)")
            function = max(inside, key=lambda f: f[0])[3]  # innermost: the latest def
            indent = lines[start - 1][:start_col]
            regions.append(Region(name, hint, path, start, row, indent, function))
            opened = None
        else:
            raise MarkerError(f"{where}: malformed assignment marker {text!r}; "
                              f"expected {SYNTAX}")
    if opened:
        raise MarkerError(f"{path}:{opened[0]}: region '{opened[2]}' is never closed "
                          "with '# [/assignment]'")
    return regions


def strip_regions(source: str, path: str = "<string>", only=None) -> tuple[str, list[Region]]:
    """Replace the solution lines of each region by a raise with its hint.

    - only: names of the regions to blank out (None: all); the others keep their solution.
    Returns the new source and the regions that were blanked. The result is compiled, so a
    region placed where a lone ``raise`` is not valid Python is reported here.
    """
    regions = [r for r in find_regions(source, path) if only is None or r.name in only]
    if not regions:
        return source, []
    lines = source.splitlines(keepends=True)
    for r in reversed(regions):  # from the bottom up, so line numbers above stay valid
        lines[r.start:r.end - 1] = [r.stub()]
    stripped = "".join(lines)
    try:
        compile(stripped, path, "exec")
    except SyntaxError as err:
        raise MarkerError(f"{path}:{err.lineno}: blanking the regions leaves invalid Python "
                          f"({err.msg}); check the markers around that line") from None
    return stripped, regions


# Lines the student copy leaves out entirely, at any level (a test of the tests, a wrong
# implementation that is one character away from the solution): see strip_instructor_only.
ONLY_OPEN = re.compile(r"^# \[instructor-only\](.*)$")
ONLY_CLOSE = re.compile(r"^# \[/instructor-only\]\s*$")


def strip_instructor_only(source: str, path: str = "<string>") -> tuple[str, list]:
    """Remove every ``[instructor-only]`` block, markers included. A block is::

        # [instructor-only] why it is left out
        ...lines, at any level...
        # [/instructor-only]


    Each block becomes one comment line at its indentation, ``# (N lines left out of the
    student copy: why)``. Returns the new source and (first line, last line, why) of each
    block, 1-based, in the reference file. MarkerError for a block without a reason, nested,
    unclosed, closed at another indentation, or whose removal leaves invalid Python.
    """
    if "[instructor-only]" not in source and "[/instructor-only]" not in source:
        return source, []
    blocks, opened = [], None
    for row, col, text in _comments(source, path):
        if "instructor-only]" not in text:
            continue
        where = f"{path}:{row}"
        if m := ONLY_OPEN.match(text):
            if opened:
                raise MarkerError(f"{where}: an [instructor-only] block opens inside the one "
                                  f"opened at line {opened[0]}; blocks cannot nest")
            if not m[1].strip():
                raise MarkerError(f"{where}: [instructor-only] needs a reason after it "
                                  "(it is shown in the student copy)")
            opened = (row, col, m[1].strip())
        elif ONLY_CLOSE.match(text):
            if not opened:
                raise MarkerError(f"{where}: '# [/instructor-only]' without an opening marker")
            if col != opened[1]:
                raise MarkerError(f"{where}: '# [/instructor-only]' is indented {col} columns "
                                  f"but the block opened at line {opened[0]} with {opened[1]}")
            blocks.append((opened[0], row, opened[2]))
            opened = None
        else:
            raise MarkerError(f"{where}: malformed marker {text!r}; expected "
                              "'# [instructor-only] why' ... '# [/instructor-only]'")
    if opened:
        raise MarkerError(f"{path}:{opened[0]}: [instructor-only] block never closed")
    lines = source.splitlines(keepends=True)
    for start, end, why in reversed(blocks):
        indent = lines[start - 1][:len(lines[start - 1]) - len(lines[start - 1].lstrip())]
        lines[start - 1:end] = [f"{indent}# ({end - start - 1} lines left out of the student "
                                f"copy: {why})\n"]
    stripped = "".join(lines)
    try:
        compile(stripped, path, "exec")
    except SyntaxError as err:
        raise MarkerError(f"{path}:{err.lineno}: leaving out the [instructor-only] blocks "
                          f"leaves invalid Python ({err.msg})") from None
    return stripped, blocks


def scan_tree(root: Path, files) -> list[Region]:
    """The regions of every ``.py`` file in ``files`` (paths relative to ``root``)."""
    regions = []
    for rel in files:
        if str(rel).endswith(".py"):
            text = (Path(root) / rel).read_text(encoding="utf-8")
            regions += find_regions(text, str(rel))
    return regions
