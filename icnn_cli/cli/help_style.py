"""One style for every ``--help``: the one Typer and Click users know.

Typer 0.29 labels every option with its Python type (``--force <bool>``, ``<list[str]>``)
and writes required arguments as ``{path}`` in usage lines. The command classes here give
each parameter a Click-style metavar instead, once, for every command:

- a flag takes no value, so it shows none (``--force``);
- a value shows its kind: ``INTEGER``, ``FLOAT``, ``TEXT``, ``PATH``, ``[text|md|json]``;
- an argument shows its name in capitals, in the usage line as in README
  (``icnn verify [OPTIONS] PATHS...``).

Defaults are shown as ``[default: ...]`` by each option (``show_default``), never in prose.
"""

from __future__ import annotations

import re
from typing import Any

import typer.core

_KIND_OF_TYPE = {
    "bool": "",
    "int": "INTEGER",
    "float": "FLOAT",
    "str": "TEXT",
    "path": "PATH",
    "int range": "INTEGER RANGE",
    "float range": "FLOAT RANGE",
    "list[str]": "TEXT",
}


def _kind(label: str) -> str:
    """``<int>`` -> ``INTEGER``, ``<text|md|json>`` -> ``[text|md|json]``."""
    inner = label.removeprefix("<").removesuffix(">")
    if inner in _KIND_OF_TYPE:
        return _KIND_OF_TYPE[inner]
    if "|" in inner:
        return f"[{inner}]"
    return re.sub(r"\W+", " ", inner).strip().upper()


def _no_type(ctx: Any) -> None:
    return None


def restyle(parameter: Any, ctx: Any) -> None:
    """Give ``parameter`` a Click-style metavar unless it declares its own."""
    if getattr(parameter, "_icnn_restyled", False):
        return
    parameter._icnn_restyled = True
    if isinstance(parameter, typer.core.TyperArgument):
        if parameter.metavar is None:
            name = (parameter.name or "").upper()
            parameter.metavar = name + ("..." if parameter.nargs != 1 else "")
        # The name says what it is; the type column would repeat it as <str>.
        parameter.display_type_rich = _no_type
    elif parameter.metavar is None:
        parameter.metavar = "" if parameter.is_flag else _kind(parameter.display_type(ctx))


def _usage_pieces(command: Any, ctx: Any) -> list[str]:
    pieces = [command.options_metavar] if command.options_metavar else []
    for parameter in command.get_params(ctx):
        if isinstance(parameter, typer.core.TyperArgument):
            name = parameter.metavar
            pieces.append(name if parameter.required else f"[{name}]")
    return pieces


class IcnnCommand(typer.core.TyperCommand):
    """A command whose help and usage line use :func:`restyle`'d parameters."""

    def get_params(self, ctx: Any) -> list[Any]:
        parameters = super().get_params(ctx)
        for parameter in parameters:
            restyle(parameter, ctx)
        return parameters

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage_pieces(self, ctx)


class IcnnGroup(typer.core.TyperGroup):
    """The root and ``icnn config``: their own options restyled as a command's are."""

    def get_params(self, ctx: Any) -> list[Any]:
        parameters = super().get_params(ctx)
        for parameter in parameters:
            restyle(parameter, ctx)
        return parameters
