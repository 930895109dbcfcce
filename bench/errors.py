"""User-facing errors: the CLI turns these into one line on stderr and exit code 2."""


class UserError(ValueError):
    """Bad input from the user (unknown name, malformed value, missing data)."""


class OutOfMemory(UserError):
    """A run's computation does not fit in memory (its batch, on this machine)."""


class DataNotFoundError(UserError, FileNotFoundError):
    """A dataset's files are missing; the message says what to get and where to put it."""


def reason(exc: BaseException) -> str:
    """``Type: first sentence`` of an exception from a library, for the one error line.

    Library messages run to several lines or paragraphs of advice (some unsafe, such as
    loading pickles); the type and first sentence name the fault.
    """
    text = (str(exc).strip().splitlines() or [""])[0].split(". ")[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
