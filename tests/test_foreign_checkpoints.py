"""`icnn inspect` on checkpoints written by other Orbax releases (0.4 to 0.12.8) and the v1 API.

The fixtures under tests/data/golden/foreign/ were written by
``make_foreign_golden.py`` in throwaway virtualenvs of each release (versions in
its docstring and in MANIFEST.json, which records every leaf's values). Each test
checks icnn against that record and against what current plain Orbax restores;
the golden ``inspect --json`` documents catch format drift.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from icnn_cli.checkpoint import metadata_files
from icnn_cli.checkpoint.layout import locate
from icnn_cli.checkpoint.reader import CheckpointReader
from tests.helpers import FOREIGN, FOREIGN_MANIFEST, REPO

MANIFEST = FOREIGN_MANIFEST
GOLDEN_JSON = FOREIGN / "inspect-json"
# ICNN_UPDATE_GOLDEN=1 pytest tests/test_foreign_checkpoints.py rewrites the golden JSON.
UPDATE = os.environ.get("ICNN_UPDATE_GOLDEN") == "1"


def step_number(name: str) -> int:
    """``5``, ``000100`` and ``step_000100`` name steps 5, 100 and 100."""
    return int(name.rsplit("_", 1)[-1])


def latest_step(entry: dict) -> str | None:
    steps = entry.get("steps")
    return max(steps, key=step_number) if steps else None


def expected_leaves(entry: dict) -> dict[str, dict]:
    """Every leaf ``inspect --json`` must list, by path (item-prefixed where a step has several)."""
    items = entry["items"]
    several = len(items) > 1
    leaves = {}
    for name, item in items.items():
        if item["kind"] != "pytree":
            continue
        for leaf in item["leaves"]:
            path = f"{name}/{leaf['path']}" if several else leaf["path"]
            leaves[path] = leaf
    return leaves


def inspect_json(icnn, fixture: str, *args: str) -> dict:
    result = icnn("inspect", FOREIGN / fixture, *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("fixture", list(MANIFEST))
def test_every_release_lists_the_tree_it_was_written_with(icnn, fixture):
    entry = MANIFEST[fixture]

    report = inspect_json(icnn, fixture, "--stats")

    leaves = {leaf["path"]: leaf for leaf in report["leaves"]}
    expected = expected_leaves(entry)
    assert set(leaves) == set(expected)
    for path, want in expected.items():
        got = leaves[path]
        if want["kind"] == "scalar":
            assert (got["dtype"], got["value"]) == (want["type"], want["value"]), path
            continue
        assert (got["dtype"], got["shape"]) == (want["dtype"], want["shape"]), path
        values = np.asarray(want["values"], np.float64)
        assert (got["min"], got["max"]) == (values.min(), values.max()), path
        assert got["mean"] == pytest.approx(values.mean()), path


@pytest.mark.parametrize("fixture", list(MANIFEST))
def test_json_items_show_their_content_and_steps_their_place(icnn, fixture):
    entry = MANIFEST[fixture]
    step = latest_step(entry)

    report = inspect_json(icnn, fixture)

    documents = {item["name"]: item for item in report.get("items", [])}
    for name, item in entry["items"].items():
        if item["kind"] != "json":
            continue
        want = item["value_per_step"][step] if "value_per_step" in item else item["value"]
        assert documents[name]["content"] == want
    if step is not None:
        manager = report["checkpoint_manager"]
        assert manager["step"] == step_number(step)
        assert manager["steps"] == sorted(step_number(name) for name in entry["steps"])


def assert_icnn_reads_what_orbax_restores(path: Path) -> None:
    """Each PyTree item restored by plain Orbax equals icnn's leaves, bit for bit."""
    reader = CheckpointReader.of(locate(path).checkpoint)
    icnn_values = {leaf.path: value for leaf, value in reader.arrays()}
    restored_paths = set()
    for part in reader.parts:
        with ocp.PyTreeCheckpointer() as checkpointer:
            restored = checkpointer.restore(part.item.path.absolute())
        flat = ocp.tree.to_flat_dict(restored)
        for key, value in flat.items():
            leaf_path = part.prefix + tuple(str(k) for k in key)
            restored_paths.add(leaf_path)
            ours = np.asarray(icnn_values[leaf_path])
            theirs = np.asarray(value)
            if isinstance(value, bool | int | float | str):  # a Python leaf stays one
                assert type(icnn_values[leaf_path]) is type(value), leaf_path
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, leaf_path
            assert ours.tobytes() == theirs.tobytes(), leaf_path
    assert restored_paths == set(icnn_values)


