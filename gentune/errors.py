"""One root exception for everything a user can get wrong.

Every message names the rule that broke, the value that broke it and the fix, so that a user
never has to read a traceback to know what to do next.
"""

from __future__ import annotations

from collections.abc import Iterable


class GentuneError(Exception):
    """A problem the user can fix. The CLI prints it without a traceback and exits with 2.

    >>> str(GentuneError("batch size must be positive", value=0, fix="pass --batch-size 64"))
    'batch size must be positive (got 0). Fix: pass --batch-size 64'
    """

    exit_code = 2

    def __init__(self, rule: str, *, value: object = None, fix: str | None = None):
        self.rule, self.value, self.fix = rule, value, fix
        msg = rule
        if value is not None:
            msg += f" (got {value!r})"
        if fix:
            msg += f". Fix: {fix}"
        super().__init__(msg)


class DataError(GentuneError):
    """A data file is missing, corrupted or of the wrong shape."""


class ChecksumError(DataError):
    """A downloaded or local file does not match its published checksum."""


class SpaceError(GentuneError):
    """A search-space file or definition is invalid."""


class StudyError(GentuneError):
    """A study cannot be created, resumed or read."""


def unknown_choice(kind: str, value: str, choices: Iterable[object]) -> GentuneError:
    """The error for a name that is not one of the valid choices; lists them all."""
    valid = ", ".join(sorted(str(c) for c in choices))
    return GentuneError(f"unknown {kind}", value=value, fix=f"use one of: {valid}")
