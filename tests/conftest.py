"""Shared fixtures: tiny configs in tmp_path and a CLI runner with stderr kept apart.

Plain helpers (paths, ``run_icnn``, ``tiny_model``, tree comparisons) live in
``tests/helpers.py``; test modules import them from there, never from each other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from icnn_cli.cli import app

pytest_plugins = ["tests.gcs_fixtures", "tests.cpu_durations"]


def shared_test_directory(
    config: pytest.Config, tmp_path_factory: pytest.TempPathFactory, name: str
) -> Path:
    """A directory every xdist worker of this run shares, kept between runs when it can be.

    pytest's cache (``config.cache``) when the cacheprovider plugin is on, else the
    run's base temporary directory, which the workers' own ones sit in.
    """
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir(name))
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if "PYTEST_XDIST_WORKER" in os.environ else base
    directory = shared / name
    directory.mkdir(exist_ok=True)
    return directory


@pytest.fixture(scope="session", autouse=True)
def colour_setting_of_a_plain_terminal():
    """Drop a NO_COLOR the developer's shell may set, and pin the plain output's width.

    Set for the whole session, so the subprocesses tests start inherit it too;
    ``run_icnn`` sets NO_COLOR=1 for its own children. A shell's (or a test worker's)
    COLUMNS would otherwise cut the rows that golden-text tests compare.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("NO_COLOR", raising=False)
        patch.setenv("COLUMNS", "120")
        yield


@pytest.fixture(scope="session", autouse=True)
def private_compile_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Keep JAX's persistent compilation cache out of the real ~/.cache during tests.

    One directory for the whole run, shared by every xdist worker and kept between runs
    in pytest's own cache (``.pytest_cache/d/icnn-compile-cache``; ``--cache-clear`` or
    ``make clean`` empties it, and ``-p no:cacheprovider`` gives each run a fresh one).
    The cache is keyed by the compiled program and the installed versions, so a warm
    entry is never a stale one. It is on for this process too, so every in-process
    compile (check's search, health's probe, an init) is stored and found again.
    Set for the whole session (subprocesses inherit it), since JAX reads the
    cache directory once per process.
    """
    directory = shared_test_directory(request.config, tmp_path_factory, "icnn-compile-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ICNN_COMPILE_CACHE_DIR", str(directory))
        patch.delenv("ICNN_NO_COMPILE_CACHE", raising=False)
        from icnn_cli.compile_cache import configure_compile_cache

        configure_compile_cache(enabled=True)
        yield directory


@pytest.fixture(scope="session", autouse=True)
def click_command_built_once():
    """Build each Typer app's click command once per session, as the ``icnn`` process does.

    ``CliRunner.invoke`` rebuilds it from the annotations on every call (typer's
    ``get_params_from_function`` evaluates every signature's type hints), which cost a
    fifth of the fast set's CPU. The command holds the same callbacks either way.
    """
    import functools

    import typer.testing

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", functools.cache(typer.testing._get_command))
        yield


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def icnn(runner: CliRunner):
    """Run ``icnn ARGS`` in-process; returns click's Result (exit_code, stdout, stderr)."""

    def invoke(*args: Any) -> Any:
        return runner.invoke(app, [str(arg) for arg in args], catch_exceptions=False)

    return invoke


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a config mapping (or raw text) to ``tmp_path/cfg.yaml`` and return its path."""

    def write(content: dict[str, Any] | str, name: str = "cfg.yaml") -> Path:
        path = tmp_path / name
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text)
        return path

    return write


@pytest.fixture
def init_checkpoint(icnn, write_config, tmp_path: Path):
    """``icnn init`` a config's model at a seed; returns the checkpoint path."""

    def make(model: dict, seed: int = 0, name: str = "ckpt") -> Path:
        out = tmp_path / name
        config = write_config({"model": model}, name=f"{name}.yaml")
        assert icnn("init", "-c", config, "--seed", seed, "--out", out).exit_code == 0
        return out

    return make


def _init_once(directory: Path, config: Path) -> Path:
    """``icnn init -c CONFIG --out DIRECTORY/ckpt`` in-process, for a session fixture."""
    out = directory / "ckpt"
    result = CliRunner().invoke(app, ["init", "-c", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``icnn init`` of ``tiny_model()`` at seed 0, made once per worker and shared.

    Read-only: every test that asks for it sees the same files, so a test that changes
    a checkpoint copies this one first (``shutil.copytree(tiny_checkpoint, tmp_path /
    "ckpt")``). Same arrays as ``icnn init -c CFG --out ckpt`` of that config in the test.
    """
    from tests.helpers import tiny_model

    directory = tmp_path_factory.mktemp("tiny-checkpoint")
    config = directory / "cfg.yaml"
    config.write_text(yaml.safe_dump({"model": tiny_model()}, sort_keys=False))
    return _init_once(directory, config)


@pytest.fixture(scope="session")
def gaussian_map_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``icnn init -c configs/gaussian_map.yaml`` (seed 0) in a copy of ``configs/``.

    Made once per worker and shared, read-only (see ``tiny_checkpoint``); its samples stay
    where the spec records them, ``configs/samples/`` beside the checkpoint's directory. A
    test that moves or deletes them copies the checkpoint and the configs first.
    """
    import shutil

    from tests.helpers import CONFIGS

    directory = tmp_path_factory.mktemp("gaussian-map-checkpoint")
    shutil.copytree(CONFIGS, directory / "configs")
    return _init_once(directory, directory / "configs" / "gaussian_map.yaml")
