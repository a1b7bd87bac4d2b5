"""Shared fixtures.

The CUDA twins are tested on numba's CUDA simulator unless the caller chose otherwise
(``NUMBA_ENABLE_CUDASIM=0 pytest`` on a machine with a GPU runs them for real). The variable
must be set before numba is first imported, which is why it is the first thing here.
"""

import os
import sys

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
if "numba" in sys.modules:  # a plugin imported numba first: make it read the variable again
    from numba.core import config as _numba_config

    _numba_config.reload_config()

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    """A seeded generator, so that every random case is the same on every run."""
    return np.random.default_rng(0)
pytest_plugins = ["minissd.assignments.plugin"]  # points per chapter at the end (docs/instructors.md)
