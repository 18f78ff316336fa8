"""Commented YAML configs generated from the pydantic models (what ``icnn config new`` prints).

Every key is written with its description, its type (from the JSON Schema, so the
template and ``icnn schema`` cannot disagree) and its default, as comments above it.
A field left at ``None`` in ``model:`` is not passed to OTT, so OTT's default applies;
such fields are written only when every key is asked for, as ``null``.

Example::

    config = starter_config(dim_data=2, dim_hidden=[64, 64], pos_weights=True)
    text = config_template(config)
    IcnnConfig.model_validate(yaml.safe_load(text)) == config  # True
"""

from __future__ import annotations

import textwrap
import types
import typing
from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from icnn_cli.config import (
    DEFAULT_OUTPUT,
    GaussianMapSamples,
    IcnnConfig,
    InitOverride,
    ShardingRule,
)
from icnn_cli.errors import UsageError
from icnn_cli.validation_errors import config_error, problems_of

DEFAULT_DIM_DATA = 2
DEFAULT_DIM_HIDDEN = (64, 64)
"""OTT's NeuralDual examples use 2-D data and two hidden layers of 64 (configs/default.yaml)."""

COMMENT_WIDTH = 96
INDENT = "  "

EXAMPLE_VALUES: dict[tuple[type[BaseModel], str], Any] = {
    (GaussianMapSamples, "source"): "samples/source.npy",
    (GaussianMapSamples, "target"): "samples/target.npy",
    (InitOverride, "path"): "params/w_zs_*/kernel",
    (InitOverride, "init"): {"name": "uniform", "scale": 0.1},
    (ShardingRule, "path"): "params/w_zs_*/kernel",
    (ShardingRule, "spec"): [None, "x"],
}
"""Values for the commented-out examples of sections that have required keys and no default."""

PARAMETER_OF_FIELD: dict[tuple[str, ...], str] = {
    ("model", "dim_data"): "dim_data",
    ("model", "dim_hidden"): "dim_hidden",
    ("model", "pos_weights"): "pos_weights",
    ("model", "gaussian_map_samples"): "gaussian_map",
    ("init", "seed"): "seed",
}
"""The argument of :func:`starter_config` that sets each field (each edge spells it)."""


def starter_config(
    dim_data: int = DEFAULT_DIM_DATA,
    dim_hidden: Sequence[int] = DEFAULT_DIM_HIDDEN,
    pos_weights: bool | None = None,
    gaussian_map: tuple[str, str] | None = None,
    seed: int = 0,
) -> IcnnConfig:
    """A validated config from the common fields; the others keep their defaults.

    Args:
      dim_data: data dimensionality.
      dim_hidden: sizes of the hidden layers.
      pos_weights: OTT's ``pos_weights``; ``None`` leaves it out (OTT's default).
      gaussian_map: ``(source, target)`` paths of ``.npy`` samples, relative to the config
        file, for the Gaussian-map init; ``None`` leaves it out.
      seed: master seed, ``0..2**32-1``.

    Raises:
      UsageError: a value the schema refuses, about the argument that set it.
    """
    model: dict[str, Any] = {"dim_data": dim_data, "dim_hidden": list(dim_hidden)}
    if pos_weights is not None:
        model["pos_weights"] = pos_weights
    if gaussian_map is not None:
        source, target = gaussian_map
        model["gaussian_map_samples"] = {"source": source, "target": target}
    document = {"model": model, "init": {"seed": seed}, "output": DEFAULT_OUTPUT}
    try:
        return IcnnConfig.model_validate(document)
    except ValidationError as error:
        problem = problems_of(error, IcnnConfig, document)[0]
        parameter = PARAMETER_OF_FIELD.get(tuple(map(str, problem.location[:2])))
        if parameter is None:
            raise config_error(error, IcnnConfig, data=document) from None
        raise UsageError(problem.text, parameter=parameter) from None


def config_template(config: IcnnConfig, every_key: bool = False) -> str:
    """The config as YAML, each key preceded by its description, type and default.

    Args:
      config: the values to write.
      every_key: write every key of every section (unset ones with their defaults, the
        sections whose keys have no default as commented-out examples); otherwise only
        the keys set in ``config`` and the required ones.

    Returns:
      YAML text that ``icnn init`` accepts unchanged and that validates to ``config``
      (with ``every_key``: to a config with the same meaning).
    """
    schema = IcnnConfig.model_json_schema()
    lines = [
        "# An icnn config: `icnn init -c THIS_FILE` writes its checkpoint.",
        "# Above each key: what it means, then its type and default.",
        "# `icnn schema` prints the JSON Schema.",
    ]
    if not every_key:
        lines.append("# `icnn config new --all` writes every key, OTT's defaults included.")
    lines += _model_lines(config, schema, schema["$defs"], 0, every_key, top_level=True)
    return "\n".join(lines) + "\n"


def _model_lines(
    instance: BaseModel,
    schema: dict[str, Any],
    definitions: dict[str, Any],
    depth: int,
    every_key: bool,
    top_level: bool = False,
) -> list[str]:
    lines: list[str] = []
    indent = INDENT * depth
    for name, field in type(instance).model_fields.items():
        if not (every_key or field.is_required() or name in instance.model_fields_set):
            continue
        value = getattr(instance, name)
        if top_level:
            lines.append("")
        property_schema = schema["properties"][name]
        description = field.description or _first_docstring_line(_model_class(field.annotation))
        lines += _comment_lines(indent, description)
        lines += _comment_lines(indent, _type_and_default(field, property_schema, definitions))
        nested_class = _model_class(field.annotation)
        item_class = _list_item_model_class(field.annotation)
        if isinstance(value, BaseModel):
            lines.append(f"{indent}{name}:")
            lines += _model_lines(
                value, _resolve(property_schema, definitions), definitions, depth + 1, every_key
            )
        elif value is None and nested_class is not None and every_key:
            lines += _absent_section_lines(nested_class, name, indent, definitions)
        else:
            lines.append(f"{indent}{name}: {_flow_yaml(value)}")
            if item_class is not None and every_key and not value:
                example = _example_lines(item_class, indent + INDENT + "- ")
                lines += _key_notes(item_class, indent, definitions)
                lines += [f"{indent}# for example, in place of []:"] + _commented(example, indent)
    return lines


