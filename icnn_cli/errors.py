"""The one exception type the core raises for problems a user can fix.

The CLI turns an :class:`IcnnError` into one line on stderr and its exit code;
anything else escaping the core is a bug or a runtime failure (exit 1).
"""

from __future__ import annotations

USAGE_ERROR = 2
RUNTIME_ERROR = 1


class IcnnError(Exception):
    """A problem with the user's input or environment, worded for the user.

    Args:
      message: one line naming the file/field/flag and what is wrong.
      exit_code: ``2`` for bad input (the default), ``1`` for a runtime failure
        such as a damaged checkpoint.
    """

    def __init__(self, message: str, exit_code: int = USAGE_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(error).strip().splitlines()
    return text[0][:limit] if text else type(error).__name__
