"""``python -m minissd.pretrained CHECKPOINT --command "..." --commit SHA`` (see the package docstring)."""

import sys

from .. import cli
from . import main

if __name__ == "__main__":
    sys.exit(cli.run(main))
