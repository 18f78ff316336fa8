"""The ``icnn`` command: a root that only registers one small module per verb.

Nothing here imports JAX, Flax, Orbax or OTT; each command imports what it needs
inside its body, so ``icnn --help`` stays instant.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from typing import Annotated, Any, cast

import typer
import typer.completion

from icnn_cli.cli.check_command import check
from icnn_cli.cli.config_command import config_app
from icnn_cli.cli.diff_command import diff
from icnn_cli.cli.errors import INTERRUPTED, debug_enabled, print_traceback, set_debug
from icnn_cli.cli.help_style import IcnnCommand, IcnnGroup
from icnn_cli.cli.init_command import init
from icnn_cli.cli.inspect_command import inspect
from icnn_cli.cli.output import Output
from icnn_cli.cli.plot_command import plot
from icnn_cli.cli.schema_command import schema
from icnn_cli.cli.verify_command import verify

app = typer.Typer(
    name="icnn",
    cls=IcnnGroup,
    help="Initialise and inspect checkpoints of input convex neural networks (OTT-JAX ICNN).",
    no_args_is_help=True,
    # Typer's own completion options detect the shell running icnn (sh in a Dockerfile
    # RUN or a Makefile recipe: "Shell sh not supported") and ignore the one named;
    # the root below declares them taking the shell by name.
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command(cls=IcnnCommand)(init)
app.command(cls=IcnnCommand)(inspect)
app.command(cls=IcnnCommand)(schema)
app.command(cls=IcnnCommand)(check)
app.command(cls=IcnnCommand)(diff)
app.command(cls=IcnnCommand)(verify)
app.command(cls=IcnnCommand)(plot)
app.add_typer(config_app)


def _print_version(value: bool) -> None:
    if value:
        from icnn_cli import package_version

        sys.stdout.write(f"icnn {package_version()}\n")
        raise typer.Exit()


class Shell(StrEnum):
    """The shells Typer writes completion scripts for."""

    bash = "bash"
    zsh = "zsh"
    fish = "fish"
    powershell = "powershell"


SHELL_NAMES = ", ".join(Shell)

# What add_completion=True would do: register Typer's completion classes, which answer
# the _ICNN_COMPLETE=complete_bash protocol that the printed scripts speak.
# Typer re-exports it from its completion module without listing it in __all__.
typer.completion.completion_init()  # pyright: ignore[reportPrivateImportUsage]


def _show_completion(context: typer.Context, parameter: Any, shell: Shell | None) -> None:
    if shell is not None and not context.resilient_parsing:
        typer.completion.show_callback(context, parameter, shell.value)


def _install_completion(context: typer.Context, parameter: Any, shell: Shell | None) -> None:
    if shell is not None and not context.resilient_parsing:
        typer.completion.install_callback(context, parameter, shell.value)


@app.callback()
def root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Also show the full traceback when a command fails.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    install_completion: Annotated[
        Shell | None,
        typer.Option(
            "--install-completion",
            callback=_install_completion,
            is_eager=True,
            expose_value=False,
            metavar="SHELL",
            help=f"Install completion for the shell named ({SHELL_NAMES}) in its startup files.",
        ),
    ] = None,
    show_completion: Annotated[
        Shell | None,
        typer.Option(
            "--show-completion",
            callback=_show_completion,
            is_eager=True,
            expose_value=False,
            metavar="SHELL",
            help=f"Print the completion script for the shell named ({SHELL_NAMES}).",
        ),
    ] = None,
) -> None:
    """Initialise and inspect checkpoints of input convex neural networks (OTT-JAX ICNN)."""
    set_debug(debug)


# Typer exposes Click's UsageError only as the base of typer.BadParameter; it is
# what a wrong flag value, a missing argument or an unknown option raises
# (``__base__`` is typed ``type | None``: every class but ``object`` has one).
_UsageError = cast("type[Exception]", typer.BadParameter.__base__)


def _drop_closed_event_loop_noise(unraisable: sys.UnraisableHookArgs) -> None:
    # After a failed restore, tensorstore callbacks still call into Orbax's asyncio
    # loop once it is closed; Python reports each as an "unraisable" RuntimeError
    # on stderr, burying the one-line error. Nothing is lost by dropping them.
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return
    sys.__unraisablehook__(unraisable)


def main() -> None:
    """Console-script entry point."""
    sys.unraisablehook = _drop_closed_event_loop_noise
    try:
        # A fixed name, also under `python -m icnn_cli`: usage lines and the shell
        # completion protocol (_ICNN_COMPLETE) are those of the `icnn` command.
        result = app(standalone_mode=False, prog_name="icnn")
    except SystemExit as exit_request:
        code = exit_request.code if isinstance(exit_request.code, int) else 1
    except _UsageError as error:
        code = _report_usage_error(error)
    except typer.Abort:
        code = INTERRUPTED
    else:
        code = result if isinstance(result, int) else 0
    if "tensorstore" in sys.modules:
        # After a failed restore, tensorstore's callbacks can print "Event loop is
        # closed" tracebacks during interpreter teardown; all output is flushed and
        # every checkpoint committed by now, so skip that teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _report_usage_error(error: Any) -> int:
    """One line instead of Typer's boxed usage panel: bad flags are bad input like any other.

    ``--debug`` shows the traceback first; the line and the exit code stay the same.
    """
    if debug_enabled():
        print_traceback(error)
    if not error.format_message():
        return error.exit_code  # a bare ``icnn``: the help has been printed
    _in_user_words(error)
    context = getattr(error, "ctx", None)
    command = f"{context.command_path}: ".removeprefix("icnn ") if context is not None else ""
    command = "" if command == "icnn: " else command
    hint = f" (see '{context.command_path} --help')" if context is not None else ""
    message = error.format_message()
    global_option = next(
        (name for name in GLOBAL_OPTIONS if f"No such option: {name}" in message), None
    )
    if global_option is not None and command:
        hint = (
            f" ({global_option} is a global option: put it before the command, "
            f"'icnn {global_option} {command.removesuffix(': ')} ...')"
        )
    Output.error(f"{command}{message}{hint}")
    return error.exit_code


GLOBAL_OPTIONS = ("--debug", "--version", "--show-completion", "--install-completion")
"""The root's options: given after a command, the error says where they go."""


def _in_user_words(error: Any) -> None:
    """A flag value refused by Typer's pydantic coercion, reworded as config errors are."""
    cause = error.__cause__
    if type(cause).__name__ != "ValidationError" or not hasattr(error, "message"):
        return
    from icnn_cli.validation_errors import problem_texts

    error.message = "; ".join(problem_texts(cause))
