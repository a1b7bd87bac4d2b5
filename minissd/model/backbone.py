"""The base network and the extra layers, written as tables and built into ``Sequential`` stages.

SSD (Liu et al. 2016, sec. 2.1, fig. 2) is a classification network cut before its classifier
(VGG16 for SSD300), with extra convolutional layers of decreasing size added after it. The
detection heads read several of these layers' outputs, the *source maps*: early, large maps
see small objects, late, small maps see large ones.

We write the network as one table per source map: the layers from the previous source map
(or the image) up to this one. A table is a list of entries, read left to right:

- ``64``: a 3x3 convolution (padding 1) to 64 channels, then ReLU (with BatchNorm between
  them when the model uses it);
- ``"M"``: 2x2 max pooling with stride 2 (halves the map, rounding down);
- ``"C"``: the same with ``ceil_mode`` (rounds up: SSD300's pool3 turns 75 into 38);
- ``("conv", out, kernel, stride, padding, dilation)``: any other convolution, then ReLU;
- ``("pool", kernel, stride, padding)``: any other max pooling (SSD300's pool5 is 3x3/1/1).

The SSD300 tables follow the paper and ssd.pytorch's ``base``/``extras`` lists (VGG16
configuration D, Simonyan & Zisserman 2015; fc6/fc7 turned into convolutions with the "a trous"
trick, sec. 3 "Base network").
"""

from ..nn import BatchNorm2d, Conv2d, MaxPool2d, ReLU, Sequential
from ..nn.conv import conv_output_size
from ..nn.pool import pool_output_size

# ---- SSD300: VGG16 + extras, one table per source map --------------------------------------
SSD300_TABLES = (
    # conv1_1 .. conv4_3 (300 -> 150 -> 75 -> 38): source 1, 38x38x512, L2Norm-ed in SSD
    (64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512),
    # pool4, conv5_1..conv5_3 (19), pool5 3x3/1/1 (keeps 19), fc6 as a 3x3 conv with dilation 6
    # (the subsampled fc6 weights, "a trous"), fc7 as a 1x1 conv: source 2, 19x19x1024
    ("M", 512, 512, 512, ("pool", 3, 1, 1), ("conv", 1024, 3, 1, 6, 6), ("conv", 1024, 1, 1, 0, 1)),
    # conv8_1 1x1 (bottleneck), conv8_2 3x3/2: source 3, 10x10x512
    (("conv", 256, 1, 1, 0, 1), ("conv", 512, 3, 2, 1, 1)),
    # conv9_1, conv9_2 3x3/2: source 4, 5x5x256
    (("conv", 128, 1, 1, 0, 1), ("conv", 256, 3, 2, 1, 1)),
    # conv10_1, conv10_2 3x3 without padding: source 5, 3x3x256
    (("conv", 128, 1, 1, 0, 1), ("conv", 256, 3, 1, 0, 1)),
    # conv11_1, conv11_2 3x3 without padding: source 6, 1x1x256
    (("conv", 128, 1, 1, 0, 1), ("conv", 256, 3, 1, 0, 1)),
)


def _parse(entry):
    """One table entry -> ("conv", out, k, s, p, d) or ("pool", k, s, p, ceil_mode)."""
    if isinstance(entry, int):
        return ("conv", entry, 3, 1, 1, 1)
    if entry == "M":
        return ("pool", 2, 2, 0, False)
    if entry == "C":
        return ("pool", 2, 2, 0, True)
    if isinstance(entry, tuple) and entry[0] == "conv" and len(entry) == 6:
        return entry
    if isinstance(entry, tuple) and entry[0] == "pool" and len(entry) == 4:
        return entry + (False,)
    raise ValueError(f"backbone table: cannot read entry {entry!r} (expected an int, 'M', 'C', "
                     "('conv', out, k, s, p, d) or ('pool', k, s, p))")


def build_stage(table, in_channels, batch_norm, rng):
    """Build the layers of one table.

    - table: a sequence of entries (see the module docstring).
    - in_channels: channels entering the stage.
    - batch_norm: put a BatchNorm2d between each convolution and its ReLU (the conv then has
      no bias: BatchNorm's own shift replaces it).
    - rng: np.random.Generator for the He-normal initialisation.
    - returns: (Sequential, out_channels).
    """
    layers = []
    for entry in table:
        kind, *args = _parse(entry)
        if kind == "pool":
            k, s, p, ceil = args
            layers.append(MaxPool2d(k, s, p, ceil_mode=ceil))
            continue
        out, k, s, p, d = args
        layers.append(Conv2d(in_channels, out, k, stride=s, padding=p, dilation=d,
                             bias=not batch_norm, rng=rng))
        if batch_norm:
            layers.append(BatchNorm2d(out))
        layers.append(ReLU())
        in_channels = out
    return Sequential(*layers), in_channels


def stage_output(table, size, in_channels):
    """(side, channels) after one table, for a square input of side ``size``: pure arithmetic,
    so that a network's feature-map sizes are known without running it."""
    for entry in table:
        kind, *args = _parse(entry)
        if kind == "pool":
            k, s, p, ceil = args
            size = pool_output_size(size, k, s, p, ceil)
        else:
            out, k, s, p, d = args
            size, in_channels = conv_output_size(size, k, s, p, d), out
        if size < 1:
            raise ValueError(f"backbone table: the map shrinks below 1x1 at entry {entry!r}")
    return size, in_channels


def receptive_field(tables, upto):
    """Theoretical receptive field (pixels) and stride of source map ``upto`` (0-based).

    Walks the layers: a layer with kernel k, dilation d, stride s grows the field by
    (k - 1) * d * jump and multiplies the jump (distance in input pixels between
    neighbouring outputs) by s. Returns (field, jump).
    """
    field, jump = 1, 1
    for table in tables[:upto + 1]:
        for entry in table:
            kind, *args = _parse(entry)
            if kind == "pool":
                k, s, d = args[0], args[1], 1
            else:
                k, s, d = args[1], args[2], args[4]
            field += (k - 1) * d * jump
            jump *= s
    return field, jump
