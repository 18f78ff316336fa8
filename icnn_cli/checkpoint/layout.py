"""The one place that knows Orbax's layouts: what a path holds, and whether it is committed.

A path is one of three things (``tests/data/golden/foreign/LAYOUTS.md`` has the
evidence, release by release):

- a **single item**: a PyTree checkpoint with ``_METADATA`` (or, from Orbax 0.4,
  its msgpack ``checkpoint`` file) at the top: ``StandardCheckpointer``,
  ``PyTreeCheckpointer``, and every ``icnn init``;
- a **step with items**: one subdirectory per item. ``_CHECKPOINT_METADATA``
  names them and their handlers (``item_handlers``, Orbax 0.11 on); older steps
  are read from their files. This is a ``CheckpointManager`` step with Composite
  items, a v1 ``save_checkpointables`` or ``save_pytree`` (the tree under
  ``state/``, an empty ``orbax.checkpoint`` marker file at the top) and a v1
  training ``Checkpointer`` step (``state/`` and ``metrics/``);
- a **root of steps**: step directories named ``100``, ``000100`` or
  ``step_100`` (``step_prefix``, ``step_format_fixed_length``; no file records the
  format), beside which ``metadata/`` (root metadata) and temporaries are not steps.

Committed is judged by the rules of the release that wrote it: Orbax writes
``commit_success.txt`` only since 0.12.3; before, a local checkpoint was committed
by renaming it to its final name, and from 0.5 on its ``_CHECKPOINT_METADATA``
records a commit time when it is finalized. A temporary name always means not
committed. Where nothing tells (Orbax 0.4 writes no step metadata), the checkpoint
is read and a warning says so. In object storage (``gs://``) nothing is renamed:
every Orbax release writes straight to the final name and ``commit_success.txt``
last, so there the marker alone says committed.

Longer than most modules on purpose: every Orbax layout and commit rule lives here, in
one place, so that a new release's layout is one new case beside the others.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from icnn_cli.checkpoint import guarded_files
from icnn_cli.checkpoint.single_files import FILE_KINDS, LAYOUTS, sniff
from icnn_cli.checkpoint.spec import METADATA_KEY
from icnn_cli.checkpoint.storage import check_reachable, is_remote, missing_bucket
from icnn_cli.checkpoint.temporaries import (
    interrupted_replace_hint,
    interrupted_swap_hint,
    is_temporary,
)
from icnn_cli.errors import RUNTIME_ERROR, CheckpointRefused, IcnnError, first_line

COMMIT_MARKER = "commit_success.txt"
TREE_METADATA = "_METADATA"
MSGPACK_TREE = "checkpoint"  # Orbax 0.4's msgpack tree (values or placeholders)
CHECKPOINT_METADATA = "_CHECKPOINT_METADATA"
V1_MARKER = "orbax.checkpoint"  # an empty file the v1 free functions write at the top
ROOT_METADATA_DIRECTORY = "metadata"  # <root>/metadata/_ROOT_METADATA, beside the steps
JSON_ITEM_FILES = ("metadata", "data.json", "metrics")  # v0 JsonCheckpointHandler, v1 Json/Metrics
MAX_CHECKPOINT_METADATA_BYTES = 4 << 20  # Orbax's own entries plus an icnn spec are a few KiB
# Orbax's default step names are the number, optionally zero-padded, optionally after
# "<prefix>_" (CheckpointManagerOptions.step_prefix / step_format_fixed_length).
STEP_NAME = re.compile(r"^(?:(?P<prefix>.+)_)?(?P<number>\d+)$")
FIRST_RELEASE_WITH_MARKER = (0, 12, 3)
# What an Orbax save writes before its marker, so what a killed one may have left.
SAVE_STARTED = (TREE_METADATA, CHECKPOINT_METADATA, "manifest.ocdbt", "ocdbt.process_0", "d")

ItemKind = Literal["pytree", "json", "unknown", "safetensors", "npz", "msgpack"]
TREE_KINDS = ("pytree", *FILE_KINDS)  # items that hold a tree of arrays


@dataclasses.dataclass(frozen=True)
class Item:
    """One item of a checkpoint: a PyTree, a JSON document, or something icnn cannot read."""

    name: str | None  # None: the checkpoint is this single item
    path: Path
    kind: ItemKind
    handler: str | None = None  # Orbax's handler class path, where recorded

    @property
    def label(self) -> str:
        return self.name or "(top level)"

    @property
    def json_file(self) -> Path | None:
        """The file holding a JSON item's document."""
        for name in JSON_ITEM_FILES:
            if (self.path / name).is_file():
                return self.path / name
        return None


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A committed Orbax checkpoint directory: one item, or a step with items.

    Attributes:
      path: the directory.
      items: its items, by name (one nameless item for a single-item checkpoint).
      layout: how Orbax wrote it, in words ("single item", "v1 checkpointables", ...).
      metadata: ``_CHECKPOINT_METADATA`` (``{}`` where the writer had none): handlers,
        ``custom_metadata``, init and commit times, metrics.
      warnings: what icnn could not tell, said rather than refused.
    """

    path: Path
    items: tuple[Item, ...]
    layout: str
    metadata: dict[str, Any]
    warnings: tuple[str, ...] = ()

    @property
    def single(self) -> bool:
        return len(self.items) == 1 and self.items[0].name is None

    @property
    def custom_metadata(self) -> dict[str, Any]:
        return self.metadata.get("custom_metadata") or {}

    def pytree_items(self) -> list[Item]:
        """The items that hold a tree of arrays (Orbax PyTrees, or a single weights file)."""
        return [item for item in self.items if item.kind in TREE_KINDS]

    def item(self, name: str) -> Item:
        """The item called ``name`` (``--item``)."""
        for item in self.items:
            if item.name == name:
                return item
        names = ", ".join(item.label for item in self.items)
        raise IcnnError(f"--item {name}: {self.path} has no item {name!r} (items: {names})")

    def only_pytree(self, purpose: str = "") -> Item:
        """The one PyTree item, for commands that need exactly one tree."""
        trees = self.pytree_items()
        if len(trees) == 1:
            return trees[0]
        if not trees:
            raise IcnnError(f"{self.path}: holds no PyTree item ({self.items_text()})")
        names = ", ".join(item.label for item in trees)
        raise IcnnError(
            f"{self.path}: holds several PyTree items ({names}){purpose}: give one of them, "
            f"e.g. {trees[0].path}"
        )

    def items_text(self) -> str:
        return ", ".join(f"{item.label}: {item.kind}" for item in self.items)


@dataclasses.dataclass(frozen=True)
class RootOfSteps:
    """A ``CheckpointManager`` (or v1 training ``Checkpointer``) root: step directories."""

    path: Path
    steps: tuple[tuple[int, str], ...]  # (step, directory name), ascending

    def step_path(self, step: int | None, flag: str = "--step") -> tuple[int, Path]:
        """``(step, directory)`` of ``step``, default the latest."""
        names = dict(self.steps)
        chosen = self.steps[-1][0] if step is None else step
        if chosen not in names:
            raise IcnnError(
                f"{flag} {step}: {self.path} has no step {step} (steps: {steps_text(self.steps)})"
            )
        return chosen, self.path / names[chosen]


@dataclasses.dataclass(frozen=True)
class Location:
    """What a path named: a checkpoint, possibly reached through a root of steps."""

    checkpoint: Checkpoint
    root: RootOfSteps | None = None
    step: int | None = None

    def as_json(self) -> dict[str, Any] | None:
        if self.root is None:
            return None
        steps = [number for number, _ in self.root.steps]
        return {"root": str(self.root.path), "steps": steps, "step": self.step}


# --- steps -----------------------------------------------------------------------------------


def manager_steps(path: Path) -> list[tuple[int, str]]:
    """``(step, directory name)`` of a root's step directories, ascending.

    ``100``, ``000100`` and ``step_100`` are steps; temporaries
    (``<step>.orbax-checkpoint-tmp-*``) and the root's ``metadata/`` are not.
    """
    if not path.is_dir():
        return []
    found = []
    for child in path.iterdir():
        match = STEP_NAME.match(child.name)
        if match and not is_temporary(child) and child.is_dir():
            guarded_files.inside(path, child.name, "step directory")  # no link out of the root
            found.append((int(match.group("number")), child.name))
    return sorted(found)


def steps_text(steps: Sequence[tuple[int, str]], shown: int = 3) -> str:
    """``0, 5, 10`` or, for many, ``0, 1, 2, ..., 97, 98, 99 (100 steps)``."""
    numbers = [str(step) for step, _ in steps]
    if len(numbers) <= 2 * shown:
        return ", ".join(numbers)
    return (
        f"{', '.join(numbers[:shown])}, ..., {', '.join(numbers[-shown:])} ({len(numbers)} steps)"
    )


# --- the step metadata file ----------------------------------------------------------------------


def read_checkpoint_metadata(path: Path) -> dict[str, Any]:
    """``_CHECKPOINT_METADATA`` of ``path`` (``{}`` when absent); exit 1 when damaged.

    Orbax itself reports a broken file as ``custom_metadata={}``, which would make an
    icnn checkpoint look foreign, so the file is checked here.
    """
    file = path / CHECKPOINT_METADATA
    problem = None
    content: Any = None
    try:
        data = guarded_files.read_bytes(path, file, MAX_CHECKPOINT_METADATA_BYTES)
    except FileNotFoundError:
        return {}  # Orbax 0.4 wrote none; nothing is lost
    except OSError as error:
        problem = f"is unreadable ({first_line(error)})"
    else:
        try:
            content = guarded_files.load_json(data, path, CHECKPOINT_METADATA)
        except ValueError as error:
            problem = f"is not valid JSON ({first_line(error)})"
        else:
            if not isinstance(content, dict):
                problem = "is not a JSON object"
            elif not isinstance(content.get("custom_metadata") or {}, dict):
                problem = "has a custom_metadata that is not a JSON object"
    if problem:
        raise IcnnError(
            f"{path}: {CHECKPOINT_METADATA} {problem}: the checkpoint's metadata is damaged",
            RUNTIME_ERROR,
        )
    return content


# --- items ------------------------------------------------------------------------------------


def _kind_of_handler(handler: str) -> ItemKind:
    name = handler.rsplit(".", 1)[-1]
    if "PyTree" in name or "Standard" in name:
        return "pytree"
    if "Json" in name or "Metrics" in name:
        return "json"
    return "unknown"


def _kind_of_files(directory: Path) -> ItemKind | None:
    """An item's kind from the files Orbax writes for it; ``None``: not an item."""
    if (directory / TREE_METADATA).is_file() or (directory / MSGPACK_TREE).is_file():
        return "pytree"
    if any((directory / name).is_file() for name in JSON_ITEM_FILES):
        return "json"
    return None


