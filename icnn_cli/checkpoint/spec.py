"""The spec that travels inside an icnn checkpoint (Orbax custom metadata).

Everything needed to rebuild the module and re-run its init: the resolved config,
the seed and every stream's key data, the versions and device that wrote it, and
the fingerprint of the arrays. When read back it is untrusted JSON, so it is
size-limited and schema-checked before it drives ``load`` or ``verify``.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from icnn_cli.errors import DamagedCheckpoint
from icnn_cli.validation_errors import describe_validation_error

SPEC_FORMAT = "icnn-spec/1"
METADATA_KEY = "icnn"
MAX_SPEC_BYTES = 1 << 20  # far above any real spec; a bigger one is not ours
VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "ott-jax", "orbax-checkpoint", "icnn-cli")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StreamSpec(_Record):
    name: str
    rule: Literal["master", "seed", "derive"]
    seed: int = Field(ge=0)
    key_data: list[int]


class SampleSpec(_Record):
    role: Literal["source", "target", "probe"]
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    shape: list[int]


class CheckpointSpec(_Record):
    """What ``icnn init`` records about a checkpoint it wrote."""

    format: Literal["icnn-spec/1"] = SPEC_FORMAT
    config: dict[str, Any]
    seed: int = Field(ge=0)
    streams: list[StreamSpec]
    rng_impl: str
    input_shape: list[int]
    dtype: str
    threefry_partitionable: bool
    versions: dict[str, str]
    device: str
    fingerprint: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    gaussian_map_samples: list[SampleSpec] = []
    init_samples: list[SampleSpec] = []  # init.recipe's probe samples file (role "probe")


def installed_versions() -> dict[str, str]:
    """Versions of the packages whose changes could change the numbers."""
    return dict(_installed_versions())


# Read once per process: the packages a process imported do not change under it, and each
# lookup parses a METADATA file (8 ms an init for the six of them on a 2-core CPU).
@functools.cache
def _installed_versions() -> tuple[tuple[str, str], ...]:
    from importlib import metadata

    versions = []
    for package in VERSIONED_PACKAGES:
        try:
            versions.append((package, metadata.version(package)))
        except metadata.PackageNotFoundError:
            versions.append((package, "unknown"))
    return tuple(versions)


def parse_spec(custom_metadata: Any, where: str) -> CheckpointSpec | None:
    """The spec inside Orbax custom metadata; ``None`` for a checkpoint icnn did not write."""
    if not isinstance(custom_metadata, dict) or METADATA_KEY not in custom_metadata:
        return None
    raw = custom_metadata[METADATA_KEY]
    try:
        size = len(json.dumps(raw))
    except (TypeError, ValueError):
        size = MAX_SPEC_BYTES + 1
    if size > MAX_SPEC_BYTES:
        raise DamagedCheckpoint(f"{where}: embedded icnn spec is not valid JSON or too large")
    try:
        return CheckpointSpec.model_validate(raw)
    except ValidationError as error:
        problems = describe_validation_error(error, CheckpointSpec, data=raw)
        raise DamagedCheckpoint(f"{where}: embedded icnn spec is damaged: {problems}") from None
