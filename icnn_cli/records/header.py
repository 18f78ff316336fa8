"""The facts above a summary's tree, as typed data: one small record per group.

Where a checkpoint sits (a ``CheckpointManager`` step), what Orbax recorded about it
(layout, items, start time, custom metadata, metrics), where icnn's own checkpoints
came from (seed, streams, versions, device, fingerprint, samples) and what a dry run
planned. Plain values only: times are ISO 8601 UTC, fingerprints and digests whole,
JSON whole; ``icnn_cli.render`` words, shortens and cuts them for people, and
``as_json`` gives them to ``--json`` as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal


@dataclasses.dataclass(frozen=True)
class ManagerStep:
    """The step a ``CheckpointManager`` (or v1 training) root was read at."""

    root: str
    step: int
    steps: tuple[int, ...]  # every step of the root, ascending

    @property
    def latest(self) -> bool:
        return self.step == self.steps[-1]

    def as_json(self) -> dict[str, Any]:
        return {"root": self.root, "steps": list(self.steps), "step": self.step}


@dataclasses.dataclass(frozen=True)
class OrbaxItem:
    """One item of a checkpoint by name and kind (``None``: the checkpoint is this item)."""

    name: str | None
    kind: str

    @property
    def label(self) -> str:
        return self.name or "(top level)"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind}


@dataclasses.dataclass(frozen=True)
class OrbaxFacts:
    """What Orbax recorded about a checkpoint (its ``_CHECKPOINT_METADATA`` and items).

    Attributes:
      layout: how Orbax wrote it, in the reader's words ("single item", ...).
      items: every item, PyTrees included.
      started_at: when the save began, ISO 8601 UTC, if recorded.
      custom_metadata: the writer's custom metadata, icnn's own spec left out; ``None``
        when there is none.
      metrics: the step's metrics (``_CHECKPOINT_METADATA``, or a v1 metrics item);
        ``None`` when none were recorded.
    """

    layout: str
    items: tuple[OrbaxItem, ...]
    started_at: str | None = None
    custom_metadata: Mapping[str, Any] | None = None
    metrics: Any = None

    @property
    def single(self) -> bool:
        return len(self.items) == 1 and self.items[0].name is None

    def as_json(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "items": [item.as_json() for item in self.items],
            "started_at": self.started_at,
            "custom_metadata": dict(self.custom_metadata) if self.custom_metadata else None,
            "metrics": self.metrics,
        }


@dataclasses.dataclass(frozen=True)
class StreamRecord:
    """A named RNG stream: its seed, or ``derive`` (split from the master seed)."""

    name: str
    rule: Literal["master", "seed", "derive"]
    seed: int

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "rule": self.rule, "seed": self.seed}


@dataclasses.dataclass(frozen=True)
class SampleRecord:
    """A Gaussian-map sample file the init read: its role, path and sha256."""

    role: str
    path: str
    sha256: str

    def as_json(self) -> dict[str, Any]:
        return {"role": self.role, "path": self.path, "sha256": self.sha256}


FingerprintCheck = Literal["not checked", "checked", "checked, filtered"]


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where an icnn checkpoint came from: its embedded spec, with what this reading checked.

    Attributes:
      seed: the master seed.
      streams: every RNG stream, in the spec's order.
      rng_impl: JAX's PRNG implementation (``threefry2x32``, ...).
      threefry_partitionable: the ``jax_threefry_partitionable`` setting of the writer.
      versions: the writer's package versions.
      installed_versions: the versions installed here, of the same packages.
      device: the device (or mesh) that ran the init.
      fingerprint: ``sha256:`` and 64 hex digits, over every array.
      fingerprint_check: whether the arrays were read and checked against it;
        ``checked, filtered``: every leaf read, only the filtered ones summarised.
      gaussian_map_samples: the sample files a Gaussian-map init read.
      init_recipe: the ``init.recipe`` that moved the parameters after OTT's init, as the
        config gives it (``{"name": ..., **arguments}``); ``None`` for OTT's init as is.
      init_samples: the probe samples file a ``data-dependent`` recipe read.
    """

    seed: int
    streams: tuple[StreamRecord, ...]
    rng_impl: str
    threefry_partitionable: bool
    versions: Mapping[str, str]
    device: str
    fingerprint: str
    installed_versions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    fingerprint_check: FingerprintCheck = "not checked"
    gaussian_map_samples: tuple[SampleRecord, ...] = ()
    init_recipe: Mapping[str, Any] | None = None
    init_samples: tuple[SampleRecord, ...] = ()

    @property
    def differing_versions(self) -> dict[str, tuple[str, str]]:
        """``{package: (recorded, installed)}`` where the installed version differs."""
        return {
            package: (version, self.installed_versions[package])
            for package, version in self.versions.items()
            if package in self.installed_versions and self.installed_versions[package] != version
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "streams": [stream.as_json() for stream in self.streams],
            "rng_impl": self.rng_impl,
            "threefry_partitionable": self.threefry_partitionable,
            "versions": dict(self.versions),
            "installed_versions": dict(self.installed_versions),
            "device": self.device,
            "fingerprint": self.fingerprint,
            "fingerprint_check": self.fingerprint_check,
            "gaussian_map_samples": [sample.as_json() for sample in self.gaussian_map_samples],
            "init_recipe": dict(self.init_recipe) if self.init_recipe is not None else None,
            "init_samples": [sample.as_json() for sample in self.init_samples],
        }


@dataclasses.dataclass(frozen=True)
class DryRun:
    """What ``icnn init --dry-run`` planned: nothing was computed or written at ``output``."""

    output: str
    seed: int
    device: str

    def as_json(self) -> dict[str, Any]:
        return {"output": self.output, "seed": self.seed, "device": self.device}
