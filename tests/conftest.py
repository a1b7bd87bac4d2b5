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


@pytest.fixture
def small_cuda_launches(monkeypatch):
    """Small CUDA blocks on the simulator; nothing at all on a real GPU or without numba-cuda.

    The simulator runs every GPU thread as a Python thread and every cuda.syncthreads() as a
    barrier of those threads, so it pays per thread and per barrier, not per item: fewer
    threads per block make the CUDA tests many times faster, and since the kernels' loops are
    grid-stride (or chunked per thread), each thread then walks several items, a path that the
    tests' small sizes would otherwise never take. The simulator reads these module constants
    when a kernel runs; a real GPU compiles them (shared array sizes included) into the kernels
    once per session, so nothing is patched there. (conv.TILE stays 16: smaller matmul tiles
    mean more blocks and more barriers, slower on the simulator.)

    The CUDA test modules use it with ``pytest.mark.usefixtures("small_cuda_launches")``; a
    test that deliberately wants other sizes patches on top of it (test_cuda_conv.py,
    test_cuda_nms.py and test_cuda_optim.py do, each saying why).
    """
    import minissd.cuda as mc  # here, not at the top: conftest must not import numba.cuda

    if not mc.simulating():  # a GPU, or numba-cuda missing (the CUDA tests skip themselves)
        return
    from minissd.cuda import matching, nms, optim, reduce, select

    monkeypatch.setattr(mc, "THREADS_1D", 32)  # 1-D kernels: one block of 32, grid-stride
    monkeypatch.setattr(mc, "MAX_BLOCKS_1D", 1)
    monkeypatch.setattr(reduce, "SUM_THREADS", 8)  # summing blocks (BatchNorm, L2Norm, loss, norm)
    monkeypatch.setattr(optim, "NORM_BLOCKS", 2)  # 2 blocks share the sum of squares: still added across blocks
    monkeypatch.setattr(select, "SELECT_THREADS", 8)  # ranking blocks (hard negatives, detect's candidates)
    monkeypatch.setattr(matching, "REDUCE_THREADS", 8)  # best-prior blocks (one per object)
    monkeypatch.setattr(nms, "NMS_THREADS", 8)  # one block per NMS problem


pytest_plugins = ["minissd.assignments.plugin"]  # points per chapter at the end (docs/instructors.md)
