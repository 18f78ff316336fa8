"""Pydantic's validation errors in the user's words: the one place that reads them.

Pydantic words its errors for programmers (``Input should be a valid integer, unable to
parse string as an integer``, ``Value error, ...``) and reports a typo'd key twice: as an
unknown key and as a missing one. Every reader of a config, a flag value or an embedded
spec passes its :class:`pydantic.ValidationError` here, so the YAML reader, the Python
API, ``icnn config new`` and a checkpoint's spec all say the same thing:

    cfg.yaml:3:3: model: unknown key 'dim_hiden' (did you mean 'dim_hidden'?)
    <mapping>: init.seed: expected a whole number, got 'seven'

Example::

    try:
        IcnnConfig.model_validate(data)
    except ValidationError as error:
        raise config_error(error, IcnnConfig, source="<mapping>", data=data) from None
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from icnn_cli.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

Location = tuple[Any, ...]

MAX_SHOWN_PROBLEMS = 3
"""Problems one message lists; a count stands for the rest."""
SHOWN_CHARS = 60
"""How much of a value a message quotes."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One validation problem, worded for the user.

    Attributes:
      location: where it is (keys and list indices), for the reader to point at a line.
      field: the dotted field it is about (``model.dim_hidden``; ``(top level)``).
      text: what is wrong (``expected a whole number, got 'seven'``).
    """

    location: Location
    field: str
    text: str


def problems_of(
    error: ValidationError, model: type[BaseModel] | None = None, data: Any = None
) -> list[Problem]:
    """Every problem of ``error`` in the user's words, unknown keys first.

    Args:
      error: what ``model.model_validate(data)`` raised.
      model: the root model validated; unknown keys are matched against its fields
        (walking ``model_fields``) for a did-you-mean hint.
      data: the data validated; a model validator's message that starts with a field
        (``ranks: ...``) is placed at that field when ``data`` has it.
    """
    errors = sorted(
        error.errors(include_url=False), key=lambda item: item["type"] != "extra_forbidden"
    )
    problems: list[Problem] = []
    suggested: set[Location] = set()  # a typo'd key explains the "missing" one it meant
    for item in errors:
        location = tuple(item["loc"])
        kind = item["type"]
        if kind == "extra_forbidden":
            parent, key = location[:-1], location[-1]
            hint, meant = _suggestion(model, parent, key)
            if meant is not None:
                suggested.add((*parent, meant))
            problems.append(Problem(location, _dotted(parent), f"unknown key {_shown(key)}{hint}"))
        elif kind == "missing":
            if location in suggested:
                continue
            text = f"missing required key '{location[-1]}'"
            problems.append(Problem(location, _dotted(location[:-1]), text))
        elif kind in ("value_error", "assertion_error"):
            message = _value_error_text(str(item["msg"]))
            location, message = _field_named_in(location, message, data)
            problems.append(Problem(location, _dotted(location), _shortened_quotes(message)))
        else:
            text = _worded(kind, item)
            problems.append(Problem(location, _dotted(location), _shortened_quotes(text)))
    return problems


def describe_validation_error(
    error: ValidationError,
    model: type[BaseModel] | None = None,
    source: str | None = None,
    data: Any = None,
    where: Callable[[Location], str] | None = None,
) -> str:
    """One line naming each problem (up to :data:`MAX_SHOWN_PROBLEMS`) with its place.

    Args:
      error, model, data: as for :func:`problems_of`.
      source: how the config is named (a path, ``<mapping>``); ``None`` for none.
      where: the place of a location (``cfg.yaml:3:3``), for a reader that knows lines;
        by default ``source``.
    """
    problems = problems_of(error, model, data)
    shown = []
    for problem in problems[:MAX_SHOWN_PROBLEMS]:
        place = where(problem.location) if where is not None else source
        shown.append(f"{place}: " * (place is not None) + f"{problem.field}: {problem.text}")
    rest = len(problems) - len(shown)
    more = f" (and {rest} more problem{'s' * (rest > 1)})" if rest else ""
    return "; ".join(shown) + more


def config_error(
    error: ValidationError,
    model: type[BaseModel] | None = None,
    source: str | None = None,
    data: Any = None,
    where: Callable[[Location], str] | None = None,
) -> ConfigError:
    """:func:`describe_validation_error` as the :class:`ConfigError` to raise."""
    return ConfigError(describe_validation_error(error, model, source, data, where))


def problem_texts(error: ValidationError) -> list[str]:
    """Just the texts (no field), for a caller that names the field itself (a flag)."""
    return [problem.text for problem in problems_of(error)]


# The wording of each pydantic error type ------------------------------------------------

_EXPECTED = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "text",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}

_BOUNDS = {
    "greater_than": ("gt", "must be greater than"),
    "greater_than_equal": ("ge", "must be at least"),
    "less_than": ("lt", "must be less than"),
    "less_than_equal": ("le", "must be at most"),
}


def _worded(kind: str, item: Mapping[str, Any]) -> str:
    context = item.get("ctx") or {}
    got = f"got {_shown(item.get('input'))}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, {got}"
    if kind in ("literal_error", "enum"):
        return f"expected one of {context.get('expected', 'the listed values')}, {got}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"{words} {context.get(key)}, {got}"
    if kind in ("too_short", "too_long"):
        bound = "at least" if kind == "too_short" else "at most"
        count = context.get("min_length" if kind == "too_short" else "max_length")
        return f"needs {bound} {count} item{'s' * (count != 1)}, {got}"
    message = str(item.get("msg", kind))
    return f"{message[:1].lower()}{message[1:]}, {got}"


def _value_error_text(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def _field_named_in(location: Location, message: str, data: Any) -> tuple[Location, str]:
    # Cross-field checks (model validators) cannot set a location, so their messages
    # start with the field they are about: "ranks: ..." or "init.input_shape: ...".
    # Without the data (a model validated on its own), a head that reads as a field name
    # is taken at its word.
    head, separator, rest = message.partition(": ")
    if separator and _FIELD_PATH.fullmatch(head):
        if data is None:
            return location + tuple(head.split(".")), rest
        for candidate in (location + tuple(head.split(".")), tuple(head.split("."))):
            if _has(data, candidate):
                return candidate, rest
    return location, message


_FIELD_PATH = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z0-9_]+)*")


def _has(data: Any, location: Location) -> bool:
    for part in location:
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        else:
            return False
    return bool(location)


def _dotted(location: Location) -> str:
    return ".".join(shown_text(str(part)) for part in location) or "(top level)"


def shown_text(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut to ``limit``, control characters as escapes (one safe line)."""
    shown = text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in shown)


