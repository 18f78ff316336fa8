"""One output object that knows human vs JSON, so commands never branch on format.

Data goes to stdout; errors, warnings and progress go to stderr. Human output is
rich when stdout is a terminal, and plain text (no ANSI codes) when it is not or
when ``NO_COLOR`` is set.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from icnn_cli.render.safe_text import visible

PLAIN_WIDTH = 120  # enough for the widest tree rows when stdout is a file or pipe


def is_plain(stream: Any) -> bool:
    return bool(os.environ.get("NO_COLOR")) or not getattr(stream, "isatty", lambda: False)()


def make_console(stream: Any) -> Any:
    from rich.console import Console

    if is_plain(stream):
        console = Console(
            file=stream,
            color_system=None,
            no_color=True,
            highlight=False,
            force_terminal=False,
            soft_wrap=False,
        )
        if "COLUMNS" not in os.environ:  # rich reads COLUMNS itself (and ignores a bad one)
            console.width = PLAIN_WIDTH
        return console
    return Console(file=stream, highlight=False)


def print_plain(console: Any, renderable: Any) -> None:
    """Print as rich lays it out, each line ended at its last character.

    Rich pads table rows and headers to the width; in a pipe or a file those runs of
    spaces are noise (``cat -A``, ``diff``, golden files).
    """
    with console.capture() as captured:
        console.print(renderable)
    lines = captured.get().splitlines()
    console.file.write("".join(line.rstrip() + "\n" for line in lines))


class Output:
    """Writes one command's result as rich/plain text or as exactly one JSON document."""

    def __init__(self, json_mode: bool = False, markdown_mode: bool = False) -> None:
        self.json_mode = json_mode
        self.markdown_mode = markdown_mode

    def result(
        self,
        data: dict[str, Any] | Callable[[], dict[str, Any]],
        render: Callable[[], Any],
        markdown: Callable[[], str] | None = None,
    ) -> None:
        """Write the JSON of ``data``, ``markdown()`` verbatim, or ``render()`` through rich.

        A callable ``data`` is only called for JSON.
        """
        if self.json_mode:
            document = data() if callable(data) else data
            try:
                text = json.dumps(document, indent=2, allow_nan=False)
            except ValueError:  # a NaN or infinity from a checkpoint: JSON has none
                text = json.dumps(_finite(document), indent=2, allow_nan=False)
            sys.stdout.write(text + "\n")
        elif self.markdown_mode and markdown is not None:
            sys.stdout.write(markdown())
        else:
            console = make_console(sys.stdout)
            if is_plain(sys.stdout):
                print_plain(console, render())
            else:
                console.print(render())

    def status(self, message: str) -> Any:
        """A spinner on a terminal's stderr while long work runs (a no-op elsewhere)."""
        if is_plain(sys.stderr):
            return contextlib.nullcontext()
        return make_console(sys.stderr).status(message)

    @contextlib.contextmanager
    def progress(self, total: int, description: str) -> Iterator[Callable[[str], None]]:
        """Yield ``step(text)``: a rich bar on a terminal's stderr, else one plain line per step."""
        if is_plain(sys.stderr):
            count = 0

            def line(text: str) -> None:
                nonlocal count
                count += 1
                sys.stderr.write(f"icnn: [{count}/{total}] {visible(text)}\n")
                sys.stderr.flush()

            yield line
            return
        from rich.markup import escape
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        with Progress(
            "{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=make_console(sys.stderr),
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=total)
            yield lambda text: bar.update(task, advance=1, description=escape(visible(text)))

    # Messages quote keys, paths and globs that came from a checkpoint, a config or
    # the command line, so they pass visible() too: one line, nothing executed.
    @staticmethod
    def warn(message: str) -> None:
        sys.stderr.write(f"icnn: warning: {visible(message)}\n")

    @staticmethod
    def note(message: str) -> None:
        """One line for the person watching (a run's summary), on stderr."""
        sys.stderr.write(f"icnn: {visible(message)}\n")

    @staticmethod
    def error(message: str) -> None:
        sys.stderr.write(f"icnn: error: {visible(message)}\n")


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float as ``None`` (JSON's ``null``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
