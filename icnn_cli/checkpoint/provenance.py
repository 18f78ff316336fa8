"""Where a checkpoint came from, at a glance: the header lines and the version warnings.

The facts come from the embedded spec (seed, streams, rng impl, threefry setting,
versions, device, fingerprint, Gaussian-map samples) and from Orbax's own commit
timestamp. When the installed packages differ from those that wrote the
checkpoint, re-running the init may give other numbers, so that is said.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from typing import Any

from icnn_cli.checkpoint.layout import Checkpoint
from icnn_cli.checkpoint.spec import METADATA_KEY, CheckpointSpec
from icnn_cli.fingerprint import SHORT_DIGITS, short_fingerprint

MAX_SHOWN_JSON = 200  # characters of custom metadata or metrics shown in the header


def written_at(commit_timestamp_nsecs: object) -> str | None:
    """Orbax's commit timestamp (nanoseconds since the epoch) as ISO 8601 UTC, if recorded."""
    if not isinstance(commit_timestamp_nsecs, int) or commit_timestamp_nsecs <= 0:
        return None
    moment = datetime.datetime.fromtimestamp(commit_timestamp_nsecs // 10**9, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def versions_text(recorded: Mapping[str, str], installed: Mapping[str, str] | None) -> str:
    """``jax 0.10.2, ott-jax 0.5.0 (installed 0.6.0), ...``."""
    parts = []
    for package, version in recorded.items():
        now = (installed or {}).get(package)
        parts.append(
            f"{package} {version}" + (f" (installed {now})" if now and now != version else "")
        )
    return ", ".join(parts)


def version_warnings(recorded: Mapping[str, str], installed: Mapping[str, str]) -> list[str]:
    """One warning per package whose installed version differs from the writer's."""
    return [
        f"written with {package} {version}, installed {installed[package]}: "
        "`icnn verify` may not reproduce it"
        for package, version in recorded.items()
        if package in installed and installed[package] != version
    ]


def header_lines(
    spec: CheckpointSpec | None,
    written: str | None = None,
    installed: Mapping[str, str] | None = None,
    fingerprint_note: str = "",
) -> list[tuple[str, str]]:
    """The ``label  value`` lines above the tree.

    Args:
      spec: the embedded spec; ``None`` for a checkpoint icnn did not write.
      written: the commit time (from :func:`written_at`), if known.
      installed: the installed versions, to mark the ones that differ.
      fingerprint_note: whether the arrays were checked against the fingerprint.
    """
    when = [("written", written.replace("T", " ").replace("Z", " UTC"))] if written else []
    if spec is None:
        return [("written by", "not icnn (no embedded spec)"), *when]
    lines = [
        ("seed", str(spec.seed)),
        ("streams", spec.streams_text()),
        ("rng impl", spec.rng_impl),
        ("threefry partitionable", "on" if spec.threefry_partitionable else "off"),
        ("versions", versions_text(spec.versions, installed)),
        ("device", spec.device),
        *when,
        (
            "fingerprint",
            short_fingerprint(spec.fingerprint)
            + (f" ({fingerprint_note})" if fingerprint_note else ""),
        ),
    ]
    recipe = spec.config.get("init", {}).get("recipe")
    if isinstance(recipe, dict) and recipe.get("name", "ott") != "ott":
        lines.insert(2, ("init recipe", short_json(recipe)))
    for sample in [*spec.gaussian_map_samples, *spec.init_samples]:
        lines.append(
            (f"{sample.role} sample", f"sha256 {sample.sha256[:SHORT_DIGITS]}  {sample.path}")
        )
    return lines


def short_json(value: Any, limit: int = MAX_SHOWN_JSON) -> str:
    """Compact JSON, cut at ``limit`` characters with the total said."""
    text = json.dumps(value, separators=(", ", ": "), ensure_ascii=False, default=str)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def orbax_lines(checkpoint: Checkpoint) -> list[tuple[str, str]]:
    """What Orbax recorded about the checkpoint: layout, items, start time, metadata, metrics."""
    metadata = checkpoint.metadata
    lines = [("layout", checkpoint.layout)]
    if not checkpoint.single:
        lines.append(("items", checkpoint.items_text()))
    started = written_at(metadata.get("init_timestamp_nsecs"))
    if started:
        lines.append(("started", started.replace("T", " ").replace("Z", " UTC")))
    custom = {
        key: value for key, value in checkpoint.custom_metadata.items() if key != METADATA_KEY
    }
    if custom:
        lines.append(("custom metadata", short_json(custom)))
    if isinstance(metadata.get("metrics"), dict) and metadata["metrics"]:
        lines.append(("metrics", short_json(metadata["metrics"])))
    return lines
