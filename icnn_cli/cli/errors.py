"""Map exceptions to one line on stderr and an exit code; ``--debug`` adds the traceback."""

from __future__ import annotations

import contextlib
import shlex
import sys
import traceback
from collections.abc import Iterator

import typer

from icnn_cli.checkpoint.storage import remote_failure
from icnn_cli.cli.output import Output
from icnn_cli.errors import IcnnError, Wording, first_line, is_bad_input

USAGE_ERROR = 2
RUNTIME_ERROR = 1
INTERRUPTED = 130

CLI_WORDING = Wording(
    subject=lambda name: "--" + name.replace("_", "-"),
    # Shell-quoted: the value as the user would type it again (`--seeds ''`).
    with_value=lambda flag, value: f"{flag} {shlex.quote(str(value))}",
)
"""How the CLI spells a core error's parameters: ``--out ckpt: ...``, ``pass --force``."""


def cli_message(error: IcnnError) -> str:
    return error.worded(CLI_WORDING)


def exit_code_of(error: IcnnError) -> int:
    """Bad input exits 2, a failure at run time 1: by the error's class, decided here only."""
    return USAGE_ERROR if is_bad_input(error) else RUNTIME_ERROR


_settings = {"debug": False}


def set_debug(enabled: bool) -> None:
    """Set by the root callback on every invocation (``icnn --debug CMD``)."""
    _settings["debug"] = enabled


def debug_enabled() -> bool:
    return _settings["debug"]


def print_traceback(error: BaseException) -> None:
    """``--debug``: the traceback on stderr, before the usual line and exit code."""
    traceback.print_exception(error, file=sys.stderr)


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Run a command body; turn failures into ``icnn: error: ...`` and an exit code."""
    try:
        yield
    except typer.Exit:
        raise
    except IcnnError as error:
        if debug_enabled():
            print_traceback(error)
        Output.error(cli_message(error))
        raise typer.Exit(exit_code_of(error)) from None
    except KeyboardInterrupt:
        Output.error("interrupted")
        raise typer.Exit(INTERRUPTED) from None
    except Exception as error:
        if debug_enabled():
            print_traceback(error)
        plain = remote_failure(error)
        if plain is not None:  # gcsfs / google-auth: a bucket, credentials, the network
            Output.error(cli_message(plain))
            raise typer.Exit(exit_code_of(plain)) from None
        Output.error(
            f"unexpected failure: {type(error).__name__}: {first_line(error, limit=300)} "
            "(run 'icnn --debug ...' for the traceback)"
        )
        raise typer.Exit(RUNTIME_ERROR) from None
