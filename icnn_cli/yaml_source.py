"""Safe YAML reading that remembers where every key stands.

PyYAML's ``safe_load`` keeps the last of two duplicate keys without a word and
forgets line numbers, and pydantic reports errors by location only; this module
closes both gaps so each config error can be reported as ``file:line:col: field``.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from icnn_cli.errors import IcnnError

if TYPE_CHECKING:
    from pydantic import ValidationError

Location = tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML mapping with the 1-based (line, column) of every key and item."""

    path: Path
    data: dict[str, Any]
    positions: dict[Location, tuple[int, int]]

    def position_of(self, location: Location) -> tuple[int, int] | None:
        """The position of ``location``, or of its nearest enclosing key that has one."""
        for end in range(len(location), 0, -1):
            if location[:end] in self.positions:
                return self.positions[location[:end]]
        return None

    def where(self, location: Location) -> str:
        position = self.position_of(location)
        if position is None:
            return str(self.path)
        return f"{self.path}:{position[0]}:{position[1]}"

    def describe_validation_error(self, error: ValidationError) -> str:
        """One line for the first pydantic error: ``file:line:col: field: message``."""
        # An unknown key usually explains a "missing" one (a typo), so report it first.
        errors = sorted(
            error.errors(include_url=False), key=lambda item: item["type"] != "extra_forbidden"
        )
        first = errors[0]
        location = tuple(first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "value_error":
            location, message = self._field_named_in(location, message)
        field = ".".join(str(part) for part in location) or "(top level)"
        if first["type"] == "extra_forbidden":
            parent = location[:-1]
            message = f"unknown key '{location[-1]}'{self._suggestion(error, parent, location[-1])}"
            field = ".".join(str(part) for part in parent) or "(top level)"
        elif first["type"] == "missing":
            message = f"missing required key '{location[-1]}'"
            field = ".".join(str(part) for part in location[:-1]) or "(top level)"
        elif first["type"] != "value_error":
            message = f"{message}, got {first['input']!r}"
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        return f"{self.where(location)}: {field}: {message}{more}"

    def _field_named_in(self, location: Location, message: str) -> tuple[Location, str]:
        # Cross-field checks (model validators) cannot set a location, so their
        # messages start with the field they are about: "ranks: ..." or "init.input_shape: ...".
        head, separator, rest = message.partition(": ")
        if separator and " " not in head:
            for candidate in (location + tuple(head.split(".")), tuple(head.split("."))):
                if candidate in self.positions:
                    return candidate, rest
        return location, message

    def _suggestion(self, error: ValidationError, parent: Location, key: Any) -> str:
        valid = _valid_keys(error.title, parent)
        close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
        if close:
            return f" (did you mean '{close[0]}'?)"
        return f" (valid keys: {', '.join(valid)})" if valid else ""


def _valid_keys(model_name: str, parent: Location) -> list[str]:
    from icnn_cli import config

    model: Any = getattr(config, model_name)
    for part in parent:
        annotation = model.model_fields[part].annotation
        model = next(
            (
                arg
                for arg in getattr(annotation, "__args__", (annotation,))
                if hasattr(arg, "model_fields")
            ),
            None,
        )
        if model is None:
            return []
    return list(model.model_fields)


def _record_positions(node: yaml.Node, location: Location, positions: dict, path: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        first_seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
            line = key_node.start_mark.line + 1
            if key in first_seen:
                dotted = ".".join(str(part) for part in (*location, key))
                raise IcnnError(
                    f"{path}:{line}:{key_node.start_mark.column + 1}: {dotted}: duplicate key "
                    f"(first given on line {first_seen[key]}; YAML would silently keep the last)"
                )
            first_seen[key] = line
            positions[(*location, key)] = (line, key_node.start_mark.column + 1)
            _record_positions(value_node, (*location, key), positions, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            positions[(*location, index)] = (item.start_mark.line + 1, item.start_mark.column + 1)
            _record_positions(item, (*location, index), positions, path)


def read_yaml_mapping(path: Path) -> YamlDocument:
    """Parse ``path`` with PyYAML's safe loader; raise :class:`IcnnError` on any problem."""
    text = _read_text(path)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise IcnnError(f"{path}: config is empty (expected a mapping with a 'model' section)")
        positions: dict[Location, tuple[int, int]] = {}
        _record_positions(node, (), positions, path)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = error.problem or error.context or "invalid YAML"
        if isinstance(error, yaml.constructor.ConstructorError):
            problem = f"{problem} (only plain YAML data is accepted, no Python tags)"
        raise IcnnError(f"{where}: YAML error: {problem}") from None
    except yaml.YAMLError as error:
        raise IcnnError(f"{path}: YAML error: {error}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise IcnnError(
            f"{path}: top level must be a mapping with a 'model' section, got {type(data).__name__}"
        )
    return YamlDocument(path=path, data=data, positions=positions)


def _read_text(path: Path) -> str:
    try:
        if path.is_dir():
            raise IcnnError(f"{path}: config is a directory, expected a YAML file")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise IcnnError(f"{path}: config file not found") from None
    except PermissionError:
        raise IcnnError(f"{path}: config file is not readable (permission denied)") from None
    except UnicodeDecodeError as error:
        raise IcnnError(f"{path}: config is not UTF-8 text ({error.reason})") from None
    except OSError as error:
        raise IcnnError(f"{path}: cannot read config ({error.strerror})") from None