@pytest.mark.parametrize("fixture", list(MANIFEST))
def test_current_orbax_restores_what_icnn_reads(fixture):
    """icnn's values are Orbax's: each PyTree item restored by plain Orbax, leaf by leaf."""
    assert_icnn_reads_what_orbax_restores(FOREIGN / fixture)


def normalised(report: dict) -> dict:
    """The report with the machine's paths replaced, so the golden file is portable."""
    text = json.dumps(report, indent=2, sort_keys=True)
    return json.loads(text.replace(str(FOREIGN), "<foreign>"))


@pytest.mark.parametrize("fixture", list(MANIFEST))
def test_inspect_json_matches_its_golden_document(icnn, fixture):
    report = normalised(inspect_json(icnn, fixture, "--stats"))
    golden = GOLDEN_JSON / (fixture.replace("/", "__") + ".json")

    if UPDATE or not golden.exists():
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        if not UPDATE:
            pytest.fail(f"wrote the missing golden document {golden.name}; commit it")
    assert report == json.loads(golden.read_text())


def test_a_multi_item_step_prefixes_paths_and_item_picks_one(icnn):
    both = inspect_json(icnn, "0.12.8/manager")
    state = inspect_json(icnn, "0.12.8/manager", "--item", "state")
    meta = inspect_json(icnn, "0.12.8/manager", "--item", "meta")

    assert {leaf["path"] for leaf in both["leaves"]} == {
        "state/count",
        "state/params/dense/bias",
        "state/params/dense/kernel",
        "state/params/scale",
    }
    assert {leaf["path"] for leaf in state["leaves"]} == {
        "count",
        "params/dense/bias",
        "params/dense/kernel",
        "params/scale",
    }
    assert state.get("items", []) == []
    assert meta["leaves"] == [] and meta["items"][0]["content"] == {"lr": 0.001, "note": "run-a"}


def test_an_unknown_item_is_refused_naming_the_items(icnn):
    result = icnn("inspect", FOREIGN / "0.12.8/manager", "--item", "opt_state")

    assert result.exit_code == 2
    assert result.stderr == (
        f"icnn: error: --item opt_state: {FOREIGN}/0.12.8/manager/5 has no item 'opt_state' "
        "(items: meta, state)\n"
    )


def test_the_header_shows_custom_metadata_times_and_v1_metrics(icnn):
    custom = icnn("inspect", FOREIGN / "0.12.8/custom_metadata_pytree").stdout
    training = icnn("inspect", FOREIGN / "0.12.8/v1_training").stdout

    assert "custom metadata" in custom and '"note": "custom metadata"' in custom
    assert "started " in custom and "written " in custom
    assert 'metrics       {"loss": 0.16666666666666666, "accuracy": 0.5}' in training


def test_orbax_0_4_checkpoints_are_read_with_a_warning_not_refused(icnn):
    result = icnn("inspect", FOREIGN / "0.4.8/pytree")

    assert result.exit_code == 0
    assert result.stderr == (
        f"icnn: warning: {FOREIGN}/0.4.8/pytree: no commit_success.txt and no "
        "_CHECKPOINT_METADATA, as Orbax 0.4 wrote them: taken as finished by its final name\n"
    )


