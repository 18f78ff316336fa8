"""Several processes, one init: ``jax.distributed`` setup and agreement between processes.

Every process runs the same ``icnn init`` command. They must also take the same
path through it: a process that stops early (a missing file, an existing
``--out`` seen only there) would leave the others waiting in a collective until
a gloo or barrier timeout. So each step that can fail for one process alone
runs inside :func:`all_or_none`, which tells every process whether any failed,
and they all stop together with that process's message.

With a single process every function here is a no-op or a plain call: the
one-device path stays exactly what it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Iterator

from icnn_cli import errors
from icnn_cli.errors import IcnnError, RuntimeFailure, UsageError, first_line, param

MESSAGE_BYTES = 2048  # room for one failure record per process in the all-gather
RECORD_TEXT_CHARS = 200  # of a problem or value: 4 UTF-8 bytes each stay within MESSAGE_BYTES


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
    """How ``jax.distributed.initialize`` is called: the flags, or JAX's auto-detection."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    auto_detect: bool = False

    @property
    def requested(self) -> bool:
        return self.auto_detect or any(
            value is not None for value in (self.coordinator, self.num_processes, self.process_id)
        )

    def check(self) -> None:
        """Refuse (exit 2) flag values ``jax.distributed.initialize`` would reject later."""
        if self.coordinator is not None:
            host, _, port = self.coordinator.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise UsageError(
                    "expected HOST:PORT, e.g. 10.0.0.1:1234", "coordinator", self.coordinator
                )
        if self.num_processes is not None and self.num_processes < 1:
            raise UsageError("must be at least 1", "num_processes", self.num_processes)
        if self.process_id is not None:
            if self.process_id < 0:
                raise UsageError("must be at least 0", "process_id", self.process_id)
            if self.num_processes is not None and self.process_id >= self.num_processes:
                raise UsageError(
                    f"must be below {param('num_processes')} {self.num_processes}",
                    "process_id",
                    self.process_id,
                )


class AgreedFailure(Exception):  # noqa: N818 - it is a failure, not an error of its own
    """A failure every process raises at the same point, so they can shut down together.

    Args:
      error: what each process reports, of the class the failing process raised, so every
        process words it alike and exits with the same code (an existing ``--out`` seen
        by process 0 is bad input on process 1 too).
    """

    def __init__(self, error: IcnnError) -> None:
        super().__init__(str(error))
        self.error = error


def initialize(group: ProcessGroup) -> None:
    """``jax.distributed.initialize``; it must come before anything starts a JAX backend."""
    import jax

    group.check()
    try:
        jax.distributed.initialize(
            coordinator_address=group.coordinator,
            num_processes=group.num_processes,
            process_id=group.process_id,
        )
    except ValueError as error:
        # JAX could not fill in what the flags left out: no cluster was detected.
        raise UsageError(
            f"{error} (no TPU, SLURM or Open MPI environment was detected: pass "
            f"{param('coordinator')}, {param('num_processes')} and {param('process_id')})",
            "distributed",
        ) from None
    except RuntimeError as error:
        raise RuntimeFailure(f"jax.distributed.initialize failed: {first_line(error)}") from None


@contextlib.contextmanager
def session(group: ProcessGroup) -> Iterator[None]:
    """Run the body as one process of ``group``; a no-op when no flag asked for it."""
    if not group.requested:
        yield
        return
    import jax

    initialize(group)
    _keep_native_stdout_off_stdout()
    clean = False
    try:
        yield
        clean = True
    except AgreedFailure as agreed:
        clean = True
        raise agreed.error from None
    finally:
        # Shutting down waits for every process; after a failure of this
        # process alone the others are stuck elsewhere, so just leave: the
        # coordination service then stops them when its heartbeat lapses.
        if clean:
            jax.distributed.shutdown()


def _keep_native_stdout_off_stdout() -> None:
    """Send native writes to stdout (file descriptor 1) to stderr for the rest of the run.

    gloo prints "Rank 0 is connected to 7 peer ranks" lines on stdout, from C++
    and sometimes after the collective that caused them, and C's buffer may
    only be flushed at exit; stdout must carry nothing but the summary (one
    JSON document with ``--json``). Python's ``sys.stdout`` keeps the real one.
    """
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = open(  # noqa: SIM115 - it lives as long as the process
        real_stdout, "w", encoding=sys.stdout.encoding, errors=sys.stdout.errors
    )


