"""Safe YAML reading that remembers where every key stands, within fixed bounds.

PyYAML's ``safe_load`` keeps the last of two duplicate keys without a word and
forgets line numbers, and pydantic reports errors by location only; this module
closes both gaps so each config error can be reported as ``file:line:col: field``.

A config is untrusted input (scripts generate them, people download them), so
everything that could make the reader crash or run for ever is refused with a
one-line :class:`IcnnError` naming the source and line: files over
:data:`MAX_CONFIG_BYTES`, characters YAML does not allow (NUL and other control
characters), nesting deeper than :data:`MAX_DEPTH`, documents that grow past
:data:`MAX_NODES` once aliases are expanded (alias bombs, "billion laughs"),
aliases that contain themselves, and scalars longer than :data:`MAX_SCALAR_CHARS`.

This module knows no schema: callers pass the pydantic model to validate against,
and unknown-key suggestions walk that model's ``model_fields``.

Example::

    document = read_yaml_mapping(Path("configs/default.yaml"))
    config = document.validate(IcnnConfig)

Longer than most modules on purpose: the bounds on untrusted YAML (size, depth,
aliases, characters) belong with the reader they bound.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from icnn_cli.errors import IcnnError
from icnn_cli.validation_errors import config_error
from icnn_cli.validation_errors import shown_text as _shown_text

if TYPE_CHECKING:
    from pydantic import BaseModel

    ModelT = TypeVar("ModelT", bound=BaseModel)

Location = tuple[Any, ...]

STDIN_PATH = "-"
"""The config path that means "read standard input" (``icnn init -c -``)."""
STDIN_NAME = "<stdin>"
"""How errors name a config read from standard input."""

MAX_CONFIG_BYTES = 1 << 20
"""1 MiB: the largest real config (configs/full.yaml) is under 4 KiB; refused before parsing."""
MAX_DEPTH = 32
"""Nesting levels (mappings, lists, scalars). The schema's deepest path,
``sharding.rules[i].spec[j][k]``, is 7; PyYAML's composer recurses per level and
a list nested 500 deep ended in ``RecursionError``."""
MAX_NODES = 10_000
"""YAML nodes once aliases are expanded. Aliases share nodes, so ten lines of
"billion laughs" compose in microseconds but expand to 10**9 values when walked
(position records, pydantic). Anchors and aliases stay allowed (reusing a
``spec`` across sharding rules is a fair use); only the expanded size is bounded.
A real config has under 200 nodes."""
MAX_SCALAR_CHARS = 4096
"""Longest key or value: PATH_MAX on Linux, far above any name or number in a config."""


@dataclasses.dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML mapping with the 1-based (line, column) of every key and item.

    Attributes:
      source: how errors name where the YAML came from: a path, or ``<stdin>``.
      data: the parsed mapping.
      positions: location (keys and list indices) -> (line, column).
    """

    source: str
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
            return self.source
        return f"{self.source}:{position[0]}:{position[1]}"

    def validate(self, model: type[ModelT]) -> ModelT:
        """``model.model_validate(data)``; a failure becomes one-line :class:`ConfigError`
        naming each problem at its ``file:line:col``."""
        from pydantic import ValidationError

        try:
            return model.model_validate(self.data)
        except ValidationError as error:
            raise config_error(error, model, data=self.data, where=self.where) from None


