"""A checkpoint is untrusted input down to its files (issue 20, one test per finding).

Every file a checkpoint names is opened through ``icnn_cli.checkpoint.guarded_files``:
inside the checkpoint, a regular file, read with a byte cap; every JSON or msgpack tree
decoded with depth and count bounds; every declared shape held against the memory
before anything is read. A refusal is exit 2 with one line naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from icnn_cli.checkpoint import guarded_files
from icnn_cli.checkpoint.provenance import written_at
from icnn_cli.errors import CheckpointRefused
from icnn_cli.tree_paths import leaf_path
from tests.helpers import invoke_unblocked as invoke

GOLDEN = Path(__file__).parent / "data" / "golden"
SECRET = "HUNTER2-outside-the-checkpoint"
JSON_HANDLER = "orbax.checkpoint._src.handlers.json_checkpoint_handler.JsonCheckpointHandler"
READING_COMMANDS = [["inspect"], ["inspect", "--json"], ["inspect", "--stats"], ["verify"]]


def assert_refused(result: Any, *words: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("icnn: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert SECRET not in result.output and "Traceback" not in result.output


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A directory outside every checkpoint, holding a JSON item and a plain file."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "metadata").write_text(json.dumps({"password": SECRET}))
    (directory / "secret.txt").write_text(SECRET)
    return directory


def copy_golden(tmp_path: Path, name: str = "per_leaf") -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(GOLDEN / name, target, symlinks=True)
    return target


def step_with_items(tmp_path: Path, handlers: dict[str, str]) -> Path:
    step = tmp_path / "step"
    shutil.copytree(GOLDEN / "foreign" / "0.11.40" / "manager" / "5", step)
    metadata = json.loads((step / "_CHECKPOINT_METADATA").read_text())
    metadata["item_handlers"] = handlers
    (step / "_CHECKPOINT_METADATA").write_text(json.dumps(metadata))
    return step


# --- 1. paths out of the checkpoint ---------------------------------------------------------


@pytest.mark.parametrize("command", READING_COMMANDS)
def test_an_absolute_item_name_is_refused_and_nothing_outside_is_shown(tmp_path, secret, command):
    step = step_with_items(tmp_path, {"meta": JSON_HANDLER, str(secret): JSON_HANDLER})
    assert_refused(invoke(*command, step), f"item name '{secret}' leaves the checkpoint")


@pytest.mark.parametrize("command", READING_COMMANDS)
def test_an_item_name_with_dot_dot_is_refused(tmp_path, secret, command):
    step = step_with_items(tmp_path, {"../outside": JSON_HANDLER})
    assert_refused(invoke(*command, step), "item name '../outside' leaves the checkpoint")


def test_a_json_item_linked_out_of_the_checkpoint_is_refused(tmp_path, secret):
    step = step_with_items(tmp_path, {"meta": JSON_HANDLER})
    (step / "meta" / "metadata").unlink()
    (step / "meta" / "metadata").symlink_to(secret / "metadata")
    assert_refused(invoke("inspect", step), "meta/metadata leaves the checkpoint")


def test_a_link_that_stays_inside_the_checkpoint_is_read(tmp_path):
    checkpoint = copy_golden(tmp_path)
    (checkpoint / "_sharding").rename(checkpoint / "sharding-kept-here")
    (checkpoint / "_sharding").symlink_to("sharding-kept-here")
    result = invoke("inspect", "--json", checkpoint)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == invoke("inspect", "--json", GOLDEN / "per_leaf").stdout.replace(
        str(GOLDEN / "per_leaf"), str(checkpoint)
    )


def test_a_step_directory_linked_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(GOLDEN / "foreign" / "0.11.40" / "manager", root)
    elsewhere = tmp_path / "elsewhere"
    (root / "5").rename(elsewhere)
    (root / "7").symlink_to(elsewhere)
    assert_refused(invoke("inspect", root), "step directory '7' leaves the checkpoint")


# --- 2. reads without a bound -----------------------------------------------------------------

METADATA_FILES = [
    "_CHECKPOINT_METADATA",
    "_METADATA",
    "_sharding",
    "array_metadatas/process_0",
    "params.dense_0.kernel/.zarray",
]


@pytest.mark.parametrize("name", METADATA_FILES)
def test_a_metadata_file_linked_to_dev_zero_is_refused(tmp_path, name):
    checkpoint = copy_golden(tmp_path)
    (checkpoint / name).unlink()
    (checkpoint / name).symlink_to("/dev/zero")
    for command in READING_COMMANDS:
        assert_refused(invoke(*command, checkpoint), f"{name} leaves the checkpoint")


@pytest.mark.parametrize("name", METADATA_FILES)
def test_a_sparse_giant_metadata_file_is_refused_unread(tmp_path, name):
    checkpoint = copy_golden(tmp_path)
    os.truncate(checkpoint / name, 3 << 30)
    assert_refused(invoke("inspect", checkpoint), f"{name} is larger than")


def test_orbax_s_own_reader_is_not_let_into_a_giant_file_either(tmp_path):
    # Garbled _METADATA sends icnn to Orbax's metadata(), which read _sharding whole,
    # on its own threads, after icnn had already reported the damage (found by the fuzzer).
    checkpoint = copy_golden(tmp_path)
    (checkpoint / "_METADATA").write_text("{garbled")
    os.truncate(checkpoint / "_sharding", 3 << 30)
    for command in READING_COMMANDS:
        assert_refused(invoke(*command, checkpoint), "_sharding is larger than 256.0 MiB")


def test_a_sparse_giant_msgpack_file_is_held_against_the_memory(tmp_path, monkeypatch):
    weights = tmp_path / "weights.msgpack"
    with open(weights, "wb") as handle:
        handle.write(b"\xdf\xff\xff\xff\xff")  # a map32 header: what sniffing looks for
    os.truncate(weights, 3 << 30)
    monkeypatch.setenv("ICNN_TEST_AVAILABLE_MEMORY", str(1 << 30))
    assert_refused(invoke("inspect", weights), "3.0 GiB", "1.0 GiB is available")


def test_reads_count_bytes_rather_than_trusting_the_size(tmp_path):
    checkpoint = copy_golden(tmp_path)
    with pytest.raises(CheckpointRefused, match="_METADATA is larger than"):
        guarded_files.read_bytes(checkpoint, checkpoint / "_METADATA", 100)


# --- 3. hangs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["_CHECKPOINT_METADATA", "_METADATA", "_sharding", "array_metadatas/process_0"]
)
def test_a_metadata_file_that_is_a_fifo_is_refused_without_blocking(tmp_path, name):
    checkpoint = copy_golden(tmp_path, "icnn_tiny")
    (checkpoint / name).unlink()
    os.mkfifo(checkpoint / name)
    for command in READING_COMMANDS:
        assert_refused(invoke(*command, checkpoint), f"{name} is not a regular file (a FIFO)")


def test_the_ocdbt_manifest_as_a_fifo_is_refused_without_blocking(tmp_path):
    checkpoint = copy_golden(tmp_path, "icnn_tiny")
    (checkpoint / "manifest.ocdbt").unlink()
    os.mkfifo(checkpoint / "manifest.ocdbt")
    assert_refused(invoke("inspect", "--stats", checkpoint), "manifest.ocdbt is not a regular")


def test_a_fifo_given_as_the_checkpoint_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "weights")
    assert_refused(invoke("inspect", tmp_path / "weights"), "is not a regular file")


def test_the_opener_checks_the_opened_descriptor(tmp_path):
    checkpoint = copy_golden(tmp_path)
    os.mkfifo(checkpoint / "pipe")
    with pytest.raises(CheckpointRefused, match="pipe is not a regular file"):
        guarded_files.open_regular(checkpoint, checkpoint / "pipe")


# --- 4. unbounded allocation from declared shapes ----------------------------------------------


def declare_shape(checkpoint: Path, shape: list[int], chunks: list[int]) -> None:
    array = checkpoint / "params.dense_0.kernel"
    header = json.loads((array / ".zarray").read_text())
    header.update(shape=shape, chunks=chunks, dtype="<f8")
    for chunk in array.iterdir():
        chunk.unlink()
    (array / ".zarray").write_text(json.dumps(header))


@pytest.mark.parametrize(
    "shape, chunks",
    [([2**40, 2**40], [2**40, 2**40]), ([2**40], [1])],
    ids=["huge", "many-chunks"],
)
@pytest.mark.parametrize("command", [["inspect", "--stats"], ["verify"], ["diff"]])
def test_a_declared_shape_beyond_the_memory_is_refused_before_reading(
    tmp_path, shape, chunks, command
):
    checkpoint = copy_golden(tmp_path)
    declare_shape(checkpoint, shape, chunks)
    others = [GOLDEN / "per_leaf"] if command == ["diff"] else []
    result = invoke(*command, checkpoint, *others)
    assert_refused(result, "params/dense_0/kernel declares float64", "is available: not read")


def test_files_tensorstore_reads_whole_are_held_against_what_they_can_hold(tmp_path):
    # Each aborted tensorstore (SIGABRT in its allocator) as a sparse 1 TiB file.
    ocdbt = copy_golden(tmp_path / "ocdbt", "icnn_tiny")
    os.truncate(ocdbt / "manifest.ocdbt", 1 << 40)
    assert_refused(invoke("inspect", ocdbt), "manifest.ocdbt is larger than 64.0 MiB")
    per_leaf = copy_golden(tmp_path / "per_leaf")
    os.truncate(per_leaf / "params.dense_0.kernel" / "0.0", 1 << 40)
    assert_refused(
        invoke("inspect", "--stats", per_leaf),
        "params.dense_0.kernel/0.0 is 1024.0 GiB, more than its array can hold (24 B)",
    )


def test_a_missing_chunk_is_not_materialised_past_the_memory(tmp_path, monkeypatch):
    checkpoint = copy_golden(tmp_path)
    declare_shape(checkpoint, [2**31], [2**31])
    monkeypatch.setenv("ICNN_TEST_AVAILABLE_MEMORY", str(4 << 30))
    assert_refused(
        invoke("inspect", "--stats", checkpoint),
        "declares float64 [2147483648] (16.0 GiB)",
    )
    assert invoke("inspect", checkpoint).exit_code == 0  # the metadata alone is fine


def test_an_npz_zip_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    archive = tmp_path / "bomb.npz"
    np.savez_compressed(archive, w=np.zeros(1 << 23))  # 64 MiB of zeros in ~64 KiB
    assert archive.stat().st_size < 1 << 20
    monkeypatch.setenv("ICNN_TEST_AVAILABLE_MEMORY", str(64 << 20))
    for command in (["inspect", "--stats"], ["verify"]):
        assert_refused(invoke(*command, archive), "w declares float64 [8388608] (64.0 MiB)")


def test_an_npz_member_declaring_more_than_its_zip_entry_holds_is_damage(tmp_path):
    archive = tmp_path / "liar.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (2**27,)  # 1 GiB of float64 declared; 64 bytes stored
    with (
        zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle,
        bundle.open("w.npy", "w") as member,
    ):
        np.lib.format.write_array_header_1_0(member, header)
        member.write(bytes(64))
    result = invoke("inspect", "--stats", archive)
    assert result.exit_code == 1, result.stderr
    assert "w declares 1073741824 bytes of data but its zip entry holds 64" in result.stderr


# --- 5. slow paths --------------------------------------------------------------------------


def test_leaf_paths_read_off_key_entries_match_jax_keystr():
    import jax
    from jax.tree_util import keystr

    tree = {"a": [1, (2, {"b": 3})], "c": jax.tree_util.Partial(print, 5)}
    for key_path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        assert leaf_path(key_path) == tuple(keystr((entry,), simple=True) for entry in key_path)


# --- 6. unnamed failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, key",
    [("_METADATA", None), ("_CHECKPOINT_METADATA", None), ("_CHECKPOINT_METADATA", "custom")],
)
def test_deeply_nested_json_is_refused_by_name(tmp_path, name, key):
    checkpoint = copy_golden(tmp_path)
    deep = '{"a":' * 10_000 + "1" + "}" * 10_000
    if key:
        document = json.loads((checkpoint / name).read_text())
        document["custom_metadata"] = "DEEP"
        text = json.dumps(document).replace('"DEEP"', deep)
    else:
        text = deep
    (checkpoint / name).write_text(text)
    for command in READING_COMMANDS:
        assert_refused(invoke(*command, checkpoint), f"{name} nests deeper than 100 levels")


def test_a_commit_time_past_any_calendar_is_no_time(tmp_path):
    assert written_at(10**30) is None
    checkpoint = copy_golden(tmp_path)
    document = json.loads((checkpoint / "_CHECKPOINT_METADATA").read_text())
    document["commit_timestamp_nsecs"] = 10**30
    (checkpoint / "_CHECKPOINT_METADATA").write_text(json.dumps(document))
    for command in (["inspect"], ["inspect", "--json"]):
        result = invoke(*command, checkpoint)
        assert result.exit_code == 0, result.stderr


def test_json_shows_a_nan_from_a_checkpoint_as_null(tmp_path):
    step = step_with_items(tmp_path, {"meta": JSON_HANDLER})
    (step / "meta" / "metadata").write_text(json.dumps({"loss": float("nan"), "step": 3}))
    result = invoke("inspect", "--json", step)
    assert result.exit_code == 0, result.stderr
    assert '"loss": null' in result.stdout and '"step": 3' in result.stdout


def test_stats_of_a_msgpack_bytes_leaf_are_left_out(tmp_path):
    from flax.serialization import msgpack_serialize

    weights = tmp_path / "weights.msgpack"
    tree = {"a": {"raw": b"\x00\x01raw", "w": np.ones(3, np.float32)}}
    weights.write_bytes(msgpack_serialize(tree))
    result = invoke("inspect", "--stats", "--json", weights)
    assert result.exit_code == 0, result.stderr
    leaves = {leaf["path"]: leaf for leaf in json.loads(result.stdout)["leaves"]}
    assert leaves["a/w"]["mean"] == 1.0
    assert "mean" not in leaves["a/raw"]


def test_a_deeply_nested_msgpack_tree_is_refused_by_name(tmp_path):
    weights = tmp_path / "deep.msgpack"
    weights.write_bytes(b"\x81\xa1a" * 2_000 + b"\x81\xa1w\x01")  # {"a": {"a": ... {"w": 1}}}
    result = invoke("inspect", weights)
    assert result.exit_code in (1, 2), result.stderr
    assert "unexpected failure" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- the same rules in a bucket -------------------------------------------------------------


def upload(local: Path, remote: str) -> None:
    import gcsfs

    gcsfs.GCSFileSystem().put(str(local), remote.removeprefix("gs://"), recursive=True)


@pytest.mark.parametrize(
    "change, words",
    [
        ("dot-dot", "item name '../outside' leaves the checkpoint"),
        ("large", "_CHECKPOINT_METADATA is larger than 4.0 MiB"),
    ],
)
def test_in_a_bucket_names_and_sizes_follow_the_same_rules(gcs_emulator, tmp_path, change, words):
    bucket = gcs_emulator.bucket("icnn-hostile")
    step = step_with_items(tmp_path, {"meta": JSON_HANDLER, "state": JSON_HANDLER})
    if change == "dot-dot":
        metadata = json.loads((step / "_CHECKPOINT_METADATA").read_text())
        metadata["item_handlers"] = {"../outside": JSON_HANDLER}
        (step / "_CHECKPOINT_METADATA").write_text(json.dumps(metadata))
    else:
        with open(step / "_CHECKPOINT_METADATA", "a") as handle:
            handle.write(" " * (5 << 20))
    (step / "commit_success.txt").write_text("ok")
    remote = f"{bucket}/{change}/step"
    upload(step, remote)
    assert_refused(invoke("inspect", remote), words)


def test_a_leaf_name_that_leaves_the_item_is_refused_before_any_array_is_opened(tmp_path):
    checkpoint = copy_golden(tmp_path, "per_leaf")
    document = json.loads((checkpoint / "_METADATA").read_text())
    entry = next(iter(document["tree_metadata"].values()))
    entry["key_metadata"] = [{"key": "../../outside", "key_type": 2}]
    (checkpoint / "_METADATA").write_text(json.dumps(document))
    assert_refused(invoke("inspect", checkpoint), "leaf name '../../outside' leaves the checkpoint")


# --- found by the fuzzer ------------------------------------------------------------------------


def test_a_dimension_that_is_not_an_integer_is_damage_not_a_crash(tmp_path):
    checkpoint = copy_golden(tmp_path)
    header_file = checkpoint / "params.dense_0.kernel" / ".zarray"
    header_file.write_text(header_file.read_text().replace('"shape":[3,2]', '"shape":[Infinity,2]'))
    assert "Infinity" in header_file.read_text()
    result = invoke("inspect", checkpoint)
    assert result.exit_code in (1, 2), result.stderr
    assert result.stderr.startswith("icnn: error: ") and "unexpected" not in result.stderr


@pytest.mark.parametrize("dim_hidden", [[10**30], [10**6, 10**6]], ids=["overflow", "terabytes"])
def test_verify_does_not_rerun_a_recorded_model_too_big_for_any_machine(tmp_path, dim_hidden):
    checkpoint = copy_golden(tmp_path, "icnn_tiny")
    document = json.loads((checkpoint / "_CHECKPOINT_METADATA").read_text())
    document["custom_metadata"]["icnn"]["config"]["model"]["dim_hidden"] = dim_hidden
    (checkpoint / "_CHECKPOINT_METADATA").write_text(json.dumps(document))
    result = invoke("verify", checkpoint)
    assert result.exit_code == 1, result.stderr
    assert "reproducibility skipped: not checked: the recorded " in result.stderr
    assert "unexpected" not in result.stderr


def test_a_value_type_that_is_not_a_string_is_damage_not_a_crash(tmp_path):
    checkpoint = copy_golden(tmp_path)
    document = json.loads((checkpoint / "_METADATA").read_text())
    for entry in document["tree_metadata"].values():
        entry["value_metadata"]["value_type"] = ["np.ndarray"]
    (checkpoint / "_METADATA").write_text(json.dumps(document))
    result = invoke("inspect", checkpoint)
    assert result.exit_code == 1, result.stderr
    assert "_METADATA is unreadable or damaged" in result.stderr


def test_a_scalar_whose_array_holds_several_values_is_damage(tmp_path):
    checkpoint = copy_golden(tmp_path)
    shutil.copy(checkpoint / "layers.0" / ".zarray", checkpoint / "step" / ".zarray")
    shutil.copy(checkpoint / "layers.0" / "0", checkpoint / "step" / "0")
    result = invoke("inspect", checkpoint)
    assert result.exit_code == 1, result.stderr
    assert "scalar step holds 2 values, not one" in result.stderr


def test_a_damaged_scalar_read_with_the_metadata_is_damage(tmp_path):
    checkpoint = copy_golden(tmp_path)
    (checkpoint / "step" / "0").write_bytes(bytes(40))
    result = invoke("inspect", checkpoint)
    assert result.exit_code == 1, result.stderr
    assert "cannot read array data" in result.stderr and "unexpected" not in result.stderr
