"""Wrong convolution backward passes (replacements for minissd.nn.conv.conv2d_backward).

The reference reads, for output row m, the input rows ``s*m + off_t`` of each kernel tap
t = (u, v), with ``off_t = (u*W + v)*d`` (``ConvGeometry`` in minissd/nn/conv.py). Each wrong
answer runs the reference backward with one of the two factors forgotten in that geometry,
as a student's loop that forgets it would: the forward pass stays right, so only the
gradients are wrong.
"""

import copy

from minissd.nn import conv

_conv2d_backward = conv.conv2d_backward  # the reference, kept before the swap replaces it


def conv_backward_ignoring_stride(X, w_mat, dY, geo, needs_input_grad=True):
    """Reads rows ``m + off_t``: the stride is forgotten."""
    wrong = copy.copy(geo)
    wrong.s = 1
    return _conv2d_backward(X, w_mat, dY, wrong, needs_input_grad)


def conv_backward_ignoring_dilation(X, w_mat, dY, geo, needs_input_grad=True):
    """Uses the tap offsets ``u*W + v`` of an undilated kernel."""
    d = geo.offsets[1] if len(geo.offsets) > 1 else 1  # tap (0, 1) sits at (0*W + 1)*d
    wrong = copy.copy(geo)
    wrong.offsets = [off // d for off in geo.offsets]  # the mistake: no * d
    return _conv2d_backward(X, w_mat, dY, wrong, needs_input_grad)
