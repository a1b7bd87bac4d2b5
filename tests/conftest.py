"""Shared fixtures, and what the CUDA test files need.

The CUDA twins are tested on numba's CUDA simulator unless the caller chose otherwise
(``NUMBA_ENABLE_CUDASIM=0 pytest`` on a machine with a GPU runs them for real). The variable
must be set before numba is first imported, which is why it is the first thing here. The
tests/test_cuda_*.py files that launch kernels are skipped whole (with the reason) where
minissd.cuda cannot run, marked ``cuda``, and given small launches on the simulator (below).
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


# ---- the CUDA tests: every tests/test_cuda_*.py -------------------------------------------------
# test_cuda_init.py is the one that runs no kernel: it checks what ``import minissd.cuda`` says
# when something is missing, so it runs everywhere, with the default launch sizes.
NO_KERNELS = {"test_cuda_init.py"}


def _is_kernel_test_file(path):
    return path.name.startswith("test_cuda_") and path.name not in NO_KERNELS


def _cuda_problem():
    """Why minissd.cuda cannot run here ("" when it can: on a GPU or on the simulator)."""
    import minissd.cuda as mc  # here, not at the top: conftest must not import numba.cuda

    try:
        mc.require()
    except RuntimeError as e:
        return str(e)
    return ""


class _CudaUnavailable(pytest.Module):
    """A CUDA test file, not imported (its kernels cannot be built here): one skip with the reason."""

    def collect(self):
        pytest.skip(f"minissd.cuda unavailable: {_cuda_problem()}")


def pytest_pycollect_makemodule(module_path, parent):
    """test_cuda_*.py import kernel modules, which raise without numba-cuda: skip such a file
    whole, with the reason (``pytest -ra`` shows it), instead of failing its import."""
    if _is_kernel_test_file(module_path) and _cuda_problem():
        return _CudaUnavailable.from_parent(parent, path=module_path)
    return None


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects by marker
def pytest_collection_modifyitems(config, items):
    """Every test of a test_cuda_*.py file gets the ``cuda`` marker (``pytest -m cuda``)."""
    for item in items:
        if item.path.name.startswith("test_cuda_"):
            item.add_marker(pytest.mark.cuda)


@pytest.fixture(autouse=True)
def small_cuda_launches(request, monkeypatch):
    """Small CUDA blocks on the simulator; nothing at all on a real GPU.

    The simulator runs every GPU thread as a Python thread and every cuda.syncthreads() as a
    barrier of those threads, so it pays per thread and per barrier, not per item: fewer
    threads per block make the CUDA tests many times faster, and since the kernels' loops are
    grid-stride (or chunked per thread), each thread then walks several items, a path that the
    tests' small sizes would otherwise never take. The simulator reads these module constants
    when a kernel runs; a real GPU compiles them (shared array sizes included) into the kernels
    once per session, so nothing is patched there. (conv.TILE stays 16: smaller matmul tiles
    mean more blocks and more barriers, slower on the simulator.)

    It runs for every test of the test_cuda_*.py files that launch kernels, and for no other; a test that deliberately wants other sizes patches on top of it
    (test_cuda_conv.py, test_cuda_nms.py and test_cuda_optim.py do, each saying why).
    """
    if not _is_kernel_test_file(request.node.path):
        return
    import minissd.cuda as mc

    if not mc.simulating():  # a real GPU
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
