"""Every GPU twin and its CPU twin, as data: the table of docs/cuda.md.

``python -m minissd.cuda.twins`` prints it as the Markdown table of docs/cuda.md;
tests/test_cuda_twins.py checks that every pair exists, that each GPU twin's docstring names
its CPU twin, and that names follow the one rule below.

The naming rule (STYLE.md habit 5), by kind of twin:

- ``kernel``: the CPU loop's name plus ``_kernel`` (``_match_one`` -> ``_match_one_kernel``);
- ``driver``: the host function keeps the CPU name and its arguments (keyword arguments may
  grow), so a caller swaps ``minissd.boxes`` for ``minissd.cuda.boxes`` and nothing else;
- ``layer``: the CPU class's name plus ``GPU`` (``Conv2d`` -> ``Conv2dGPU``), an ``nn.Module``
  built from the CPU layer; ``class``: the CPU class's name (``SGD``, ``Parameter``);
- ``scalar``: one plain Python function (a scalar body, or a row loop the GPU runs on one row
  at a time) compiled for both devices, by ``njit`` and ``cuda.jit(device=True)``: the GPU
  object wraps the very same function;
- ``lines``: a GPU kernel for a few NumPy lines inside a CPU function (``ious.argmax``,
  ``np.exp``): no CPU name to follow, so its name says what it computes and ``note`` which lines.

Rows are (GPU twin, CPU twin, kind, note), dotted paths under ``minissd``; note says where
the algorithm differs (empty: the same loop body, the loop over items handed to the threads).
"""

