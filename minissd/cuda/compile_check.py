"""``python -m minissd.cuda.compile_check``: compile every kernel for a real GPU, without a GPU.

The CUDA simulator runs kernels as plain Python, so it accepts code that the CUDA compiler
refuses (a NumPy call that has no GPU version, a type that does not unify, a shared array
with a run-time size). This script asks numba-cuda's real compiler, NVVM, for the PTX of
every kernel with the argument types the host wrappers use. It needs no GPU and no driver,
only NVVM and NVRTC, e.g. (not part of the ``cuda`` extra; a GPU machine's toolkit has them):

    pip install --target /tmp/nvvm "nvidia-cuda-nvcc-cu12==12.9.*" "nvidia-cuda-nvrtc-cu12==12.9.*"
    PYTHONPATH=/tmp/nvvm LD_LIBRARY_PATH=/tmp/nvvm/nvidia/cuda_nvrtc/lib \\
        NUMBA_ENABLE_CUDASIM=0 python -m minissd.cuda.compile_check [--cc 9.0]

Exit status: 0 when every kernel compiles, 1 otherwise (each failure is printed), 2 when
NVVM or NVRTC cannot be found.
"""

import importlib
import os
import sys


def signatures():
    """[(module, kernel name, argument types)]: the types the host wrappers launch with."""
    from numba import types as T

    f4, f8, i4, i8, b1 = T.float32, T.float64, T.int32, T.int64, T.boolean

    def a(dtype, ndim, layout="C"):
        return T.Array(dtype, ndim, layout)

    boxes, matching, loss, nms, conv = (f"minissd.cuda.{m}" for m in
                                        ("boxes", "matching", "loss", "nms", "conv"))
    activation, pool, norm, optim, heads = (f"minissd.cuda.{m}" for m in
                                            ("activation", "pool", "norm", "optim", "heads"))
    return [
        (boxes, "_iou_matrix_kernel", (a(f4, 2), a(f4, 2), a(f4, 2))),
        (boxes, "_iou_matrix_kernel", (a(f8, 2), a(f8, 2), a(f8, 2))),
        (boxes, "_encode_rows_kernel", (a(f4, 2), a(f4, 2), f4, f4, a(f4, 2))),
        (boxes, "_decode_rows_kernel", (a(f4, 2), a(f4, 2), f4, f4, a(f4, 2))),
        (boxes, "_transpose_kernel", (a(f4, 2), a(f4, 2))),
        (matching, "iou_batch_kernel", (a(f4, 3), a(i8, 1), a(f4, 2), a(f4, 3))),
        (matching, "best_prior_kernel", (a(f4, 3), a(i8, 1), a(i8, 2))),
        (matching, "_match_one_kernel", (a(f4, 3), a(i8, 2), a(i8, 1), f8, a(i8, 2), a(f4, 2), a(i8, 2), a(i8, 2))),
        (matching, "gather_kernel", (a(f4, 3), a(i8, 2), a(f4, 3))),
        (matching, "zero_background_kernel", (a(i8, 2), a(f4, 3))),
        (loss, "_mine_kernel", (a(f4, 2), a(i8, 2), f8, a(T.uint32, 2), a(b1, 2))),
        (nms, "_suppress_kernel", (a(f4, 3), a(i8, 1), a(i8, 2), a(i8, 1), f8, a(b1, 2))),
        (nms, "softmax_kernel", (a(f4, 3), a(f4, 3))),
        (nms, "clip_kernel", (a(f4, 1), f4, f4)),
        (nms, "candidates_kernel", (a(f4, 3), f4, a(T.uint32, 2), a(i8, 2), a(i8, 2), a(i8, 1))),
        (nms, "top_k_kernel", (a(f4, 3), a(f4, 3), a(i8, 2), a(i8, 1), a(b1, 2), a(T.uint32, 2), a(i8, 2),
                               a(i8, 2), a(f4, 3), a(i8, 2), a(f4, 2), a(i8, 1))),
        (conv, "to_padded_nhwc_kernel", (a(f4, 4), i8, a(f4, 4))),
        (conv, "to_nchw_kernel", (a(f4, 4), i8, a(f4, 4))),
        (conv, "gather_cols_kernel", (a(f4, 4), i8, i8, i8, i8, i8, i8, i8, a(f4, 2))),
        (conv, "scatter_cols_kernel", (a(f4, 2), i8, i8, i8, i8, i8, i8, i8, a(f4, 4))),
        (conv, "matmul_kernel", (a(f4, 2), a(f4, 2), a(f4, 3), b1, b1, i8)),
        (conv, "matmul_kernel", (a(f4, 2, "A"), a(f4, 2, "A"), a(f4, 3, "A"), b1, b1, i8)),  # slices
        (conv, "sum_splits_kernel", (a(f4, 3), a(f4, 2))),
        (conv, "sum_splits_kernel", (a(f4, 3), a(f4, 2, "A"))),
        (conv, "add_kernel", (a(f4, 1), a(f4, 1))),
        (conv, "fill_kernel", (a(f4, 1), f4)),
        (conv, "_w_mat_kernel", (a(f4, 4), a(f4, 2))),
        (conv, "w_grad_kernel", (a(f4, 2), a(f4, 4))),
        (conv, "add_bias_kernel", (a(f4, 2), a(f4, 1))),
        # the rest of a training step (minissd.cuda.step)
        (activation, "relu_forward_kernel", (a(f4, 1), a(f4, 1))),
        (activation, "relu_backward_kernel", (a(f4, 1), a(f4, 1), a(f4, 1))),
        (pool, "_maxpool_forward_kernel", (a(f4, 4), i8, i8, i8, a(f4, 4), a(i4, 4))),
        (pool, "maxpool_backward_kernel", (a(f4, 4), a(i4, 4), i8, i8, i8, a(f4, 4))),
        (norm, "batchnorm_forward_kernel", (a(f4, 4), a(f4, 1), a(f4, 1), a(f8, 2), a(f8, 2), b1, f8,
                                            a(f4, 4))),
        (norm, "running_stats_kernel", (a(f4, 1), a(f4, 1), a(f8, 2), a(f8, 2), f8, i8)),
        (norm, "batchnorm_backward_kernel", (a(f4, 4), a(f4, 4), a(f4, 1), a(f8, 2), a(f8, 2), f8, b1,
                                             a(f4, 1), a(f4, 1), a(f4, 4))),
        (norm, "_copy_kernel", (a(f4, 1), a(f8, 1))),
        (norm, "l2norm_forward_kernel", (a(f4, 3), a(f4, 1), f4, a(f4, 2), a(f4, 3))),
        (norm, "l2norm_backward_kernel", (a(f4, 3), a(f4, 3), a(f4, 1), a(f4, 2), f4, a(f4, 3))),
        (norm, "l2norm_weight_grad_kernel", (a(f4, 3), a(f4, 3), a(f4, 2), f4, a(f4, 1))),
        (loss, "_log_sum_exp_kernel", (a(f4, 3), a(f4, 2))),
        (loss, "cross_entropy_kernel", (a(f4, 3), a(f4, 2), a(i8, 2), a(f4, 2), a(f4, 2))),
        (loss, "loss_sums_kernel", (a(f4, 3), a(f4, 3), a(f4, 3), a(i8, 2), a(f4, 2), a(b1, 2), a(f8, 2))),
        (loss, "loss_totals_kernel", (a(f8, 2), a(f8, 1))),
        (loss, "_softmax_grad_kernel", (a(f4, 3), a(f4, 2), a(i8, 2), a(b1, 2), a(f8, 1), a(f4, 3))),
        (loss, "smooth_l1_grad_kernel", (a(f4, 3), a(f4, 3), a(i8, 2), f4, a(f8, 1), a(f4, 3))),
        (heads, "flatten_map_kernel", (a(f4, 4), i8, i8, a(f4, 3), a(f4, 3))),
        (heads, "unflatten_map_kernel", (a(f4, 3), a(f4, 3), i8, i8, a(f4, 4))),
        (optim, "sum_squares_kernel", (a(f4, 1), a(f8, 1))),
        (optim, "clip_coef_kernel", (a(f8, 1), f8, a(f8, 1))),
        (optim, "scale_kernel", (a(f4, 1), a(f8, 1))),
        (optim, "sgd_update_kernel", (a(f4, 1), a(f4, 1), a(f4, 1), f4, f4, f4, b1)),
    ]


