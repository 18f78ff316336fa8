"""Plain Orbax against the local GCS emulator, so the emulator is proven apart from icnn.

Orbax reaches ``gs://`` two ways: small files (``_CHECKPOINT_METADATA``, ``_METADATA``)
through etils.epath and gcsfs, arrays through tensorstore's ``gcs`` driver, which needs
the generation headers and preconditions the emulator adds. The error cases record what
a user sees, for the table that maps them to one line.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest

from tests.gcs_emulator import GcsEmulator

NUM_LAYERS = 25  # four leaves each: a 100-leaf tree


def layered_tree() -> dict[str, Any]:
    """100 leaves of four dtypes, with NaN, -0.0 and infinities to compare bit for bit."""
    rng = np.random.default_rng(0)
    tree: dict[str, Any] = {}
    for index in range(NUM_LAYERS):
        kernel = rng.standard_normal((index + 2, 3)).astype(np.float32)
        kernel[0, :3] = [np.nan, -0.0, np.inf]
        tree[f"layer_{index:02d}"] = {
            "kernel": kernel,
            "bias": rng.standard_normal(3).astype(np.float16),
            "steps": np.array([index, -index], dtype=np.int32),
            "mask": rng.integers(0, 255, size=4, dtype=np.uint8),
        }
    return tree


def leaves_with_paths(tree: dict[str, Any]) -> dict[str, Any]:
    return {
        f"{layer}/{name}": leaf for layer, leaves in tree.items() for name, leaf in leaves.items()
    }


def assert_bitwise_equal(restored: dict[str, Any], expected: dict[str, Any]) -> None:
    restored_leaves = leaves_with_paths(restored)
    expected_leaves = leaves_with_paths(expected)
    assert restored_leaves.keys() == expected_leaves.keys()
    for path, leaf in expected_leaves.items():
        got = np.asarray(restored_leaves[path])
        assert (got.dtype, got.shape) == (leaf.dtype, leaf.shape), path
        assert got.tobytes() == leaf.tobytes(), path


@pytest.fixture(scope="module")
def saved_checkpoint(gcs_emulator: GcsEmulator) -> tuple[str, dict[str, Any]]:
    """A 100-leaf tree saved once by StandardCheckpointer to gs://orbax-plain/tree."""
    import orbax.checkpoint as ocp

    path = gcs_emulator.bucket("orbax-plain") + "/tree"
    tree = layered_tree()
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, tree)
        checkpointer.wait_until_finished()
    return path, tree


def test_standard_checkpointer_saves_100_leaves_and_restores_them_bit_for_bit(
    gcs_emulator: GcsEmulator, saved_checkpoint: tuple[str, dict[str, Any]]
) -> None:
    import orbax.checkpoint as ocp

    path, tree = saved_checkpoint
    assert len(leaves_with_paths(tree)) == 100
    names = set(gcs_emulator_object_names(gcs_emulator, "orbax-plain", "tree/"))
    assert {"tree/_CHECKPOINT_METADATA", "tree/_METADATA", "tree/manifest.ocdbt"} <= names

    restored = ocp.StandardCheckpointer().restore(path)

    assert_bitwise_equal(restored, tree)


def test_metadata_lists_every_leaf_with_its_shape_and_dtype(
    saved_checkpoint: tuple[str, dict[str, Any]],
) -> None:
    import orbax.checkpoint as ocp

    path, tree = saved_checkpoint

    metadata = ocp.StandardCheckpointer().metadata(path).item_metadata.tree

    described = {
        f"{layer}/{name}": (tuple(leaf.shape), np.dtype(leaf.dtype))
        for layer, leaves in metadata.items()
        for name, leaf in leaves.items()
    }
    expected = {path: (leaf.shape, leaf.dtype) for path, leaf in leaves_with_paths(tree).items()}
    assert described == expected


def test_checkpoint_manager_keeps_two_steps_that_a_new_manager_finds(
    gcs_emulator: GcsEmulator,
) -> None:
    import orbax.checkpoint as ocp

    directory = gcs_emulator.bucket("orbax-manager") + "/run"
    trees = {step: {"w": np.full((2, 2), step, np.float32)} for step in (0, 1)}
    with ocp.CheckpointManager(directory) as manager:
        for step, tree in trees.items():
            manager.save(step, args=ocp.args.StandardSave(tree))
        manager.wait_until_finished()

    with ocp.CheckpointManager(directory) as reopened:
        assert reopened.all_steps() == [0, 1]
        assert reopened.latest_step() == 1
        restored = reopened.restore(1, args=ocp.args.StandardRestore())
    assert np.asarray(restored["w"]).tobytes() == trees[1]["w"].tobytes()


def test_request_counts_grow_with_orbax_calls_and_reset_to_zero(
    gcs_emulator: GcsEmulator, saved_checkpoint: tuple[str, dict[str, Any]]
) -> None:
    import orbax.checkpoint as ocp

    path, _tree = saved_checkpoint
    gcs_emulator.reset_counts()

    ocp.StandardCheckpointer().metadata(path)

    counts = gcs_emulator.request_counts()
    assert counts.total() > 0
    assert counts["GET /storage/v1/b/orbax-plain/o/tree/_CHECKPOINT_METADATA"] > 0
    assert all(key.split(" ")[0] == "GET" for key in counts), "metadata() only reads"
    gcs_emulator.reset_counts()
    assert gcs_emulator.request_counts().total() == 0, "reading the counts is not counted"


