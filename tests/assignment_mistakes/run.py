"""Grade each mistake's part with the wrong answer swapped in, all in one process.

    cd REPO && PYTHONPATH=tests python -m assignment_mistakes.run [-x] [--part A,B] [--elsewhere] OUT.json

For each row of MISTAKES: swap the wrong answer in (it must take the reference's
arguments), run the part's graded tests with ``pytest.main`` (``--part``; ``-x`` stops at
the first failure, which is enough to show that points are lost; ``--part`` runs only the
mistakes of those parts), swap the reference back. ``--elsewhere`` also grades, for each
mistake, every other part whose tests reach the mistaken function (found in one watched run
of all graded tests): a mistake must cost points in its own part only.
Each result says whether a test caught the mistake with an assertion (rather than, say, a
TypeError from a wrong answer that no longer fits the code).
One process for all of them: Python, NumPy, Numba and the compiled functions load once.

The swap replaces the reference in every loaded module that holds it (the module that
defines it, modules that imported it by name, test modules imported under an earlier
mistake) and undoes exactly that afterwards, so the runs do not leak into each other.
"""

import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")  # as tests/conftest.py, before numba loads

import contextlib  # noqa: E402
import importlib  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

from assignment_mistakes import MISTAKES  # noqa: E402
from minissd.assignments.parts import PARTS  # noqa: E402
from minissd.assignments.scoring import part_matcher, score_parts, test_files  # noqa: E402


def _resolve(spec):
    """The object "module:name" or "module:Class.method" names."""
    module, _, name = spec.partition(":")
    obj = importlib.import_module(module)
    for attr in name.split("."):
        obj = getattr(obj, attr)
    return obj


def _holders(obj):
    """(module dict, name) of every global bound to ``obj``, outside this package."""
    for mod_name, module in list(sys.modules.items()):
        if mod_name.startswith("assignment_mistakes") or not hasattr(module, "__dict__"):
            continue
        for key, value in list(vars(module).items()):
            if value is obj:
                yield vars(module), key


@contextlib.contextmanager
def swapped(target, wrong):
    """Bind ``wrong`` wherever ``target`` ("module:name") is bound, then bind it back."""
    original, replacement = _resolve(target), _resolve("assignment_mistakes." + wrong)
    if list(inspect.signature(original).parameters) != list(inspect.signature(replacement).parameters):
        raise TypeError(f"{wrong} no longer takes the arguments of {target} "
                        f"{inspect.signature(original)}: update the wrong answer")
    if "." in target.partition(":")[2]:  # a method: it lives on its class, not in a module
        owner, method = _resolve(target.rpartition(".")[0]), target.rpartition(".")[2]
        setattr(owner, method, replacement)
        try:
            yield
        finally:
            setattr(owner, method, original)
        return
    for namespace, key in list(_holders(original)):
        namespace[key] = replacement
    try:
        yield
    finally:
        for namespace, key in list(_holders(replacement)):  # includes modules imported meanwhile
            namespace[key] = original


@contextlib.contextmanager
def watched(targets, calls):
    """Wrap every reference in ``targets`` so that ``calls[target]`` collects the node ids of
    the tests that call it (directly or through other code); unwrap afterwards."""
    undo = []
    for target in targets:
        original = _resolve(target)

        def wrapper(*args, _original=original, _target=target, **kwargs):
            calls.setdefault(_target, set()).add(os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0])
            return _original(*args, **kwargs)

        if "." in target.partition(":")[2]:
            owner, method = _resolve(target.rpartition(".")[0]), target.rpartition(".")[2]
            setattr(owner, method, wrapper)
            undo.append(lambda owner=owner, method=method, original=original: setattr(owner, method, original))
        else:
            for namespace, key in list(_holders(original)):
                namespace[key] = wrapper
            undo.append(lambda original=original, wrapper=wrapper: [
                namespace.__setitem__(key, original) for namespace, key in list(_holders(wrapper))])
    try:
        yield
    finally:
        for step in reversed(undo):
            step()


def _run_parts(parts, extra=()):
    """Run the graded tests of ``parts`` (in this process); their outcomes."""
    recorder = _Outcomes()
    files = sorted({f for part in parts for f in test_files(part)})
    args = [*files, *[a for part in parts for a in ("--part", part.name)], "-q", "-p",
            "no:cacheprovider", "--no-points", *extra]
    pytest.main(args, plugins=[recorder])
    return recorder.outcomes


def charged_elsewhere(mistakes, parts):
    """Does a mistake cost points in another part than its own?

    One run of every part's graded tests with each mistaken function watched finds the
    parts whose tests reach it (the others cannot be touched by it); then each mistake is
    graded in those parts. Returns {mistake: {part: score}} for every part it reached,
    its own excluded, and prints the parts that lost points.
    """
    calls = {}
    with watched(sorted({target for _, target, _ in mistakes}), calls):
        _run_parts(list(parts.values()))
    out = {}
    for own, target, wrong in mistakes:
        if not any(part_matcher(parts[own])(node) for node in calls.get(target, ())):
            # its own part's tests call it (they catch the mistake): the watch must see that
            raise RuntimeError(f"the watched run saw no test of '{own}' call {target}")
        reached = [part for name, part in parts.items() if name != own
                   and any(part_matcher(part)(node) for node in calls.get(target, ()))]
        out[wrong] = {}
        if not reached:
            continue
        with swapped(target, wrong):
            outcomes = _run_parts(reached)
        for score in score_parts(reached, outcomes):
            out[wrong][score.part.name] = score.score
            if score.score < score.max_score:
                print(f"{wrong} ({own}) also costs points in {score.part.name}: "
                      f"{score.score:g} / {score.max_score:g}")
    return out


class _Outcomes:
    """Takes the graded tests' outcomes from minissd's points plugin at the end of a run."""

    outcomes = {}

    def pytest_sessionfinish(self, session):
        points = session.config.pluginmanager.get_plugin("minissd-assignment-points")
        self.outcomes = dict(points.outcomes)


def main(argv):
    parts = {part.name: part for part in PARTS}
    only = argv[argv.index("--part") + 1].split(",") if "--part" in argv else None
    results = []
    for part_name, target, wrong in MISTAKES:
        if only and part_name not in only:
            continue
        part, recorder = parts[part_name], _Outcomes()
        args = [*test_files(part), "--part", part_name, "-q", "-p", "no:cacheprovider",
                "--no-points", *(["-x"] if "-x" in argv else [])]
        with swapped(target, wrong):
            pytest.main(args, plugins=[recorder])
        (score,) = score_parts([part], recorder.outcomes)
        caught = any("assert" in message.lower() for _, message in recorder.outcomes.values())
        results.append({"part": part_name, "mistake": wrong, "score": score.score,
                        "max_score": score.max_score, "caught_by_an_assertion": caught,
                        "lines": score.lines})
    if "--elsewhere" in argv:  # and the points each loses in the other parts it reaches
        chosen = [m for m in MISTAKES if not only or m[0] in only]
        elsewhere = charged_elsewhere(chosen, parts)
        for r in results:
            r["other_parts"] = elsewhere[r["mistake"]]
    with open(argv[-1], "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
