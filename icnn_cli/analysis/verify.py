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
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from icnn_cli.analysis.compare import bit_identical, value_differences
from icnn_cli.analysis.loading import (
    missing_sample_file,
    open_all,
    recorded_samples,
    spec_config,
    unchanged_sample,
)
from icnn_cli.checkpoint.consistency import read_consistently
from icnn_cli.checkpoint.layout import Checkpoint
from icnn_cli.checkpoint.metadata import quiet_absl
from icnn_cli.checkpoint.reader import CheckpointReader
from icnn_cli.checkpoint.spec import CheckpointSpec, parse_spec
from icnn_cli.checkpoint.storage import StoragePath, is_remote
from icnn_cli.errors import IcnnError, first_line, is_bad_input
from icnn_cli.fingerprint import short_fingerprint
from icnn_cli.model import SampleFile
from icnn_cli.records import LeafRecord
from icnn_cli.tree_paths import flatten_with_paths
from icnn_cli.units import format_bytes

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


@dataclasses.dataclass(frozen=True)
class VerifySummary:
    """How many checkpoints passed and failed each check (one line at the end of a run)."""

    checkpoints: int
    verified: int
    intact: int
    damaged: int  # fingerprint mismatch or unreadable
    reproducible: int  # bit-identical or within atol
    not_reproducible: int
    not_checked: int  # left out by ``fail_fast``

    @classmethod
    def of(cls, reports: list[VerifyReport], not_checked: int = 0) -> VerifySummary:
        def count(statuses: tuple[str, ...], check: str) -> int:
            return sum(getattr(report, check).status in statuses for report in reports)

        return cls(
            checkpoints=len(reports) + not_checked,
            verified=sum(report.ok for report in reports),
            intact=count((INTACT,), "integrity"),
            damaged=count((DAMAGED, UNREADABLE), "integrity"),
            reproducible=count((IDENTICAL, WITHIN_ATOL), "reproducibility"),
            not_reproducible=count((DIFFERS,), "reproducibility"),
            not_checked=not_checked,
        )

    def as_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class VerifyOutcome:
    """The reports in the order the paths were given, and the paths ``fail_fast`` left out."""

    reports: list[VerifyReport]
    not_checked: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.not_checked and all(report.ok for report in self.reports)

    @property
    def summary(self) -> VerifySummary:
        return VerifySummary.of(self.reports, len(self.not_checked))

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary.as_json(),
            "checkpoints": [report.as_json() for report in self.reports],
            "not_checked": self.not_checked,
        }


def verify_checkpoints(
    paths: list[StoragePath],
    atol: float | None = None,
    *,
    compile_cache: Path | None = None,
    fail_fast: bool = False,
    on_report: Callable[[VerifyReport], None] | None = None,
) -> VerifyOutcome:
    """Verify each checkpoint; anything that is not a committed checkpoint raises first.

    Checkpoints whose inits differ only in the seed (the output of a sweep) form one
    group: its init is prepared once (module, trace, compile, or the exported init in
    ``compile_cache``, as the sweep that wrote them) and each seed then re-runs the
    compiled init, one after another, while the next checkpoints are read ahead
    (:class:`ReadAhead`): only one group's init and at most ``READ_AHEAD_BYTES`` of arrays
    are held at a time. Each report is the one :func:`verify_checkpoint` gives.

    Args:
      paths: committed checkpoint directories (local or object storage).
      atol: see :func:`verify_checkpoint`.
      compile_cache: JAX's compile cache in use (the exported inits are inside), or
        ``None`` to trace every group's init.
      fail_fast: stop after the first checkpoint that is not verified; the rest are
        listed as not checked.
      on_report: hears about each report as it is done (in the order they are checked:
        group by group).
    """
    keys = [_group_key(checkpoint) for checkpoint in open_all(paths)]
    first_of_group: dict[str | int, int] = {}
    for index, key in enumerate(keys):
        first_of_group.setdefault(key if key is not None else index, index)

    def group_of(index: int) -> str | int:
        key = keys[index]
        return key if key is not None else index

    order = sorted(range(len(paths)), key=lambda index: first_of_group[group_of(index)])
    done: dict[int, VerifyReport] = {}
    reruns, current = Reruns(compile_cache), keys[order[0]] if order else None
    # Checkpoints of a group are read ahead on worker threads while the main thread
    # re-runs and compares; a checkpoint alone (foreign, damaged) is read where it is
    # compared, as verify_checkpoint reads it.
    ahead = [(index, paths[index]) for index in order if keys[index] is not None]
    window = READ_AHEAD_REMOTE if any_remote(paths) else READ_AHEAD_LOCAL
    # quiet_absl sets a process-wide level: held here, the readers' own uses nest inside it
    with quiet_absl(), ReadAhead(ahead, window) as reads:
        for index in order:
            if keys[index] != current:  # drop the last group's init before preparing the next
                reruns, current = Reruns(compile_cache), keys[index]
            stored = reads.take(index) if keys[index] is not None else None
            if stored is None:
                report = verify_checkpoint(paths[index], atol, reruns)
            else:
                report = _report(paths[index], stored, atol, reruns)
            done[index] = report
            if on_report is not None:
                on_report(report)
            if fail_fast and not report.ok:
                break
    return VerifyOutcome(
        reports=[done[index] for index in sorted(done)],
        not_checked=[str(path) for index, path in enumerate(paths) if index not in done],
    )


