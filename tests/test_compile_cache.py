"""JAX's persistent compilation cache: on by default, in a per-user directory, can be turned off."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from icnn_cli import compile_cache
from icnn_cli.compile_cache import cache_directory, disabled_by_environment
from tests.helpers import CONFIGS, assert_trees_identical, restore_plain

# Runs the CLI in a fresh process (JAX decides once per process whether the cache
# is used) and reports how many compiles JAX answered from the persistent cache.
PROBE = """
import json, sys
import jax.monitoring
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kwargs: hits.append(event) if event.endswith("/cache_hits") else None
)
from icnn_cli.cli import app
try:
    app(sys.argv[1:])
except SystemExit as exit_request:
    code = exit_request.code
print(json.dumps({"code": code, "cache_hits": len(hits)}), file=sys.stderr)
"""


def run_init(cache: Path, out: Path, *extra: str, **environ: str) -> dict:
    argv = ["init", "-c", str(CONFIGS / "default.yaml"), "--out", str(out), *extra]
    env = {**os.environ, "ICNN_COMPILE_CACHE_DIR": str(cache), **environ}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env
    )
    return json.loads(result.stderr.strip().splitlines()[-1])


def cached_programs(cache: Path) -> list[str]:
    return sorted(path.name for path in cache.glob("jit_init-*")) if cache.is_dir() else []


@pytest.mark.slow
def test_second_run_of_the_same_model_loads_the_compiled_init(tmp_path):
    cache = tmp_path / "cache"

    first = run_init(cache, tmp_path / "a")
    second = run_init(cache, tmp_path / "b", "--seed", "3")

    assert first == {"code": 0, "cache_hits": 0}
    assert len(cached_programs(cache)) == 1
    assert second["code"] == 0 and second["cache_hits"] >= 1
    assert len(cached_programs(cache)) == 1


@pytest.mark.slow
def test_no_compile_cache_flag_turns_the_cache_off(tmp_path):
    cache = tmp_path / "cache"

    result = run_init(cache, tmp_path / "a", "--no-compile-cache")

    assert result == {"code": 0, "cache_hits": 0}
    assert cached_programs(cache) == []


def test_cache_directory_follows_icnn_then_xdg_then_home():
    home_default = Path.home() / ".cache" / "icnn" / "jax"
    assert cache_directory({"ICNN_COMPILE_CACHE_DIR": "/c", "XDG_CACHE_HOME": "/x"}) == Path("/c")
    assert cache_directory({"XDG_CACHE_HOME": "/x"}) == Path("/x/icnn/jax")
    assert cache_directory({"XDG_CACHE_HOME": "relative"}) == home_default
    assert cache_directory({}) == home_default


@pytest.mark.parametrize(
    ("value", "disabled"), [("1", True), ("yes", True), ("0", False), ("", False), ("off", False)]
)
def test_environment_variable_values(value, disabled):
    assert disabled_by_environment({"ICNN_NO_COMPILE_CACHE": value}) is disabled


def test_environment_variable_wins_over_default_on(monkeypatch, private_compile_cache):
    from icnn_cli.compile_cache import configure_compile_cache

    monkeypatch.setenv("ICNN_NO_COMPILE_CACHE", "1")
    assert configure_compile_cache(enabled=True) is None

    monkeypatch.delenv("ICNN_NO_COMPILE_CACHE")
    assert configure_compile_cache(enabled=True) == private_compile_cache


# --- entries written whole: a killed writer leaves no entry that warns forever ----------


def test_the_private_hook_icnn_wraps_is_where_jax_builds_its_file_cache():
    import importlib
    import inspect

    module = importlib.import_module(compile_cache.CACHE_HOOK_MODULE)
    hook = getattr(module, compile_cache.CACHE_HOOK)

    assert list(inspect.signature(hook).parameters) == ["path"]
    source = inspect.getsource(module)
    assert f"{compile_cache.CACHE_HOOK}(path)" in source  # _initialize_cache calls it by name
    assert compile_cache.UNREADABLE_ENTRY_WARNING in inspect.getsource(
        importlib.import_module("jax._src.compiler")
    )
    from jax._src import lru_cache

    assert lru_cache._CACHE_SUFFIX == compile_cache.ENTRY_SUFFIX


def test_an_entry_is_written_whole_and_a_concurrent_one_is_kept(tmp_path):
    entries = compile_cache.AtomicEntries(tmp_path)

    assert entries.get("jit_init-abc") is None
    (tmp_path / "jit_init-abc-cache").write_bytes(b"written by another process meanwhile")
    entries.put("jit_init-abc", b"ours")
    entries.put("jit_stage-def", b"compiled")

    assert (tmp_path / "jit_init-abc-cache").read_bytes() == b"written by another process meanwhile"
    assert (tmp_path / "jit_stage-def-cache").read_bytes() == b"compiled"
    assert (tmp_path / "jit_stage-def-cache").stat().st_mode & 0o777 == compile_cache.ENTRY_MODE
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "jit_init-abc-cache",
        "jit_stage-def-cache",
    ]


def test_an_entry_read_then_compiled_again_was_damaged_and_is_replaced(tmp_path, capsys):
    entries = compile_cache.AtomicEntries(tmp_path)
    (tmp_path / "jit_init-abc-cache").write_bytes(b"trunc")
    before = len(compile_cache.REPLACED)

    assert entries.get("jit_init-abc") == b"trunc"
    entries.put("jit_init-abc", b"the whole entry")

    assert (tmp_path / "jit_init-abc-cache").read_bytes() == b"the whole entry"
    assert compile_cache.REPLACED[before:] == ["jit_init-abc-cache"]
    assert capsys.readouterr().err == (
        "icnn: note: the compile cache entry of jit_init could not be read (a run killed "
        "while writing it?); compiled again and replaced\n"
    )


def test_an_unwritable_cache_directory_is_no_error(tmp_path):
    entries = compile_cache.AtomicEntries(tmp_path / "missing")

    entries.put("jit_init-abc", b"value")

    assert not (tmp_path / "missing").exists()


@pytest.mark.slow
def test_truncated_entries_are_replaced_once_in_one_line_each_then_silent(tmp_path):
    cache = tmp_path / "cache"
    assert run_init(cache, tmp_path / "first")["code"] == 0
    entries = sorted(cache.glob("*-cache"))
    assert entries
    for entry in entries:  # what a run killed while JAX wrote them in place would leave
        entry.write_bytes(entry.read_bytes()[:100])
    shutil.rmtree(cache / "exports")  # so the init is traced and compiled, not run from its export

    argv = ["init", "-c", str(CONFIGS / "default.yaml")]
    env = {**os.environ, "ICNN_COMPILE_CACHE_DIR": str(cache)}
    runs = [
        subprocess.run(
            [sys.executable, "-m", "icnn_cli", *argv, "--out", str(tmp_path / name)],
            capture_output=True,
            text=True,
            env=env,
        )
        for name in ("repaired", "after")
    ]

    repaired, after = runs
    assert repaired.returncode == 0 and after.returncode == 0
    notes = repaired.stderr.splitlines()
    assert len(notes) == len(entries), repaired.stderr
    assert all(line.startswith("icnn: note: the compile cache entry of jit_") for line in notes)
    assert "Warning" not in repaired.stderr and after.stderr == ""
    assert all(len(entry.read_bytes()) > 100 for entry in entries)
    assert_trees_identical(restore_plain(tmp_path / "after"), restore_plain(tmp_path / "first"))
