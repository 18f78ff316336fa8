"""JAX's persistent compilation cache: on by default, in a per-user directory, can be turned off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from icnn_cli.compile_cache import cache_directory, disabled_by_environment
from tests.helpers import CONFIGS

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
