"""The cached exported init: a warm `icnn init` imports no OTT or Flax and writes the same bits."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from icnn_cli import export_cache
from icnn_cli.config import IcnnConfig, load_config
from icnn_cli.export_cache import (
    ENTRY_SUFFIX,
    FALLBACKS,
    NotExportable,
    _check_structure,
    _lowering_platform,
    describe_tree,
    export_directory,
    export_key,
    fallback_count,
    rebuild_tree,
)
from icnn_cli.pipeline import initialize_seed, prepare_init
from tests.helpers import CONFIGS, assert_trees_identical, restore_plain, tiny_model

# --- the output tree as JSON -------------------------------------------------------------


def test_tree_round_trip_keeps_dict_order_tuples_and_lists():
    tree = {"z": {"b": 1, "a": (2, [3, None])}, "params": {"w_zs_1": 4, "w_xs_0": 5}}

    structure = describe_tree(tree)
    import jax

    rebuilt = rebuild_tree(structure, jax.tree.leaves(tree))

    assert rebuilt == tree
    assert list(rebuilt) == ["z", "params"] and list(rebuilt["params"]) == ["w_zs_1", "w_xs_0"]
    assert type(rebuilt["z"]["a"]) is tuple and type(rebuilt["z"]["a"][1]) is list
    assert json.loads(json.dumps(structure)) == structure
    _check_structure(structure, 5)


def test_other_containers_are_not_exported():
    from collections import OrderedDict

    with pytest.raises(NotExportable):
        describe_tree({"params": OrderedDict(kernel=1)})


@pytest.mark.parametrize(
    "structure",
    [
        {"leaf": 1},
        {"dict": [["a", {"leaf": 0}], ["b", {"leaf": 0}]]},
        {"dict": [[1, {"leaf": 0}]]},
        {"set": []},
        {"leaf": 0, "none": None},
        {"tuple": [{"leaf": "0"}]},
    ],
)
def test_malformed_structures_are_refused(structure):
    with pytest.raises(ValueError):
        _check_structure(structure, 1)


# --- the cache in one process ------------------------------------------------------------


@pytest.fixture
def small_config(write_config) -> tuple[IcnnConfig, Path]:
    path = write_config({"model": tiny_model(), "init": {"rngs": {"params": "derive"}}})
    return load_config(path), path.parent


def entries(cache: Path) -> list[Path]:
    return sorted(export_directory(cache).glob(f"*{ENTRY_SUFFIX}"))


def test_second_prepare_loads_the_export_and_gives_the_same_checkpoint(small_config, tmp_path):
    config, config_dir = small_config
    cache = tmp_path / "cache"

    before = fallback_count()
    cold = prepare_init(config, config_dir, None, cache)
    warm = prepare_init(config, config_dir, None, cache)
    plain = prepare_init(config, config_dir, None)

    assert (cold.exported, warm.exported, plain.exported) == ("stored", "loaded", None)
    assert fallback_count() == before, "a first run (no entry yet) is no fallback"
    assert warm.module is None and cold.module is not None
    assert len(entries(cache)) == 1
    for seed in (0, 9):
        variables, spec = initialize_seed(warm, seed)
        for other in (cold, plain):
            other_variables, other_spec = initialize_seed(other, seed)
            assert_trees_identical(variables, other_variables)
            assert list(variables["params"]) == list(other_variables["params"])
            assert spec == other_spec


def test_one_process_compiles_an_entry_once_until_it_changes(small_config, tmp_path, monkeypatch):
    config, config_dir = small_config
    cache = tmp_path / "cache"
    compiled = []
    runner = export_cache._runner
    monkeypatch.setattr(export_cache, "_runner", lambda *a: compiled.append(1) or runner(*a))

    first = prepare_init(config, config_dir, None, cache)
    again = [prepare_init(config, config_dir, None, cache) for _ in range(3)]

    assert len(compiled) == 1, "the stored entry's program is the one later inits call"
    assert [prepared.exported for prepared in again] == ["loaded"] * 3
    for prepared in again:
        assert_trees_identical(initialize_seed(prepared, 5)[0], initialize_seed(first, 5)[0])
    (entry,) = entries(cache)
    # replaced, as every writer of an entry does (another process, after a fallback): read anew
    (tmp_path / "replacement").write_bytes(entry.read_bytes())
    os.replace(tmp_path / "replacement", entry)
    assert prepare_init(config, config_dir, None, cache).exported == "loaded"
    assert len(compiled) == 2


def test_a_damaged_entry_is_ignored_rewritten_and_counted(small_config, tmp_path, capsys):
    config, config_dir = small_config
    cache = tmp_path / "cache"
    reference, _ = initialize_seed(prepare_init(config, config_dir, None, cache), 3)
    (entry,) = entries(cache)
    good = entry.read_bytes()
    capsys.readouterr()

    for damaged in (good[:-1] + bytes([good[-1] ^ 1]), good[: len(good) // 2], b""):
        entry.write_bytes(damaged)
        before = fallback_count()
        prepared = prepare_init(config, config_dir, None, cache)
        assert prepared.exported == "stored"
        assert_trees_identical(initialize_seed(prepared, 3)[0], reference)
        assert fallback_count() == before + 1
        assert FALLBACKS[-1].entry == entry and FALLBACKS[-1].reason == "is damaged or foreign"
        out, err = capsys.readouterr()
        assert out == ""
        assert err == (
            f"icnn: note: the cached exported init {entry.name} is damaged or foreign "
            f"({FALLBACKS[-1].detail}); tracing the init instead\n"
        )
    reloaded = prepare_init(config, config_dir, None, cache)
    assert reloaded.exported == "loaded"
    assert_trees_identical(initialize_seed(reloaded, 3)[0], reference)


def test_an_entry_jax_cannot_load_falls_back_and_is_counted(small_config, tmp_path, capsys):
    config, config_dir = small_config
    cache = tmp_path / "cache"
    prepare_init(config, config_dir, None, cache)
    (entry,) = entries(cache)
    # A well-formed entry (checksum, header, key) whose payload is no serialized export.
    _, header, _ = entry.read_bytes().split(b"\n", 2)
    body = header + b"\n" + b"not a jax.export program"
    entry.write_bytes(hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
    before = fallback_count()

    prepared = prepare_init(config, config_dir, None, cache)

    assert prepared.exported == "stored"
    assert fallback_count() == before + 1 and FALLBACKS[-1].reason == "does not load"
    assert f"{entry.name} does not load" in capsys.readouterr().err


def test_the_private_lapack_hook_is_where_the_cache_patches_it():
    """jax.export has no public switch for it: pinned at the jax of requirements.lock."""
    import importlib
    import inspect

    hook = getattr(
        importlib.import_module(export_cache.LAPACK_HOOK_MODULE), export_cache.LAPACK_HOOK
    )

    assert list(inspect.signature(hook).parameters) == ["platforms"]


@pytest.mark.parametrize(
    ("platform", "default", "expected"),
    [("cpu", "cpu", "cpu"), ("tpu", "tpu", "tpu"), ("gpu", "rocm", "rocm"), ("gpu", "cpu", "cuda")],
)
def test_lowering_platform_names_gpus_by_vendor(platform, default, expected, monkeypatch):
    import jax

    monkeypatch.setattr(jax.export, "default_export_platform", lambda: default)

    assert _lowering_platform(platform) == expected


def test_an_unwritable_cache_still_initialises(small_config, tmp_path):
    config, config_dir = small_config
    cache = tmp_path / "cache"
    cache.mkdir()
    export_directory(cache).write_text("a file where the directory should be")

    prepared = prepare_init(config, config_dir, None, cache)

    assert prepared.exported == "stored"
    assert initialize_seed(prepared, 0)[1].seed == 0


def test_a_mesh_takes_the_plain_path(small_config, tmp_path):
    config, config_dir = small_config

    prepared = prepare_init(config.with_mesh([1]), config_dir, None, tmp_path / "cache")

    assert prepared.exported is None and prepared.layout is not None
    assert entries(tmp_path / "cache") == []


def test_the_key_ignores_the_seed_and_sees_everything_else(small_config, tmp_path, monkeypatch):
    import jax

    config, _ = small_config
    device = jax.devices()[0]
    versions = {"jax": "0.10.2"}

    def key(config=config, samples=(), versions=versions) -> str:
        return export_key(tmp_path, config, list(samples), versions, device).digest

    base = key()
    assert key(config.with_seed(123)) == base
    changed = [
        key(config.model_copy(update={"model": config.model.model_copy(update={"dim_data": 3})})),
        key(
            config.model_copy(update={"init": config.init.model_copy(update={"dtype": "float16"})})
        ),
        key(samples=["0" * 64, "1" * 64]),
        key(versions={"jax": "0.10.3"}),
    ]
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=true")
    changed.append(key())
    assert len({base, *changed}) == len(changed) + 1


@pytest.mark.slow  # 2.5 s of CPU on a warm cache (--cpu-durations)
def test_sweep_and_single_init_share_one_entry(icnn, write_config, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ICNN_COMPILE_CACHE_DIR", str(cache))
    config = write_config({"model": tiny_model(dim_hidden=[5, 3])})

    swept = icnn("init", "-c", config, "--seeds", "0:3", "--out", tmp_path / "sweep")
    (entry,) = entries(cache)
    written = entry.stat().st_mtime_ns
    single = icnn("init", "-c", config, "--seed", 2, "--out", tmp_path / "single")

    assert swept.exit_code == single.exit_code == 0, swept.stderr + single.stderr
    assert entries(cache) == [entry] and entry.stat().st_mtime_ns == written
    assert_trees_identical(
        restore_plain(tmp_path / "single"), restore_plain(tmp_path / "sweep/seed-2")
    )


def test_no_compile_cache_flag_leaves_no_export(icnn, write_config, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ICNN_COMPILE_CACHE_DIR", str(cache))
    config = write_config({"model": tiny_model(dim_hidden=[6])})

    result = icnn("init", "-c", config, "--out", tmp_path / "a", "--no-compile-cache")

    assert result.exit_code == 0, result.stderr
    assert entries(cache) == []


# --- cold, warm and plain in separate processes --------------------------------------------

# The configs of tests/test_parity.py, each written by a cold run, a warm run and the plain
# path (no caches), at one seed. Its "defaults" case is configs/default.yaml.
PARITY_CONFIGS = {
    "parity-ranks-list-leaky-normal": {
        "model": {
            "dim_data": 3,
            "dim_hidden": [16, 8],
            "ranks": [2, 1, 0, 3],
            "init_fn": {"name": "normal", "stddev": 0.05},
            "act_fn": {"name": "leaky_relu", "negative_slope": 0.2},
        }
    },
    "parity-pos-weights-softplus": {
        "model": {
            "dim_data": 4,
            "dim_hidden": [32],
            "pos_weights": True,
            "rectifier_fn": "softplus",
            "init_fn": "glorot_uniform",
        }
    },
    "parity-named-stream": {
        "model": {"dim_data": 2, "dim_hidden": [8]},
        "init": {"rngs": {"params": 11}},
    },
    "parity-derived-stream": {
        "model": {"dim_data": 2, "dim_hidden": [8]},
        "init": {"rngs": {"params": "derive"}},
    },
    "parity-rbg-bfloat16": {
        "model": {"dim_data": 2, "dim_hidden": [8]},
        "init": {"rng_impl": "rbg", "dtype": "bfloat16"},
    },
    "parity-capture-intermediates": {
        "model": {"dim_data": 2, "dim_hidden": [8]},
        "init": {"capture_intermediates": True},
    },
}

# Runs `icnn init` for each (config, out) pair in one process, then reports which of the
# heavy packages that process imported.
PROBE = """
import json, sys
from icnn_cli.cli import app
for config, out in json.loads(sys.argv[1]):
    try:
        app(["init", "-c", config, "--seed", "7", "--out", out, "--force"])
    except SystemExit as exit_request:
        if exit_request.code:
            sys.exit(f"icnn init -c {config} failed: {exit_request.code}")
heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("ott", "flax"))
print(json.dumps({"heavy": heavy}), file=sys.stderr)
"""


def run_probe(jobs: list[tuple[str, str]], cache: Path, **environ: str) -> list[str]:
    env = {**os.environ, "ICNN_COMPILE_CACHE_DIR": str(cache), **environ}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(jobs)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stderr.strip().splitlines()[-1])["heavy"]


def checkpoint_facts(path: Path) -> dict:
    """Everything of a checkpoint that does not depend on when it was written."""
    metadata = json.loads((path / "_CHECKPOINT_METADATA").read_text())
    files = {
        name: (path / name).read_bytes()
        for name in ("_METADATA", "_sharding", "array_metadatas/process_0")
        if (path / name).is_file()
    }
    return {"spec": metadata["custom_metadata"], "files": files}


@pytest.mark.slow
def test_cold_warm_and_plain_runs_write_the_same_checkpoints(tmp_path):
    configs = {path.stem: path for path in sorted(CONFIGS.glob("*.yaml"))}
    for name, content in PARITY_CONFIGS.items():
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(content))
    cache = tmp_path / "cache"

    def jobs(run: str) -> list[tuple[str, str]]:
        return [(str(path), str(tmp_path / run / name)) for name, path in configs.items()]

    cold = run_probe(jobs("cold"), cache)
    assert len(entries(cache)) == len(configs)
    warm = run_probe(jobs("warm"), cache)
    run_probe(jobs("plain"), tmp_path / "unused", ICNN_NO_COMPILE_CACHE="1")

    assert "ott" in cold and "flax" in cold
    assert warm == [], "the warm runs imported OTT or Flax"
    for name in configs:
        reference = tmp_path / "plain" / name
        for run in ("cold", "warm"):
            path = tmp_path / run / name
            assert checkpoint_facts(path) == checkpoint_facts(reference), (run, name)
            assert_trees_identical(restore_plain(path), restore_plain(reference))
