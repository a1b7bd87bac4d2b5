"""The prediction heads: one 3x3 convolution per source map, (c + 4) k filters.

At every location of a source map of size f x f, SSD predicts, for each of its k default
boxes, 4 offsets and c + 1 class scores (c classes and background) with a small 3x3
convolution (Liu et al. 2016, sec. 2.1 "Convolutional predictors for detection"). The paper
counts (c + 4) k filters per map; we build exactly that, one convolution per map whose
(4 + C + 1) k output channels hold, box by box, the 4 offsets then the C + 1 scores, and
split them afterwards. (ssd.pytorch uses two convolutions, loc and conf; the sum is the same
arithmetic, and one convolution reads its input once.)

Flattening puts the predictions in ``default_boxes`` order: map by map, then row, column,
box. The backward pass undoes the flattening and runs each head's convolution backward.
"""

import numpy as np

from ..nn import Conv2d, Module


class MultiBoxHead(Module):
    """3x3 prediction convolutions on every source map, flattened and concatenated.

    - sources: list of M arrays (B, C_m, f_m, f_m), one per source map
    - returns loc (B, P, 4) and conf (B, P, num_classes + 1), P = sum f_m * f_m * k_m
    - backward(dloc, dconf) -> list of M gradients (B, C_m, f_m, f_m)
    """

    def __init__(self, in_channels, boxes_per_location, num_classes, rng):
        self.num_classes = int(num_classes)
        self.boxes_per_location = tuple(boxes_per_location)
        per_box = 4 + self.num_classes + 1  # 4 offsets, then C + 1 class scores
        self.convs = [Conv2d(c, k * per_box, 3, padding=1, rng=rng, init_name="xavier_uniform")
                      for c, k in zip(in_channels, boxes_per_location)]

    def forward(self, sources):
        # [assignment heads_forward] Per map: conv, then (B, k*(C+5), f, f) -> (B, f*f*k, C+5) in row, column, box order; concatenate the maps; loc = first 4 of each box's C+5, conf = the rest.
        per_box = 4 + self.num_classes + 1
        outs = []
        for conv, x in zip(self.convs, sources):
            y = conv.forward(x)  # (B, k*(C+5), f, f)
            B, _, f, _ = y.shape
            y = y.transpose(0, 2, 3, 1).reshape(B, -1, per_box)  # (B, f*f*k, C+5): row, col, box
            outs.append(y)
        out = np.concatenate(outs, axis=1)  # (B, P, C+5)
        self._sizes = [o.shape[1] for o in outs]  # kept for backward: where each map's boxes are
        self._shapes = [x.shape for x in sources]
        loc, conf = out[:, :, :4], out[:, :, 4:]  # (B, P, 4), (B, P, C+1)
        # [/assignment]
        return np.ascontiguousarray(loc), np.ascontiguousarray(conf)

    def backward(self, dloc, dconf):
        # [assignment heads_backward] Undo forward: join dloc and dconf box by box, cut each map's rows, reshape back to (B, k*(C+5), f, f), and run that map's conv backward.
        dout = np.concatenate([dloc, dconf], axis=2)  # (B, P, C+5)
        grads, start = [], 0
        for conv, n, shape in zip(self.convs, self._sizes, self._shapes):
            B, _, f, _ = shape
            g = dout[:, start:start + n].reshape(B, f, f, -1).transpose(0, 3, 1, 2)  # (B, k*(C+5), f, f)
            grads.append(conv.backward(np.ascontiguousarray(g)))
            start += n
        # [/assignment]
        return grads
