"""The YAML schema, as pydantic models: the single source of truth for the config.

``model:`` takes the constructor fields of ``ott.neural.networks.icnn.ICNN``
under their own names; ``init:`` takes the arguments of Flax's ``Module.init``
plus the seed and RNG streams. A ``model`` field that is left out is not passed
to OTT at all, so OTT's own default applies and the result equals the plain call.

Example::

    config = load_config(Path("configs/default.yaml"))
    config.model.dim_hidden  # [64, 64]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)

from icnn_cli import registry, yaml_source

SEED_LIMIT = 2**32
"""Seeds are 0..2**32-1: JAX's default (x32) mode maps ``key(2**32)`` to ``key(0)``."""

DERIVE = "derive"
"""An ``init.rngs`` value that derives the stream's key from the master seed."""

RNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
DEFAULT_AXES = ("x", "y", "z")
"""Mesh axis names when ``sharding.axes`` is not given, as in JAX's sharding docs."""
DEFAULT_MIN_SHARD_BYTES = 1 << 20
DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_OUTPUT = "ckpt"


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_seed(value: Any) -> int:
    """Accept an integer in 0..2**32-1, the range where JAX keys are distinct."""
    if not _is_integer(value):
        raise ValueError(f"seed must be an integer in 0..{SEED_LIMIT - 1}, got {value!r}")
    if not 0 <= value < SEED_LIMIT:
        raise ValueError(
            f"seed must be in 0..{SEED_LIMIT - 1}, got {value} "
            f"(JAX silently maps seeds modulo 2**32, so {value} would repeat another seed's key)"
        )
    return value


def _validate_stream_seed(value: Any) -> int | str:
    if value == DERIVE:
        return value
    if not _is_integer(value):
        raise ValueError(f"a stream takes an integer seed or '{DERIVE}', got {value!r}")
    return validate_seed(value)


def _validate_ranks(value: Any) -> int | list[int]:
    if _is_integer(value):
        if value < 0:
            raise ValueError(f"ranks must be >= 0, got {value}")
        return value
    if isinstance(value, list) and all(_is_integer(rank) for rank in value):
        negative = [rank for rank in value if rank < 0]
        if negative:
            raise ValueError(f"ranks must be >= 0, got {negative[0]}")
        return value
    raise ValueError(f"ranks must be an integer >= 0 or a list of them, got {value!r}")


def _validate_mutable(value: Any) -> bool | list[str]:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        return value
    raise ValueError(f"mutable must be true, false or a list of collection names, got {value!r}")


def _function_spec_validator(role: str):
    def validate(value: Any) -> dict[str, Any]:
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise ValueError(f"{role} must be a name or a mapping with a 'name' key, got {value!r}")
        arguments = {key: item for key, item in value.items() if key != "name"}
        if role == "init_fn":
            registry.check_initializer(value["name"], arguments)
        elif role == "recipe":
            registry.check_recipe(value["name"], arguments)
        else:
            registry.check_activation(value["name"], arguments, role)
        return {"name": value["name"], **arguments}

    return validate


def _function_schema(names: tuple[str, ...] | list[str], example: dict[str, Any]) -> dict:
    name_schema = {"type": "string", "enum": list(names)}
    return {
        "anyOf": [
            name_schema,
            {
                "type": "object",
                "properties": {"name": name_schema},
                "required": ["name"],
                "additionalProperties": True,
            },
        ],
        "examples": [names[0], example],
    }


