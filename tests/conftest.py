"""Shared fixtures: tiny configs in tmp_path and a CLI runner with stderr kept apart."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from icnn_cli.cli import app

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"

os.environ.pop("NO_COLOR", None)


@pytest.fixture(scope="session", autouse=True)
def private_compile_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep JAX's persistent compilation cache out of the real ~/.cache during tests.

    Set for the whole session (subprocesses inherit it), since JAX reads the
    cache directory once per process.
    """
    directory = tmp_path_factory.mktemp("compile-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ICNN_COMPILE_CACHE_DIR", str(directory))
        patch.delenv("ICNN_NO_COMPILE_CACHE", raising=False)
        yield directory


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


def tiny_model(**fields: Any) -> dict[str, Any]:
    return {"dim_data": 2, "dim_hidden": [8, 8], **fields}
