"""GPU twin of ``model.heads.MultiBoxHead``: the prediction convolutions, flattened into loc and conf.

The CPU head runs each map's 3x3 convolution, then reorders its output (B, k*(C+5), f, f)
with ``transpose(0, 2, 3, 1).reshape(B, -1, C+5)`` and concatenates the maps: prior
p = start_m + (i*f + j)*k + box gets channels box*(C+5) .. box*(C+5) + C+4 of location
(i, j), the 4 offsets first, then the C+1 scores. On the GPU the reorder and the split
into loc and conf are one kernel per map (``flatten_map_kernel``: one thread per entry of
the convolution's output, each writing its value to its place), and backward is the same
index arithmetic read the other way (``unflatten_map_kernel``: one thread per entry of the
convolution's output gradient, each reading its place).
"""

import numpy as np

from minissd import nn
from minissd.cuda import launch_1d, require

cuda = require()


@cuda.jit
def flatten_map_kernel(y, start, per_box, loc, conf):
    """loc, conf rows start .. start + f*f*k - 1 from one map's head output y (B, k*per_box, f, f).

    - per_box = 4 + C + 1; loc: (B, P, 4), conf: (B, P, C+1) float32, written in those rows.
    """
    first = cuda.grid(1)
    stride = cuda.gridsize(1)
    B, Ch, f, _ = y.shape
    k = Ch // per_box  # boxes per location
    for e in range(first, B * Ch * f * f, stride):
        b, ch, i, j = e // (Ch * f * f), (e // (f * f)) % Ch, (e // f) % f, e % f
        box, q = ch // per_box, ch % per_box  # which box of the location, which of its outputs
        p = start + (i * f + j) * k + box  # the prior: map by map, then row, column, box
        if q < 4:
            loc[b, p, q] = y[b, ch, i, j]
        else:
            conf[b, p, q - 4] = y[b, ch, i, j]


@cuda.jit
def unflatten_map_kernel(dloc, dconf, start, per_box, grad_y):
    """grad_y (B, k*per_box, f, f) of one map read back from dloc, dconf (the adjoint of flatten)."""
    first = cuda.grid(1)
    stride = cuda.gridsize(1)
    B, Ch, f, _ = grad_y.shape
    k = Ch // per_box
    for e in range(first, B * Ch * f * f, stride):
        b, ch, i, j = e // (Ch * f * f), (e // (f * f)) % Ch, (e // f) % f, e % f
        box, q = ch // per_box, ch % per_box
        p = start + (i * f + j) * k + box
        grad_y[b, ch, i, j] = dloc[b, p, q] if q < 4 else dconf[b, p, q - 4]


class MultiBoxHeadGPU(nn.Module):
    """``MultiBoxHead``'s forward and backward on the GPU.

    - head: the CPU ``MultiBoxHead``; convs: its convolutions as ``Conv2dGPU`` layers, in
      the same order (``.convs``, so that ``parameters()`` comes in the CPU head's order)
    - forward(sources: M device arrays (B, C_m, f_m, f_m)) -> loc (B, P, 4), conf (B, P, C+1)
    - backward(dloc, dconf) -> M device gradients (B, C_m, f_m, f_m)
    """

    def __init__(self, head, convs):
        self.num_classes = head.num_classes
        self.per_box = 4 + head.num_classes + 1
        self.convs = list(convs)
    def forward(self, sources):
        ys = [conv.forward(x) for conv, x in zip(self.convs, sources)]  # (B, k*(C+5), f, f) each
        B = ys[0].shape[0]
        sizes = [y.shape[1] // self.per_box * y.shape[2] * y.shape[3] for y in ys]  # f*f*k priors per map
        P = sum(sizes)
        loc = cuda.device_array((B, P, 4), dtype=np.float32)
        conf = cuda.device_array((B, P, self.per_box - 4), dtype=np.float32)
        start = 0
        for y, n in zip(ys, sizes):
            flatten_map_kernel[launch_1d(y.size)](y, start, self.per_box, loc, conf)
            start += n
        self._shapes, self._sizes = [y.shape for y in ys], sizes  # kept for backward
        return loc, conf

    def backward(self, dloc, dconf):
        grads, start = [], 0
        for conv, shape, n in zip(self.convs, self._shapes, self._sizes):
            grad_y = cuda.device_array(shape, dtype=np.float32)  # (B, k*(C+5), f, f)
            unflatten_map_kernel[launch_1d(grad_y.size)](dloc, dconf, start, self.per_box, grad_y)
            grads.append(conv.backward(grad_y))
            start += n
        return grads