TWINS = [
    # ---- boxes ---------------------------------------------------------------------------
    ("cuda.boxes._box_iou_gpu", "nms._box_iou", "scalar", ""),
    ("cuda.boxes._encode_rows_gpu", "boxes._encode_rows", "scalar",
     "the CPU's row loop, compiled for the GPU; each thread runs it on one row at a time"),
    ("cuda.boxes._decode_rows_gpu", "boxes._decode_rows", "scalar", "the same"),
    ("cuda.boxes._iou_matrix_kernel", "boxes._iou_matrix", "kernel",
     "the (i, j) loops become a 2-D grid; the pair's IoU is `nms._box_iou`, which the CPU loop writes inline"),
    ("cuda.boxes._encode_rows_kernel", "boxes._encode_rows", "kernel", "a batch is one launch (row p reads prior p % P)"),
    ("cuda.boxes._decode_rows_kernel", "boxes._decode_rows", "kernel", "a batch is one launch (row p reads prior p % P)"),
    ("cuda.boxes.iou", "boxes.iou", "driver", ""),
    ("cuda.boxes.encode", "boxes.encode", "driver", "also (B, P, 4)"),
    ("cuda.boxes.decode", "boxes.decode", "driver", "also (B, P, 4)"),
    # ---- matching ------------------------------------------------------------------------
    ("cuda.matching.iou_batch_kernel", "matching._match_image", "lines",
     "its `_iou_matrix` call, for every image of the batch in one 3-D launch"),
    ("cuda.matching.best_prior_kernel", "matching._match_image", "lines",
     "its `ious.argmax(axis=1)`: a block reduction per (image, object), ties to the lower index"),
    ("cuda.matching._match_one_kernel", "matching._match_one", "kernel",
     "step 2's write to prior best_prior[g] is done by the thread that owns that prior"),
    ("cuda.matching.gather_kernel", "matching._match_image", "lines", "its `boxes[best_gt[pos]]`"),
    ("cuda.matching.zero_background_kernel", "matching._match_image", "lines", "its background rows of loc_t = 0"),
    ("cuda.matching.match", "matching.match", "driver", ""),
    ("cuda.matching.match_batch", "matching.match_batch", "driver", "+ device_out"),
    # ---- loss ----------------------------------------------------------------------------
    ("cuda.loss._smooth_l1_gpu", "loss._smooth_l1", "scalar", ""),
    ("cuda.loss._softmax_grad_row_gpu", "loss._softmax_grad_row", "scalar", ""),
    ("cuda.loss._log_sum_exp_row_gpu", "loss._log_sum_exp_row", "scalar", ""),
    ("cuda.loss._log_sum_exp_kernel", "loss._log_sum_exp", "kernel", ""),
    ("cuda.loss._mine_kernel", "loss._mine", "kernel",
     "**another algorithm**: a block per image; radix select of the k-th loss and a prefix sum for the ties "
     "(`cuda/select.py`) instead of a quickselect"),
    ("cuda.loss.cross_entropy_kernel", "loss.multibox_loss", "lines", "its `lse - conf[..., 0]` and `lse - conf[label]`"),
    ("cuda.loss.loss_sums_kernel", "loss.multibox_loss", "lines",
     "its float64 sums: a block per image (a fixed tree, no atomics), plus the NaN check of `step.forward_backward`"),
    ("cuda.loss.loss_totals_kernel", "loss.multibox_loss", "lines", "the images' sums, in order, on one thread"),
    ("cuda.loss._softmax_grad_kernel", "loss._softmax_grad", "kernel", "reads N from the totals on the GPU"),
    ("cuda.loss.smooth_l1_grad_kernel", "loss.multibox_loss", "lines", "its `dloc[pos] = alpha / N * smooth_l1'`"),
    ("cuda.loss.hard_negative_mining", "loss.hard_negative_mining", "driver", ""),
    ("cuda.loss.multibox_loss", "loss.multibox_loss", "driver", ""),
    # ---- nms -----------------------------------------------------------------------------
    ("cuda.nms._suppress_kernel", "nms._suppress", "kernel",
     "a block per (image, class), the inner loop over the block's threads, a barrier per step"),
    ("cuda.nms.softmax_kernel", "nms.detect", "lines", "its `np.exp(log_softmax(conf))`"),
    ("cuda.nms.clip_kernel", "nms.detect", "lines", "its `np.clip(boxes, 0, 1)`"),
    ("cuda.nms.candidates_kernel", "nms.per_class_nms", "lines",
     "**another algorithm** for its `np.argpartition`: block-wide radix select, then rank among the picks"),
    ("cuda.nms.top_k_kernel", "nms.per_class_nms", "lines", "**another algorithm** for its `np.argsort`: the same selection"),
    ("cuda.nms.nms", "nms.nms", "driver", ""),
    ("cuda.nms.detect", "nms.detect", "driver", ""),
    # ---- the layers ----------------------------------------------------------------------
    ("cuda.conv.Conv2dGPU", "nn.Conv2d", "layer", "im2col + a shared-memory tiled matmul"),
    ("cuda.conv.gather_cols_kernel", "nn.conv.gather_cols", "kernel",
     "one thread per entry of cols, read from the padded NHWC input by (n, i, j, u, v)"),
    ("cuda.conv.scatter_cols_kernel", "nn.conv.scatter_cols", "kernel",
     "**the scatter turned into a gather**: one thread per input entry adds the entries of dcols that read it"),
    ("cuda.conv.matmul_kernel", "nn.conv.conv2d_forward", "lines",
     "its `np.matmul` (BLAS): **another algorithm**, 16 x 16 shared-memory tiles, split-K"),
    ("cuda.conv._w_mat_kernel", "nn.conv.Conv2d._w_mat", "kernel", ""),
    ("cuda.activation.ReLUGPU", "nn.ReLU", "layer", "backward reads the output y (y > 0 where x > 0), not a mask"),
    ("cuda.pool.MaxPool2dGPU", "nn.MaxPool2d", "layer", ""),
    ("cuda.pool._maxpool_forward_kernel", "nn.pool._maxpool_forward", "kernel", ""),
    ("cuda.pool.maxpool_backward_kernel", "nn.pool.maxpool_backward", "kernel",
     "**the scatter turned into a gather**, the same sums in the same order"),
    ("cuda.norm.BatchNorm2dGPU", "nn.BatchNorm2d", "layer", "the BatchNorm group as on the CPU"),
    ("cuda.norm.batchnorm_forward_kernel", "nn.norm.batchnorm_forward", "kernel",
     "a block per channel shares each pass (float64 block sums), looping over the groups"),
    ("cuda.norm.batchnorm_backward_kernel", "nn.norm.batchnorm_backward", "kernel", "a block per channel"),
    ("cuda.norm.running_stats_kernel", "nn.norm.BatchNorm2d.forward", "lines", "its running-statistics lines"),
    ("cuda.norm.L2NormGPU", "nn.L2Norm", "layer", ""),
    ("cuda.heads.MultiBoxHeadGPU", "model.heads.MultiBoxHead", "layer",
     "the transpose/reshape/concatenate is one index kernel per map"),
    ("cuda.step.SSDGPU", "model.ssd.SSD", "layer", "a subclass: SSD.forward itself walks the GPU layers"),
    ("cuda.module.Parameter", "nn.Parameter", "class", ".data and .grad are device arrays, views of one flat buffer"),
    # ---- the training step ---------------------------------------------------------------
    ("cuda.step.forward_backward", "step.forward_backward", "driver", ""),
    ("cuda.optim.clip_grad_norm", "step.clip_grad_norm", "driver", "one launch over the flat gradient"),
    ("cuda.optim.sgd_update_kernel", "nn.optim.sgd_update", "kernel", "every parameter in one launch"),
    ("cuda.optim.sgd_update", "nn.optim.sgd_update", "driver", ""),
    ("cuda.optim.SGD", "nn.optim.SGD", "class", "+ momentum_buffers, to resume"),
]

KINDS = ("scalar", "kernel", "driver", "layer", "class", "lines")


def resolve(path):
    """The object at dotted ``path`` under ``minissd`` (``"cuda.boxes.iou"`` -> the function)."""
    import importlib

    parts = path.split(".")
    for i in range(len(parts), 0, -1):  # the longest importable module, then attributes
        try:
            obj = importlib.import_module("minissd." + ".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f"minissd.{path}")


def python_function(obj):
    """The plain Python function behind a numba CPU, CUDA or simulator dispatcher (or obj itself)."""
    for attr in ("py_func", "fn"):  # njit / cuda.jit on a GPU; the simulator's FakeCUDAKernel
        inner = getattr(obj, attr, None)
        if callable(inner):
            return inner
    return obj


def cpu_name(path):
    """How a docstring names a CPU twin: its last name, ``Class.method`` for a method."""
    parts = path.split(".")
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return ".".join(parts[-2:])
    return parts[-1]


def markdown():
    """The table of docs/cuda.md."""
    lines = ["| GPU twin (`minissd/cuda/`) | CPU twin | kind | where it differs |", "|---|---|---|---|"]
    for gpu, cpu, kind, note in TWINS:
        lines.append(f"| `{gpu[len('cuda.'):]}` | `{cpu}` | {kind} | {note or 'the same body'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
