"""Write golden checkpoints with whichever orbax-checkpoint release is installed.

`icnn inspect` must read checkpoints written by older Orbax releases and by the v1 API, so these
fixtures were written by those releases themselves, each in a throwaway virtualenv with the jax of
its time (Python 3.11, CPU). Run this file once per virtualenv; it picks the API by the installed
version and writes ``<out>/<orbax version>/<fixture>/``, then records each fixture (writer
versions, the call used, the expected leaves) in ``<out>/MANIFEST.json``. Afterwards run it once
more with the project's own virtualenv (orbax-checkpoint 0.12.8) and ``--check-restore``: that
tries to restore every fixture with the current Orbax and records which calls work.

Virtualenvs used (Python 3.11.7, pip 23.2.1 from ``python3.11 -m venv``)::

    python3.11 -m venv /tmp/orbax-0.4.1 && /tmp/orbax-0.4.1/bin/pip install \
        orbax-checkpoint==0.4.1 jax==0.4.18 jaxlib==0.4.18 numpy==1.26.0 ml_dtypes==0.3.1 \
        scipy==1.11.3 tensorstore==0.1.45 flax==0.7.4 optax==0.1.7 chex==0.1.83
    python3.11 -m venv /tmp/orbax-0.4 && /tmp/orbax-0.4/bin/pip install \
        orbax-checkpoint==0.4.8 jax==0.4.23 jaxlib==0.4.23 numpy==1.26.4 ml_dtypes==0.3.1 \
        scipy==1.11.4 tensorstore==0.1.51
    python3.11 -m venv /tmp/orbax-0.5 && /tmp/orbax-0.5/bin/pip install \
        orbax-checkpoint==0.5.23 jax==0.4.30 jaxlib==0.4.30 numpy==1.26.4 ml_dtypes==0.4.0 \
        scipy==1.13.1 tensorstore==0.1.63
    python3.11 -m venv /tmp/orbax-0.9 && /tmp/orbax-0.9/bin/pip install \
        orbax-checkpoint==0.9.1 jax==0.4.35 jaxlib==0.4.35 numpy==2.1.3 ml_dtypes==0.5.0 \
        scipy==1.14.1 tensorstore==0.1.68
    python3.11 -m venv /tmp/orbax-0.11 && /tmp/orbax-0.11/bin/pip install \
        orbax-checkpoint==0.11.40 jax==0.10.1 jaxlib==0.10.1 numpy==2.4.4 ml_dtypes==0.6.0 \
        tensorstore==0.1.84
    python3.11 -m venv /tmp/orbax-0.12 && /tmp/orbax-0.12/bin/pip install \
        orbax-checkpoint==0.12.8 jax==0.10.2 jaxlib==0.10.2 numpy==2.4.6 ml_dtypes==0.6.0 \
        tensorstore==0.1.86

The rest came unpinned from PyPI on 2026-11-26 and resolved the same in every venv: absl-py 2.5.1,
etils 1.15.0, msgpack 1.2.4, protobuf 7.36.2, PyYAML 6.0.4, typing_extensions 4.16.0,
opt_einsum 3.4.0, nest-asyncio 1.6.0 (<= 0.9), humanize 4.17.0 (>= 0.9), aiofiles 25.1.0 and
simplejson 4.3.0 (>= 0.11). Pin them too if a later release of one breaks an old Orbax.

Each minor release is its latest patch on PyPI; each jax is the last jax released before that
Orbax patch (0.4.8: 2023-12-15 / jax 0.4.23; 0.5.23: 2024-07-26 / 0.4.30; 0.9.1: 2024-11-11 /
0.4.35; 0.11.40: 2026-05-19 / 0.10.1; 0.12.8 / 0.10.2 as in the project's requirements.lock).
0.4.1 is the exception: not a latest patch but one of 0.4.0 to 0.4.2, whose default save
writes no ``_METADATA`` (the release the problem was reported with), built 2023-09-29 (its
wheel's file dates). jaxlib 0.4.14 to 0.4.17 are not on the package index here, so the nearest
later one, 0.4.18, with jax, flax, optax and chex releases of that time (flax is not used by
the script; pinned so the virtualenv is one a user then had; its deps resolved to rich 15.0.0,
toolz 1.2.0, fsspec 2026.9.0).

Regenerate (from the repository root; fixtures already present are refused, delete them first)::

    for v in 0.4.1 0.4 0.5 0.9 0.11 0.12; do
      /tmp/orbax-$v/bin/python tests/data/golden/foreign/make_foreign_golden.py \
          --out tests/data/golden/foreign
    done
    .venv/bin/python tests/data/golden/foreign/make_foreign_golden.py \
        --out tests/data/golden/foreign --check-restore   # [--only 0.4.1/] for some

LAYOUTS.md is hand-written facts followed by the output of ``--listings``.

Values are deterministic (``np.arange`` based), so a regenerated fixture holds the same numbers;
timestamps and the bytes of OCDBT files differ from run to run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_ABOUT = (
    "One entry per fixture directory (key: '<orbax version>/<fixture>'). writer: versions that "
    "wrote it; api: the call; layout: 'single item' (a checkpoint directory holding one pytree), "
    "'step with items' (a checkpoint directory holding one subdirectory per item), 'root of "
    "steps' (a directory of step directories, each a step with items; steps lists their names); "
    "items: name -> kind (pytree/json), handler, and the expected leaves (path 'a/b/c', dtype, "
    "shape, sum/min/max and all values for arrays; type and value for scalars) or the JSON value "
    "(value_per_step for v1 metrics); restorable_by_current_orbax: the result of "
    "--check-restore, with each call tried ('path' is the fixture directory, '<step dir>' each "
    "step's directory) and, for the failing ones, the first problem(s)."
)
META_ITEM = {"lr": 0.001, "note": "run-a"}
STEPS = (0, 5)
PREFIXED_STEPS = (100, 200)
CUSTOM_METADATA = {"icnn_spec": {"seed": 0, "dim_data": 2}, "note": "custom metadata"}
ROOT_METADATA = {"experiment": "foreign-golden", "owner": "icnn"}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def _package_version(name: str) -> str | None:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None


def writer_versions() -> dict[str, str | None]:
    import jax

    return {
        "orbax-checkpoint": _package_version("orbax-checkpoint"),
        "jax": jax.__version__,
        "jaxlib": _package_version("jaxlib"),
        "numpy": np.__version__,
        "tensorstore": _package_version("tensorstore"),
        "ml_dtypes": _package_version("ml_dtypes"),
        "python": ".".join(str(part) for part in sys.version_info[:3]),
    }


def array_tree() -> dict[str, Any]:
    """The pytree every release saves: float32, int32 and bfloat16 jax arrays."""
    import jax.numpy as jnp

    return {
        "params": {
            "dense": {
                "kernel": jnp.asarray(np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5),
                "bias": jnp.asarray(np.arange(3, dtype=np.float32) * 0.5 - 0.5),
            },
            "scale": jnp.asarray(np.array([1.0, 1.5], dtype=np.float32), dtype=jnp.bfloat16),
        },
        "count": jnp.asarray(np.array([3, 4], dtype=np.int32)),
    }


def array_tree_with_scalar() -> dict[str, Any]:
    """Orbax < 0.4.3: the same arrays plus a Python int, to show how those releases store one."""
    return {**array_tree(), "step": 7}


def as_stored_before_tree_metadata(tree: dict[str, Any]) -> dict[str, Any]:
    """What Orbax < 0.4.3 keeps of a tree: no ``_METADATA``, so a Python scalar becomes a 0-d
    array (``np.asarray``: int64 for an int) and is restored as one."""
    return {
        key: as_stored_before_tree_metadata(value)
        if isinstance(value, dict)
        else (np.asarray(value) if isinstance(value, (bool, int, float)) else value)
        for key, value in tree.items()
    }


def scalar_leaves() -> dict[str, Any]:
    import jax.numpy as jnp

    return {
        "step": 7,
        "name": "run-a",
        "flag": True,
        "lr": 0.5,
        "w": jnp.asarray(np.arange(3, dtype=np.float32) * 0.25),
    }


def _flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        rows = []
        for key in sorted(tree):
            rows.extend(_flatten(tree[key], f"{prefix}/{key}" if prefix else str(key)))
        return rows
    if isinstance(tree, (list, tuple)):
        rows = []
        for index, value in enumerate(tree):
            rows.extend(_flatten(value, f"{prefix}/{index}" if prefix else str(index)))
        return rows
    return [(prefix, tree)]


def leaf_records(tree: Any) -> list[dict[str, Any]]:
    """Path, dtype, shape and statistics of each leaf, as the manifest states them."""
    records = []
    for path, leaf in _flatten(tree):
        if isinstance(leaf, (bool, int, float, str)):
            records.append(
                {"path": path, "kind": "scalar", "type": type(leaf).__name__, "value": leaf}
            )
            continue
        array = np.asarray(leaf)
        as_float = array.astype(np.float64)
        records.append(
            {
                "path": path,
                "kind": "array",
                "dtype": str(array.dtype),
                "shape": list(array.shape),
                "sum": float(as_float.sum()),
                "min": float(as_float.min()),
                "max": float(as_float.max()),
                "values": as_float.ravel().tolist(),
            }
        )
    return records


class FixtureWriter:
    """Writes fixtures for one Orbax release and collects their manifest entries."""

    def __init__(self, out: Path) -> None:
        import orbax.checkpoint as ocp

        self.ocp = ocp
        self.version = _package_version("orbax-checkpoint")
        self.version_tuple = _version_tuple(self.version)
        out = out.resolve()  # Orbax < 0.5 refuses relative checkpoint paths
        self.release_dir = out / self.version
        self.out = out
        self.entries: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, str] = {}

    def path_for(self, name: str) -> Path:
        path = self.release_dir / name
        if path.exists():
            raise SystemExit(f"{path} exists; delete it to regenerate")
        return path

    def record(
        self,
        name: str,
        api: str,
        layout: str,
        items: dict[str, Any],
        steps: list[str] | None = None,
        notes: list[str] | None = None,
        custom_metadata: Any = None,
        root_metadata: Any = None,
    ) -> None:
        entry: dict[str, Any] = {
            "writer": writer_versions(),
            "api": api,
            "layout": layout,
            "items": items,
        }
        if steps is not None:
            entry["steps"] = steps
        if custom_metadata is not None:
            entry["custom_metadata"] = custom_metadata
        if root_metadata is not None:
            entry["root_metadata"] = root_metadata
        if notes:
            entry["notes"] = notes
        self.entries[f"{self.version}/{name}"] = entry

    def attempt(self, name: str, write: Callable[[], None]) -> None:
        try:
            write()
        except Exception as error:  # noqa: BLE001  (a release may lack an API: record it)
            traceback.print_exc()
            self.failures[f"{self.version}/{name}"] = f"{type(error).__name__}: {error}"
            for leftover in self.release_dir.glob(f"{name}*"):
                shutil.rmtree(leftover, ignore_errors=True)

    # --- v0 single-item pytrees -------------------------------------------------------------

    @property
    def writes_tree_metadata(self) -> bool:
        """``PyTreeCheckpointHandler(write_tree_metadata=...)`` defaults to True from 0.4.3 on
        (False in 0.4.0 to 0.4.2, read in each release's pytree_checkpoint_handler.py)."""
        return self.version_tuple >= (0, 4, 3)

    def saved_tree(self) -> dict[str, Any]:
        return array_tree() if self.writes_tree_metadata else array_tree_with_scalar()

    def expected_leaves(self, tree: dict[str, Any]) -> list[dict[str, Any]]:
        if self.writes_tree_metadata:
            return leaf_records(tree)
        return leaf_records(as_stored_before_tree_metadata(tree))

    def tree_notes(self) -> list[str] | None:
        if self.writes_tree_metadata:
            return None
        return [
            "no _METADATA (PyTreeCheckpointHandler(write_tree_metadata=False) is the default "
            "in 0.4.0 to 0.4.2): the tree is the msgpack file `checkpoint`, every leaf a "
            "PLACEHOLDER:// string, the values in OCDBT; the Python int `step` is stored as a "
            "0-d int64 array and restored as one, so the manifest lists it as that array"
        ]

    def write_pytree(self) -> None:
        ocp = self.ocp
        tree = self.saved_tree()
        path = self.path_for("pytree")
        if self.version_tuple < (0, 5):
            # 0.4.x docs still lead with PyTreeCheckpointer (synchronous).
            ocp.PyTreeCheckpointer().save(path, tree)
            api = "ocp.PyTreeCheckpointer().save(path, tree)"
            handler = "PyTreeCheckpointHandler"
        else:
            checkpointer = ocp.StandardCheckpointer()
            checkpointer.save(path, tree)
            # A synchronous Checkpointer in 0.5.x, an AsyncCheckpointer in later releases.
            is_async = hasattr(checkpointer, "wait_until_finished")
            if is_async:
                checkpointer.wait_until_finished()
            checkpointer.close()
            api = "ocp.StandardCheckpointer().save(path, tree)" + (
                "; .wait_until_finished()" if is_async else ""
            )
            handler = "StandardCheckpointHandler"
        self.record(
            "pytree",
            api,
            "single item",
            {"": {"kind": "pytree", "handler": handler, "leaves": self.expected_leaves(tree)}},
            notes=self.tree_notes(),
        )

    def write_pytree_aggregate(self) -> None:
        """0.4.x: every leaf in the msgpack `checkpoint` file (SaveArgs(aggregate=True))."""
        import jax

        ocp = self.ocp
        tree = array_tree()
        path = self.path_for("pytree_aggregate")
        save_args = jax.tree_util.tree_map(lambda _: ocp.SaveArgs(aggregate=True), tree)
        ocp.PyTreeCheckpointer().save(path, tree, save_args=save_args)
        self.record(
            "pytree_aggregate",
            "ocp.PyTreeCheckpointer().save(path, tree, save_args=tree_map(lambda _: "
            "ocp.SaveArgs(aggregate=True), tree))",
            "single item",
            {
                "": {
                    "kind": "pytree",
                    "handler": "PyTreeCheckpointHandler",
                    "leaves": leaf_records(tree),
                }
            },
            notes=[
                "every leaf is stored in the msgpack file `checkpoint`, as flax and Orbax "
                "< 0.1 did; SaveArgs.aggregate is deprecated in later releases"
            ],
        )

    def write_pytree_no_ocdbt(self) -> None:
        """0.4.x with OCDBT off: one zarr directory per leaf (the default before 0.4)."""
        ocp = self.ocp
        tree = array_tree()
        path = self.path_for("pytree_no_ocdbt")
        ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False)).save(path, tree)
        self.record(
            "pytree_no_ocdbt",
            "ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False)).save(path, tree)",
            "single item",
            {
                "": {
                    "kind": "pytree",
                    "handler": "PyTreeCheckpointHandler",
                    "leaves": leaf_records(tree),
                }
            },
        )

    def write_scalars(self) -> None:
        ocp = self.ocp
        leaves = scalar_leaves()
        path = self.path_for("scalars")
        saved, refused = {}, {}
        with tempfile.TemporaryDirectory() as scratch:
            for key, value in leaves.items():
                try:
                    checkpointer = ocp.PyTreeCheckpointer()
                    checkpointer.save(Path(scratch) / key, {key: value})
                except Exception as error:  # noqa: BLE001
                    refused[key] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                else:
                    saved[key] = value
        ocp.PyTreeCheckpointer().save(path, saved)
        notes = [
            f"leaf {key!r} ({type(leaves[key]).__name__}) left out: save raised {message}"
            for key, message in refused.items()
        ]
        self.record(
            "scalars",
            "ocp.PyTreeCheckpointer().save(path, tree)",
            "single item",
            {
                "": {
                    "kind": "pytree",
                    "handler": "PyTreeCheckpointHandler",
                    "leaves": leaf_records(saved),
                }
            },
            notes=notes,
        )

    def write_custom_metadata_pytree(self) -> None:
        ocp = self.ocp
        tree = array_tree()
        path = self.path_for("custom_metadata_pytree")
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(path, tree, custom_metadata=CUSTOM_METADATA)
        checkpointer.wait_until_finished()
        checkpointer.close()
        self.record(
            "custom_metadata_pytree",
            "ocp.StandardCheckpointer().save(path, tree, custom_metadata=...)",
            "single item",
            {
                "": {
                    "kind": "pytree",
                    "handler": "StandardCheckpointHandler",
                    "leaves": leaf_records(tree),
                }
            },
            custom_metadata=CUSTOM_METADATA,
        )

    # --- v0 CheckpointManager roots ---------------------------------------------------------

    def write_manager_legacy(self) -> None:
        """0.4.x: the legacy API, a dict of checkpointers and save(step, items)."""
        ocp = self.ocp
        tree = self.saved_tree()
        path = self.path_for("manager")
        manager = ocp.CheckpointManager(
            path,
            {
                "state": ocp.PyTreeCheckpointer(),
                "meta": ocp.Checkpointer(ocp.JsonCheckpointHandler()),
            },
            options=ocp.CheckpointManagerOptions(create=True),
        )
        for step in STEPS:
            manager.save(step, {"state": tree, "meta": META_ITEM})
        manager.wait_until_finished()
        manager.close()
        self.record(
            "manager",
            "ocp.CheckpointManager(path, {'state': ocp.PyTreeCheckpointer(), 'meta': "
            "ocp.Checkpointer(ocp.JsonCheckpointHandler())}, "
            "options=ocp.CheckpointManagerOptions(create=True)).save(step, "
            "{'state': tree, 'meta': meta})",
            "root of steps",
            self._state_meta_items("PyTreeCheckpointHandler", tree),
            steps=[str(step) for step in STEPS],
            notes=self.tree_notes(),
        )

    def write_manager_default_item(self) -> None:
        """0.4.x: one checkpointer, so each step holds the single item `default`."""
        ocp = self.ocp
        tree = array_tree()
        path = self.path_for("manager_default_item")
        manager = ocp.CheckpointManager(path, ocp.PyTreeCheckpointer())
        for step in STEPS:
            manager.save(step, tree)
        manager.wait_until_finished()
        manager.close()
        self.record(
            "manager_default_item",
            "ocp.CheckpointManager(path, ocp.PyTreeCheckpointer()).save(step, tree)",
            "root of steps",
            {
                "default": {
                    "kind": "pytree",
                    "handler": "PyTreeCheckpointHandler",
                    "leaves": leaf_records(tree),
                }
            },
            steps=[str(step) for step in STEPS],
        )

    def _state_meta_items(self, state_handler: str, tree: Any) -> dict[str, Any]:
        return {
            "state": {
                "kind": "pytree",
                "handler": state_handler,
                "leaves": self.expected_leaves(tree),
            },
            "meta": {"kind": "json", "handler": "JsonCheckpointHandler", "value": META_ITEM},
        }

    def _composite_manager(
        self,
        name: str,
        options: Any,
        option_text: str,
        steps: tuple[int, ...],
        custom: bool = False,
    ) -> None:
        ocp = self.ocp
        tree = array_tree()
        path = self.path_for(name)
        # Without item_names, 0.5.x refuses Composite args ("single checkpointable object").
        kwargs: dict[str, Any] = {"item_names": ("state", "meta")}
        if options is not None:
            kwargs["options"] = options
        if custom:
            kwargs["metadata"] = ROOT_METADATA
        manager = ocp.CheckpointManager(path, **kwargs)
        for step in steps:
            save_kwargs: dict[str, Any] = {}
            if custom:
                save_kwargs["custom_metadata"] = {**CUSTOM_METADATA, "step": step}
            manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(META_ITEM)
                ),
                **save_kwargs,
            )
        manager.wait_until_finished()
        # `metadata/` beside the steps holds the root metadata (CheckpointManager(metadata=...)).
        step_names = sorted(
            child.name for child in path.iterdir() if child.is_dir() and child.name != "metadata"
        )
        manager.close()
        call = (
            f"ocp.CheckpointManager(path, item_names=('state', 'meta'){option_text}"
            f"{', metadata=ROOT_METADATA' if custom else ''}).save(step, "
            "args=ocp.args.Composite(state=ocp.args.StandardSave(tree), "
            f"meta=ocp.args.JsonSave(meta)){', custom_metadata=...' if custom else ''})"
        )
        self.record(
            name,
            call,
            "root of steps",
            self._state_meta_items("StandardCheckpointHandler", tree),
            steps=step_names,
            custom_metadata=(
                {str(step): {**CUSTOM_METADATA, "step": step} for step in steps} if custom else None
            ),
            root_metadata=ROOT_METADATA if custom else None,
        )

    def write_manager_composite(self) -> None:
        self._composite_manager("manager", None, "", STEPS)

    def write_manager_prefixed(self) -> None:
        options = self.ocp.CheckpointManagerOptions(step_prefix="step", step_format_fixed_length=6)
        self._composite_manager(
            "manager_prefixed",
            options,
            ", options=ocp.CheckpointManagerOptions(step_prefix='step', "
            "step_format_fixed_length=6)",
            PREFIXED_STEPS,
        )

    def write_manager_zero_padded(self) -> None:
        options = self.ocp.CheckpointManagerOptions(step_format_fixed_length=6)
        self._composite_manager(
            "manager_zero_padded",
            options,
            ", options=ocp.CheckpointManagerOptions(step_format_fixed_length=6)",
            PREFIXED_STEPS,
        )

    def write_custom_metadata_manager(self) -> None:
        self._composite_manager("custom_metadata_manager", None, "", STEPS, custom=True)

    # --- v1 API -------------------------------------------------------------------------------

    def write_v1_pytree(self) -> None:
        from orbax.checkpoint import v1

        tree = array_tree()
        path = self.path_for("v1_pytree")
        v1.save_pytree(path, tree)
        self.record(
            "v1_pytree",
            "ocp.v1.save_pytree(path, tree)  (deprecated alias of ocp.v1.save)",
            "step with items",
            {"state": {"kind": "pytree", "handler": "PyTreeHandler", "leaves": leaf_records(tree)}},
        )

    def write_v1_checkpointables(self) -> None:
        from orbax.checkpoint import v1

        tree = array_tree()
        path = self.path_for("v1_checkpointables")
        # A JSON-able dict alone would go to PyTreeHandler (registered last globally), so the
        # JSON item is bound to JsonHandler by name, as the CheckpointablesOptions docs show.
        registry = v1.handlers.local_registry()
        registry.add(v1.handlers.JsonHandler, checkpointable_name="meta")
        context = v1.Context()
        context.checkpointables.registry = registry
        with context:
            v1.save_checkpointables(
                path, {"state": tree, "meta": META_ITEM}, custom_metadata=CUSTOM_METADATA
            )
        self.record(
            "v1_checkpointables",
            "registry = ocp.v1.handlers.local_registry(); registry.add("
            "ocp.v1.handlers.JsonHandler, checkpointable_name='meta'); context = "
            "ocp.v1.Context(); context.checkpointables.registry = registry; with context: "
            "ocp.v1.save_checkpointables(path, {'state': tree, 'meta': meta}, "
            "custom_metadata=...)",
            "step with items",
            {
                "state": {
                    "kind": "pytree",
                    "handler": "PyTreeHandler",
                    "leaves": leaf_records(tree),
                },
                "meta": {"kind": "json", "handler": "JsonHandler", "value": META_ITEM},
            },
            custom_metadata=CUSTOM_METADATA,
        )

    def write_v1_training(self) -> None:
        from orbax.checkpoint import v1

        tree = array_tree()
        path = self.path_for("v1_training")
        metrics = {}
        with v1.training.Checkpointer(path, custom_metadata=ROOT_METADATA) as checkpointer:
            for step in STEPS:
                metrics[str(step)] = {"loss": 1.0 / (step + 1), "accuracy": 0.5}
                saved = checkpointer.save(step, tree, metrics=metrics[str(step)], force=True)
                if not saved:
                    raise RuntimeError(f"v1 training Checkpointer skipped step {step}")
                checkpointer.wait()
        self.record(
            "v1_training",
            "with ocp.v1.training.Checkpointer(path, custom_metadata=ROOT_METADATA) as c: "
            "c.save(step, tree, metrics=..., force=True)",
            "root of steps",
            {
                "state": {
                    "kind": "pytree",
                    "handler": "PyTreeHandler",
                    "leaves": leaf_records(tree),
                },
                "metrics": {"kind": "json", "handler": "MetricsHandler", "value_per_step": metrics},
            },
            steps=[str(step) for step in STEPS],
            root_metadata=ROOT_METADATA,
        )

    # --- per release ------------------------------------------------------------------------

    def run(self) -> None:
        self.release_dir.mkdir(parents=True, exist_ok=True)
        plan: list[tuple[str, Callable[[], None]]] = [("pytree", self.write_pytree)]
        if not self.writes_tree_metadata:
            plan += [("manager", self.write_manager_legacy)]
        elif self.version_tuple < (0, 5):
            plan += [
                ("pytree_aggregate", self.write_pytree_aggregate),
                ("pytree_no_ocdbt", self.write_pytree_no_ocdbt),
                ("manager", self.write_manager_legacy),
                ("manager_default_item", self.write_manager_default_item),
            ]
        else:
            plan += [("manager", self.write_manager_composite)]
        if self.version_tuple >= (0, 11):
            plan += [("scalars", self.write_scalars)]
        if self.version_tuple >= (0, 12):
            plan += [
                ("manager_prefixed", self.write_manager_prefixed),
                ("manager_zero_padded", self.write_manager_zero_padded),
                ("custom_metadata_pytree", self.write_custom_metadata_pytree),
                ("custom_metadata_manager", self.write_custom_metadata_manager),
                ("v1_pytree", self.write_v1_pytree),
                ("v1_checkpointables", self.write_v1_checkpointables),
                ("v1_training", self.write_v1_training),
            ]
        for name, write in plan:
            print(f"writing {self.version}/{name}", file=sys.stderr)
            self.attempt(name, write)
        manifest = load_manifest(self.out)
        manifest["fixtures"].update(self.entries)
        for name in self.entries:
            manifest.get("not_written", {}).pop(name, None)
        for name, message in self.failures.items():
            manifest["fixtures"].pop(name, None)
            manifest.setdefault("not_written", {})[name] = message
        save_manifest(self.out, manifest)
        if self.failures:
            print(f"failed: {json.dumps(self.failures, indent=1)}", file=sys.stderr)


