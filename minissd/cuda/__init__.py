"""The GPU twins of minissd's hot loops, written with numba.cuda (an optional extra).

Each module here has the same name as its CPU twin and the same public functions:

- ``minissd.cuda.boxes``     iou, encode, decode            (twin of ``minissd.boxes``)
- ``minissd.cuda.matching``  match, match_batch             (twin of ``minissd.matching``)
- ``minissd.cuda.loss``      hard_negative_mining, multibox_loss (twin of ``minissd.loss``)
- ``minissd.cuda.nms``       nms, detect                    (twin of ``minissd.nms``)
- ``minissd.cuda.conv``      Conv2dGPU, matmul, im2col-style gathers (twin of ``nn.Conv2d``)
- ``minissd.cuda.activation`` ReLUGPU;  ``minissd.cuda.pool`` MaxPool2dGPU;
  ``minissd.cuda.norm`` BatchNorm2dGPU, L2NormGPU;  ``minissd.cuda.optim`` clip_grad_norm,
  sgd_update (twins of ``minissd.nn``'s layers and optimizer)
- ``minissd.cuda.heads``     MultiBoxHeadGPU                (twin of ``model.heads``)
- ``minissd.cuda.module``    Parameter, FlatParameters      (twin of ``nn.module``'s Parameter)
- ``minissd.cuda.step``      to_device, forward_backward, clip_grad_norm, SGD, to_host: the
  training loop's calls (twins of ``minissd.step``'s and ``nn.SGD``), also reachable as
  ``minissd.cuda.to_device`` etc.

and three helpers: ``minissd.cuda.select`` (a block of threads selecting the k largest values:
the GPU's ``np.partition``), ``minissd.cuda.reduce`` (block-wide float sums without atomics)
and ``minissd.cuda.compile_check`` (every kernel compiled to PTX without a GPU). docs/cuda.md maps every kernel to its CPU twin and explains where the
algorithm differs.

This file is the only place in minissd that imports ``numba.cuda``, and it does so lazily:
``import minissd`` and ``import minissd.cuda`` work on any machine. ``require()`` returns the
``numba.cuda`` module or raises a ``RuntimeError`` that says what is missing and how to fix
it; each kernel module calls it when it is imported. Four things can be missing:

1. numba-cuda itself (``from numba import cuda`` raises ImportError),
2. CUDA's runtime library, which ``numba.cuda`` loads even under the simulator
   (``from numba import cuda`` then raises RuntimeError, not ImportError),
3. a GPU (the import works, ``cuda.is_available()`` is False),
4. on a GPU, the compiler libraries numba-cuda builds kernels with (NVVM, NVRTC): checked
   by compiling a one-line kernel once, so that the error comes here and not at the first
   launch.

``pip install -e ".[cuda]"`` installs 1 and 2 (numba-cuda and the ``nvidia-cuda-runtime-cu12``
wheel); 4 comes with the CUDA toolkit or ``pip install "numba-cuda[cu12]"``. Without a GPU
the kernels still run on numba's CUDA simulator, which runs every thread as Python (slow;
for tests only): set ``NUMBA_ENABLE_CUDASIM=1`` *before* numba is first imported
(tests/conftest.py does).
"""

import os

_INSTALL_HINT = 'install the CUDA extra: pip install -e ".[cuda]" (numba-cuda + nvidia-cuda-runtime-cu12)'
_SIMULATOR_HINT = (
    "to run the kernels on numba's CUDA simulator instead (slow, for tests), set "
    "NUMBA_ENABLE_CUDASIM=1 before numba is first imported"
)

_cuda = None  # the numba.cuda module once imported
_problem = None  # or the reason it cannot be used, as a sentence


def _load():
    """Import numba.cuda once; remember the module or why it failed."""
    import numba.core.config

    global _cuda, _problem
    if _cuda is not None or _problem is not None:
        return
    try:
        from numba import cuda
    except ImportError as e:  # numba-cuda (or its cuda-bindings) is not installed
        _problem = f"numba-cuda is not installed ({e}); {_INSTALL_HINT}"
        return
    except (RuntimeError, OSError) as e:  # installed, but CUDA's runtime library was not found
        _problem = (
            f"numba.cuda could not load CUDA's runtime library ({e}); it is needed even on "
            f"the simulator; {_INSTALL_HINT}, or install the CUDA toolkit"
        )
        return
    if not cuda.is_available():
        _problem = f"no CUDA GPU was found ({_describe_driver_error(cuda)}); {_simulator_advice()}"
        return
    if not numba.core.config.ENABLE_CUDASIM:
        error = _compiler_error(cuda)
        if error:
            _problem = (f"numba-cuda found a GPU but cannot compile kernels ({error}); {_COMPILER_HINT}")
            return
    _cuda = cuda