def _absent_section_lines(
    section: type[BaseModel], name: str, indent: str, definitions: dict[str, Any]
) -> list[str]:
    """An unset optional section: its defaults if it has them all, else a commented example."""
    if not any(field.is_required() for field in section.model_fields.values()):
        default = section()
        return [f"{indent}{name}:"] + _model_lines(
            default, definitions[section.__name__], definitions, len(indent) // 2 + 1, True
        )
    example = _example_lines(section, indent + INDENT)
    return (
        _key_notes(section, indent, definitions)
        + [f"{indent}{name}:    # empty: left out; to use it, uncomment and edit:"]
        + _commented(example, indent)
    )


def _key_notes(section: type[BaseModel], indent: str, definitions: dict[str, Any]) -> list[str]:
    """``key (type): description`` of each key of a section shown only as an example."""
    lines = []
    for name, field in section.model_fields.items():
        type_text = _type_text(definitions[section.__name__]["properties"][name], definitions)
        lines += _comment_lines(indent, f"{name} ({type_text}): {field.description}")
    return lines


def _example_lines(section: type[BaseModel], prefix: str) -> list[str]:
    """``key: example`` for each key of ``section``, the first one after ``prefix``."""
    continuation = " " * len(prefix)
    return [
        f"{prefix if index == 0 else continuation}{name}: "
        f"{_flow_yaml(EXAMPLE_VALUES[(section, name)])}"
        for index, name in enumerate(section.model_fields)
    ]


def _commented(lines: list[str], indent: str) -> list[str]:
    # "  #   source: x": removing the first "# " gives back the valid line "    source: x".
    return [f"{indent}# {line[len(indent) :]}" for line in lines]


def _comment_lines(indent: str, text: str) -> list[str]:
    text = text.replace("``", "`")
    return textwrap.wrap(
        text,
        width=COMMENT_WIDTH,
        initial_indent=f"{indent}# ",
        subsequent_indent=f"{indent}# ",
        break_on_hyphens=False,
    )


def _type_and_default(field: Any, schema: dict[str, Any], definitions: dict[str, Any]) -> str:
    type_text = _type_text(schema, definitions)
    if field.is_required():
        return f"type: {type_text}; required"
    default = field.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        return f"type: {type_text}"
    return f"type: {type_text}; default: {_flow_yaml(default)}"


def _type_text(schema: dict[str, Any], definitions: dict[str, Any]) -> str:
    """A short reading of a JSON Schema: ``int > 0``, ``list of int >= 0 | null``, ..."""
    if "$ref" in schema:
        return "mapping"
    if "anyOf" in schema:
        parts = [_type_text(option, definitions) for option in schema["anyOf"]]
        return " | ".join(dict.fromkeys(parts))
    if "const" in schema:
        return f"'{schema['const']}'"
    if "enum" in schema:
        return "one of " + ", ".join(str(option) for option in schema["enum"])
    kind = schema.get("type")
    if kind == "integer":
        return "int" + _integer_bounds(schema)
    if kind == "array":
        items = schema.get("items")
        if items is None:
            return "list"
        item_text = _type_text(items, definitions)
        return f"list of ({item_text})" if "anyOf" in items else f"list of {item_text}"
    if kind == "object":
        if "name" in schema.get("properties", {}):
            return "{name: ..., **arguments}"
        values = schema.get("additionalProperties")
        if isinstance(values, dict):
            return f"mapping of name -> {_type_text(values, definitions)}"
        return "mapping"
    if kind == "string" and "pattern" in schema:
        return "name"
    names = {"string": "string", "boolean": "bool", "number": "float", "null": "null"}
    return names.get(str(kind), str(kind))


def _integer_bounds(schema: dict[str, Any]) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if "exclusiveMinimum" in schema:
        return f" > {schema['exclusiveMinimum']}"
    if low is not None and high is not None:
        return f" in {low}..{high}"
    if low is not None:
        return f" >= {low}"
    return ""


def _resolve(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    for option in [schema, *schema.get("anyOf", [])]:
        if "$ref" in option:
            return definitions[option["$ref"].rsplit("/", 1)[-1]]
    raise KeyError(f"no section schema in {schema}")


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """``X`` for an annotation ``X`` or ``X | None`` where ``X`` is a pydantic model."""
    options = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    for option in options:
        if isinstance(option, type) and issubclass(option, BaseModel):
            return option
    return None


def _list_item_model_class(annotation: Any) -> type[BaseModel] | None:
    if typing.get_origin(annotation) is list:
        return _model_class(typing.get_args(annotation)[0])
    return None


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _first_docstring_line(model_class: type[BaseModel] | None) -> str:
    doc = (model_class.__doc__ or "") if model_class else ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _flow_yaml(value: Any) -> str:
    """One-line YAML for a value: ``[64, 64]``, ``{name: normal, stddev: 0.01}``, ``null``."""
    if isinstance(value, list):
        value = [item.model_dump() if isinstance(item, BaseModel) else item for item in value]
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6)
    return text.removesuffix("\n").removesuffix("\n...").strip()