def load_manifest(out: Path) -> dict[str, Any]:
    path = out / MANIFEST_NAME
    if path.exists():
        return json.loads(path.read_text())
    return {"generator": "make_foreign_golden.py", "fixtures": {}}


def save_manifest(out: Path, manifest: dict[str, Any]) -> None:
    manifest["about"] = MANIFEST_ABOUT
    if not manifest.get("not_written"):
        manifest.pop("not_written", None)
    manifest["fixtures"] = dict(
        sorted(
            manifest["fixtures"].items(),
            key=lambda item: (_version_tuple(item[0].split("/")[0]), item[0]),
        )
    )
    first = ("about", "generator")
    ordered = {key: manifest[key] for key in first} | {
        key: value for key, value in manifest.items() if key not in first
    }
    (out / MANIFEST_NAME).write_text(json.dumps(ordered, indent=2) + "\n")


# --- restore checks with the installed (current) Orbax ---------------------------------------


def _comparable(tree: Any) -> Any:
    """Restored tree -> manifest-like rows, so a restore can be compared with the expectation."""
    rows = {}
    for path, leaf in _flatten(tree):
        if isinstance(leaf, (bool, int, float, str)) or leaf is None:
            rows[path] = ("scalar", type(leaf).__name__, leaf)
        else:
            array = np.asarray(leaf)
            rows[path] = (
                "array",
                str(array.dtype),
                list(array.shape),
                array.astype(np.float64).ravel().tolist(),
            )
    return rows


