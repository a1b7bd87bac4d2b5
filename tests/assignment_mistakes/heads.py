"""Wrong prediction heads (replacements for minissd.model.heads.MultiBoxHead.forward/backward).

Each is the head a student could write that runs, gives the right shapes, and puts numbers
in the wrong rows: only the tests that read where each prediction lands catch them.
"""

import numpy as np


def _per_box(head):
    return 4 + head.num_classes + 1


def _forward(head, sources, flatten, maps=lambda outs: outs):
    outs = [flatten(conv.forward(x), _per_box(head)) for conv, x in zip(head.convs, sources)]
    head._sizes = [o.shape[1] for o in outs]
    head._shapes = [x.shape for x in sources]
    out = np.concatenate(maps(outs), axis=1)
    return np.ascontiguousarray(out[:, :, :4]), np.ascontiguousarray(out[:, :, 4:])


def heads_forward_without_transpose(self, sources):
    """Reshapes (B, k*(C+5), f, f) straight to (B, f*f*k, C+5): channels and places mix."""
    return _forward(self, sources, lambda y, n: y.reshape(y.shape[0], -1, n))


def heads_forward_columns_before_rows(self, sources):
    """Flattens column-major (transpose 0, 3, 2, 1): map position (i, j) lands at (j, i)."""
    return _forward(self, sources, lambda y, n: y.transpose(0, 3, 2, 1).reshape(y.shape[0], -1, n))


def heads_forward_loc_then_conf_channels(self, sources):
    """Reads the channels as ssd.pytorch's two convolutions lay them out (all 4k offsets, then
    all k*(C+1) scores) instead of box by box."""
    def flatten(y, n):
        B, _, f, _ = y.shape
        k = y.shape[1] // n
        y = y.transpose(0, 2, 3, 1)  # (B, f, f, k*(C+5))
        loc = y[..., :4 * k].reshape(B, f * f * k, 4)
        conf = y[..., 4 * k:].reshape(B, f * f * k, n - 4)
        return np.concatenate([loc, conf], axis=2)
    return _forward(self, sources, flatten)


def heads_forward_maps_in_reverse(self, sources):
    """Concatenates the smallest map first: every prior of every map is off."""
    return _forward(self, sources, lambda y, n: y.transpose(0, 2, 3, 1).reshape(y.shape[0], -1, n),
                    maps=lambda outs: outs[::-1])


def _backward(head, dout, unflatten, advance=True):
    grads, start = [], 0
    for conv, n, shape in zip(head.convs, head._sizes, head._shapes):
        g = unflatten(dout[:, start:start + n], shape)
        grads.append(conv.backward(np.ascontiguousarray(g)))
        start += n if advance else 0
    return grads


def _unflatten(g, shape):
    B, _, f, _ = shape
    return g.reshape(B, f, f, -1).transpose(0, 3, 1, 2)


def heads_backward_columns_before_rows(self, dloc, dconf):
    """Undoes the flatten with transpose (0, 3, 2, 1): row and column gradients swap."""
    def unflatten(g, shape):
        B, _, f, _ = shape
        return g.reshape(B, f, f, -1).transpose(0, 3, 2, 1)
    return _backward(self, np.concatenate([dloc, dconf], axis=2), unflatten)


def heads_backward_conf_before_loc(self, dloc, dconf):
    """Joins the gradients in the wrong order: scores first, then offsets."""
    return _backward(self, np.concatenate([dconf, dloc], axis=2), _unflatten)


def heads_backward_every_map_from_the_start(self, dloc, dconf):
    """Forgets to move past each map's rows: every map reads the first map's gradients."""
    return _backward(self, np.concatenate([dloc, dconf], axis=2), _unflatten, advance=False)
