"""minissd/cuda/twins.py, the table of GPU twins: every pair exists, follows the naming rule,
and each GPU twin's docstring names its CPU twin."""

import inspect

import pytest

from minissd import nn
from minissd.cuda.twins import KINDS, TWINS, cpu_name, markdown, python_function, resolve


def parameters(f):
    return list(inspect.signature(python_function(f)).parameters)


@pytest.mark.parametrize("gpu_path, cpu_path, kind, note", TWINS, ids=[t[0] for t in TWINS])
def test_cuda_twin_exists_follows_the_rule_and_names_its_cpu_twin(gpu_path, cpu_path, kind, note):
    gpu, cpu = resolve(gpu_path), resolve(cpu_path)
    gpu_name, cpu_last = gpu_path.split(".")[-1], cpu_path.split(".")[-1]
    assert kind in KINDS
    if kind == "scalar":  # written once: the GPU compiles the very same Python function
        assert python_function(gpu) is python_function(cpu)
        return
    doc = python_function(gpu).__doc__ or ""
    assert cpu_name(cpu_path) in doc, f"{gpu_path}'s docstring does not name {cpu_name(cpu_path)}"
    if kind == "kernel":
        assert gpu_name == cpu_last + "_kernel"
    elif kind == "driver":  # the CPU's name and arguments; keyword arguments may grow
        assert gpu_name == cpu_last
        assert parameters(gpu)[:len(parameters(cpu))] == parameters(cpu)
    elif kind == "layer":
        assert gpu_name == cpu_last + "GPU" and issubclass(gpu, nn.Module)
    elif kind == "class":
        assert gpu_name == cpu_last
        assert parameters(gpu)[:len(parameters(cpu))] == parameters(cpu)


def test_cuda_every_kernel_is_in_the_table():
    """No kernel of a twin module is left out (helpers with no CPU twin are listed here)."""
    import minissd.cuda as mc
    from minissd.cuda import activation, boxes, conv, heads, loss, matching, nms, norm, optim, pool
    helpers = {"_transpose_kernel", "to_padded_nhwc_kernel", "to_nchw_kernel", "sum_splits_kernel",
               "fill_kernel", "add_kernel", "w_grad_kernel", "add_bias_kernel", "_copy_kernel",
               "relu_forward_kernel", "relu_backward_kernel", "l2norm_forward_kernel", "l2norm_backward_kernel",
               "l2norm_weight_grad_kernel", "batchnorm_forward_kernel", "flatten_map_kernel",
               "unflatten_map_kernel", "sum_squares_kernel", "clip_coef_kernel", "scale_kernel"}
    listed = {t[0].split(".")[-1] for t in TWINS}
    for module in (activation, boxes, conv, heads, loss, matching, nms, norm, optim, pool):
        kernels = {n for n in vars(module) if n.endswith("_kernel") and not n.startswith("_rows")}
        assert kernels - listed - helpers == set(), module.__name__
    assert mc.THREADS_1D  # (the package itself imported fine)


def test_cuda_twins_table_is_markdown():
    table = markdown().splitlines()
    assert table[0].startswith("| GPU twin") and len(table) == len(TWINS) + 2
    assert "| `boxes._box_iou_gpu` | `nms._box_iou` | scalar |" in markdown()
