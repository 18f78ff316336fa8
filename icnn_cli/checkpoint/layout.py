"""What a path holds, by Orbax's rules: a committed checkpoint, a manager root, its steps."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from icnn_cli.errors import IcnnError

COMMIT_MARKER = "commit_success.txt"
TREE_METADATA = "_METADATA"
CHECKPOINT_METADATA = "_CHECKPOINT_METADATA"
ORBAX_TMP_SUFFIX = ".orbax-checkpoint-tmp"
STAGING_TAG = ".icnn-staging-"
ASIDE_TAG = ".icnn-aside-"  # the old checkpoint during a fallback (non-renameat2) swap


# --- what is a committed checkpoint ----------------------------------------------------


def ensure_committed_checkpoint(path: Path) -> None:
    """Refuse (exit 2) anything that is not a finished Orbax checkpoint directory.

    Orbax's ``metadata()`` happily answers for half-written directories, so the
    markers are checked here: no tmp suffix, a commit marker and tree metadata.
    """
    if not path.exists():
        raise IcnnError(f"{path}: no such checkpoint{interrupted_swap_hint(path)}")
    if not path.is_dir():
        raise IcnnError(f"{path}: not an Orbax checkpoint (it is a file, not a directory)")
    if any(tag in path.name for tag in (ORBAX_TMP_SUFFIX, STAGING_TAG, ASIDE_TAG)):
        raise IcnnError(
            f"{path}: an unfinished save left this temporary directory; it is not a checkpoint"
        )
    if not (path / TREE_METADATA).is_file():
        steps = manager_steps(path)
        hint = (
            f" (it holds step directories {steps_text(steps)} of a CheckpointManager root: give "
            f"one step's checkpoint, e.g. {_example_item(path / steps[-1][1])}; `icnn inspect` "
            "takes the root itself)"
            if steps
            else ""
        )
        raise IcnnError(f"{path}: not an Orbax checkpoint (no {TREE_METADATA} file){hint}")
    if not (path / COMMIT_MARKER).is_file():
        raise IcnnError(f"{path}: Orbax checkpoint was never committed (no {COMMIT_MARKER})")


# --- CheckpointManager roots -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ManagerStep:
    """The step of an Orbax ``CheckpointManager`` root that was chosen, and its item."""

    root: Path
    steps: list[int]  # every step found, ascending
    step: int
    item: Path  # the checkpoint directory of that step's PyTree item

    def as_json(self) -> dict[str, Any]:
        return {"root": str(self.root), "steps": self.steps, "step": self.step}


def manager_steps(path: Path) -> list[tuple[int, str]]:
    """``(step, directory name)`` of a CheckpointManager root's step directories, ascending.

    A step directory is named by its number (Orbax writes ``<step>.orbax-checkpoint-tmp-*``
    first and renames it when the step is committed, so a numbered one is finished).
    """
    if not path.is_dir():
        return []
    found = [(int(child.name), child.name) for child in path.iterdir() if child.name.isdigit()]
    return sorted(found)


def steps_text(steps: Sequence[tuple[int, str]], shown: int = 3) -> str:
    """``0, 5, 10`` or, for many, ``0, 1, 2, ..., 97, 98, 99 (100 steps)``."""
    numbers = [str(step) for step, _ in steps]
    if len(numbers) <= 2 * shown:
        return ", ".join(numbers)
    return (
        f"{', '.join(numbers[:shown])}, ..., {', '.join(numbers[-shown:])} ({len(numbers)} steps)"
    )


def resolve_manager_step(path: Path, step: int | None) -> ManagerStep | None:
    """For a CheckpointManager root, the checkpoint of ``step`` (default: the latest).

    Returns ``None`` when ``path`` is a checkpoint itself (or nothing icnn can read,
    which :func:`ensure_committed_checkpoint` then reports).
    """
    if step is None and (path / TREE_METADATA).is_file():
        return None
    steps = manager_steps(path)
    if not steps:
        if step is not None:
            raise IcnnError(
                f"--step {step}: {path} is not a CheckpointManager root (no numbered step "
                "directories)"
            )
        return None
    names = dict(steps)
    chosen = steps[-1][0] if step is None else step
    if chosen not in names:
        raise IcnnError(f"--step {step}: {path} has no step {step} (steps: {steps_text(steps)})")
    item = _step_item(path / names[chosen], chosen)
    return ManagerStep(path, [number for number, _ in steps], chosen, item)


def _example_item(step_directory: Path) -> Path:
    try:
        return _step_item(step_directory, int(step_directory.name))
    except IcnnError:
        return step_directory


def _step_item(step_directory: Path, step: int) -> Path:
    if (step_directory / TREE_METADATA).is_file():
        return step_directory
    items = sorted(
        child
        for child in step_directory.iterdir()
        if child.is_dir() and (child / TREE_METADATA).is_file()
    )
    if len(items) == 1:
        return items[0]
    if not items:
        raise IcnnError(f"{step_directory}: step {step} holds no Orbax PyTree checkpoint")
    names = ", ".join(item.name for item in items)
    raise IcnnError(
        f"{step_directory}: step {step} holds several checkpoints ({names}): "
        f"inspect one of them, e.g. {items[0]}"
    )


# --- temporaries that icnn's writer leaves while it works --------------------------------


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftovers(target: Path, tag: str) -> list[tuple[Path, bool]]:
    """``(path, owner is gone)`` for each temporary named ``.<target><tag><pid>...``."""
    prefix = f".{target.name}{tag}"
    if not target.parent.is_dir():
        return []
    found = []
    for candidate in sorted(target.parent.iterdir()):
        if not candidate.name.startswith(prefix):
            continue
        pid_text = candidate.name[len(prefix) :].split(".", 1)[0]
        owner_alive = (
            pid_text.isdigit() and int(pid_text) != os.getpid() and process_alive(int(pid_text))
        )
        found.append((candidate, not owner_alive))
    return found


def interrupted_swap_hint(target: Path) -> str:
    """Where an interrupted ``--force`` swap left the previous checkpoint, if it did."""
    for candidate, owner_gone in leftovers(target, ASIDE_TAG):
        if owner_gone:
            return (
                f" (an interrupted 'icnn init --force' left the previous checkpoint at "
                f"{candidate}; the next 'icnn init' with this --out puts it back)"
            )
    return ""
