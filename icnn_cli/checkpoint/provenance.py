"""Where a checkpoint came from, as typed facts (``icnn_cli.records.header``), and version warnings.

The facts come from the embedded spec (seed, streams, rng impl, threefry setting,
versions, device, fingerprint, Gaussian-map samples) and from Orbax's own metadata
(layout, items, start and commit times, custom metadata, metrics); ``icnn_cli.render``
words them. When the installed packages differ from those that wrote the
checkpoint, re-running the init may give other numbers, so that is said.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from icnn_cli.checkpoint.layout import Checkpoint
from icnn_cli.checkpoint.spec import METADATA_KEY, CheckpointSpec
from icnn_cli.records.header import (
    FingerprintCheck,
    OrbaxFacts,
    OrbaxItem,
    Provenance,
    SampleRecord,
    StreamRecord,
)


def written_at(commit_timestamp_nsecs: object) -> str | None:
    """Orbax's commit timestamp (nanoseconds since the epoch) as ISO 8601 UTC, if recorded."""
    if not isinstance(commit_timestamp_nsecs, int) or commit_timestamp_nsecs <= 0:
        return None
    try:
        moment = datetime.datetime.fromtimestamp(commit_timestamp_nsecs // 10**9, datetime.UTC)
    except (OverflowError, OSError, ValueError):  # a time past year 9999 is not a time
        return None
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def commit_time(checkpoint: Checkpoint) -> str | None:
    """When Orbax committed ``checkpoint``, ISO 8601 UTC, if recorded."""
    return written_at(checkpoint.metadata.commit_timestamp_nsecs)


def version_warnings(recorded: Mapping[str, str], installed: Mapping[str, str]) -> list[str]:
    """One warning per package whose installed version differs from the writer's."""
    return [
        f"written with {package} {version}, installed {installed[package]}: "
        "`icnn verify` may not reproduce it"
        for package, version in recorded.items()
        if package in installed and installed[package] != version
    ]


def provenance_of(
    spec: CheckpointSpec,
    installed: Mapping[str, str] | None = None,
    fingerprint_check: FingerprintCheck = "not checked",
) -> Provenance:
    """The typed facts of an embedded spec that a summary shows.

    Args:
      spec: the embedded spec.
      installed: the installed versions of the packages the spec records.
      fingerprint_check: whether this reading checked the arrays against the fingerprint.
    """
    return Provenance(
        seed=spec.seed,
        streams=tuple(
            StreamRecord(stream.name, stream.rule, stream.seed) for stream in spec.streams
        ),
        rng_impl=spec.rng_impl,
        threefry_partitionable=spec.threefry_partitionable,
        versions=dict(spec.versions),
        installed_versions={
            package: version
            for package, version in (installed or {}).items()
            if package in spec.versions
        },
        device=spec.device,
        fingerprint=spec.fingerprint,
        fingerprint_check=fingerprint_check,
        gaussian_map_samples=tuple(
            SampleRecord(sample.role, sample.path, sample.sha256)
            for sample in spec.gaussian_map_samples
        ),
        init_recipe=_recipe_of(spec),
        init_samples=tuple(
            SampleRecord(sample.role, sample.path, sample.sha256) for sample in spec.init_samples
        ),
    )


def _recipe_of(spec: CheckpointSpec) -> dict[str, Any] | None:
    """The spec's ``init.recipe`` when it is not OTT's own init (which moves nothing)."""
    recipe = (spec.config.get("init") or {}).get("recipe")
    if isinstance(recipe, dict) and recipe.get("name", "ott") != "ott":
        return recipe
    return None


def orbax_facts(checkpoint: Checkpoint, metrics_item: Any = None) -> OrbaxFacts:
    """What Orbax recorded about the checkpoint: layout, items, start time, metadata, metrics.

    ``metrics_item`` is the document of a v1 training step's metrics item: its metrics
    where ``_CHECKPOINT_METADATA`` records none.
    """
    metadata = checkpoint.metadata
    custom = {
        key: value for key, value in checkpoint.custom_metadata.items() if key != METADATA_KEY
    }
    metrics = metadata.metrics
    return OrbaxFacts(
        layout=checkpoint.layout,
        items=tuple(OrbaxItem(item.name, item.kind) for item in checkpoint.items),
        started_at=written_at(metadata.init_timestamp_nsecs),
        custom_metadata=custom or None,
        metrics=metrics if isinstance(metrics, dict) and metrics else metrics_item,
    )