def _expected_rows(leaves: list[dict[str, Any]]) -> dict[str, Any]:
    rows = {}
    for leaf in leaves:
        if leaf["kind"] == "scalar":
            rows[leaf["path"]] = ("scalar", leaf["type"], leaf["value"])
        else:
            rows[leaf["path"]] = ("array", leaf["dtype"], leaf["shape"], leaf["values"])
    return rows


def _differences(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    problems = []
    for path in sorted(set(expected) | set(got)):
        if path not in got:
            problems.append(f"{path}: missing")
        elif path not in expected:
            problems.append(f"{path}: unexpected")
        elif expected[path] != got[path]:
            want, have = expected[path], got[path]
            problems.append(
                f"{path}: expected {want[:3]} got {have[:3]}"
                + ("" if want[:3] != have[:3] else " (values differ)")
            )
    return problems


def _item_check(item: dict[str, Any], restored: Any, step: str | None) -> list[str]:
    if item["kind"] == "pytree":
        return _differences(_expected_rows(item["leaves"]), _comparable(restored))
    expected = item["value_per_step"][step] if "value_per_step" in item else item["value"]
    return [] if restored == expected else [f"json: expected {expected!r} got {restored!r}"]


def _candidate_calls(
    name: str, entry: dict[str, Any]
) -> list[tuple[str, Callable[..., Any], Callable[..., list]]]:
    """(call text, call(path, step), check(result, step)) to try on one fixture."""
    import orbax.checkpoint as ocp
    from orbax.checkpoint import v1

    items = entry["items"]
    layout = entry["layout"]
    calls: list[tuple[str, Callable[..., Any], Callable[..., list]]] = []

    def whole(item_name: str) -> Callable[..., list]:
        return lambda result, step: _item_check(items[item_name], result, step)

    def all_items(result: Any, step: str | None) -> list[str]:
        if not isinstance(result, dict) and hasattr(result, "items"):
            result = dict(result.items())  # ocp.args.Composite from CheckpointManager.restore
        if not isinstance(result, dict):
            return [f"expected a dict of items, got {type(result).__name__}"]
        problems = []
        for item_name, item in items.items():
            if item_name not in result:
                problems.append(f"item {item_name}: missing")
            else:
                problems += [f"{item_name}/{p}" for p in _item_check(item, result[item_name], step)]
        return problems

    def numpy_restore_args(path: Path) -> Any:
        import jax

        tree = ocp.PyTreeCheckpointer().metadata(path)
        tree = getattr(tree, "item_metadata", tree)
        tree = getattr(tree, "tree", tree)
        # Only array leaves can be asked for as np.ndarray; strings and scalars keep theirs.
        return jax.tree_util.tree_map(
            lambda leaf: (
                ocp.RestoreArgs(restore_type=np.ndarray)
                if type(leaf).__name__ == "ArrayMetadata"
                else ocp.RestoreArgs()
            ),
            tree,
        )

    def metadata_check(item_name: str) -> Callable[..., list]:
        def check(result: Any, step: str | None) -> list[str]:
            tree = getattr(result, "item_metadata", result)
            tree = getattr(tree, "tree", tree)
            got = dict(_flatten(tree))
            problems = []
            for leaf in items[item_name]["leaves"]:
                meta = got.get(leaf["path"])
                if meta is None:
                    problems.append(f"{leaf['path']}: missing")
                elif leaf["kind"] == "array" and (
                    list(getattr(meta, "shape", [])) != leaf["shape"]
                    or str(np.dtype(getattr(meta, "dtype", None))) != leaf["dtype"]
                ):
                    problems.append(f"{leaf['path']}: metadata {meta!r}")
            return problems

        return check

    def pytree_calls(
        item_name: str, where: Callable[[Path, str | None], Path], where_text: str
    ) -> None:
        check = whole(item_name)
        calls.extend(
            [
                (
                    f"ocp.StandardCheckpointer().restore({where_text})",
                    lambda path, step: ocp.StandardCheckpointer().restore(where(path, step)),
                    check,
                ),
                (
                    f"ocp.PyTreeCheckpointer().restore({where_text})",
                    lambda path, step: ocp.PyTreeCheckpointer().restore(where(path, step)),
                    check,
                ),
                (
                    f"ocp.PyTreeCheckpointer().restore({where_text}, args=ocp.args.PyTreeRestore("
                    f"restore_args=<RestoreArgs(restore_type=np.ndarray) per leaf of "
                    f"ocp.PyTreeCheckpointer().metadata({where_text}).item_metadata.tree>))",
                    lambda path, step: ocp.PyTreeCheckpointer().restore(
                        where(path, step),
                        args=ocp.args.PyTreeRestore(
                            restore_args=numpy_restore_args(where(path, step))
                        ),
                    ),
                    check,
                ),
                (
                    f"ocp.v1.load_pytree({where_text})",
                    lambda path, step: v1.load_pytree(where(path, step)),
                    check,
                ),
                (
                    f"ocp.PyTreeCheckpointer().metadata({where_text}).item_metadata.tree  "
                    "(shapes and dtypes only)",
                    lambda path, step: ocp.PyTreeCheckpointer().metadata(where(path, step)),
                    metadata_check(item_name),
                ),
            ]
        )

    if layout == "single item":
        pytree_calls("", lambda path, step: path, "path")
    elif layout == "step with items":
        calls.extend(
            [
                (
                    "ocp.v1.load_checkpointables(path)",
                    lambda path, step: v1.load_checkpointables(path),
                    all_items,
                ),
            ]
        )
        for item_name, item in items.items():
            if item["kind"] == "pytree":
                pytree_calls(
                    item_name, lambda path, step, n=item_name: path / n, f"path / {item_name!r}"
                )
                if item_name == "state":
                    calls.append(
                        ("ocp.v1.load(path)", lambda path, step: v1.load(path), whole(item_name))
                    )
    else:  # root of steps
        option_kwargs: dict[str, Any] = {}
        option_text = ""
        if name.endswith("manager_prefixed"):
            option_kwargs = {"step_prefix": "step", "step_format_fixed_length": 6}
            option_text = (
                ", options=ocp.CheckpointManagerOptions(step_prefix='step', "
                "step_format_fixed_length=6)"
            )
        elif name.endswith("manager_zero_padded"):
            option_kwargs = {"step_format_fixed_length": 6}
            option_text = ", options=ocp.CheckpointManagerOptions(step_format_fixed_length=6)"

        def manager(path: Path, **kwargs: Any) -> Any:
            return ocp.CheckpointManager(
                path, options=ocp.CheckpointManagerOptions(**option_kwargs), **kwargs
            )

        def step_dir(path: Path, step: str) -> Path:
            return path / step

        item_names = tuple(items)
        composite_text = ", ".join(
            f"{n}=ocp.args.{'PyTreeRestore' if items[n]['kind'] == 'pytree' else 'JsonRestore'}()"
            for n in item_names
        )

        def composite_args() -> Any:
            return ocp.args.Composite(
                **{
                    n: ocp.args.PyTreeRestore()
                    if items[n]["kind"] == "pytree"
                    else ocp.args.JsonRestore()
                    for n in item_names
                }
            )

        def step_number(step: str) -> int:
            return int(step.removeprefix("step_"))

        if len(items) == 1:
            (only,) = item_names
            calls.extend(
                [
                    (
                        f"ocp.CheckpointManager(path{option_text}).restore(step)",
                        lambda path, step: manager(path).restore(step_number(step)),
                        whole(only),
                    ),
                    (
                        f"ocp.CheckpointManager(path{option_text}).restore(step, "
                        "args=ocp.args.PyTreeRestore())",
                        lambda path, step: manager(path).restore(
                            step_number(step), args=ocp.args.PyTreeRestore()
                        ),
                        whole(only),
                    ),
                ]
            )
        else:
            calls.extend(
                [
                    (
                        f"ocp.CheckpointManager(path{option_text}).restore(step)",
                        lambda path, step: manager(path).restore(step_number(step)),
                        all_items,
                    ),
                    (
                        f"ocp.CheckpointManager(path, item_names={item_names!r}{option_text})"
                        f".restore(step, args=ocp.args.Composite({composite_text}))",
                        lambda path, step: manager(path, item_names=item_names).restore(
                            step_number(step), args=composite_args()
                        ),
                        all_items,
                    ),
                ]
            )
        if "state" in items:
            calls.append(
                (
                    "ocp.v1.training.Checkpointer(path).load(step)",
                    lambda path, step: v1.training.Checkpointer(path).load(step_number(step)),
                    whole("state"),
                )
            )
        calls.append(
            (
                "ocp.v1.training.Checkpointer(path).load_checkpointables(step)",
                lambda path, step: v1.training.Checkpointer(path).load_checkpointables(
                    step_number(step)
                ),
                all_items,
            )
        )
        calls.append(
            (
                "ocp.v1.load_checkpointables(path / <step dir>)",
                lambda path, step: v1.load_checkpointables(step_dir(path, step)),
                all_items,
            )
        )
        json_items = [n for n in item_names if items[n]["kind"] == "json" and n != "metrics"]
        if json_items:
            calls.append(
                (
                    f"with <ocp.v1.Context() whose checkpointables.registry = "
                    f"ocp.v1.handlers.local_registry() + JsonHandler bound to {json_items}>: "
                    "ocp.v1.load_checkpointables(path / <step dir>)",
                    lambda path, step: _load_with_json_items(step_dir(path, step), json_items),
                    all_items,
                )
            )
        for item_name, item in items.items():
            if item["kind"] == "pytree":
                pytree_calls(
                    item_name,
                    lambda path, step, n=item_name: path / step / n,
                    f"path / <step dir> / {item_name!r}",
                )
            elif item_name == "metrics":
                calls.extend(
                    [
                        (
                            "ocp.Checkpointer(ocp.JsonCheckpointHandler(filename='metrics')).restore("
                            "path / <step dir> / 'metrics')",
                            lambda path, step: ocp.Checkpointer(
                                ocp.JsonCheckpointHandler(filename="metrics")
                            ).restore(path / step / "metrics"),
                            whole(item_name),
                        ),
                        (
                            "{c.step: c.metrics for c in ocp.v1.training.Checkpointer(path)"
                            ".checkpoints}[step]",
                            lambda path, step: {
                                c.step: c.metrics
                                for c in v1.training.Checkpointer(path).checkpoints
                            }[int(step)],
                            whole(item_name),
                        ),
                    ]
                )
            else:
                calls.append(
                    (
                        f"ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore("
                        f"path / <step dir> / {item_name!r})",
                        lambda path, step, n=item_name: ocp.Checkpointer(
                            ocp.JsonCheckpointHandler()
                        ).restore(path / step / n),
                        whole(item_name),
                    )
                )
    return calls


def _load_with_json_items(path: Path, json_items: list[str]) -> Any:
    from orbax.checkpoint import v1

    registry = v1.handlers.local_registry()
    for item_name in json_items:
        registry.add(v1.handlers.JsonHandler, checkpointable_name=item_name)
    context = v1.Context()
    context.checkpointables.registry = registry
    with context:
        return v1.load_checkpointables(path)


def check_fixture(out: Path, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    path = out / name
    steps: list[str | None] = list(entry.get("steps", [None]))
    works, fails = [], {}
    for text, call, check in _candidate_calls(name, entry):
        problems = []
        for step in steps:
            try:
                result = call(path, step)
            except Exception as error:  # noqa: BLE001
                first_line = (str(error).strip().splitlines() or [""])[0]
                problems.append(f"{type(error).__name__}: {first_line[:240]}")
                break
            problems += check(result, step)
            if problems:
                break
        if problems:
            # Messages name the fixture's absolute path; keep the manifest machine-independent.
            fails[text] = [p.replace(str(path.parent.parent), "<foreign>") for p in problems[:4]]
        else:
            works.append(text)
    return {
        "restorable": bool(works),
        "orbax-checkpoint": _package_version("orbax-checkpoint"),
        "jax": _package_version("jax"),
        "working_calls": works,
        "failing_calls": fails,
    }


def check_all_fixtures(out: Path, only: list[str] | None = None) -> None:
    manifest = load_manifest(out)
    for name, entry in manifest["fixtures"].items():
        if only and not any(name.startswith(prefix) for prefix in only):
            continue
        print(f"checking {name}", file=sys.stderr)
        result = check_fixture(out, name, entry)
        entry["restorable_by_current_orbax"] = result
        print(
            f"  {len(result['working_calls'])} calls work, {len(result['failing_calls'])} fail",
            file=sys.stderr,
        )
    save_manifest(out, manifest)


LISTED_FILES = (
    "_CHECKPOINT_METADATA",
    "_ROOT_METADATA",
    "metadata",
    "metrics",
    "data.json",
    "_strings.json",
    "commit_success.txt",
    "orbax.checkpoint",
    "_METADATA",
    "_sharding",
    "process_0",
)
LISTING_HEAD_CHARS = 200


def fixture_listings(root: Path) -> str:
    """The per-fixture part of LAYOUTS.md: file listings and the small files' contents."""
    manifest = load_manifest(root)
    out = []
    for name, entry in manifest["fixtures"].items():
        fixture = root / name
        items = ", ".join(
            f"`{item or '(top level)'}` ({spec['kind']}, {spec['handler']})"
            for item, spec in entry["items"].items()
        )
        out += [
            f"### `{name}`\n",
            f"Layout: {entry['layout']}; items: {items}. Written by `{entry['api']}`.\n",
            "```\n$ find . -type f | sort   # size in bytes",
        ]
        files = sorted(path for path in fixture.rglob("*") if path.is_file())
        out += [f"{path.stat().st_size:6d}  ./{path.relative_to(fixture)}" for path in files]
        out.append("```\n")
        first_step = (entry.get("steps") or [None])[0]
        for path in files:
            relative = path.relative_to(fixture)
            if (
                first_step is not None
                and relative.parts[0] in entry["steps"]
                and relative.parts[0] != first_step
            ):
                continue  # contents of the first step stand for the others
            if path.name == "checkpoint":
                data = path.read_bytes()
                out.append(
                    f"- `{relative}` (msgpack, {len(data)} bytes), first bytes: `{data[:90]!r}`"
                )
                continue
            if path.name not in LISTED_FILES and not (
                path.name == ".zarray" and "kernel" in str(relative)
            ):
                continue
            text = path.read_text()
            if not text:
                text = f"(empty file, {path.stat().st_size} bytes)"
            elif len(text) > LISTING_HEAD_CHARS and path.name in (
                "_METADATA",
                "_sharding",
                "process_0",
            ):
                text = f"{text[:LISTING_HEAD_CHARS]} ... ({len(text)} bytes)"
            out.append(f"- `{relative}`: `{text.strip()}`")
        result = entry.get("restorable_by_current_orbax")
        if result:
            out.append(
                f"- current Orbax ({result['orbax-checkpoint']}) restores it: "
                f"**{'yes' if result['restorable'] else 'no'}**; "
                f"{len(result['working_calls'])} calls work, "
                f"{len(result['failing_calls'])} fail (see MANIFEST.json)"
            )
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the foreign/ directory")
    parser.add_argument(
        "--check-restore",
        action="store_true",
        help="restore every fixture with the installed Orbax and record the "
        "calls that work (run with orbax-checkpoint 0.12.8)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="PREFIX",
        help="with --check-restore: check only the fixtures whose key starts with one of these "
        "(e.g. 0.4.1/), leaving the others' records as they are",
    )
    parser.add_argument(
        "--listings",
        action="store_true",
        help="print the per-fixture file listings used in LAYOUTS.md",
    )
    args = parser.parse_args()
    if args.listings:
        print(fixture_listings(args.out))
        return
    if args.check_restore:
        check_all_fixtures(args.out.resolve(), args.only)
        return
    FixtureWriter(args.out).run()


if __name__ == "__main__":
    main()
