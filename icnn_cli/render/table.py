"""One column model drives both the rich table and the Markdown table.

A column turns a row into a cell: a few pieces of text, each with a role (a
module name, a tree guide, a flag...). Rich gives each role a style; Markdown
gives it a form (bold, code, no-break spaces). So the two outputs cannot drift:
they have the same columns, the same texts, and both pass :func:`visible`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal, TypeVar

from icnn_cli.render.safe_text import visible

Row = TypeVar("Row")
Role = Literal["plain", "guide", "leaf", "module", "count", "more", "flag", "code", "bad", "good"]

RICH_STYLES: dict[str, str | None] = {
    "plain": None,
    "guide": "dim",
    "leaf": "cyan",
    "module": "bold",
    "count": "magenta",
    "more": "dim",
    "flag": "bold red",
    "code": None,
    "bad": "bold red",
    "good": "green",
}


@dataclasses.dataclass(frozen=True)
class Piece:
    text: str
    role: Role = "plain"


Cell = tuple[Piece, ...]


def text_cell(text: object, role: Role = "plain") -> Cell:
    return (Piece(str(text), role),) if text != "" else ()


@dataclasses.dataclass(frozen=True)
class Column(Generic[Row]):
    """A header and how to fill the cell of each row."""

    header: str
    cell: Callable[[Row], Cell]
    justify: Literal["left", "right"] = "left"
    no_wrap: bool = False


def rich_cell(cell: Cell) -> Any:
    from rich.text import Text

    # Text.append keeps each piece's own style; "+" would give them all the first one's.
    text = Text()
    for piece in cell:
        text.append(visible(piece.text), style=RICH_STYLES[piece.role])
    return text


def rich_table(
    columns: Sequence[Column[Row]],
    rows: Sequence[Row],
    row_style: Callable[[Row], str | None] = lambda row: None,
) -> Any:
    """A borderless rich table of ``rows``."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column.header, justify=column.justify, no_wrap=column.no_wrap)
    for row in rows:
        table.add_row(*(rich_cell(column.cell(row)) for column in columns), style=row_style(row))
    return table


def rich_facts(facts: Sequence[tuple[str, str]]) -> Any:
    """Label/value lines (a checkpoint's path, spec, versions) as a two-column grid."""
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in facts:
        grid.add_row(Text(visible(label)), Text(visible(value)))
    return grid


def markdown_text(text: str) -> str:
    """Escaped for a Markdown table cell: a pipe would end the cell and a newline the row."""
    return visible(text).replace("|", "\\|")


def markdown_cell(cell: Cell) -> str:
    parts = []
    for piece in cell:
        text = markdown_text(piece.text)
        if piece.role == "guide":
            text = text.replace(" ", "\u00a0")  # Markdown would collapse the tree's spaces
        elif piece.role in ("module", "bad") and text:
            text = f"**{text}**"
        elif piece.role == "code" and text:
            text = f"`{text}`"
        parts.append(text)
    return "".join(parts)


def markdown_table(columns: Sequence[Column[Row]], rows: Sequence[Row]) -> list[str]:
    """GitHub-flavoured Markdown table lines."""
    align = {"left": "---", "right": "--:"}
    lines = [
        "| " + " | ".join(column.header for column in columns) + " |",
        "|" + "|".join(align[column.justify] for column in columns) + "|",
    ]
    for row in rows:
        lines.append(
            "| " + " | ".join(markdown_cell(column.cell(row)) for column in columns) + " |"
        )
    return lines


def markdown_facts(facts: Sequence[tuple[str, str]], code: Sequence[str] = ()) -> list[str]:
    """Label/value lines as a two-column Markdown table (the first line is its header).

    The values of the labels in ``code`` (paths, say) are shown as code.
    """
    rows = [
        f"| {markdown_text(label)} | "
        + markdown_cell(text_cell(value, "code" if label in code else "plain"))
        + " |"
        for label, value in facts
    ]
    return [rows[0], "|---|---|", *rows[1:]]