def _dotted(location: Location) -> str:
    return ".".join(_shown_text(str(part)) for part in location) or "(top level)"


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that measures every node as it is composed.

    Each node's size and depth are counted as if its aliases were expanded, from the
    measures of its children (an alias reuses the measure of the node it names), so
    the check costs one pass over the text however large the expansion would be.
    """

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source = source
        self.open_levels = 0
        self.composed = 0
        self.aliases = 0
        self.measures: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, depth), expanded

    def compose_node(self, parent: Any, index: Any) -> Any:
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            node = super().compose_node(parent, index)
            if id(node) not in self.measures:
                self._refuse(mark, "an alias that contains itself (a recursive structure)")
            return node
        # Counted as they come, so a long flat list stops here rather than when it ends.
        self.composed += 1
        if self.composed > MAX_NODES:
            self._refuse(mark, f"more than {MAX_NODES} values")
        self.open_levels += 1
        if self.open_levels > MAX_DEPTH:
            self._refuse(mark, f"nested more than {MAX_DEPTH} levels deep")
        node = super().compose_node(parent, index)
        self.open_levels -= 1
        if node is not None:  # the stubs allow None, for no event; a value always has a node
            self.measures[id(node)] = self._measure(node, mark)
        return node

    def _measure(self, node: yaml.Node, mark: yaml.Mark) -> tuple[int, int]:
        if isinstance(node, yaml.ScalarNode):
            if len(node.value) > MAX_SCALAR_CHARS:
                self._refuse(
                    mark,
                    f"a value of {len(node.value)} characters (the limit is {MAX_SCALAR_CHARS})",
                )
            return 1, 1
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = list(node.value)
        measures = [self.measures[id(child)] for child in children]
        nodes = 1 + sum(size for size, _ in measures)
        depth = 1 + max((child_depth for _, child_depth in measures), default=0)
        expanded = " once aliases are expanded" if self.aliases else ""
        if nodes > MAX_NODES:
            self._refuse(mark, f"more than {MAX_NODES} values{expanded}")
        if depth > MAX_DEPTH:
            self._refuse(mark, f"nested more than {MAX_DEPTH} levels deep{expanded}")
        return nodes, depth

    def _refuse(self, mark: yaml.Mark, problem: str) -> typing.NoReturn:
        raise IcnnError(f"{self.source}:{mark.line + 1}:{mark.column + 1}: config has {problem}")


def _record_positions(node: yaml.Node, location: Location, positions: dict, source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        first_seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
            line = key_node.start_mark.line + 1
            if key in first_seen:
                dotted = _dotted((*location, key))
                raise IcnnError(
                    f"{source}:{line}:{key_node.start_mark.column + 1}: {dotted}: duplicate key "
                    f"(first given on line {first_seen[key]}; YAML would silently keep the last)"
                )
            first_seen[key] = line
            positions[(*location, key)] = (line, key_node.start_mark.column + 1)
            _record_positions(value_node, (*location, key), positions, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            positions[(*location, index)] = (item.start_mark.line + 1, item.start_mark.column + 1)
            _record_positions(item, (*location, index), positions, source)


def is_stdin(path: Path | str) -> bool:
    """Whether ``path`` is ``-``, the name for standard input."""
    return str(path) == STDIN_PATH


def source_name(path: Path | str) -> str:
    """How errors name ``path``: itself, or ``<stdin>`` for ``-``."""
    return STDIN_NAME if is_stdin(path) else str(path)


def read_yaml_mapping(path: Path | str) -> YamlDocument:
    """Read ``path`` (``-``: standard input) and parse it as one YAML mapping.

    Raises:
      IcnnError: for any problem, as one line naming the source (and line and column
        where known); nothing else escapes.
    """
    source = source_name(path)
    raw = _read_stdin() if is_stdin(path) else _read_file(Path(path))
    return parse_yaml_mapping(_decoded(raw, source), source)


def parse_yaml_mapping(text: str, source: str) -> YamlDocument:
    """Parse ``text`` with PyYAML's safe loader, within this module's bounds.

    Args:
      text: the YAML.
      source: how errors name it (a path, ``<stdin>``).
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise IcnnError(_too_big(source, f"{len(text)} characters"))
    try:
        loader = _BoundedLoader(text, source)
    except yaml.reader.ReaderError as error:
        raise IcnnError(_unreadable_character(text, error, source)) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise IcnnError(
                f"{source}: config is empty (expected a mapping with a 'model' section)"
            )
        positions: dict[Location, tuple[int, int]] = {}
        _record_positions(node, (), positions, source)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        # PyYAML splits some messages: context "expected a single document in the
        # stream", problem "but found another document".
        parts = [part for part in (error.context, error.problem) if part]
        problem = ", ".join(parts) or "invalid YAML"
        if isinstance(error, yaml.constructor.ConstructorError):
            problem = f"{problem} (only plain YAML data is accepted, no Python tags)"
        raise IcnnError(f"{where}: YAML error: {_shown_text(problem, limit=300)}") from None
    except yaml.YAMLError as error:
        first = (str(error).splitlines() or ["invalid YAML"])[0]
        raise IcnnError(f"{source}: YAML error: {_shown_text(first, limit=300)}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise IcnnError(
            f"{source}: top level must be a mapping with a 'model' section, "
            f"got {type(data).__name__}"
        )
    return YamlDocument(source=source, data=data, positions=positions)


def _too_big(source: str, size: str) -> str:
    return (
        f"{source}: config is {size}, over the limit of {MAX_CONFIG_BYTES} bytes (1 MiB) "
        "for a config; refusing to parse it"
    )


def _unreadable_character(text: str, error: yaml.reader.ReaderError, source: str) -> str:
    before = text[: error.position]
    line = before.count("\n") + 1
    column = error.position - (before.rfind("\n") + 1) + 1
    code = error.character if isinstance(error.character, int) else ord(error.character)
    name = "NUL" if code == 0 else f"U+{code:04X}"
    return (
        f"{source}:{line}:{column}: config contains an unreadable character {name} "
        "(YAML allows only printable characters, tabs and newlines)"
    )


def _decoded(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        before = raw[: error.start]
        line = before.count(b"\n") + 1
        column = error.start - (before.rfind(b"\n") + 1) + 1
        raise IcnnError(
            f"{source}:{line}:{column}: config is not UTF-8 text ({error.reason})"
        ) from None


def _read_file(path: Path) -> bytes:
    try:
        if path.is_dir():
            raise IcnnError(f"{path}: config is a directory, expected a YAML file")
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise IcnnError(_too_big(str(path), f"{size} bytes"))
        # A pipe or /dev/stdin reports size 0: read one byte past the limit to notice.
        with path.open("rb") as stream:
            raw = stream.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise IcnnError(f"{path}: config file not found") from None
    except PermissionError:
        raise IcnnError(f"{path}: config file is not readable (permission denied)") from None
    except OSError as error:
        raise IcnnError(f"{path}: cannot read config ({error.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise IcnnError(_too_big(str(path), f"more than {MAX_CONFIG_BYTES} bytes"))
    return raw


def _read_stdin() -> bytes:
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        raise IcnnError(f"{STDIN_NAME}: no standard input to read the config from")
    try:
        raw = stream.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise IcnnError(f"{STDIN_NAME}: cannot read config ({error.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise IcnnError(_too_big(STDIN_NAME, f"more than {MAX_CONFIG_BYTES} bytes"))
    return raw
