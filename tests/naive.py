"""Slow, obvious oracles: plain Python loops that the fast functions are pinned to.

Each oracle follows the paper (and DESIGN.md) as literally as possible and is never used
by the package itself. Tests compare the NumPy/Numba/CUDA versions against these.
"""

import math

import numpy as np

# ---- boxes, matching, mining, NMS (core) --------------------------------------------------

# ---- layers (nn) ---------------------------------------------------------------------------

# ---- evaluation (AP) -----------------------------------------------------------------------
