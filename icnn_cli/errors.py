"""The core's error classes: what went wrong, and about which parameter.

The core raises these and never names a CLI flag nor picks an exit code. Each edge words
them once: the CLI (:mod:`icnn_cli.cli.errors`) as ``--out ckpt: already exists (pass
--force to replace it)`` with an exit code chosen by class, the Python API as
``out='ckpt': already exists (pass force=True to replace it)``.

A problem text names other parameters through :func:`param`, so one sentence serves both
edges::

    raise OutputExists(f"already exists (pass {param('force')} to replace it)",
                       parameter="out", value=target)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_MARK = "\x00"
_REFERENCE = re.compile(f"{_MARK}([a-z_]+){_MARK}")
_NO_VALUE: Any = object()


def param(name: str) -> str:
    """A reference to parameter ``name`` inside a problem text, spelled by each edge."""
    return f"{_MARK}{name}{_MARK}"


class IcnnError(Exception):
    """A problem with the caller's input or environment that the caller can act on.

    Args:
      problem: what is wrong, in one line; other parameters are named with :func:`param`.
      parameter: the argument it concerns, by its Python name (``out``, ``seeds``,
        ``config``); ``None`` when the problem names its file or checkpoint itself.
      value: the value given for ``parameter``, shown beside it.
    """

    def __init__(self, problem: str, parameter: str | None = None, value: Any = _NO_VALUE) -> None:
        super().__init__(problem)
        self.problem = problem
        self.parameter = parameter
        self.value = value

    def has_value(self) -> bool:
        return self.value is not _NO_VALUE

    def worded(self, wording: Wording) -> str:
        """The one line for a caller who names parameters the way ``wording`` does."""
        text = _REFERENCE.sub(lambda match: wording.reference(match.group(1)), self.problem)
        if self.parameter is None:
            return text
        subject = wording.subject(self.parameter)
        if self.has_value():
            subject = wording.with_value(subject, self.value)
        return f"{subject}: {text}"

    @property
    def message(self) -> str:
        """Worded for Python callers (``out='ckpt': ...``); the CLI words it itself."""
        return self.worded(PYTHON_WORDING)

    def __str__(self) -> str:
        return self.message


# Bad input (the CLI's exit 2) ------------------------------------------------------------


class UsageError(IcnnError):
    """An argument's value is wrong, or arguments that do not go together."""


class ConfigError(IcnnError):
    """The config (file, YAML text or mapping) does not validate.

    The problem already names its source, line and field (``cfg.yaml:3: model.dim_hidden:
    ...``), so it reads the same at both edges.
    """


class OutputExists(IcnnError):
    """The output path exists and may not be replaced (or not by this tool)."""


class ResourcesExceeded(IcnnError):
    """The work would not fit in memory or on disk; refused before it starts."""


class NotACheckpoint(IcnnError):
    """The path holds no checkpoint this tool reads (or not the item or step asked for)."""


class CheckpointRefused(IcnnError):
    """A checkpoint's files break a safety rule (a path out of it, a special file, a size
    or depth over its bound): it is refused before it is read."""


class UnsupportedStorage(IcnnError):
    """A URL scheme or storage this tool cannot use."""


# Failures at run time (the CLI's exit 1) ---------------------------------------------------


class RuntimeFailure(IcnnError):
    """The work itself failed: out of memory, a failed process, a failed write."""


class DamagedCheckpoint(RuntimeFailure):
    """A checkpoint's files are unreadable, inconsistent or fail their fingerprint."""


class NotCommitted(DamagedCheckpoint):
    """A checkpoint that was never committed (a save that did not finish)."""


class StorageFailure(RuntimeFailure):
    """Object storage or the network failed (a bucket, credentials, HTTP)."""


def is_bad_input(error: IcnnError) -> bool:
    """True for errors the caller fixes by changing the input (the CLI's exit 2)."""
    return not isinstance(error, RuntimeFailure)


class Wording:
    """How one edge spells parameters: as a subject (``--out``), with its value, as a
    reference inside a sentence (``--force``)."""

    def __init__(
        self,
        subject: Callable[[str], str],
        with_value: Callable[[str, Any], str],
        references: Mapping[str, str] | None = None,
    ) -> None:
        self.subject = subject
        self.with_value = with_value
        self._references = dict(references or {})

    def reference(self, name: str) -> str:
        return self._references.get(name, self.subject(name))


PYTHON_WORDING = Wording(
    subject=lambda name: name,
    with_value=lambda subject, value: f"{subject}={_python_value(value)}",
    # Boolean switches are named as the call that turns them on.
    references={
        "force": "force=True",
        "resume": "resume=True",
        "mesh": "a mesh (sharding.mesh in the config)",
    },
)


def _python_value(value: Any) -> str:
    return (
        repr(str(value)) if not isinstance(value, int | float | bool | type(None)) else repr(value)
    )


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(error).strip().splitlines()
    return text[0][:limit] if text else type(error).__name__
