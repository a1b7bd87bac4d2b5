"""Entry point: ``python -m minissd.bench NAME [options]``; NAME picks minissd/bench/NAME.py."""

import importlib
import sys

BENCHMARKS = ("core", "nn", "data", "cuda", "train", "peer")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: python -m minissd.bench {{{'|'.join(BENCHMARKS)}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"minissd.bench.{argv[0]}")
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
