"""``python -m minissd.data [ROOT] [--seed N]``: build tiny-voc (if needed) and print its statistics.

The numbers on the dataset card (docs/tiny-voc.md) come from this command.
"""

import argparse
import json
import time

from .tiny_voc import describe, make_tiny_voc, tiny_voc_path


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minissd.data", description=__doc__.split("\n")[0])
    p.add_argument("root", nargs="?", default=None, help=f"folder to write (default {tiny_voc_path()})")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    path = make_tiny_voc(args.root, seed=args.seed)
    print(f"tiny-voc at {path} (ready in {time.perf_counter() - t0:.1f} s)")
    print(json.dumps(describe(path), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
