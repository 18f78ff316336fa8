"""Map exceptions to one line on stderr and an exit code; ``--debug`` shows the traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

from icnn_cli.checkpoint.storage import remote_failure
from icnn_cli.cli.output import Output
from icnn_cli.errors import RUNTIME_ERROR, IcnnError, first_line

INTERRUPTED = 130


_settings = {"debug": False}


def set_debug(enabled: bool) -> None:
    """Set by the root callback on every invocation (``icnn --debug CMD``)."""
    _settings["debug"] = enabled


def debug_enabled() -> bool:
    return _settings["debug"]


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Run a command body; turn failures into ``icnn: error: ...`` and an exit code."""
    try:
        yield
    except typer.Exit:
        raise
    except IcnnError as error:
        if debug_enabled():
            raise
        Output.error(error.message)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        Output.error("interrupted")
        raise typer.Exit(INTERRUPTED) from None
    except Exception as error:
        if debug_enabled():
            raise
        plain = remote_failure(error)
        if plain is not None:  # gcsfs / google-auth: a bucket, credentials, the network
            Output.error(plain.message)
            raise typer.Exit(plain.exit_code) from None
        Output.error(
            f"unexpected failure: {type(error).__name__}: {first_line(error, limit=300)} "
            "(run 'icnn --debug ...' for the traceback)"
        )
        raise typer.Exit(RUNTIME_ERROR) from None
