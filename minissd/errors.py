"""The project's own errors: bad input from the user, as opposed to bugs.

Every error a user can cause by what they pass in (a file, a flag, a config) is a
``MinissdError`` whose message names the file, field or flag and says what is wrong. The
command-line entry points (``minissd.cli.run``) print such a message alone and exit with
status 2; any other exception is a bug and keeps its traceback.

    MinissdError            the base class (a ValueError, so older ``except ValueError`` still works)
      DatasetError          a dataset file or folder (minissd.data)
      CheckpointError       a checkpoint file (minissd.checkpoint)
      ConfigError           a flag or a configuration value
"""


class MinissdError(ValueError):
    """Bad input; the message names what is wrong and where."""


class DatasetError(MinissdError):
    """Bad dataset input; the message names the offending file and what is wrong with it."""


class CheckpointError(MinissdError):
    """A checkpoint file is missing, truncated, or does not fit the model it is loaded into."""


class ConfigError(MinissdError):
    """A flag or configuration value that cannot be used; the message names it."""
