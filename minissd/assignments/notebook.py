"""What the chapter notebooks call, so that a student sees their own code tested inline.

- ``check_part("iou")`` runs that part's graded tests on this copy (a fresh pytest process,
  as the grader does) and prints the points and the first failure. If the part is still
  blank, it stops the notebook with a one-line message instead (see ``PartNotDone``).
- ``needs("iou", "default_boxes")`` at the top of a notebook: stops it with a message naming
  the parts of earlier chapters that are still blank, before a cell fails on one of them.
- ``or_recorded(name, compute, needs)``: ``compute()`` when the parts in ``needs`` are
  written; before that, the result the reference gave, recorded when the student copy was
  made (``notebooks/recorded/NAME.npz``). A notebook that shows something a later chapter
  computes (chapter 4 trains the network of chapters 5 and 6 for a few steps) runs to the
  end this way in chapter order, and uses the student's own code once it exists.

A part is *blank* while one of its regions still holds only the ``raise NotImplementedError``
that the student copy put there (read from the source files, so it costs no test run).
In the reference checkout every part is written, and these helpers run the real code.

Jupyter shows a ``PartNotDone`` as its message alone, without a traceback (IPython's
``_render_traceback_``), and "Run all" stops there: the cells below it would fail on the
blank function anyway.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import minissd

from . import oracles
from .markers import MarkerError, find_regions

RECORDINGS = "notebooks/recorded"  # in the student copy: what or_recorded falls back to
RECORD_VARIABLE = "MINISSD_RECORD_NOTEBOOKS"  # set by the student command: save every result


class PartNotDone(Exception):
    """A part that a notebook needs is still blank; the message says where to write it."""

    def _render_traceback_(self):  # IPython shows these lines instead of a traceback
        return ["\x1b[1;33m" + line + "\x1b[0m" for line in str(self).splitlines()]


def root() -> Path:
    """The checkout whose minissd is imported (the student copy, or the reference)."""
    return Path(minissd.__file__).resolve().parent.parent


def _table():
    from .parts import CHAPTERS, PARTS

    return PARTS, CHAPTERS


def _part(name):
    parts, _ = _table()
    for part in parts:
        if part.name == name:
            return part
    raise ValueError(f"no graded part named {name!r}; the parts are "
                     f"{', '.join(p.name for p in parts)}")


_regions_cache: dict = {}  # path -> (mtime, regions)


def _all_regions() -> list:
    """The regions of the package's files as they are now (re-read when a file changed)."""
    found = []
    for path in sorted((root() / "minissd").rglob("*.py")):
        mtime = path.stat().st_mtime_ns
        cached = _regions_cache.get(path)
        if cached is None or cached[0] != mtime:
            text = path.read_text(encoding="utf-8")
            try:
                regions = find_regions(text, path.relative_to(root()).as_posix())
            except MarkerError:
                regions = []  # markers edited away: the tests will tell
            lines = text.splitlines()
            cached = (mtime, [(r, [ln.strip() for ln in lines[r.start:r.end - 1]]) for r in regions])
            _regions_cache[path] = cached
        found += cached[1]
    return found


def blank_regions(name) -> list:
    """The regions of part ``name`` that still hold only their ``raise`` (empty: written)."""
    part = _part(name)
    return [r for r, body in _all_regions() if r.name in part.regions and
            [line for line in body if line and not line.startswith("#")] == [r.stub().strip()]]


def written(*names) -> bool:
    """True when no region of these parts is blank."""
    return not any(blank_regions(name) for name in names)


def _where(name) -> str:
    part = _part(name)
    _, chapters = _table()
    places = ", ".join(f"{r.path}:{r.start} `{r.function}`" for r in blank_regions(name))
    return (f"`{name}` ({part.title}, chapter {part.chapter} "
            f"{chapters.get(part.chapter, '')}): write {places}")


def needs(*names) -> None:
    """Stop with a PartNotDone naming every part of ``names`` that is still blank."""
    missing = [name for name in names if not written(name)]
    if missing:
        raise PartNotDone("This notebook waits for " + ("this part" if len(missing) == 1 else
                          "these parts") + ", still blank in your copy:\n"
                          + "\n".join(f"  {_where(name)}" for name in missing)
                          + "\nThen run the notebook again (Kernel > Restart & Run All).")


def check_part(name, *, timeout: float = 600.0):
    """Run the graded tests of part ``name`` on this copy; print its points and first failure.

    Returns the part's PartScore (scoring.py). Stops with PartNotDone while the part is
    blank. The tests run in a fresh process, so they see the file as it is now; the
    notebook's own imports are from when its kernel started (restart it to use new code).
    """
    from .grade import run_graded_tests
    from .scoring import score_parts

    part = _part(name)
    if not written(name):
        raise PartNotDone(f"Not written yet: {_where(name)}.\nThen run this cell again.")
    start = time.perf_counter()
    run = run_graded_tests(root(), [part], timeout=timeout)
    (score,) = score_parts([part], run.outcomes, run.collection_errors)
    seconds = time.perf_counter() - start
    print(f"{name}: {score.score:g} / {score.max_score:g} points ({score.passed} of "
          f"{score.run} graded tests passed, {seconds:.0f} s)")
    failures = score.lines[1:] if not score.broken else score.lines[:score.broken]
    if failures:
        print(f"first failure: {failures[0]}")
        if len(failures) > 1:
            print(f"({len(failures) - 1} more: pytest --part {name} shows them all)")
    if run.stopped:
        print(f"the run did not finish: {run.stopped}")
    return score


def or_recorded(name: str, compute, needs_parts=()):
    """``compute()`` once the parts in ``needs_parts`` are written, else the reference's result.

    - name: the recording's name (``notebooks/recorded/NAME.npz`` in the student copy)
    - compute: a function of no arguments returning arrays, numbers, or tuples, lists and
      dicts of them
    The student command runs the notebook in the reference with ``$MINISSD_RECORD_NOTEBOOKS``
    set, which saves each result under its name; a copy without the recording (or one made
    before this cell existed) stops with PartNotDone naming the parts instead.
    """
    missing = [part for part in needs_parts if not written(part)]
    if not missing:
        value = compute()
        target = os.environ.get(RECORD_VARIABLE)
        if target:
            arrays = {}
            Path(target).mkdir(parents=True, exist_ok=True)
            oracles.save(Path(target) / f"{name}.npz", oracles.encode(value, arrays), arrays)
        return value
    path = root() / RECORDINGS / f"{name}.npz"
    if not path.is_file():
        needs(*missing)
    print(f"({', '.join(missing)}: not written yet, so this cell uses what the reference code "
          "computed here, recorded when your copy was made; run it again once they are.)")
    index, arrays = oracles.load(path)
    return oracles.decode(index, arrays)
