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
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from icnn_cli.checkpoint.layout import locate
from icnn_cli.checkpoint.reader import CheckpointReader
from tests.helpers import REPO

FOREIGN = REPO / "tests" / "data" / "golden" / "foreign"
MANIFEST = json.loads((FOREIGN / "MANIFEST.json").read_text())["fixtures"]
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


@pytest.mark.parametrize("fixture", list(MANIFEST))
def test_current_orbax_restores_what_icnn_reads(fixture):
    """icnn's values are Orbax's: each PyTree item restored by plain Orbax, leaf by leaf."""
    location = locate(FOREIGN / fixture)
    reader = CheckpointReader.of(location.checkpoint)
    icnn_values = {leaf.path: value for leaf, value in reader.arrays()}
    for part in reader.parts:
        with ocp.PyTreeCheckpointer() as checkpointer:
            restored = checkpointer.restore(part.item.path.absolute())
        flat = ocp.tree.to_flat_dict(restored)
        for key, value in flat.items():
            path = part.prefix + tuple(str(k) for k in key)
            ours = np.asarray(icnn_values[path])
            theirs = np.asarray(value)
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, path
            assert ours.tobytes() == theirs.tobytes(), path


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