def _is_single_item(path: Path) -> bool:
    return (path / TREE_METADATA).is_file() or (path / MSGPACK_TREE).is_file()


def _items(path: Path, metadata: dict[str, Any]) -> tuple[list[Item], str] | None:
    """The items of a directory and the layout's name; ``None`` when it holds none."""
    handlers = metadata.get("item_handlers")
    if _is_single_item(path):
        handler = handlers if isinstance(handlers, str) else None
        return [Item(None, path, "pytree", handler)], "single item"
    v1 = (path / V1_MARKER).is_file()
    if isinstance(handlers, dict) and handlers:
        items = []
        for name, handler in sorted(handlers.items()):
            # Item names come from the checkpoint: "/elsewhere" or "../x" must not lead out.
            directory = guarded_files.inside(path, str(name))
            kind = _kind_of_files(directory) or _kind_of_handler(str(handler))
            items.append(Item(str(name), directory, kind, str(handler)))
        api = "v1" if any(".v1." in str(handler) for handler in handlers.values()) else "v0"
    else:
        # Without handlers, items are told by their files; step directories (a root's
        # children) are not items, whatever they hold.
        children = sorted(
            child
            for child in path.iterdir()
            if child.is_dir() and not is_temporary(child) and not STEP_NAME.match(child.name)
        )
        items = [
            Item(child.name, child, kind)
            for child in children
            if (kind := _kind_of_files(child)) is not None
        ]
        api = "v1" if v1 else "v0"
    if not items:
        return None
    if v1:
        layout = "v1 checkpointables (orbax.checkpoint.v1 save)"
    elif api == "v1":
        layout = "v1 training step (orbax.checkpoint.v1 training Checkpointer)"
    else:
        layout = "step with items (CheckpointManager / Composite)"
    return items, layout