def _shown(value: Any) -> str:
    """``repr(value)`` cut to :data:`SHOWN_CHARS` (repr already escapes control characters)."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} chars)"


def _shortened_quotes(message: str) -> str:
    """``message`` with each long quoted value cut (validators quote the input whole)."""
    return _LONG_QUOTE.sub(
        lambda match: f"{match[0][: SHOWN_CHARS + 1]}...' ({len(match[0]) - 2} chars)", message
    )


_LONG_QUOTE = re.compile(rf"'[^'\n]{{{SHOWN_CHARS + 1},}}'")


def _suggestion(model: Any, parent: Location, key: Any) -> tuple[str, str | None]:
    """The hint after an unknown key, and the key it suggests (if one is close)."""
    valid = _valid_keys(model, parent) if model is not None else []
    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)", close[0]
    return (f" (valid keys: {', '.join(valid)})" if valid else ""), None


def _valid_keys(root: Any, parent: Location) -> list[str]:
    """The field names of the model at ``parent``, walking ``model_fields`` from ``root``.

    A list index or a ``dict`` key in ``parent`` stays on the model inside that
    ``list[...]`` or ``dict[str, ...]`` annotation.
    """
    annotation: Any = root
    for part in parent:
        model = _model_in(annotation)
        if model is None:
            return []
        if isinstance(part, str) and part in model.model_fields:
            annotation = model.model_fields[part].annotation
    model = _model_in(annotation)
    return list(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> Any:
    """The pydantic model class in ``annotation`` (``X``, ``X | None``, ``list[X]``, ...)."""
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return annotation
    for argument in typing.get_args(annotation):
        model = _model_in(argument)
        if model is not None:
            return model
    return None