def test_a_temporary_step_is_not_a_step(tmp_path):
    root = tmp_path / "run"
    (root / "3.orbax-checkpoint-tmp-17").mkdir(parents=True)
    (root / "metadata").mkdir()
    (root / "step_000002" / "state").mkdir(parents=True)

    from icnn_cli.checkpoint.layout import manager_steps

    assert manager_steps(root) == [(2, "step_000002")]


def test_diff_reads_a_foreign_step_against_its_item(icnn):
    """The other verbs read what inspect reads: a v1 step against its own state/ item."""
    result = icnn(
        "diff",
        FOREIGN / "0.12.8/v1_pytree",
        FOREIGN / "0.12.8/v1_pytree/state",
        "--json",
    )

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["identical"] is True


def test_paths_are_portable_in_golden_documents():
    assert all(str(Path(REPO)) not in path.read_text() for path in GOLDEN_JSON.glob("*.json"))


# --- Orbax 0.4.0 to 0.4.2: no _METADATA, the msgpack tree alone ---------------------------


def test_orbax_0_4_1_trees_say_their_release_in_the_layout(icnn):
    single = locate(FOREIGN / "0.4.1/pytree").checkpoint
    step = locate(FOREIGN / "0.4.1/manager").checkpoint
    header = icnn("inspect", FOREIGN / "0.4.1/pytree").stdout

    assert single.layout == "single item (Orbax 0.4.0 to 0.4.2: msgpack tree, no _METADATA)"
    assert step.layout == (
        "step with items (CheckpointManager / Composite); "
        "items of Orbax 0.4.0 to 0.4.2: msgpack tree, no _METADATA"
    )
    assert "layout      single item (Orbax 0.4.0 to 0.4.2: msgpack tree, no _METADATA)" in header
    assert locate(FOREIGN / "0.4.8/pytree").checkpoint.layout == "single item"


def without_tree_metadata(fixture: str, tmp_path: Path) -> Path:
    """A copy of an Orbax 0.4.8 fixture as Orbax 0.4.0 to 0.4.2 save it: no _METADATA."""
    copy = tmp_path / fixture.replace("/", "_")
    shutil.copytree(FOREIGN / fixture, copy)
    (copy / "_METADATA").unlink()
    return copy


@pytest.mark.parametrize("fixture", ["0.4.8/pytree_aggregate", "0.4.8/pytree_no_ocdbt"])
def test_without_metadata_values_in_the_msgpack_or_per_leaf_read_as_orbax_restores(
    fixture, tmp_path
):
    copy = without_tree_metadata(fixture, tmp_path)

    assert metadata_files.is_msgpack_tree_only(copy)
    assert_icnn_reads_what_orbax_restores(copy)


def test_without_metadata_some_leaves_inline_and_others_in_ocdbt_read_as_orbax_restores(
    icnn, tmp_path
):
    """``SaveArgs(aggregate=True)`` on some leaves: their values sit in the msgpack tree."""
    from flax.serialization import msgpack_restore, msgpack_serialize

    copy = tmp_path / "mixed"
    shutil.copytree(FOREIGN / "0.4.1/pytree", copy)
    tree = msgpack_restore((copy / "checkpoint").read_bytes())
    tree["step"] = 11
    tree["count"] = np.array([5, 6], np.int32)
    (copy / "checkpoint").write_bytes(msgpack_serialize(tree))

    assert_icnn_reads_what_orbax_restores(copy)
    leaves = {leaf["path"]: leaf for leaf in inspect_json(icnn, copy, "--stats")["leaves"]}
    assert (leaves["step"]["dtype"], leaves["step"]["value"]) == ("int", 11)
    assert (leaves["count"]["dtype"], leaves["count"]["max"]) == ("int32", 6)
    assert leaves["params/dense/kernel"]["max"] == 2.5


