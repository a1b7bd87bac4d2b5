"""A network's layer table: output shape, parameters, multiply-adds and receptive field per layer.

Pure arithmetic on an ``SSDConfig`` (nothing is run), so SSD300's table is instant. Used by
docs/ch06-network.md and the network chapter's notebook.

Counting rules: a convolution with C_in inputs, C_out outputs, a k x k kernel and an output of
H x W does C_out * H * W * C_in * k * k multiply-adds (MACs; FLOPs are about twice that);
BatchNorm, ReLU, pooling and L2Norm are counted as 0 MACs (they are a few operations per
element). The receptive field of a layer is the side of the input window that can affect one
output; ``stride`` is the distance in input pixels between neighbouring outputs.
"""

from .backbone import _parse
from ..nn.conv import conv_output_size
from ..nn.pool import pool_output_size


def layer_table(config, num_classes):
    """One dict per layer: name, kind, out (C, H, W), params, macs, field, stride.

    Stages are named ``stage{m}.{i}`` (i counts table entries); the heads ``head{m}``.
    Ends with a row named ``total`` (params and macs summed).
    """
    rows, size, channels, field, jump = [], config.input_size, 3, 1, 1
    sources = []
    for m, table in enumerate(config.tables):
        for i, entry in enumerate(table):
            kind, *args = _parse(entry)
            if kind == "pool":
                k, s, p, ceil = args
                size = pool_output_size(size, k, s, p, ceil)
                params, macs, d = 0, 0, 1
                desc = f"maxpool {k}x{k}/{s}" + (" ceil" if ceil else "")
            else:
                out, k, s, p, d = args
                size = conv_output_size(size, k, s, p, d)
                params = out * channels * k * k + (2 * out if config.batch_norm else out)
                macs = out * size * size * channels * k * k
                channels = out
                desc = f"conv {k}x{k}/{s}" + (f" dil {d}" if d > 1 else "") + (" +BN" if config.batch_norm else "")
            field += (k - 1) * d * jump
            jump *= s
            rows.append(dict(name=f"stage{m}.{i}", kind=desc, out=(channels, size, size),
                             params=params, macs=macs, field=field, stride=jump))
        sources.append((channels, size, field, jump))
    if config.l2norm_first:
        c0 = sources[0][0]
        rows.append(dict(name="l2norm", kind="L2Norm (scale 20)", out=(c0, sources[0][1], sources[0][1]),
                         params=c0, macs=0, field=sources[0][2], stride=sources[0][3]))
    per_box = 4 + num_classes + 1
    for m, ((c, f, fld, jmp), k) in enumerate(zip(sources, config.priors.boxes_per_location)):
        out = k * per_box
        rows.append(dict(name=f"head{m}", kind=f"conv 3x3 -> {k} boxes x ({num_classes}+1+4)",
                         out=(out, f, f), params=out * c * 9 + out, macs=out * f * f * c * 9,
                         field=fld + 2 * jmp, stride=jmp))
    rows.append(dict(name="total", kind="", out=(), params=sum(r["params"] for r in rows),
                     macs=sum(r["macs"] for r in rows), field=None, stride=None))
    return rows


def format_table(rows):
    """The layer table as aligned text (a Markdown table)."""
    lines = ["| layer | kind | output (C, H, W) | params | MMACs | receptive field | stride |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        out = "x".join(str(v) for v in r["out"])
        field = "" if r["field"] is None else f"{r['field']}"
        stride = "" if r["stride"] is None else f"{r['stride']}"
        lines.append(f"| {r['name']} | {r['kind']} | {out} | {r['params']:,} | {r['macs'] / 1e6:,.1f} | "
                     f"{field} | {stride} |")
    return "\n".join(lines)
