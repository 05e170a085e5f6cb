"""What a user reads when something fails: one line, never a traceback (that goes to the log file)."""
from __future__ import annotations


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when it has none), cut to `limit`."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def readable_error(exc: BaseException) -> str:
    """The engine's own words for bad input (every input error is a ValueError: DatasetError, ModelError,
    bad settings), else the exception's type and first line."""
    if isinstance(exc, ValueError) and str(exc).strip():
        return first_line(exc)
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__
