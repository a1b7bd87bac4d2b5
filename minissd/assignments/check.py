"""Checks that a set of marked regions makes a student copy that grades fairly.

- The Numba trap: blanking the body of a Numba-compiled function still compiles (numba types
  ``raise`` fine), but a compiled *caller* that uses its result then fails to compile with a
  TypingError that says nothing about the hint. So a region may sit in a compiled function
  only if no other compiled function calls it; put it in the plain-Python function the tests
  call instead. Found statically here, from the source, before any copy is written.
- The parts table: every region belongs to a part, every part's regions exist and its test
  files are there.
Each check returns a list of problems (strings naming file and line); empty means fine.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .scoring import test_files

JIT_NAMES = {"njit", "jit", "generated_jit", "vectorize", "guvectorize", "stencil", "cfunc"}


def _jit_name(node) -> str | None:
    """'njit' for ``njit``, ``numba.njit``, ``njit(cache=True)``, ``cuda.jit(device=True)``."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        if node.attr == "jit" and node.value.id == "cuda":
            return "cuda.jit"
        if node.value.id in ("numba", "nb") and node.attr in JIT_NAMES:
            return node.attr
        return None
    if isinstance(node, ast.Name) and node.id in JIT_NAMES:
        return node.id
    return None


def _referenced_name(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


class _Compiled:
    """What Numba compiles in a set of files.

    - decorated: function name -> (file, line, how) for ``@njit``-style decorated defs
    - aliases: compiled name -> plain function name, for ``fast = njit(...)(plain)``
    - bodies: (file, line, function name, names referenced in its body) for every compiled def
    """

    def __init__(self, root: Path, files):
        self.decorated, self.aliases, self.bodies, defs = {}, {}, [], {}
        for rel in files:
            if not str(rel).endswith(".py"):
                continue
            source = (Path(root) / rel).read_text(encoding="utf-8")
            try:
                tree = ast.parse(source, filename=str(rel))
            except SyntaxError:
                continue  # not ours to judge here; find_regions reports it if it has markers
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    defs.setdefault(node.name, []).append((str(rel), node))
                    how = next(filter(None, map(_jit_name, node.decorator_list)), None)
                    if how:
                        self.decorated[node.name] = (str(rel), node.lineno, how)
                elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                    call = node.value  # njit(f), njit(cache=True)(f), cuda.jit(device=True)(f)
                    if _jit_name(call.func) and call.args:
                        plain = _referenced_name(call.args[0])
                        for target in node.targets:
                            if plain and isinstance(target, ast.Name):
                                self.aliases[target.id] = plain
        compiled_defs = set(self.decorated) | set(self.aliases.values())
        for name in compiled_defs:
            for rel, node in defs.get(name, []):
                used = {_referenced_name(n) for n in ast.walk(node) if n is not node}
                self.bodies.append((rel, node.lineno, name, used - {None, name}))

    def names_of(self, function: str) -> set:
        """The names under which compiled code can call ``function`` (empty: not compiled)."""
        names = {alias for alias, plain in self.aliases.items() if plain == function}
        return names | ({function} if function in self.decorated else set())


def numba_trap_problems(root: Path, files, regions) -> list:
    """Regions in compiled functions that other compiled functions call."""
    compiled, problems = _Compiled(root, files), []
    for r in regions:
        names = compiled.names_of(r.function)
        for rel, line, caller, used in compiled.bodies:
            called = names & used
            if called and caller != r.function:
                problems.append(
                    f"{r.where}: region '{r.name}' is in `{r.function}`, which Numba compiles, "
                    f"and the compiled `{caller}` ({rel}:{line}) calls it as "
                    f"`{sorted(called)[0]}`: in the student copy `{caller}` would fail to compile "
                    "with a TypingError instead of showing the hint. Move the region into the "
                    f"plain-Python function that calls `{caller}` (the one the tests call), or "
                    f"keep `{r.function}` out of compiled callers.")
    return problems


def parts_problems(root: Path, regions, parts) -> list:
    """Regions without a part, parts naming missing regions, parts without test files."""
    problems, names = [], {r.name for r in regions}
    graded = {name for part in parts for name in part.regions}
    for r in regions:
        if r.name not in graded:
            problems.append(f"{r.where}: region '{r.name}' belongs to no part in the parts table")
    for part in parts:
        for name in part.regions:
            if name not in names:
                problems.append(f"part '{part.name}': no region named '{name}' in the code")
        for pattern in test_files(part):
            if not any(Path(root).glob(pattern)):
                problems.append(f"part '{part.name}': no test file matches '{pattern}'")
    seen = set()
    for part in parts:
        if part.name in seen:
            problems.append(f"part '{part.name}' appears twice in the parts table")
        seen.add(part.name)
    return problems
