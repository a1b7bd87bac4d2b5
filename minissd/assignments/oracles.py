"""Test oracles that the student copy replays instead of shipping.

tests/naive.py holds slow plain-Python oracles that the fast functions are tested against.
Those of graded functions (``naive.iou``, ``naive.match``, ``naive.nms``, ...) are answers to
the assignments, so they are decorated with ``@recorded`` and the student copy does not ship
their bodies. What a decorated oracle does depends on where it runs:

- in the reference checkout: nothing; it is called as written;
- with ``$MINISSD_RECORD_ORACLES=FILE`` (the ``student`` command runs the reference's tests
  that call oracles this way): it is called, and each call is recorded as the test that made
  it (pytest's node id), its number among that test's calls of that oracle, a fingerprint of
  its arguments and its result; FILE (``.npz``, no pickles) is written when the process ends;
- in the student copy, which has ``ANSWERS`` beside naive.py and the bodies left out: each
  call returns the result recorded for the same test and call number, after checking that
  its arguments match the recorded fingerprint (a test whose inputs come from a function the
  student writes gets a message saying so, not a wrong answer).

So the student's tests still compare against the oracles on exactly the inputs the tests use,
and the copy holds outputs on fixed inputs (like any fixture), not the loops. Calling a
replayed oracle on other inputs fails with a message that says why.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
from pathlib import Path

import numpy as np

ANSWERS = "oracle_answers.npz"  # written beside naive.py in the student copy
RECORD_VARIABLE = "MINISSD_RECORD_ORACLES"

_recording: dict | None = None  # key -> {"args": fingerprint, "result": encoded}, while recording
_arrays: dict = {}  # array name -> array, for the recorded results
_answers: dict = {}  # answers file -> (index, arrays), loaded on first use
_calls: dict = {}  # (oracle, test) -> calls made so far
_depth = 0  # > 0 while a recorded oracle runs


def _current_test() -> str:
    """pytest's node id of the running test ("tests/test_x.py::test_y[case]"), or "<no test>"."""
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    return current.rsplit(" ", 1)[0] if current else "<no test>"


def _fingerprint(value):
    """A JSON summary of an argument: shapes and three sums per array, repr of the rest."""
    if isinstance(value, (list, tuple)) and not _numeric(value):
        return [_fingerprint(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _fingerprint(v) for k, v in sorted(value.items())}
    if _numeric(value):
        a = np.asarray(value, dtype=np.float64)
        flat = np.nan_to_num(a.ravel(), nan=0.5, posinf=1e30, neginf=-1e30)
        weights = np.arange(flat.size) % 7 + 1.0
        return {"shape": list(a.shape), "sums": [float(flat.sum()), float(np.abs(flat).sum()),
                                                 float(flat @ weights)]}
    return repr(value)


def _numeric(value) -> bool:
    if isinstance(value, (bool, int, float, np.number, np.bool_)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biuf"
    if isinstance(value, (list, tuple)) and value:
        try:
            return np.asarray(value).dtype.kind in "biuf"
        except (ValueError, TypeError):
            return False
    return False


def _same(recorded, now) -> bool:
    if isinstance(recorded, dict) and "sums" in recorded:
        return (isinstance(now, dict) and now.get("shape") == recorded["shape"]
                and np.allclose(now["sums"], recorded["sums"], rtol=1e-6,
                                atol=1e-9 * (1 + abs(recorded["sums"][1]))))
    if isinstance(recorded, list):
        return isinstance(now, list) and len(now) == len(recorded) and all(
            map(_same, recorded, now))
    if isinstance(recorded, dict):
        return isinstance(now, dict) and recorded.keys() == now.keys() and all(
            _same(recorded[k], now[k]) for k in recorded)
    return recorded == now


def encode(value, arrays: dict):
    """A JSON description of ``value`` (arrays, numbers, strings, None, and tuples, lists and
    dicts of them); each array is put in ``arrays`` under the name the description gives."""
    if isinstance(value, np.ndarray) or isinstance(value, np.generic):
        name = f"a{len(arrays)}"
        arrays[name] = np.asarray(value)
        return {"array": name, "scalar": isinstance(value, np.generic)}
    if isinstance(value, (tuple, list)):
        return {type(value).__name__: [encode(v, arrays) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[encode(k, arrays), encode(v, arrays)] for k, v in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"a {type(value).__name__} cannot be recorded (arrays, numbers, strings, "
                    "and tuples, lists and dicts of them can)")


def decode(spec, arrays: dict):
    """The value ``encode`` described."""
    if "array" in spec:
        a = arrays[spec["array"]]
        return a[()] if spec["scalar"] else a.copy()
    if "tuple" in spec:
        return tuple(decode(v, arrays) for v in spec["tuple"])
    if "list" in spec:
        return [decode(v, arrays) for v in spec["list"]]
    if "dict" in spec:
        return {decode(k, arrays): decode(v, arrays) for k, v in spec["dict"]}
    return spec["value"]


def save(path, index, arrays: dict) -> None:
    """Write a JSON-able ``index`` and its arrays to one .npz (read back with ``load``)."""
    np.savez_compressed(path, index=np.array(json.dumps(index, allow_nan=True)), **arrays)


def load(path) -> tuple:
    """(index, arrays) of a file ``save`` wrote; no pickles."""
    with np.load(path) as data:
        return json.loads(str(data["index"])), {k: data[k] for k in data.files if k != "index"}


def _write(path: str) -> None:
    save(path, _recording, _arrays)


def recorded(oracle):
    """Decorate an oracle of a graded function: replayed in the student copy (module doc)."""
    answers = Path(oracle.__code__.co_filename).resolve().with_name(ANSWERS)
    name = f"{Path(oracle.__code__.co_filename).stem}.{oracle.__name__}"

    @functools.wraps(oracle)
    def call(*args, **kwargs):
        global _recording, _depth
        if _depth:  # an oracle calling another (naive.match calls naive.iou): not a test's call
            return oracle(*args, **kwargs)
        test = _current_test()
        number = _calls[name, test] = _calls.get((name, test), 0) + 1
        key = f"{name}|{test}|{number}"
        arguments = _fingerprint([list(args), kwargs])
        target = os.environ.get(RECORD_VARIABLE)
        if target:
            _depth += 1
            try:
                result = oracle(*args, **kwargs)
            finally:
                _depth -= 1
            if _recording is None:
                _recording = {}
                atexit.register(_write, target)
            _recording[key] = {"args": arguments, "result": encode(result, _arrays)}
            return result
        if not answers.is_file():
            return oracle(*args, **kwargs)
        if answers not in _answers:
            _answers[answers] = load(answers)
        index, arrays = _answers[answers]
        if key not in index:
            raise LookupError(
                f"{name}: no recorded answer for call {number} of {test}. In the student copy "
                f"the oracles of graded functions answer only the calls the instructor's tests "
                f"made when the copy was written ({answers.name}); was the test changed?")
        entry = index[key]
        if not _same(entry["args"], arguments):
            raise AssertionError(
                f"{name} (call {number} of {test}) got other inputs than the instructor's "
                "copy gave it, so its recorded answer does not apply. The test builds these "
                "inputs with code you write: check the earlier parts it uses (the part named "
                "in its error, or the functions called before this line).")
        return decode(entry["result"], arrays)

    call.recorded_oracle = True
    return call
