"""Exceptions that carry a message for the user (our design).

Every error a user can cause (a bad config key, a missing dataset, an unknown benchmark) is a
:class:`PearlError` whose message names the bad input and what would fix it. The CLI prints the
message and exits with status 2 instead of showing a stack trace.
"""


class PearlError(Exception):
    """Base class of user-facing errors; the message is meant to be printed as is."""


class ConfigError(PearlError, ValueError):
    """A config key, value or file is invalid."""


class DataError(PearlError, FileNotFoundError):
    """A dataset cannot be found or read."""


class TrainingError(PearlError, RuntimeError):
    """Training diverged (non-finite loss) or cannot proceed."""