def test_with_metadata_some_leaves_inline_read_as_orbax_restores(icnn, tmp_path):
    """Orbax 0.4.3 to 0.4.8 with ``SaveArgs(aggregate=True)`` on some leaves: ``_METADATA``
    marks them ``skip_deserialize``, their values sit in the msgpack tree."""
    from flax.serialization import msgpack_restore, msgpack_serialize

    copy = tmp_path / "mixed"
    shutil.copytree(FOREIGN / "0.4.8/pytree", copy)
    tree = msgpack_restore((copy / "checkpoint").read_bytes())
    tree["count"] = np.array([5, 6], np.int32)
    (copy / "checkpoint").write_bytes(msgpack_serialize(tree))
    document = json.loads((copy / "_METADATA").read_text())
    document["tree_metadata"]["('count',)"]["value_metadata"]["skip_deserialize"] = True
    (copy / "_METADATA").write_text(json.dumps(document))

    assert_icnn_reads_what_orbax_restores(copy)
    leaves = {leaf["path"]: leaf for leaf in inspect_json(icnn, copy, "--stats")["leaves"]}
    assert (leaves["count"]["dtype"], leaves["count"]["max"]) == ("int32", 6)
    assert leaves["params/dense/kernel"]["max"] == 2.5


def test_metadata_without_storage_flags_is_read_directly_as_zarr2(icnn, tmp_path):
    """Orbax 0.4.1's StandardCheckpointer to 0.4.4 wrote _METADATA with neither use_ocdbt
    nor use_zarr3 (zarr3 came later); 0.4.1 also named _sharding's keys unencoded, which
    Orbax 0.12.8's restore cannot read, so nothing may fall back to it."""
    copy = tmp_path / "no_flags"
    shutil.copytree(FOREIGN / "0.4.8/pytree", copy)
    document = json.loads((copy / "_METADATA").read_text())
    del document["use_zarr3"]
    (copy / "_METADATA").write_text(json.dumps(document))
    (copy / "_sharding").write_text(
        json.dumps({name: "" for name in ("count", "params.dense.bias", "params.dense.kernel")})
    )

    direct = metadata_files.leaf_records(copy)
    report = inspect_json(icnn, copy, "--stats")

    assert [leaf.path for leaf in direct] == [
        ("count",),
        ("params", "dense", "bias"),
        ("params", "dense", "kernel"),
        ("params", "scale"),
    ]
    assert report["leaves"] == inspect_json(icnn, "0.4.8/pytree", "--stats")["leaves"]


def remove_tree(copy: Path) -> Path:
    (copy / "checkpoint").unlink()
    return copy


def remove_state_tree(copy: Path) -> Path:
    (copy / "5" / "state" / "checkpoint").unlink()
    return copy / "5" / "state"


def remove_manifest(copy: Path) -> Path:
    (copy / "manifest.ocdbt").unlink()
    return copy


MISSING = {
    "tree of a single item": (
        "0.4.1/pytree",
        remove_tree,
        "_METADATA is missing, and so is the msgpack tree checkpoint that Orbax 0.4.0 to 0.4.2 "
        "wrote instead: nothing says what tree the array data holds",
    ),
    "tree of a step's item": (
        "0.4.1/manager",
        remove_state_tree,
        "_METADATA is missing, and so is the msgpack tree checkpoint that Orbax 0.4.0 to 0.4.2 "
        "wrote instead: nothing says what tree the array data holds",
    ),
    "OCDBT manifest": (
        "0.4.1/pytree",
        remove_manifest,
        "array data missing: no manifest.ocdbt (the OCDBT store) and no directory count/ for "
        "the array 'count', nor for 4 other arrays",
    ),
}


@pytest.mark.parametrize("case", list(MISSING))
def test_a_missing_file_is_named_as_missing_in_one_line(icnn, tmp_path, case):
    fixture, remove, problem = MISSING[case]
    copy = tmp_path / "ckpt"
    shutil.copytree(FOREIGN / fixture, copy)
    where = remove(copy)

    result = icnn("inspect", copy, "--stats")

    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if not line.startswith("icnn: warning")]
    assert errors == [f"icnn: error: {where}: {problem}"]
    assert "damaged" not in result.stderr