Seed = Annotated[
    int,
    PlainValidator(validate_seed),
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": SEED_LIMIT - 1}),
]
StreamSeed = Annotated[
    int | str,
    PlainValidator(_validate_stream_seed),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": SEED_LIMIT - 1},
                {"const": DERIVE},
            ]
        }
    ),
]
Ranks = Annotated[
    int | list[int],
    PlainValidator(_validate_ranks),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "array", "items": {"type": "integer", "minimum": 0}},
            ]
        }
    ),
]
Mutable = Annotated[
    bool | list[str],
    PlainValidator(_validate_mutable),
    WithJsonSchema(
        {"anyOf": [{"type": "boolean"}, {"type": "array", "items": {"type": "string"}}]}
    ),
]
InitializerSpec = Annotated[
    dict[str, Any],
    PlainValidator(_function_spec_validator("init_fn")),
    WithJsonSchema(
        _function_schema(list(registry.INITIALIZERS), {"name": "normal", "stddev": 0.01})
    ),
]
ActivationSpec = Annotated[
    dict[str, Any],
    PlainValidator(_function_spec_validator("act_fn")),
    WithJsonSchema(
        _function_schema(registry.CONVEX_ACTIVATIONS, {"name": "leaky_relu", "negative_slope": 0.1})
    ),
]
RectifierSpec = Annotated[
    dict[str, Any],
    PlainValidator(_function_spec_validator("rectifier_fn")),
    WithJsonSchema(_function_schema(registry.RECTIFIERS, {"name": "softplus"})),
]
RecipeSpec = Annotated[
    dict[str, Any],
    PlainValidator(_function_spec_validator("recipe")),
    WithJsonSchema(_function_schema(list(registry.RECIPES), {"name": "principled", "rho": 0.5})),
]
PositiveInt = Annotated[int, Field(strict=True, gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


_STDIN_BASE = "to the current directory for a config read from standard input"


class GaussianMapSamples(_Section):
    """Source and target samples (``.npy``, shape ``[n, dim_data]``) for the Bures-map init."""

    source: str = Field(
        description=f"path of the source samples, relative to the config file ({_STDIN_BASE})"
    )
    target: str = Field(
        description=f"path of the target samples, relative to the config file ({_STDIN_BASE})"
    )


class ModelConfig(_Section):
    """Fields of ``ott.neural.networks.icnn.ICNN``; a field left out keeps OTT's default."""

    dim_data: PositiveInt = Field(description="data dimensionality")
    dim_hidden: list[PositiveInt] = Field(
        min_length=1, description="sizes of the hidden layers, e.g. [64, 64]"
    )
    ranks: Ranks | None = Field(
        default=None,
        description="rank of the quadratic potentials: one int, or len(dim_hidden) + 2 ints "
        "(OTT default 1)",
    )
    init_fn: InitializerSpec | None = Field(
        default=None,
        description="kernel initializer: a flax.linen.initializers name, or {name: ..., **kwargs} "
        "(OTT default lecun_normal)",
    )
    act_fn: ActivationSpec | None = Field(
        default=None,
        description="activation, convex and non-decreasing: a name or {name: ..., **kwargs} "
        "(OTT default relu)",
    )
    pos_weights: bool | None = Field(
        default=None,
        description="rectify the w_zs kernels so they stay non-negative (OTT default false)",
    )
    rectifier_fn: RectifierSpec | None = Field(
        default=None,
        description="keeps weights non-negative when pos_weights is on (OTT default relu)",
    )
    gaussian_map_samples: GaussianMapSamples | None = Field(
        default=None,
        description="initialise to mimic the Gaussian (Bures) map from source to target samples",
    )

    @model_validator(mode="after")
    def _ranks_match_layers(self) -> ModelConfig:
        if isinstance(self.ranks, list) and len(self.ranks) != len(self.dim_hidden) + 2:
            raise ValueError(
                f"ranks: a list needs len(dim_hidden) + 2 = {len(self.dim_hidden) + 2} entries "
                f"(one per hidden layer, the output layer and the final potential), "
                f"got {len(self.ranks)}"
            )
        return self

    def icnn_fields(self) -> dict[str, Any]:
        """The fields given in the YAML (``null`` counts as not given): those to pass to OTT."""
        return {
            name: getattr(self, name)
            for name in sorted(self.model_fields_set)
            if getattr(self, name) is not None
        }


class InitOverride(_Section):
    """Leaves whose path matches ``path`` are drawn by ``init`` instead of OTT's initializer."""

    path: str = Field(
        description="glob over the leaf path, e.g. 'params/w_zs_*/kernel' ('*' also crosses '/')"
    )
    init: InitializerSpec = Field(
        description="a flax.linen.initializers name or {name: ..., **kwargs}, e.g. "
        "{name: uniform, scale: 0.1}; draws from the stream 'override:<path>'"
    )


class InitConfig(_Section):
    """Arguments of Flax's ``Module.init``, the seed and the named RNG streams."""

    seed: Seed = Field(default=0, description="master seed, 0..2**32-1 (--seed overrides it)")
    rngs: dict[str, StreamSeed] | None = Field(
        default=None,
        description="named RNG streams: name -> integer seed, or 'derive' for "
        "fold_in(key(seed), crc32(name)); default: one key(seed) for 'params'",
    )
    rng_impl: Literal[RNG_IMPLS] = Field(  # type: ignore[valid-type]
        default="threefry2x32", description="jax.random key implementation"
    )
    input_shape: list[PositiveInt] | None = Field(
        default=None, min_length=1, description="shape of the dummy input; default [1, dim_data]"
    )
    dtype: Literal[DTYPES] = Field(  # type: ignore[valid-type]
        default="float32", description="dtype the parameters are stored in"
    )
    method: str | None = Field(
        default=None, description="Module.init's method (a method name); default __call__"
    )
    mutable: Mutable | None = Field(
        default=None,
        description="Module.init's mutable: true/false or collection names; default Flax's "
        "(all but 'intermediates')",
    )
    capture_intermediates: bool = Field(
        default=False, description="store the init pass's layer outputs ('intermediates')"
    )
    recipe: RecipeSpec = Field(
        default_factory=lambda: {"name": registry.OTT_RECIPE},
        description="how the parameters start: ott (OTT's init, bit for bit), principled "
        "(Hoedt & Klambauer: rho, variance, leaky_slope) or data-dependent (unit-variance "
        "pre-activations on probes: samples, or samples_file relative to the config file)",
    )
    overrides: list[InitOverride] = Field(
        default_factory=list,
        description="per-leaf initializers by path glob, applied before the recipe; the first "
        "matching rule wins",
    )

    @model_validator(mode="after")
    def _distinct_override_paths(self) -> InitConfig:
        paths = [rule.path for rule in self.overrides]
        for index, path in enumerate(paths):
            if path in paths[:index]:
                raise ValueError(
                    f"overrides: path {path!r} is given twice (the first matching rule wins, "
                    "so the second would never apply)"
                )
        return self


AxisName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class ShardingRule(_Section):
    """Leaves whose path matches ``path`` get the partition ``spec`` instead of the default."""

    path: str = Field(
        description="glob over the leaf path, e.g. 'params/w_xs_*/kernel' ('*' also crosses '/')"
    )
    spec: list[AxisName | list[AxisName] | None] = Field(
        description="jax.sharding.PartitionSpec entries, one per leading dimension: a mesh axis, "
        "a list of axes, or null (not split); [] replicates the leaf"
    )


class ShardingConfig(_Section):
    """How ``icnn init`` lays the variables out on a device mesh (used only with a mesh)."""

    mesh: list[PositiveInt] | None = Field(
        default=None,
        min_length=1,
        description="device mesh shape, e.g. [8] or [2, 4]; the product must equal the number "
        "of devices (--mesh overrides); default: no mesh, one device",
    )
    axes: list[AxisName] | None = Field(
        default=None,
        min_length=1,
        description="names of the mesh axes, one per mesh dimension; default x, y, z",
    )
    min_bytes: Annotated[int, Field(strict=True, ge=0)] = Field(
        default=DEFAULT_MIN_SHARD_BYTES,
        description="the default rule replicates leaves smaller than this (default 1 MiB)",
    )
    rules: list[ShardingRule] = Field(
        default_factory=list,
        description="per-path overrides of the default rule; the first matching rule wins",
    )

    @model_validator(mode="after")
    def _axes_match_mesh(self) -> ShardingConfig:
        if self.axes is not None:
            if len(set(self.axes)) != len(self.axes):
                raise ValueError(f"axes: names must be distinct, got {self.axes}")
            if self.mesh is not None and len(self.axes) != len(self.mesh):
                raise ValueError(
                    f"axes: {len(self.axes)} names for a mesh of {len(self.mesh)} "
                    f"dimension(s) {self.mesh}"
                )
        if self.mesh is not None and self.axes is None and len(self.mesh) > len(DEFAULT_AXES):
            raise ValueError(f"axes: a mesh of {len(self.mesh)} dimensions needs axis names")
        return self

    def axis_names(self) -> tuple[str, ...]:
        """The mesh's axis names: ``axes``, or the defaults for ``mesh``'s rank."""
        return tuple(self.axes or DEFAULT_AXES[: len(self.mesh or ())])


class IcnnConfig(_Section):
    """A whole ``icnn init`` config file."""

    model: ModelConfig
    init: InitConfig = Field(default_factory=InitConfig)
    output: str = Field(
        default=DEFAULT_OUTPUT, description="checkpoint directory (--out overrides)"
    )
    sharding: ShardingConfig | None = Field(
        default=None,
        description="device mesh and per-path partition rules for a sharded init (--mesh)",
    )

    @model_validator(mode="after")
    def _input_matches_data(self) -> IcnnConfig:
        shape = self.init.input_shape
        if shape is not None and shape[-1] != self.model.dim_data:
            raise ValueError(
                f"init.input_shape: last dimension must equal model.dim_data = "
                f"{self.model.dim_data}, got {shape}"
            )
        return self

    def resolved_input_shape(self) -> tuple[int, ...]:
        return tuple(self.init.input_shape or (1, self.model.dim_data))

    def with_seed(self, seed: int) -> IcnnConfig:
        return self.model_copy(update={"init": self.init.model_copy(update={"seed": seed})})

    def with_mesh(self, mesh: list[int]) -> IcnnConfig:
        """This config with ``sharding.mesh`` replaced (raises ``ValidationError``)."""
        current = self.sharding.model_dump() if self.sharding else {}
        sharding = ShardingConfig.model_validate({**current, "mesh": mesh})
        return self.model_copy(update={"sharding": sharding})

    def mesh_shape(self) -> tuple[int, ...] | None:
        return tuple(self.sharding.mesh) if self.sharding and self.sharding.mesh else None


def json_schema() -> dict[str, Any]:
    """The config's JSON Schema (editors use it for YAML completion)."""
    schema = IcnnConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "icnn config"
    return schema


def load_config(path: Path | str) -> IcnnConfig:
    """Read, parse and validate a config file; raise :class:`IcnnError` with file:line on error.

    Args:
      path: the YAML file, or ``-`` for standard input (errors then name ``<stdin>``).
    """
    return yaml_source.read_yaml_mapping(path).validate(IcnnConfig)


def config_directory(path: Path | str) -> Path:
    """Where relative sample-file paths start: the config's directory, or the current
    directory for a config read from standard input (``-``)."""
    return Path.cwd() if yaml_source.is_stdin(path) else Path(path).parent