# Read-ahead: checkpoints read (arrays and fingerprint) before their turn. In object
# storage every small file is a round trip, so several are read at once; on a local disk
# one read overlaps the re-run. What is held stays under READ_AHEAD_BYTES; a larger
# checkpoint is streamed leaf by leaf at its turn instead.
READ_AHEAD_REMOTE = 8
READ_AHEAD_LOCAL = 1
READ_AHEAD_BYTES = 256 << 20


def any_remote(paths: list[StoragePath]) -> bool:
    return any(is_remote(path) for path in paths)


@dataclasses.dataclass
class StoredCheckpoint:
    """A checkpoint read whole: its reader (fingerprint computed) and every leaf's value,
    or why it could not be read."""

    reader: CheckpointReader | None
    arrays: list[tuple[LeafRecord, Any]]
    unreadable: str | None = None


class ReadAhead:
    """Reads ``(index, path)`` in order on ``window`` threads, at most ``window`` ahead."""

    def __init__(self, items: list[tuple[int, StoragePath]], window: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._items = list(items)
        self._window = window
        self._limit = READ_AHEAD_BYTES // (window + 1)
        self._pool = ThreadPoolExecutor(window) if items and window > 0 else None
        self._pending: dict[int, Any] = {}
        self._next = 0

    def __enter__(self) -> ReadAhead:
        self._fill()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            for future in self._pending.values():
                future.cancel()
            self._pool.shutdown(wait=True)

    def _fill(self) -> None:
        while self._pool is not None and self._next < len(self._items):
            if len(self._pending) > self._window:
                return
            index, path = self._items[self._next]
            self._pending[index] = self._pool.submit(
                read_consistently, [path], lambda path=path: _read_whole(path, self._limit)
            )
            self._next += 1

    def take(self, index: int) -> StoredCheckpoint | None:
        """The read of ``index``; ``None``: read it at its turn (too large, or a bad input
        that the caller's own read raises again)."""
        future = self._pending.pop(index, None)
        if future is None:
            return None
        try:
            stored = future.result()
        except IcnnError:
            stored = None
        self._fill()
        return stored


def _read_whole(path: StoragePath, limit: int) -> StoredCheckpoint | None:
    try:
        reader = CheckpointReader.open(path)
    except IcnnError as error:
        if is_bad_input(error):
            raise
        return StoredCheckpoint(None, [], error.message)
    if sum(leaf.nbytes for leaf in reader.leaves) > limit:
        return None
    try:
        arrays = list(reader.arrays())
    except IcnnError as error:
        if is_bad_input(error):
            raise
        return StoredCheckpoint(reader, [], error.message)
    return StoredCheckpoint(reader, arrays)


def _report(
    path: StoragePath, stored: StoredCheckpoint, atol: float | None, reruns: Reruns
) -> VerifyReport:
    """The report of a checkpoint read ahead: the same as :func:`verify_checkpoint`'s."""
    reader = stored.reader
    if reader is None or stored.unreadable is not None:
        recorded = reader.recorded_fingerprint if reader is not None else None
        return _unreadable(path, stored.unreadable or "cannot be read", recorded)
    reproduced, note = _reproduced(reader, path, reruns)
    comparison = _compare_stored_with(iter(stored.arrays), reproduced, atol)
    return _finished_report(path, reader, reproduced, note, comparison, atol)


def _group_key(checkpoint: Checkpoint | None) -> str | None:
    """What an icnn checkpoint's init needs besides its seed, as text; ``None`` for a
    checkpoint with no (readable) spec, which is verified on its own."""
    if checkpoint is None:
        return None
    try:
        spec = parse_spec(checkpoint.custom_metadata, str(checkpoint.path))
    except IcnnError:
        return None
    return None if spec is None else init_key(spec)


def init_key(spec: CheckpointSpec) -> str:
    """Equal for two specs exactly when one prepared init re-runs both (seeds aside)."""
    config = dict(spec.config)
    config["init"] = {
        name: value for name, value in dict(config.get("init") or {}).items() if name != "seed"
    }
    config.pop("sharding", None)  # the re-run is on one device, whatever mesh wrote it
    return json.dumps(
        {
            "config": config,
            "samples": [
                record.model_dump(mode="json")
                for record in [*spec.gaussian_map_samples, *spec.init_samples]
            ],
            "platform": spec.device.split(":", 1)[0],
            "threefry_partitionable": spec.threefry_partitionable,
        },
        sort_keys=True,
    )


def verify_checkpoint(
    path: StoragePath, atol: float | None = None, reruns: Reruns | None = None
) -> VerifyReport:
    """Check integrity and reproducibility of one checkpoint; damage is a finding, not an error.

    Args:
      path: a committed Orbax checkpoint directory.
      atol: largest absolute difference accepted from the re-run; ``None`` asks
        for bit-identical arrays.
      reruns: the prepared inits to re-run with (shared by the checkpoints of a group);
        a fresh one, without the export cache, by default.
    """
    # Preparing the init takes far longer than reading: keep it across the attempts of a
    # read that a writer's swap interrupted, so a retry re-reads only the checkpoint.
    reruns = reruns if reruns is not None else Reruns()
    return read_consistently([path], lambda: _verify_checkpoint(path, atol, reruns))


class Reruns:
    """Prepared inits by :func:`init_key`: each prepared once, then re-run per seed."""

    def __init__(self, compile_cache: Path | None = None) -> None:
        self.compile_cache = compile_cache
        self._prepared: dict[str, tuple[Any, str]] = {}

    def variables(
        self, spec: CheckpointSpec, path: StoragePath
    ) -> tuple[dict[tuple[str, ...], Any] | None, str]:
        """The variables the embedded spec gives here, by leaf path, and where they were
        computed; or ``None`` and why the init cannot be re-run."""
        import jax

        from icnn_cli.pipeline import initialize_seed

        # The re-run runs on one device whatever mesh wrote the checkpoint: with
        # partitionable threefry the values do not depend on the layout.
        config = spec_config(spec, path).model_copy(update={"sharding": None})
        key = init_key(spec)
        if key not in self._prepared:
            self._prepared[key] = self._prepare(spec, config)
        prepared, where = self._prepared[key]
        if prepared is None:
            return None, where
        with jax.threefry_partitionable(spec.threefry_partitionable):
            variables, _ = initialize_seed(prepared, spec.seed)
        return dict(flatten_with_paths(variables)), where

    def _prepare(self, spec: CheckpointSpec, config: Any) -> tuple[Any, str]:
        import jax

        from icnn_cli.pipeline import prepare_init_with_samples

        samples, sample_files = None, []
        if spec.gaussian_map_samples:
            samples = recorded_samples(spec, config.model.dim_data)
            if samples is None:
                missing = missing_sample_file(spec, config.model.dim_data)
                return None, f"Gaussian-map sample file {missing} is missing or has changed"
            sample_files = [
                SampleFile(record.role, Path(record.path), record.sha256, tuple(record.shape))
                for record in spec.gaussian_map_samples
            ]
        probes = None
        if spec.init_samples:  # a data-dependent recipe's probe samples file
            record = spec.init_samples[0]
            probes = unchanged_sample(record, config.model.dim_data)
            if probes is None:
                return None, f"probe sample file {record.path} is missing or has changed"
            probes = probes.astype("float32")
            sample_files.append(
                SampleFile(record.role, Path(record.path), record.sha256, tuple(record.shape))
            )
        device, where = _rerun_device(spec)
        with jax.threefry_partitionable(spec.threefry_partitionable):
            prepared = prepare_init_with_samples(
                config, samples, sample_files, device, self.compile_cache, probes
            )
            # A spec read from a checkpoint is untrusted: a model too big for this machine
            # is reported by its numbers, never allocated.
            problem = _rerun_problem(prepared)
        if problem is not None:
            return None, problem
        return prepared, where


def _verify_checkpoint(path: StoragePath, atol: float | None, reruns: Reruns) -> VerifyReport:
    try:
        reader = CheckpointReader.open(path)
    except IcnnError as error:
        if is_bad_input(error):
            raise
        return _unreadable(path, error.message, None)
    reproduced, note = _reproduced(reader, path, reruns)
    try:
        comparison = _compare_stored_with(reader.arrays(), reproduced, atol)
    except IcnnError as error:
        if is_bad_input(error):
            raise
        return _unreadable(path, error.message, reader.recorded_fingerprint)
    return _finished_report(path, reader, reproduced, note, comparison, atol)


def _reproduced(
    reader: CheckpointReader, path: StoragePath, reruns: Reruns
) -> tuple[dict[tuple[str, ...], Any] | None, str]:
    if reader.spec is None:
        return None, "no embedded icnn spec"
    try:
        return reruns.variables(reader.spec, path)
    except IcnnError as error:  # an embedded config that does not validate
        return None, error.message.removeprefix(f"{path}: ")


def _finished_report(
    path: StoragePath,
    reader: CheckpointReader,
    reproduced: dict[tuple[str, ...], Any] | None,
    note: str,
    comparison: Comparison,
    atol: float | None,
) -> VerifyReport:
    return VerifyReport(
        path=str(path),
        integrity=_integrity(reader),
        reproducibility=_reproducibility(reproduced, note, comparison, atol),
        differing_leaves=comparison.differences,
        recorded_fingerprint=reader.recorded_fingerprint,
        computed_fingerprint=reader.computed_fingerprint,
    )


def _unreadable(path: StoragePath, message: str, recorded: str | None) -> VerifyReport:
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


def _rerun_problem(prepared: Any) -> str | None:
    """Why the recorded init cannot run here, from its shapes (``eval_shape``: nothing
    allocated); ``None`` when it can.

    The spec comes from the checkpoint: a model that validates yet is too big for any
    machine (``dim_hidden: [10**30]``) must be refused by its numbers, not allocated.
    """
    from icnn_cli.pipeline import estimate_resources

    try:
        figures = estimate_resources(prepared)
    except (OverflowError, ValueError, TypeError, MemoryError) as error:
        return f"the recorded model cannot be initialised ({first_line(error, 120)})"
    if not figures.memory_fits:
        return (
            f"the recorded init needs ~{format_bytes(figures.peak_bytes)} at its peak, "
            f"{format_bytes(figures.available_memory or 0)} available ({figures.memory_where})"
        )
    return None


def _rerun_device(spec: CheckpointSpec) -> tuple[Any, str]:
    """The recorded platform's first device when this machine has it, else JAX's default.

    Kernels differ between backends, so only a re-run on the recorded platform is
    expected to match bit for bit; elsewhere ``--atol`` is the honest comparison.
    """
    from icnn_cli.jitted_init import PLATFORMS, select_device

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
    stored_arrays: Iterator[tuple[LeafRecord, Any]],
    reproduced: dict[tuple[str, ...], Any] | None,
    atol: float | None,
) -> Comparison:
    """Compare each stored array (from :meth:`CheckpointReader.arrays`, which computes the
    fingerprint as it streams them) with the re-run."""
    comparison = Comparison()
    seen = set()
    for leaf, stored in stored_arrays:
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