_COMPILER_HINT = ('install its compiler libraries (NVVM, NVRTC): pip install "numba-cuda[cu12]" for a '
                  'CUDA 12 driver (or "numba-cuda[cu13]" for CUDA 13), or install the CUDA toolkit')


def _compiler_error(cuda, cc=None):
    """None if numba-cuda can compile a kernel here, else the error (said now, not at first launch).

    A GPU and its driver are not enough: numba-cuda compiles kernels with NVVM and NVRTC,
    which come with the CUDA toolkit or with numba-cuda's ``cu12``/``cu13`` extras.
    - cc: the compute capability to compile for; None: the current GPU's.
    """

    def probe(x):
        x[0] = 1.0

    try:
        cuda.compile_ptx(probe, "void(float32[:])", **({"cc": cc} if cc else {}))
    except Exception as e:  # noqa: BLE001 - any failure means the same thing to the user
        return f"{type(e).__name__}: {' '.join(str(e).split())}"
    return None


def _describe_driver_error(cuda):
    try:
        error = cuda.cuda_error()
    except Exception as e:  # noqa: BLE001 - only used to word the message
        error = e
    return " ".join(str(error).split()) if error else "the CUDA driver reports no device"


def _simulator_advice():
    import numba.core.config

    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" and not numba.core.config.ENABLE_CUDASIM:
        # The trap: the variable is read once, when numba is first imported.
        return "NUMBA_ENABLE_CUDASIM=1 was set after numba had been imported: set it before"
    return _SIMULATOR_HINT


def is_available():
    """True when the kernels can run here: on a GPU, or on the simulator when it is enabled."""
    _load()
    return _cuda is not None


def simulating():
    """True when the kernels run on numba's CUDA simulator (Python per thread), not a GPU."""
    import numba.core.config

    return is_available() and bool(numba.core.config.ENABLE_CUDASIM)


def require():
    """Return the ``numba.cuda`` module, or raise RuntimeError saying what is missing and the fix."""
    _load()
    if _cuda is None:
        raise RuntimeError(f"minissd.cuda cannot run: {_problem}")
    return _cuda


# ---- launch geometry and host <-> device moves shared by the kernel modules ----------------

THREADS_1D = 128  # threads per block of the 1-D kernels: a multiple of the warp size (32)
MAX_BLOCKS_1D = 1 << 16  # at most this many blocks per 1-D launch (their loops are grid-stride)


def blocks_for(n, threads=THREADS_1D):
    """Blocks of ``threads`` that cover ``n`` items: ceil(n / threads), at least 1."""
    return max(1, (n + threads - 1) // threads)


def launch_1d(n, threads=None):
    """(blocks, threads per block) covering n items with a block no bigger than needed.

    Blocks stay a multiple of the warp (32); small n gets a small block, which changes
    nothing on a GPU and spares the simulator from running idle Python threads. Every 1-D
    kernel walks its items with a grid-stride loop, so a grid of fewer threads than items
    is still correct: the grid is capped at MAX_BLOCKS_1D blocks (8 M threads on a GPU; the
    tests patch it and THREADS_1D down, as the simulator pays per thread, not per item).
    """
    threads = min(threads or THREADS_1D, 32 * blocks_for(n, 32))
    return min(blocks_for(n, threads), MAX_BLOCKS_1D), threads


def is_device_array(x):
    """True for a numba device array (real or simulated), False for a NumPy array."""
    return hasattr(x, "copy_to_host")


def on_device(x, dtype):
    """``x`` as a C-contiguous device array of ``dtype``; a device array is used as it is."""
    import numpy as np

    if is_device_array(x):
        if x.dtype != np.dtype(dtype):
            raise ValueError(f"device array has dtype {x.dtype}, expected {np.dtype(dtype)}")
        return x
    return require().to_device(np.ascontiguousarray(x, dtype=dtype))


def on_host(x, like_host):
    """Bring ``x`` back as a NumPy array when the caller passed NumPy arrays (``like_host``)."""
    return x.copy_to_host() if like_host else x


# ---- the training step's calls, the GPU twins of minissd.step's -------------------------------
# ``minissd.cuda.to_device(model)``, ``forward_backward``, ``clip_grad_norm``, ``SGD`` and
# ``to_host`` live in minissd/cuda/step.py, which imports numba.cuda; they are looked up here
# on first use, so that ``import minissd.cuda`` stays possible on any machine.
_STEP_NAMES = ("to_device", "forward_backward", "clip_grad_norm", "SGD", "to_host")


def __getattr__(name):
    if name in _STEP_NAMES:
        import importlib

        return getattr(importlib.import_module("minissd.cuda.step"), name)
    raise AttributeError(f"module 'minissd.cuda' has no attribute {name!r}")
