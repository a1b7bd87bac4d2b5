"""The graded parts: the one table an instructor edits.

Each part names the marked regions a student writes for it (``# [assignment NAME]`` in the
reference code) and the tests that grade it, as pytest node ids where ``*`` matches any run
of characters (``tests/test_boxes.py::test_iou*`` takes every test whose name starts with
``test_iou``, parametrised cases included). A part scores ``points * passed / run`` over its
tests. A test may count for two parts; keep that rare, or one mistake costs twice.

Parts build on one another as the chapters do (``match`` calls ``iou`` and ``encode``), so a
student works through them in order. ``python -m minissd.assignments check`` verifies that
every region belongs to a part and every part's regions exist; a part whose patterns select
no test scores zero, which the test of the reference (full marks) catches.
"""

from __future__ import annotations

from dataclasses import dataclass

# Chapter numbers follow the notebooks (notebooks/NN_*.ipynb).
CHAPTERS = {
    1: "Boxes and IoU",
    2: "Default boxes",
    3: "Matching",
    4: "Loss and hard negative mining",
    5: "Layers and backprop",
    8: "Inference and evaluation",
}


@dataclass(frozen=True)
class Part:
    """One graded part.

    - name: short id, used by ``pytest --part NAME`` and ``student --only``
    - chapter: key of CHAPTERS
    - title: what the student builds, in a few words
    - points: what the part is worth
    - regions: the ``[assignment NAME]`` regions the student fills in for it
    - tests: node-id patterns of the tests that grade it (``*`` wildcard)
    """

    name: str
    chapter: int
    title: str
    points: float
    regions: tuple
    tests: tuple


PARTS = (
)