def test_generation_preconditions_answer_412_and_304_as_gcs_does(
    gcs_emulator: GcsEmulator,
) -> None:
    gcs_emulator.bucket("preconditions")
    upload = "/upload/storage/v1/b/preconditions/o?uploadType=media&name=blob&ifGenerationMatch=0"
    media = "/storage/v1/b/preconditions/o/blob?alt=media"

    created = json.loads(http(gcs_emulator, "POST", upload, b"0123456789")[1])
    generation = created["generation"]
    status, body, headers = http(gcs_emulator, "GET", media, headers={"Range": "bytes=-4"})

    assert (status, body) == (206, b"6789")
    assert headers["x-goog-generation"] == generation
    assert headers["x-goog-metageneration"] == "1"
    assert http(gcs_emulator, "POST", upload, b"again")[0] == 412
    assert http(gcs_emulator, "GET", f"{media}&ifGenerationNotMatch={generation}")[0] == 304
    assert http(gcs_emulator, "GET", f"{media}&ifGenerationMatch=1")[0] == 412
    assert http(gcs_emulator, "GET", media, headers={"Range": "bytes=10-"})[0] == 416


def test_saving_to_a_missing_bucket_fails_in_tensorstore_with_not_found(
    gcs_emulator: GcsEmulator,
) -> None:
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    # save() returns; the array writes fail in the background and surface here.
    checkpointer.save("gs://no-such-bucket/ck", {"w": np.ones(3, np.float32)})
    with pytest.raises(ValueError, match=r"^NOT_FOUND: .*The specified bucket does not exist"):
        checkpointer.wait_until_finished()


def test_restoring_from_a_missing_bucket_says_checkpoint_not_found(
    gcs_emulator: GcsEmulator,
) -> None:
    import orbax.checkpoint as ocp

    with pytest.raises(FileNotFoundError, match="Checkpoint at gs://no-such-bucket/ck not found"):
        ocp.StandardCheckpointer().restore("gs://no-such-bucket/ck")


def test_an_anonymous_caller_refused_by_gcs_gets_gcsfs_http_error_401(
    gcs_emulator: GcsEmulator, saved_checkpoint: tuple[str, dict[str, Any]]
) -> None:
    """What a user without credentials meets on a private bucket: gcsfs reads first."""
    import gcsfs.retry
    import orbax.checkpoint as ocp

    path, _tree = saved_checkpoint
    with gcs_emulator.requiring_authorization():
        with pytest.raises(gcsfs.retry.HttpError, match="Anonymous caller") as raised:
            ocp.StandardCheckpointer().restore(path)
        assert raised.value.code == 401


def test_tensorstore_refused_as_anonymous_raises_value_error_permission_denied(
    gcs_emulator: GcsEmulator,
) -> None:
    import tensorstore as ts

    gcs_emulator.bucket("anonymous")
    store = ts.KvStore.open({"driver": "gcs", "bucket": "anonymous"}).result()
    with (
        gcs_emulator.requiring_authorization(),
        pytest.raises(ValueError, match=r"^PERMISSION_DENIED: Anonymous caller"),
    ):
        store.read("anything").result()


def test_an_unreachable_endpoint_fails_with_aiohttp_client_connector_error(
    gcs_emulator: GcsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gcsfs retries 6 times with backoff (about 33 s in all); the test skips the waits."""
    import asyncio

    import aiohttp
    import gcsfs.retry
    import orbax.checkpoint as ocp

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setattr(gcsfs.retry, "asyncio", _AsyncioWithoutWaits(asyncio))

    with pytest.raises(aiohttp.ClientConnectorError, match="Cannot connect to host 127.0.0.1:9"):
        ocp.StandardCheckpointer().restore("gs://orbax-plain/tree")


def test_tensorstore_at_an_unreachable_endpoint_raises_value_error_aborted(
    gcs_emulator: GcsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default tensorstore retries 32 times, up to 32 s apart: minutes, not seconds."""
    import tensorstore as ts

    monkeypatch.setenv("TENSORSTORE_GCS_HTTP_URL", "http://127.0.0.1:9")
    quick_retries = {"max_retries": 2, "initial_delay": "1ms", "max_delay": "2ms"}
    spec = {
        "driver": "gcs",
        "bucket": "unreachable",
        "context": {"gcs_request_retries": quick_retries},
    }
    store = ts.KvStore.open(spec).result()
    with pytest.raises(ValueError, match=r"^ABORTED: All 2 retry attempts failed: CURL error"):
        store.read("anything").result()


class _AsyncioWithoutWaits:
    """asyncio as gcsfs.retry sees it, with its backoff sleeps made instant."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def sleep(self, _delay: float) -> None:
        await self._real.sleep(0)


def gcs_emulator_object_names(emulator: GcsEmulator, bucket: str, prefix: str) -> list[str]:
    listing = json.loads(http(emulator, "GET", f"/storage/v1/b/{bucket}/o?prefix={prefix}")[1])
    return [item["name"] for item in listing["items"]]


def http(
    emulator: GcsEmulator,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    """One request to the emulator: (status, body, headers), errors included."""
    request = urllib.request.Request(
        emulator.url + path, data=body, method=method, headers=headers or {}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)
