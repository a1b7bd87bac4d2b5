"""Running a command-line entry point: the project's own errors as one line, bugs as tracebacks.

    sys.exit(cli.run(main))     in a module's ``if __name__ == "__main__":`` block

``run`` calls ``main()`` and returns its exit status. A ``MinissdError`` (bad input: a file,
a flag, a config; see minissd.errors) prints ``error: <message>`` on stderr and returns 2.
Anything else propagates with its traceback: that is a bug, and the traceback is what a bug
report needs.
"""

import sys

from .errors import MinissdError


def run(main, argv=None):
    """``main(argv)``'s exit status; a MinissdError becomes its message and status 2."""
    try:
        return main(argv)
    except MinissdError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
