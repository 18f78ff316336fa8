"""``icnn verify``: is a checkpoint intact, and does its spec still give the same numbers?

Two independent checks per checkpoint:

* integrity: the sha256 fingerprint recomputed from the stored arrays equals the
  one recorded at init (Orbax keeps no checksum of array data);
* reproducibility: re-running the init from the embedded spec on this machine
  gives the stored arrays bit for bit (or within ``atol`` across platforms).

Checkpoints icnn did not write have nothing recorded: integrity is "not recorded"
(the arrays are still read, so unreadable data is caught) and reproducibility is
skipped. Only both checks passing counts as verified.

Example::

    report = verify_checkpoint(Path("ckpt"))
    report.ok, report.integrity.status, report.reproducibility.status
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Literal

from icnn_cli.analysis.compare import bit_identical, value_differences
from icnn_cli.analysis.loading import (
    missing_sample_file,
    recorded_samples,
    spec_config,
    unchanged_sample,
)
from icnn_cli.checkpoint.consistency import read_consistently
from icnn_cli.checkpoint.layout import open_checkpoint
from icnn_cli.checkpoint.reader import CheckpointReader
from icnn_cli.checkpoint.spec import CheckpointSpec
from icnn_cli.errors import USAGE_ERROR, IcnnError
from icnn_cli.fingerprint import short_fingerprint
from icnn_cli.tree_paths import flatten_with_paths

IntegrityStatus = Literal["ok", "damaged", "unreadable", "not recorded"]
ReproducibilityStatus = Literal["bit-identical", "within atol", "differs", "skipped"]
INTACT: IntegrityStatus = "ok"
DAMAGED: IntegrityStatus = "damaged"
UNREADABLE: IntegrityStatus = "unreadable"
NOT_RECORDED: IntegrityStatus = "not recorded"
IDENTICAL: ReproducibilityStatus = "bit-identical"
WITHIN_ATOL: ReproducibilityStatus = "within atol"
DIFFERS: ReproducibilityStatus = "differs"
SKIPPED: ReproducibilityStatus = "skipped"


@dataclasses.dataclass(frozen=True)
class LeafDifference:
    """One leaf where the stored array and the re-run disagree."""

    path: str
    reason: str
    max_abs_diff: float | None = None

    def as_json(self) -> dict[str, Any]:
        # JSON has no inf: a NaN or inf against a finite value is reported as null.
        finite = self.max_abs_diff is not None and math.isfinite(self.max_abs_diff)
        return {
            "path": self.path,
            "reason": self.reason,
            "max_abs_diff": self.max_abs_diff if finite else None,
        }

    def describe(self) -> str:
        if self.max_abs_diff is None:
            return f"{self.path} ({self.reason})"
        if not math.isfinite(self.max_abs_diff):
            return f"{self.path} (NaN or inf where the re-run has another value)"
        return f"{self.path} (max |diff| {self.max_abs_diff:.3g})"


@dataclasses.dataclass(frozen=True)
class CheckResult:
    status: IntegrityStatus | ReproducibilityStatus
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"status": self.status, "detail": self.detail}


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    """The outcome of both checks for one checkpoint."""

    path: str
    integrity: CheckResult
    reproducibility: CheckResult
    differing_leaves: list[LeafDifference] = dataclasses.field(default_factory=list)
    recorded_fingerprint: str | None = None
    computed_fingerprint: str | None = None

    def problem(self) -> str:
        """One line saying why this checkpoint is not verified."""
        for name, check in (
            ("integrity", self.integrity),
            ("reproducibility", self.reproducibility),
        ):
            if check.status not in (INTACT, IDENTICAL, WITHIN_ATOL):
                return f"{self.path}: not verified: {name} {check.status}: {check.detail}"
        return f"{self.path}: verified"

    @property
    def ok(self) -> bool:
        return self.integrity.status == INTACT and self.reproducibility.status in (
            IDENTICAL,
            WITHIN_ATOL,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "integrity": self.integrity.as_json(),
            "reproducibility": self.reproducibility.as_json(),
            "recorded_fingerprint": self.recorded_fingerprint,
            "computed_fingerprint": self.computed_fingerprint,
            "differing_leaves": [leaf.as_json() for leaf in self.differing_leaves],
        }


def verify_checkpoints(paths: list[Path], atol: float | None = None) -> list[VerifyReport]:
    """Verify each checkpoint; anything that is not a committed checkpoint exits 2 first."""
    for path in paths:
        try:
            open_checkpoint(path)
        except IcnnError as error:
            if error.exit_code == USAGE_ERROR:
                raise
            # damage is a finding of that checkpoint's report, not a reason to stop

    return [verify_checkpoint(path, atol) for path in paths]


def verify_checkpoint(path: Path, atol: float | None = None) -> VerifyReport:
    """Check integrity and reproducibility of one checkpoint; damage is a finding, not an error.

    Args:
      path: a committed Orbax checkpoint directory.
      atol: largest absolute difference accepted from the re-run; ``None`` asks
        for bit-identical arrays.
    """
    # A re-run takes far longer than reading: keep it across the attempts of a read
    # that a writer's swap interrupted, so a retry re-reads only the checkpoint.
    reruns: dict[str, tuple[dict[tuple[str, ...], Any] | None, str]] = {}
    return read_consistently([path], lambda: _verify_checkpoint(path, atol, reruns))


def _verify_checkpoint(
    path: Path,
    atol: float | None,
    reruns: dict[str, tuple[dict[tuple[str, ...], Any] | None, str]],
) -> VerifyReport:
    try:
        reader = CheckpointReader.open(path)
    except IcnnError as error:
        if error.exit_code != 1:
            raise
        return _unreadable(path, error.message, None)
    spec = reader.spec
    reproduced, note = None, "no embedded icnn spec"
    if spec is not None:
        key = spec.model_dump_json()
        try:
            if key not in reruns:
                reruns[key] = _rerun(spec, path)
            reproduced, note = reruns[key]
        except IcnnError as error:  # an embedded config that does not validate
            note = error.message.removeprefix(f"{path}: ")
    try:
        comparison = _compare_stored_with(reader, reproduced, atol)
    except IcnnError as error:
        if error.exit_code != 1:
            raise
        return _unreadable(path, error.message, reader.recorded_fingerprint)
    return VerifyReport(
        path=str(path),
        integrity=_integrity(reader),
        reproducibility=_reproducibility(reproduced, note, comparison, atol),
        differing_leaves=comparison.differences,
        recorded_fingerprint=reader.recorded_fingerprint,
        computed_fingerprint=reader.computed_fingerprint,
    )


def _unreadable(path: Path, message: str, recorded: str | None) -> VerifyReport:
    return VerifyReport(
        path=str(path),
        integrity=CheckResult(UNREADABLE, message.removeprefix(f"{path}: ")),
        reproducibility=CheckResult(SKIPPED, "not checked: the checkpoint cannot be read"),
        recorded_fingerprint=recorded,
    )


def _integrity(reader: CheckpointReader) -> CheckResult:
    computed = reader.computed_fingerprint or ""
    if reader.recorded_fingerprint is None:
        return CheckResult(
            NOT_RECORDED,
            "not written by icnn: no fingerprint to compare with (every array was readable)",
        )
    if computed == reader.recorded_fingerprint:
        return CheckResult(
            INTACT, f"sha256 {short_fingerprint(computed)} matches the recorded fingerprint"
        )
    return CheckResult(
        DAMAGED,
        f"array data does not match the recorded fingerprint (recorded "
        f"{short_fingerprint(reader.recorded_fingerprint)}, found {short_fingerprint(computed)})",
    )


def _reproducibility(
    reproduced: dict[tuple[str, ...], Any] | None,
    note: str,
    comparison: Comparison,
    atol: float | None,
) -> CheckResult:
    """``note`` says why the re-run was skipped, or where it ran."""
    if reproduced is None:
        return CheckResult(SKIPPED, f"not checked: {note}")
    count = len(reproduced)
    differences = comparison.differences
    if differences:
        shown = ", ".join(leaf.describe() for leaf in differences[:5])
        more = f" and {len(differences) - 5} more" if len(differences) > 5 else ""
        tolerance = "bit for bit" if atol is None else f"within atol {atol:g}"
        return CheckResult(
            DIFFERS,
            f"{len(differences)} of {count} leaves differ {tolerance} (re-run {note}): "
            f"{shown}{more}",
        )
    if not comparison.bit_identical:
        return CheckResult(
            WITHIN_ATOL,
            f"all {count} leaves within atol {atol:g} (largest |diff| "
            f"{comparison.max_abs_diff:.3g}), not bit for bit (re-run {note})",
        )
    return CheckResult(IDENTICAL, f"all {count} leaves re-run bit for bit {note}")


def _rerun(spec: CheckpointSpec, path: Path) -> tuple[dict[tuple[str, ...], Any] | None, str]:
    """The variables the embedded spec gives here, by leaf path, and where they were
    computed; or ``None`` and why the init cannot be re-run."""
    import jax

    from icnn_cli.pipeline import initialize_seed, prepare_init_with_samples

    # The re-run runs on one device whatever mesh wrote the checkpoint: with
    # partitionable threefry the values do not depend on the layout.
    config = spec_config(spec, path).model_copy(update={"sharding": None})
    samples = None
    if spec.gaussian_map_samples:
        samples = recorded_samples(spec, config.model.dim_data)
        if samples is None:
            missing = missing_sample_file(spec, config.model.dim_data)
            return None, f"Gaussian-map sample file {missing} is missing or has changed"
    probes = None
    if spec.init_samples:
        probes = unchanged_sample(spec.init_samples[0], config.model.dim_data)
        if probes is None:
            return None, f"probe sample file {spec.init_samples[0].path} is missing or has changed"
        probes = probes.astype("float32")
    device, where = _rerun_device(spec)
    prepared = prepare_init_with_samples(config, samples, [], device, probes)
    with jax.threefry_partitionable(spec.threefry_partitionable):
        variables, _ = initialize_seed(prepared, spec.seed)
    return dict(flatten_with_paths(variables)), where


def _rerun_device(spec: CheckpointSpec) -> tuple[Any, str]:
    """The recorded platform's first device when this machine has it, else JAX's default.

    Kernels differ between backends, so only a re-run on the recorded platform is
    expected to match bit for bit; elsewhere ``--atol`` is the honest comparison.
    """
    from icnn_cli.init import PLATFORMS, select_device

    recorded = spec.device.split(":", 1)[0]
    if recorded in PLATFORMS:
        try:
            device = select_device(recorded)
            return device, f"on {device.platform}:{device.id}, the recorded platform"
        except IcnnError:
            pass
    device = select_device(None)
    return device, f"on {device.platform}:{device.id}, not the recorded {recorded}"


@dataclasses.dataclass
class Comparison:
    """Stored arrays against the re-run, leaf by leaf."""

    differences: list[LeafDifference] = dataclasses.field(default_factory=list)
    bit_identical: bool = True
    max_abs_diff: float = 0.0


def _compare_stored_with(
    reader: CheckpointReader, reproduced: dict[tuple[str, ...], Any] | None, atol: float | None
) -> Comparison:
    """Stream the stored arrays (computing their fingerprint) and compare each with the re-run."""
    comparison = Comparison()
    seen = set()
    for leaf, stored in reader.arrays():
        seen.add(leaf.path)
        if reproduced is None:
            continue
        if leaf.path not in reproduced:
            comparison.differences.append(
                LeafDifference(leaf.path_string, "in the checkpoint, not in the re-run")
            )
            continue
        difference = _compare_leaf(leaf.path_string, stored, reproduced[leaf.path], atol)
        if difference is None:
            continue
        if isinstance(difference, LeafDifference):
            comparison.differences.append(difference)
        else:
            comparison.bit_identical = False
            comparison.max_abs_diff = max(comparison.max_abs_diff, difference)
    for parts in sorted(set(reproduced or ()) - seen):
        comparison.differences.append(
            LeafDifference("/".join(parts), "in the re-run, not in the checkpoint")
        )
    if comparison.differences:
        comparison.bit_identical = False
    return comparison


def _compare_leaf(
    path: str, stored: Any, reproduced: Any, atol: float | None
) -> LeafDifference | float | None:
    """``None`` if bit-identical, the max |diff| if within ``atol``, else a difference."""
    import numpy as np

    expected = np.asarray(reproduced)
    if stored.shape != expected.shape or stored.dtype != expected.dtype:
        return LeafDifference(
            path,
            f"stored {stored.dtype}{list(stored.shape)}, re-run gives "
            f"{expected.dtype}{list(expected.shape)}",
        )
    if bit_identical(stored, expected):
        return None
    largest, _ = value_differences(stored, expected)
    if atol is not None and largest <= atol:
        return largest
    return LeafDifference(path, "values differ", largest)
