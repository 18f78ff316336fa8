"""Install paths: one version, `python -m icnn_cli`, the GPU/TPU extras, a wheel in a fresh venv."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.helpers import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
ACCELERATOR_EXTRAS = ("cuda12", "tpu")


def _locked_version(name: str) -> str:
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.split("==")[0].strip().lower() == name:
            return line.split("==")[1].split(";")[0].strip()
    raise AssertionError(f"{name} is not pinned in requirements.lock")


def test_the_version_has_one_source():
    import icnn_cli

    assert icnn_cli.__version__ == PYPROJECT["project"]["version"], (
        "the installed metadata is stale: rerun `make install`"
    )
    assert "__version__ =" not in (REPO / "icnn_cli" / "__init__.py").read_text()


def test_icnn_version_prints_the_metadata_version(icnn):
    result = icnn("--version")

    assert result.stdout == f"icnn {importlib.metadata.version('icnn-cli')}\n"


def test_python_dash_m_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "icnn_cli", "--version"], capture_output=True, text=True, check=True
    )

    assert result.stdout == f"icnn {PYPROJECT['project']['version']}\n"


def test_py_typed_ships_with_the_package():
    assert (REPO / "icnn_cli" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["icnn_cli"]


@pytest.mark.parametrize("extra", ACCELERATOR_EXTRAS)
def test_accelerator_extras_are_jax_own_at_the_locked_version(extra):
    (text,) = PYPROJECT["project"]["optional-dependencies"][extra]
    requirement = Requirement(text)

    assert requirement.name == "jax"
    assert requirement.extras == {extra}
    assert str(requirement.specifier) == f"=={_locked_version('jax')}"


def _pypi_reachable() -> bool:
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "jax"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("extra", ACCELERATOR_EXTRAS)
def test_accelerator_extras_resolve_with_the_locked_jax(extra):
    """Each requirement the locked jax adds for the extra has a release on the index.

    A full ``pip install --dry-run ".[cuda12]"`` resolves some twenty nvidia-* packages and
    took 1 min 46 s here; this checks the step icnn controls (jax's own extra, at the
    locked version, names plugin versions that exist) from jax's installed metadata and
    ``pip index versions``, downloading no wheel.
    """
    if not _pypi_reachable():
        pytest.skip("the package index is unreachable")
    locked = _locked_version("jax")
    assert importlib.metadata.version("jax") == locked
    extra_requirements = [
        Requirement(text)
        for text in importlib.metadata.requires("jax") or []
        if Requirement(text).marker and Requirement(text).marker.evaluate({"extra": extra})
    ]
    assert extra_requirements, f"jax {locked} has no extra {extra!r}"
    for requirement in extra_requirements:
        if requirement.name == "jaxlib":
            continue
        listing = subprocess.run(
            [sys.executable, "-m", "pip", "index", "versions", requirement.name],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert listing.returncode == 0, listing.stderr[-500:]
        versions = re.search(r"Available versions: (.*)", listing.stdout).group(1).split(", ")
        assert any(requirement.specifier.contains(v, prereleases=True) for v in versions), (
            f"{requirement} (from jax[{extra}]=={locked}): no matching release in {versions[:5]}"
        )


def _source_copy(destination: Path) -> Path:
    # Building in place would leave build/ in the working tree.
    ignored = shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "ckpt", "runs", "out"
    )
    return Path(shutil.copytree(REPO, destination / "source", ignore=ignored))


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_runs(tmp_path):
    """Build the wheel, install it into a new virtualenv, make a config, init, inspect.

    The honest route, timed on the 2-core development machine: ``pip wheel --no-deps``
    (9 s), a fresh ``venv`` with pip, then ``pip install WHEEL -c requirements.lock`` (about
    70 s: the pinned dependencies come from the configured index and pip's cache, no
    other site-packages are visible), then the commands of README's Quick start for a
    pip install (16 s): ``icnn config new | icnn init -c - --out ckpt && icnn inspect ckpt``.
    """
    if not _pypi_reachable():
        pytest.skip("the package index is unreachable")
    source = _source_copy(tmp_path)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, source],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("icnn_cli-*.whl")
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    bin_dir = environment / "bin"
    subprocess.run(
        [bin_dir / "pip", "install", "--quiet", "-c", REPO / "requirements.lock", wheel],
        check=True,
        capture_output=True,
        timeout=600,
    )
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(environment),
    }
    env.pop("PYTHONPATH", None)

    script = (
        "set -o pipefail; icnn config new --dim-data 2 --dim-hidden 8,8"
        " | icnn init -c - --out ckpt > /dev/null"
        " && icnn inspect ckpt"
        " && python -c 'import icnn_cli, pathlib;"
        " print(icnn_cli.__file__); print(icnn_cli.__version__)'"
    )
    result = subprocess.run(
        ["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )

    assert result.returncode == 0, result.stderr
    assert "total: 198 params" in result.stdout
    lines = result.stdout.strip().splitlines()
    assert lines[-2].startswith(str(environment)), "icnn_cli came from outside the new venv"
    assert lines[-1] == PYPROJECT["project"]["version"]
    assert (work / "ckpt" / "commit_success.txt").exists()
