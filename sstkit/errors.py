"""User-facing errors.

An :class:`SstkitError` means the user can fix the problem (a bad path, a corrupt row, a wrong value). The CLI
prints its message on one line and exits non-zero without a Python traceback; anything else is a bug and keeps
its traceback.

Example:
    >>> raise SstkitError("data file not found: /data/sst2/train.tsv")  # doctest: +SKIP
"""

from __future__ import annotations


class SstkitError(Exception):
    """An error caused by input the user controls; its message says what was expected."""


class DataError(SstkitError):
    """Bad or missing data: the message names the file, the line and what was expected."""

    def __init__(self, path: object, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


def require_int(owner: str, key: str, value: object, minimum: int = 1) -> int:
    """Returns ``value`` if it is an int (not a bool) ``>= minimum``, else raises a message naming ``owner.key``.

    Example:
        >>> require_int("galore", "rank", 4)
        4
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SstkitError(f"{owner}: {key} must be an int >= {minimum}, got {value!r}")
    return value