def main(cc=(8, 0)):
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        print("compile_check: unset NUMBA_ENABLE_CUDASIM (the simulator compiles nothing)", file=sys.stderr)
        return 1
    from numba import cuda
    import numba.cuda.dispatcher

    import minissd.cuda

    # Without a GPU: let the kernel modules import (require() would refuse), and answer the
    # one question numba-cuda asks the driver while compiling device functions.
    minissd.cuda._cuda = cuda

    class _Device:
        compute_capability = cc

    numba.cuda.dispatcher.get_current_device = lambda: _Device()
    error = minissd.cuda._compiler_error(cuda, cc)  # are the compiler libraries here at all?
    if error:
        print(f"compile_check: numba-cuda cannot compile ({error}); NVVM and NVRTC are needed, "
              "see this module's docstring for pip wheels that provide them", file=sys.stderr)
        return 2
    failed = 0
    for module, name, sig in signatures():
        kernel = getattr(importlib.import_module(module), name)
        try:
            cuda.compile_ptx(kernel.py_func, sig, cc=cc)
            print(f"ok    {module}.{name}{sig}")
        except Exception as e:  # noqa: BLE001 - report every failure, then fail
            failed += 1
            print(f"FAIL  {module}.{name}{sig}: {type(e).__name__}: {e}")
    print(f"{len(signatures()) - failed} of {len(signatures())} kernels compile to PTX for sm_{cc[0]}{cc[1]}")
    return 1 if failed else 0


if __name__ == "__main__":
    # --cc 9.0 (H100), 8.0 (A100, the default), 7.5 (T4), ...
    args = sys.argv[1:]
    cc = tuple(int(v) for v in args[args.index("--cc") + 1].split(".")) if "--cc" in args else (8, 0)
    sys.exit(main(cc))
