"""How minissd.nn uses the cores: one pool of worker threads, each running a whole piece of work.

Why not let the libraries thread themselves? OpenBLAS splits every matrix product over all
cores and Numba's ``prange`` splits every loop, and both make their threads wait for each
other at the end of every call, spinning while they wait. On a quiet machine that is fine;
when anything else runs (a data-loading thread, another program, the notebook kernel next
door), a thread that the OS has paused holds up the others, which spin and steal the cores
it needs: we measured one tiny-SSD step go from 1.3 s (everything single-threaded) to 8 s
(default threading) on 2 cores with a load of 5.

So the layers split their work themselves, into independent pieces (a few images of the
batch each) that ``run_pieces`` hands to a pool of plain threads. Inside a piece everything is
single-threaded: OpenBLAS is switched to one thread (``single_threaded_blas``) and our Numba
kernels are compiled with ``nogil=True`` and no ``prange``. Nothing waits for anything until
the last piece is done, and a thread that is paused simply takes fewer pieces, so a busy
machine costs what its busyness costs and no more; on a quiet machine the two threads run
the same products BLAS would have run, at the same speed.

The pool has ``MINISSD_THREADS`` threads if that is set, else Numba's thread count (the
``NUMBA_NUM_THREADS`` variable, else the cores this process may use), like the other thread
pools of minissd (matching); ``set_num_threads`` changes it at run time. Side effect: from
the first layer call on, OpenBLAS stays single-threaded for the whole process (other NumPy
products included).
"""

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numba
import numpy as np

_pool = None
_num_threads = None
_local = threading.local()  # per thread: .inline, set by inline()


def num_threads():
    """Threads of the pool: ``MINISSD_THREADS``, else ``NUMBA_NUM_THREADS``, else the cores."""
    global _num_threads
    if _num_threads is None:
        env = os.environ.get("MINISSD_THREADS")
        _num_threads = max(1, int(env) if env else numba.config.NUMBA_NUM_THREADS)
    return _num_threads


def set_num_threads(n):
    """Use ``n`` worker threads from now on (1: everything runs in the calling thread)."""
    global _num_threads, _pool
    if int(n) < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _num_threads = int(n)
    if _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None


def _openblas_set_num_threads():
    """The C function ``openblas_set_num_threads`` of the OpenBLAS NumPy uses, or None.

    NumPy has no API for it, so we look for the loaded library in this process's memory map
    (what threadpoolctl does) and call it through ctypes. NumPy's wheels name it
    ``scipy_openblas_set_num_threads64_``; a NumPy on MKL or Accelerate gives None.
    """
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
                     "openblas_set_num_threads"):
            if hasattr(lib, name):
                return getattr(lib, name)
    return None


_blas_is_single = None


def single_threaded_blas():
    """Switch OpenBLAS to one thread (once); True if that worked, so the pool may run products.

    Where it cannot be done (no OpenBLAS found), the pieces run one after the other in the
    calling thread and BLAS keeps its own threads.
    """
    global _blas_is_single
    if _blas_is_single is None:
        set_threads = _openblas_set_num_threads()
        if set_threads is not None:
            set_threads.argtypes = [ctypes.c_int]
            set_threads(1)
        _blas_is_single = set_threads is not None
    return _blas_is_single


@contextmanager
def inline():
    """Within this block, ``run_pieces`` runs every piece in the calling thread.

    For callers that parallelise at a coarser grain themselves (``parallel.DataParallel``
    gives each thread a whole share of the batch): their threads must not queue work on the
    shared pool as well.
    """
    before = getattr(_local, "inline", False)
    _local.inline = True
    try:
        yield
    finally:
        _local.inline = before


def run_pieces(function, pieces):
    """``[function(p) for p in pieces]``, the pieces shared out among the pool's threads.

    The results come back in the order of ``pieces``. One piece, or a pool of one thread,
    or a call inside ``inline()``, runs in the calling thread: small layers pay no thread
    hand-over.
    """
    global _pool
    pieces = list(pieces)
    blas_is_ours = single_threaded_blas()  # first: one thread must mean one thread for BLAS too
    if len(pieces) == 1 or num_threads() == 1 or not blas_is_ours or getattr(_local, "inline", False):
        return [function(p) for p in pieces]
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=num_threads(), thread_name_prefix="minissd-nn")
    return list(_pool.map(function, pieces))


def split_batch(N, rows_per_image, target_rows=4096, min_rows=512):
    """Cut a batch of N images into pieces of about ``target_rows`` rows of work each.

    - rows_per_image: the work of one image, in rows of its matrix product
    - returns a list of (n0, n1) image ranges, as even as possible: about one piece per
      ``target_rows`` (several per thread, so that a thread the OS pauses leaves its share
      to the others), but at least one per thread as long as each keeps ``min_rows``
      (so that a middle-sized layer still uses every core), and a single piece for tiny
      work (a thread hand-over costs ~50 us)
    """
    total = N * rows_per_image
    pieces = max(round(total / target_rows), min(num_threads(), total // min_rows))
    pieces = int(min(N, max(1, pieces)))
    bounds = np.linspace(0, N, pieces + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
