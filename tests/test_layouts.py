"""`icnn inspect` on checkpoints from anywhere: every Orbax layout, typed keys, other topologies.

The golden checkpoints under tests/data/golden/ were written by tests/data/make_golden.py;
if an Orbax upgrade changes the on-disk format, these tests fail.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from icnn_cli.checkpoint import metadata, metadata_files
from icnn_cli.tree_paths import flatten_with_paths
from tests.data import make_golden
from tests.helpers import ALL_GOLDEN, GOLDEN


def expected_leaf(path: str, leaf) -> dict:
    """What ``inspect --json`` must say about one leaf of a tree written by make_golden."""
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        data = np.asarray(jax.random.key_data(leaf))
        return {
            "path": path,
            "shape": list(leaf.shape),
            "dtype": f"key<{jax.random.key_impl(leaf)}>",
            "size": int(np.prod(leaf.shape)),
            "bytes": data.nbytes,
            "key_impl": str(jax.random.key_impl(leaf)),
        }
    if isinstance(leaf, bool | int | float | str | np.generic):
        # A scalar is a non-array leaf: Orbax gives it back as a Python value, so
        # inspect shows that value and its Python type's name.
        leaf = leaf.item() if isinstance(leaf, np.generic) else leaf
        return {
            "path": path,
            "shape": [],
            "dtype": type(leaf).__name__,
            "size": 1,
            "bytes": len(leaf.encode()) if isinstance(leaf, str) else 8,
            "value": leaf,
        }
    array = np.asarray(leaf)
    return {
        "path": path,
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "size": array.size,
        "bytes": array.nbytes,
    }


def tree_leaves(tree) -> dict[str, object]:
    return {"/".join(parts): leaf for parts, leaf in flatten_with_paths(tree)}


def numpy_stats(values: np.ndarray) -> dict:
    values = np.asarray(values, np.float64).ravel()
    finite = values[np.isfinite(values)]
    return {
        "mean": finite.mean(),
        "std": finite.std(),
        "min": finite.min(),
        "max": finite.max(),
        "negative_fraction": np.count_nonzero(values < 0) / values.size,
        "nan": int(np.isnan(values).sum()),
        "inf": int(np.isinf(values).sum()),
    }


@pytest.mark.parametrize("layout", make_golden.LAYOUTS)
def test_every_layout_lists_the_tree_it_was_written_with(icnn, layout):
    report = json.loads(icnn("inspect", GOLDEN / layout, "--json").stdout)

    expected = [
        expected_leaf(path, leaf) for path, leaf in tree_leaves(make_golden.mixed_tree()).items()
    ]
    assert report["leaves"] == expected
    keys = {leaf["path"]: leaf for leaf in report["leaves"] if "key_impl" in leaf}
    assert (
        keys["rngs/dropout"]["dtype"] == "key<threefry2x32>" and keys["rngs/dropout"]["shape"] == []
    )
    assert keys["rngs/noise"]["dtype"] == "key<rbg>" and keys["rngs/noise"]["shape"] == [2]


@pytest.mark.parametrize("layout", make_golden.LAYOUTS)
def test_every_layout_gives_the_stats_of_the_arrays_it_holds(icnn, layout):
    result = icnn("inspect", GOLDEN / layout, "--stats", "--json")

    assert result.exit_code == 0, result.stderr
    leaves = {leaf["path"]: leaf for leaf in json.loads(result.stdout)["leaves"]}
    for path, value in tree_leaves(make_golden.mixed_tree()).items():
        if path.startswith("rngs/"):
            assert "mean" not in leaves[path], "a key's random bits have no statistics"
            continue
        for name, expected in numpy_stats(value).items():
            assert leaves[path][name] == pytest.approx(expected), (path, name)
    assert leaves["anomalies/nan_inf"]["flags"] == ["nan", "inf"]
    assert leaves["anomalies/zeros"]["flags"] == ["all_zero"]
    assert leaves["params/dense_0/kernel"]["flags"] == []


@pytest.mark.parametrize("name", ALL_GOLDEN)
def test_metadata_files_read_directly_match_orbax_metadata(name):
    """The fast path reads files that are not a public Orbax API: it must agree with metadata()."""
    path = GOLDEN / name

    direct = metadata_files.leaf_records(path)
    through_orbax = metadata.leaf_records(metadata.read_step_metadata(path), path)

    # A Python scalar's value is data, read only by the fast path: compare the rest.
    assert [dataclasses.replace(leaf, value=None) for leaf in direct] == through_orbax


def test_unfamiliar_metadata_files_fall_back_to_orbax(icnn, tmp_path):
    copy = tmp_path / "older"
    shutil.copytree(GOLDEN / "ocdbt_zstd", copy)
    document = json.loads((copy / "_METADATA").read_text())
    del document["use_zarr3"]  # Orbax reads a missing flag as False; the direct reader gives up
    (copy / "_METADATA").write_text(json.dumps(document))

    with pytest.raises(metadata_files.UnexpectedLayout):
        metadata_files.leaf_records(copy)
    report = json.loads(icnn("inspect", copy, "--json").stdout)

    intact = json.loads(icnn("inspect", GOLDEN / "ocdbt_zstd", "--json").stdout)
    assert report["leaves"] == intact["leaves"]


def test_without_array_metadatas_keys_show_as_their_uint32_data(icnn, tmp_path):
    copy = tmp_path / "no_array_metadatas"
    shutil.copytree(GOLDEN / "ocdbt_zstd", copy)
    shutil.rmtree(copy / "array_metadatas")

    result = icnn("inspect", copy, "--stats", "--json")

    leaves = {leaf["path"]: leaf for leaf in json.loads(result.stdout)["leaves"]}
    assert (leaves["rngs/dropout"]["dtype"], leaves["rngs/dropout"]["shape"]) == ("uint32", [2])
    assert (leaves["rngs/noise"]["dtype"], leaves["rngs/noise"]["shape"]) == ("uint32", [2, 4])
    assert "key_impl" not in leaves["rngs/noise"] and "mean" in leaves["rngs/noise"]


def test_keys_show_as_keys_in_the_table(icnn):
    text = icnn("inspect", GOLDEN / "zarr3").stdout

    rows = {
        line.split()[1]: line.split()
        for line in text.splitlines()
        if "rngs" not in line and "── " in line
    }
    assert rows["dropout"][2:5] == ["()", "key<threefry2x32>", "1"]
    assert rows["noise"][2:5] == ["(2,)", "key<rbg>", "2"]


def sharded_expectations() -> dict[str, np.ndarray]:
    return {
        "params/w": np.arange(32, dtype=np.float32).reshape(8, 4) - 8,
        "params/b": np.zeros(4, np.float32),
    }


def check_sharded_report(icnn, path: Path) -> None:
    assert jax.device_count() == 1, "the point is to read 8 devices' save on one"
    plain = json.loads(icnn("inspect", path, "--json").stdout)
    result = icnn("inspect", path, "--stats", "--json")

    assert result.exit_code == 0, result.stderr
    assert [(leaf["path"], leaf["shape"], leaf["dtype"]) for leaf in plain["leaves"]] == [
        ("params/b", [4], "float32"),
        ("params/w", [8, 4], "float32"),
        ("rng", [], "key<threefry2x32>"),
    ]
    leaves = {leaf["path"]: leaf for leaf in json.loads(result.stdout)["leaves"]}
    for path, values in sharded_expectations().items():
        for name, expected in numpy_stats(values).items():
            assert leaves[path][name] == pytest.approx(expected), (path, name)
    assert leaves["params/b"]["flags"] == ["all_zero"]


def test_a_save_sharded_over_8_devices_is_inspected_on_one(icnn):
    check_sharded_report(icnn, GOLDEN / make_golden.SHARDED)


@pytest.mark.slow
def test_a_fresh_8_device_save_from_another_process_is_inspected_on_one(icnn, tmp_path):
    target = tmp_path / "sharded"
    make_golden.write_sharded(target)

    check_sharded_report(icnn, target)


def test_icnn_golden_checkpoint_still_verifies(icnn):
    result = icnn("inspect", GOLDEN / make_golden.ICNN, "--stats", "--json")

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["spec"]["seed"] == make_golden.ICNN_CONFIG["init"]["seed"]
    assert report["spec"]["config"]["model"] == make_golden.ICNN_CONFIG["model"]
    assert len(report["leaves"]) == 23


def test_provenance_header_of_an_icnn_checkpoint(icnn):
    path = GOLDEN / make_golden.ICNN
    text = icnn("inspect", path).stdout
    report = json.loads(icnn("inspect", path, "--json").stdout)

    header = {
        label.strip(): value.strip()
        for label, value in (line.split("  ", 1) for line in text.split("\n\n")[0].splitlines())
    }
    spec = report["spec"]
    nanoseconds = json.loads((path / "_CHECKPOINT_METADATA").read_text())["commit_timestamp_nsecs"]
    committed = datetime.datetime.fromtimestamp(nanoseconds // 10**9, datetime.UTC)
    assert report["written_at"] == committed.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert header["written"] == committed.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert header["seed"] == "7" and header["streams"] == "params=7"
    assert header["rng impl"] == "threefry2x32"
    assert header["threefry partitionable"] == "on"
    assert header["versions"] == ", ".join(
        f"{package} {version}" for package, version in spec["versions"].items()
    )
    assert header["device"] == spec["device"]
    assert header["fingerprint"] == spec["fingerprint"][7:23]
    assert report["warnings"] == []


def test_installed_versions_that_differ_from_the_writer_are_warned_about(icnn, tmp_path):
    copy = tmp_path / "older"
    shutil.copytree(GOLDEN / make_golden.ICNN, copy)
    metadata_file = copy / "_CHECKPOINT_METADATA"
    recorded = json.loads(metadata_file.read_text())
    installed = recorded["custom_metadata"]["icnn"]["versions"]["ott-jax"]
    recorded["custom_metadata"]["icnn"]["versions"]["ott-jax"] = "0.5.0"
    metadata_file.write_text(json.dumps(recorded))

    result = icnn("inspect", copy)
    report = json.loads(icnn("inspect", copy, "--json").stdout)

    warning = (
        f"written with ott-jax 0.5.0, installed {installed}: `icnn verify` may not reproduce it"
    )
    assert result.stderr == f"icnn: warning: {warning}\n"
    assert f"ott-jax 0.5.0 (installed {installed})" in result.stdout
    assert report["warnings"] == [warning]


def test_header_names_the_gaussian_map_samples_by_sha256():
    from icnn_cli.checkpoint.provenance import provenance_of
    from icnn_cli.checkpoint.spec import SampleSpec, parse_spec
    from icnn_cli.render.summary import provenance_lines

    recorded = json.loads((GOLDEN / make_golden.ICNN / "_CHECKPOINT_METADATA").read_text())
    spec = parse_spec(recorded["custom_metadata"], "golden").model_copy(
        update={
            "gaussian_map_samples": [
                SampleSpec(role="source", path="s.npy", sha256="ab" * 32, shape=[9, 2]),
                SampleSpec(role="target", path="t.npy", sha256="cd" * 32, shape=[9, 2]),
            ]
        }
    )

    provenance = provenance_of(spec)
    lines = dict(provenance_lines(provenance, written_at=None))

    assert [sample.sha256 for sample in provenance.gaussian_map_samples] == ["ab" * 32, "cd" * 32]
    assert lines["source sample"] == f"sha256 {'ab' * 8}  s.npy"
    assert lines["target sample"] == f"sha256 {'cd' * 8}  t.npy"


def test_header_says_whether_stats_checked_the_fingerprint(icnn):
    path = GOLDEN / make_golden.ICNN

    def fingerprint_line(*args: str) -> str:
        text = icnn("inspect", path, *args).stdout
        return next(line for line in text.splitlines() if line.startswith("fingerprint"))

    recorded = json.loads(icnn("inspect", path, "--json").stdout)["spec"]["fingerprint"]
    assert fingerprint_line().split() == ["fingerprint", recorded[7:23]]  # metadata only
    assert "(checked)" in fingerprint_line("--stats")
    assert "(checked: every leaf read" in fingerprint_line("--stats", "--filter", "params/w_zs_*")