def process_count() -> int:
    import jax

    return jax.process_count()


def is_primary() -> bool:
    """Process 0 commits the checkpoint and prints the summary."""
    import jax

    return jax.process_index() == 0


def primary_value(value: int) -> int:
    """Process 0's ``value``, on every process."""
    import numpy as np
    from jax.experimental import multihost_utils

    if process_count() == 1:
        return value
    return int(multihost_utils.broadcast_one_to_all(np.int64(value)))


@contextlib.contextmanager
def all_or_none(step: str) -> Iterator[None]:
    """Run the body on every process; if it failed anywhere, raise everywhere.

    Every process must enter and leave this block (it ends in a collective),
    so it wraps only local work: checks, file reads, building the module.
    """
    if process_count() == 1:
        yield
        return
    failure: BaseException | None = None
    try:
        yield
    except Exception as error:
        failure = error
    records = _all_gather_text(_failure_record(failure))
    failed = [(index, record) for index, record in enumerate(records) if record]
    if not failed:
        return
    if isinstance(failure, IcnnError):
        raise AgreedFailure(failure) from None
    if failure is not None:
        raise AgreedFailure(RuntimeFailure(_failure_text(failure))) from failure
    index, record = failed[0]
    raise AgreedFailure(_error_from_record(record, index, step))


def check_same_everywhere(what: str, text: str) -> None:
    """Refuse a run whose processes were given different commands (compared by digest)."""
    if process_count() == 1:
        return
    digest = hashlib.sha256(text.encode()).hexdigest()
    digests = _all_gather_text(digest)
    differing = [index for index, other in enumerate(digests) if other != digests[0]]
    if differing:
        raise AgreedFailure(
            UsageError(
                f"process {differing[0]} was given a different {what} than process 0; "
                "every process must run the same icnn init command"
            )
        )


def _failure_text(failure: BaseException | None) -> str:
    if failure is None:
        return ""
    if isinstance(failure, IcnnError):
        return failure.message
    return f"{type(failure).__name__}: {first_line(failure, limit=MESSAGE_BYTES)}"


def _failure_record(failure: BaseException | None) -> str:
    """What the other processes need to raise ``failure`` as this one does: its class,
    problem, parameter and value, as JSON (empty when nothing failed)."""
    if failure is None:
        return ""
    error = failure if isinstance(failure, IcnnError) else RuntimeFailure(_failure_text(failure))
    record = {
        "class": type(error).__name__,
        "problem": error.problem[:RECORD_TEXT_CHARS],
        "parameter": error.parameter,
    }
    if error.has_value():
        record["value"] = str(error.value)[:RECORD_TEXT_CHARS]
    return json.dumps(record, ensure_ascii=False)


def _error_from_record(record: str, index: int, step: str) -> IcnnError:
    """Process ``index``'s failure, of its class, for a process where ``step`` went well."""
    try:
        fields = json.loads(record)
        error_class = getattr(errors, fields["class"])
        if not (isinstance(error_class, type) and issubclass(error_class, IcnnError)):
            raise TypeError(fields["class"])
    except (ValueError, KeyError, TypeError, AttributeError):  # cut short, or not ours
        return RuntimeFailure(f"process {index} failed while {step}")
    extra = {"value": fields["value"]} if "value" in fields else {}
    problem = f"{fields['problem']} (process {index}, while {step})"
    return error_class(problem, parameter=fields["parameter"], **extra)


def _all_gather_text(text: str) -> list[str]:
    import numpy as np
    from jax.experimental import multihost_utils

    encoded = text.encode()[: MESSAGE_BYTES - 1]
    buffer = np.zeros(MESSAGE_BYTES, dtype=np.uint8)
    buffer[: len(encoded)] = np.frombuffer(encoded, dtype=np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(buffer))
    return [bytes(row).rstrip(b"\0").decode(errors="replace") for row in gathered]
