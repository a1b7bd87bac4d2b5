"""Course assignments cut from the reference code, graded by pytest.

The reference code marks the body of each function a student should write::

    def iou(a, b):
        \"\"\"docstring stays\"\"\"
        # [assignment iou] Intersection over union of every pair; clamp the overlap at 0.
        ...solution...
        # [/assignment]

- ``python -m minissd.assignments student OUT`` writes the student copy: the whole
  repository with each region's solution replaced by ``raise NotImplementedError(hint)``.
- ``pytest`` in any copy ends with the points per chapter (``plugin.py``, parts from
  ``parts.py``, the one table an instructor edits).
- ``python -m minissd.assignments grade DIR --json results.json`` grades a copy and writes
  Gradescope's results.json.
- ``python -m minissd.assignments check`` lists the regions and the parts and reports
  markers that are malformed, ungraded or caught in the Numba trap.
- In a notebook, ``check_part("iou")`` runs one part's graded tests and prints its points and
  first failure; ``needs(...)`` stops a notebook, with a message and no traceback, at a part
  that is still blank (notebook.py).
- ``python -m minissd.assignments capstone [COPY]`` trains the tiny SSD with the copy's own
  code for a fixed budget and scores the val mAP it reaches (capstone.py).
- ``python -m minissd.assignments docs`` rewrites the points example of docs/students.md
  from the parts table (``--check``: only say whether it is stale).

docs/instructors.md and docs/students.md tell the whole story.
"""

from .grade import GradeError, Report, grade, run_graded_tests
from .markers import MarkerError, Region, find_regions, strip_regions
from .notebook import PartNotDone, check_part, needs, or_recorded, written
from .student import make_student_copy

__all__ = ["GradeError", "MarkerError", "PartNotDone", "Region", "Report", "check_part",
           "find_regions", "grade", "make_student_copy", "needs", "or_recorded",
           "run_graded_tests", "strip_regions", "written"]
