"""User-facing errors: the CLI turns these into one line on stderr and exit code 2."""


class UserError(ValueError):
    """Bad input from the user (unknown name, malformed value, missing data)."""


class DataNotFoundError(UserError, FileNotFoundError):
    """A dataset's files are missing; the message says what to get and where to put it."""