# --- commit rules ------------------------------------------------------------------------------


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def _commit_problem(path: Path, metadata: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(why it is not committed, warning)``: at most one of them is set."""
    if (path / COMMIT_MARKER).is_file():
        return None, None
    if is_remote(path):
        # No rename in a bucket: the final name proves nothing, the marker is written last.
        return f"no {COMMIT_MARKER}, which a save to object storage writes last", None
    if not (path / CHECKPOINT_METADATA).exists():
        # Orbax 0.4 wrote neither file: only the final name (a rename) says it finished.
        return None, (
            f"{path}: no {COMMIT_MARKER} and no {CHECKPOINT_METADATA}, as Orbax 0.4 wrote "
            "them: taken as finished by its final name"
        )
    if "commit_timestamp_nsecs" not in metadata:
        return f"no {COMMIT_MARKER}, and no commit time in {CHECKPOINT_METADATA}", None
    icnn = (metadata.get("custom_metadata") or {}).get(METADATA_KEY)
    versions = icnn.get("versions") if isinstance(icnn, dict) else None
    writer = versions.get("orbax-checkpoint") if isinstance(versions, dict) else None
    if isinstance(writer, str) and _release(writer) >= FIRST_RELEASE_WITH_MARKER:
        return f"no {COMMIT_MARKER}, which orbax-checkpoint {writer} writes last", None
    return None, None  # Orbax 0.5 to 0.12.2: committed by renaming, with a commit time


# --- the entry points ----------------------------------------------------------------------------


def has_unfinished_save(path: Path) -> bool:
    """Whether ``path`` holds what a save killed before its marker leaves (no marker)."""
    return not (path / COMMIT_MARKER).is_file() and any(
        (path / name).exists() for name in SAVE_STARTED
    )


def _not_found(path: Path) -> IcnnError:
    if is_remote(path):
        bucket = missing_bucket(path)
        if bucket:
            return IcnnError(f"{path}: no such checkpoint: bucket {bucket} does not exist")
        hint = interrupted_replace_hint(path, COMMIT_MARKER)
        return IcnnError(f"{path}: no such checkpoint{hint}")
    return IcnnError(f"{path}: no such checkpoint{interrupted_swap_hint(path)}")


def open_checkpoint(path: Path) -> Checkpoint:
    """The committed checkpoint at ``path``; exit 2 for anything else, 1 for damaged metadata.

    Orbax's ``metadata()`` happily answers for half-written directories, so the
    commit rules above are applied here first.
    """
    check_reachable(path)
    if not path.exists():
        raise _not_found(path)
    if not path.is_dir():
        if not is_remote(path) and not stat.S_ISREG(os.stat(path).st_mode):
            raise CheckpointRefused(f"{path}: is not a regular file nor a directory")
        if is_remote(path):
            raise IcnnError(
                f"{path}: is a file; icnn reads Orbax checkpoint directories from object "
                "storage (copy a single weights file to a local disk to read it)"
            )
        kind = sniff(path)
        if kind is None:
            raise IcnnError(
                f"{path}: not an Orbax checkpoint (it is a file, not a directory), nor a "
                "safetensors, .npz or Flax msgpack file"
            )
        return Checkpoint(path, (Item(None, path, kind),), LAYOUTS[kind], {})
    if is_temporary(path):
        raise IcnnError(
            f"{path}: an unfinished save left this temporary directory; it is not a checkpoint"
        )
    # Orbax and tensorstore open their files themselves: no special file, no link out.
    guarded_files.check_tree(path)
    metadata = read_checkpoint_metadata(path)
    found = _items(path, metadata)
    if found is None and is_remote(path) and has_unfinished_save(path):
        raise IcnnError(
            f"{path}: Orbax checkpoint was never committed (no {COMMIT_MARKER}, which a save "
            f"to object storage writes last){interrupted_replace_hint(path, COMMIT_MARKER)}"
        )
    if found is None:
        steps = manager_steps(path)
        hint = (
            f" (it holds step directories {steps_text(steps)} of a CheckpointManager root: give "
            f"one step's checkpoint, e.g. {path / steps[-1][1]}; `icnn inspect` takes the root "
            "itself)"
            if steps
            else ""
        )
        raise IcnnError(f"{path}: not an Orbax checkpoint (no {TREE_METADATA} file){hint}")
    items, layout = found
    problem, warning = _commit_problem(path, metadata)
    if problem:
        hint = interrupted_replace_hint(path, COMMIT_MARKER) if is_remote(path) else ""
        raise IcnnError(f"{path}: Orbax checkpoint was never committed ({problem}){hint}")
    return Checkpoint(path, tuple(items), layout, metadata, (warning,) if warning else ())


def locate(path: Path, step: int | None = None) -> Location:
    """A checkpoint, or the step ``step`` (default: the latest) of a root of steps."""
    check_reachable(path)
    if not path.exists():
        raise _not_found(path)
    is_checkpoint_itself = not path.is_dir() or (
        _is_single_item(path)
        or (path / CHECKPOINT_METADATA).is_file()
        or (path / V1_MARKER).is_file()
    )
    steps = [] if is_checkpoint_itself else manager_steps(path)
    if not steps:
        if step is not None:
            raise IcnnError(
                f"--step {step}: {path} is not a CheckpointManager root (no numbered step "
                "directories)"
            )
        return Location(open_checkpoint(path))
    root = RootOfSteps(path, tuple(steps))
    number, step_directory = root.step_path(step)
    return Location(open_checkpoint(step_directory), root, number)
