"""``python -m minissd.data``: build tiny-voc, convert a dataset, or take a first look at one.

    python -m minissd.data [ROOT] [--seed N]                 build tiny-voc (if needed), print its statistics
    python -m minissd.data convert SPEC --to voc|coco|yolo OUT [--splits a,b] [--val-share F]
    python -m minissd.data inspect SPEC [--split S] [--model tiny --input-size N] [--out DIR]

SPEC is a dataset spec (minissd.data.open): tiny-voc, voc:PATH, coco:ANN.json[,IMAGES], yolo:PATH.
The numbers on the dataset card (docs/tiny-voc.md) come from the first form.
"""

import argparse
import json
import sys
import time

from .. import cli
from .tiny_voc import describe, make_tiny_voc, tiny_voc_path


def build_main(argv):
    p = argparse.ArgumentParser(prog="python -m minissd.data", description="build tiny-voc and print its statistics",
                                epilog="other commands: 'python -m minissd.data convert --help' (write a dataset "
                                       "in another format), 'python -m minissd.data inspect --help' (a first look "
                                       "at a dataset: counts, sizes, pictures, default-box coverage)")
    p.add_argument("root", nargs="?", default=None, help=f"folder to write (default {tiny_voc_path()})")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    path = make_tiny_voc(args.root, seed=args.seed)
    print(f"tiny-voc at {path} (ready in {time.perf_counter() - t0:.1f} s)")
    print(json.dumps(describe(path), indent=1))
    return 0


def convert_main(argv):
    from .convert import FORMATS, convert

    p = argparse.ArgumentParser(prog="python -m minissd.data convert",
                                description="write a dataset in another format (docs/own-data.md)")
    p.add_argument("spec", help="the source: voc:PATH, coco:ANN.json[,IMAGES], yolo:PATH or tiny-voc")
    p.add_argument("--to", required=True, choices=FORMATS)
    p.add_argument("out", help="a new (or empty) folder")
    p.add_argument("--splits", default="", help="comma-separated splits to write (default: all)")
    p.add_argument("--val-share", type=float, default=0.0,
                   help="split a one-split source into train and val, this share of images for val")
    p.add_argument("--seed", type=int, default=0, help="seed of --val-share's draw")
    args = p.parse_args(argv)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()] or None
    convert(args.spec, args.to, args.out, splits=splits, val_share=args.val_share, seed=args.seed)
    return 0


def inspect_main(argv):
    from .inspect import main

    return main(argv)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "convert":
        return convert_main(argv[1:])
    if argv and argv[0] == "inspect":
        return inspect_main(argv[1:])
    return build_main(argv)


if __name__ == "__main__":
    sys.exit(cli.run(main))
