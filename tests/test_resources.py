"""Resources checked before the work, and the failures that still happen at run time.

A model too big for the memory, or a checkpoint too big for the disk, is refused
(exit 2, with the numbers) before anything is compiled or written; ``--dry-run``
shows both figures. A full disk during the save, or an allocation refused while the
init runs, is exit 1 with one plain line, and an old checkpoint at ``--out`` stays.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from icnn_cli import resources
from tests.helpers import tiny_model

HUGE = {"dim_data": 2, "dim_hidden": [100000, 100000]}  # 40 GB of float32 parameters
GIB = 1 << 30


@pytest.fixture
def compiles(caplog: pytest.LogCaptureFixture):
    """Names of the programs JAX compiles while the test runs (``jax_log_compiles``)."""
    import jax

    previous = jax.config.jax_log_compiles
    jax.config.update("jax_log_compiles", True)
    caplog.set_level(logging.WARNING, logger="jax")

    def compiled() -> list[str]:
        messages = [record.getMessage() for record in caplog.records]
        # "Compiling jit(f)" is logged when lowering; this one after the backend compiled.
        finished = "Finished XLA compilation of "
        return [text.split()[4] for text in messages if text.startswith(finished)]

    yield compiled
    jax.config.update("jax_log_compiles", previous)


@pytest.mark.slow  # 2.1 s of CPU on a warm cache (--cpu-durations)
def test_a_model_too_big_for_memory_is_refused_before_compiling(icnn, write_config, tmp_path):
    out = tmp_path / "ckpt"
    config = write_config({"model": HUGE})
    result = icnn("init", "-c", config, "--out", out)
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("icnn: error: the init needs ~")
    # 40 GB of parameters, about 3x that at its peak: the figure is in the message.
    assert "GiB at its peak" in message and "available (host memory)" in message
    assert message.endswith("try --mesh or a smaller dim_hidden")
    assert not out.exists() and list(tmp_path.iterdir()) == [config]


def test_the_refusal_compiles_no_init(icnn, write_config, tmp_path, compiles):
    # The plain path: a warm export cache (icnn_cli.export_cache) loads its program
    # compiled, from JAX's persistent cache, before this check.
    config = write_config({"model": HUGE})
    result = icnn("init", "-c", config, "--out", tmp_path / "ckpt", "--no-compile-cache")
    assert result.exit_code == 2
    # At most JAX's small helpers of the key derivation ran; the init was never compiled.
    # (They may have been compiled by an earlier test of this process: then nothing is.)
    import jax

    jax.jit(lambda x: x * 3.25)(1.0)  # a fresh program: proves the compile log is captured
    names = compiles()
    assert any("lambda" in name for name in names), names
    assert not [name for name in names if "init" in name], names


def test_the_memory_figure_is_the_patched_one(icnn, write_config, tmp_path, monkeypatch):
    monkeypatch.setenv(resources.AVAILABLE_MEMORY_VARIABLE, str(1000))
    config = write_config({"model": tiny_model()})
    result = icnn("init", "-c", config, "--out", tmp_path / "ckpt")
    assert result.exit_code == 2
    assert "at its peak, 1000 B available (host memory)" in result.stderr
    assert not (tmp_path / "ckpt").exists()


def test_a_disk_too_small_is_refused_with_the_numbers(icnn, write_config, tmp_path, monkeypatch):
    monkeypatch.setenv(resources.FREE_DISK_VARIABLE, str(4096))
    config = write_config({"model": tiny_model()})
    out = tmp_path / "new" / "ckpt"  # not there yet: its nearest existing ancestor counts
    result = icnn("init", "-c", config, "--out", out)
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"icnn: error: --out {out}: the checkpoint needs ~40.8 KiB, 4.0 KiB free on /\n"
    )
    assert "KiB, 4.0 KiB free on /" in result.stderr
    assert not (tmp_path / "new").exists()


def test_dry_run_shows_both_figures(icnn, write_config, tmp_path, monkeypatch):
    monkeypatch.setenv(resources.AVAILABLE_MEMORY_VARIABLE, str(22 * GIB))
    monkeypatch.setenv(resources.FREE_DISK_VARIABLE, str(5 * GIB))
    config = write_config({"model": HUGE})
    result = icnn("init", "-c", config, "--out", tmp_path / "ckpt", "--dry-run")
    assert result.exit_code == 0, result.stderr  # a dry run shows, and refuses nothing
    lines = {line.split("  ")[0]: line for line in result.stdout.splitlines()[:6]}
    assert "GiB; 22.0 GiB available (host memory)" in lines["peak memory"]
    assert "~37.3 GiB; 5.0 GiB free on /" in lines["checkpoint"]
    result = icnn("init", "-c", config, "--out", tmp_path / "ckpt", "--dry-run", "--json")
    figures = json.loads(result.stdout)["resources"]
    assert figures["available_memory_bytes"] == 22 * GIB
    assert figures["free_disk_bytes"] == 5 * GIB
    assert figures["checkpoint_bytes"] >= 40_000_000_000
    assert figures["peak_memory_bytes"] >= 2 * 40_000_000_000
    assert not (tmp_path / "ckpt").exists()


def _device(platform: str, index: int, free: int | None = None) -> SimpleNamespace:
    stats = {"bytes_limit": free, "bytes_in_use": 0} if free is not None else None
    return SimpleNamespace(platform=platform, id=index, process_index=0, memory_stats=lambda: stats)


def test_with_a_mesh_each_accelerator_holds_its_share(tmp_path, monkeypatch):
    import jax
    import numpy as np

    monkeypatch.delenv(resources.AVAILABLE_MEMORY_VARIABLE, raising=False)
    shapes = {"kernel": jax.ShapeDtypeStruct((1000, 1000), np.float32)}
    one = resources.estimate(shapes, tmp_path, [_device("gpu", 0, free=10 * GIB)])
    eight = resources.estimate(
        shapes, tmp_path, [_device("gpu", index, free=10 * GIB) for index in range(8)]
    )
    assert one.peak_bytes == int(4_000_000 * resources.PEAK_PER_PARAMETER_BYTE)
    assert eight.peak_bytes == one.peak_bytes // 8
    assert eight.memory_where == "gpu:0" and eight.available_memory == 10 * GIB
    # The checkpoint holds every shard whatever the mesh.
    assert eight.checkpoint_bytes == one.checkpoint_bytes
    # A backend without memory_stats is not refused for want of a figure.
    unknown = resources.estimate(shapes, tmp_path, [_device("tpu", 0)])
    assert unknown.available_memory is None and unknown.memory_fits


def test_cpu_devices_of_a_mesh_share_the_host_memory(tmp_path, monkeypatch):
    import jax
    import numpy as np

    monkeypatch.setenv(resources.AVAILABLE_MEMORY_VARIABLE, str(GIB))
    shapes = {"kernel": jax.ShapeDtypeStruct((1000, 1000), np.float32)}
    one = resources.estimate(shapes, tmp_path, [_device("cpu", 0)])
    eight = resources.estimate(shapes, tmp_path, [_device("cpu", i) for i in range(8)])
    assert eight.peak_bytes == one.peak_bytes  # one process holds all eight shards
    assert eight.memory_where == "host memory"


# --- run-time failures ------------------------------------------------------------------------

# What orbax-checkpoint 0.12.8 raises when tensorstore's write hits a full disk.
ORBAX_DISK_FULL = (
    'RESOURCE_EXHAUSTED: Error writing "params.w_zs_0.kernel/0.0" in OCDBT database at '
    'local file "/data/.ckpt.icnn-staging-1/ocdbt.process_0/": [OpenFailed] Error writing '
    'local file "/data/.ckpt.icnn-staging-1/ocdbt.process_0/d/5a1b": No space left on device '
    "[source locations='tensorstore/internal/os/file_util_posix.cc:328']"
)


def _assert_untouched(icnn, ckpt: Path, fingerprint: str) -> None:
    result = icnn("inspect", ckpt, "--json", "--stats")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["spec"]["fingerprint"] == fingerprint
    assert [path.name for path in ckpt.parent.iterdir() if path.name.startswith(".")] == []


def _first(icnn, write_config, out: Path) -> str:
    config = write_config({"model": tiny_model()}, name="first.yaml")
    result = icnn("init", "-c", config, "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["spec"]["fingerprint"]


@pytest.fixture
def small_filesystem(tmp_path: Path):
    """A 2 MiB tmpfs (needs root, as in this project's CI containers); skipped elsewhere."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow  # 2.2 s of CPU on a warm cache (--cpu-durations)
def test_a_disk_that_fills_up_during_the_save_is_one_line(
    icnn, write_config, small_filesystem, monkeypatch
):
    out = small_filesystem / "ckpt"
    fingerprint = _first(icnn, write_config, out)
    # The check before the work passes (as if the space were freed, then taken again)...
    monkeypatch.setenv(resources.FREE_DISK_VARIABLE, str(1 << 40))
    # ...and the real 4 MB save meets the real full disk.
    config = write_config({"model": {"dim_data": 2, "dim_hidden": [1000, 1000]}})
    result = icnn("init", "-c", config, "--out", out, "--force")
    assert result.exit_code == 1
    assert result.stderr == (
        f"icnn: error: no space left on {small_filesystem} while writing {out}; "
        "the old checkpoint is untouched\n"
    )
    _assert_untouched(icnn, out, fingerprint)


def test_orbax_disk_full_text_is_mapped(icnn, write_config, tmp_path, monkeypatch):
    """The same without a small filesystem: Orbax's save raises its exact text."""
    import orbax.checkpoint as ocp

    out = tmp_path / "ckpt"
    fingerprint = _first(icnn, write_config, out)

    def full(self, *args, **kwargs):
        raise ValueError(ORBAX_DISK_FULL)

    monkeypatch.setattr(ocp.StandardCheckpointer, "save", full)
    result = icnn("init", "-c", write_config({"model": tiny_model()}), "--out", out, "--force")
    assert result.exit_code == 1
    assert result.stderr.startswith("icnn: error: no space left on /")
    assert result.stderr.endswith(f" while writing {out}; the old checkpoint is untouched\n")
    assert "tensorstore" not in result.stderr and "OCDBT" not in result.stderr
    _assert_untouched(icnn, out, fingerprint)
    fresh = tmp_path / "fresh"
    result = icnn("init", "-c", write_config({"model": tiny_model()}), "--out", fresh)
    assert result.stderr.endswith("; nothing was written\n") and not fresh.exists()


def test_out_of_memory_while_the_init_runs_is_one_line(icnn, write_config, tmp_path, monkeypatch):
    import jax

    def refused(tree):
        raise jax.errors.JaxRuntimeError(
            "RESOURCE_EXHAUSTED: Out of memory allocating 40000000000 bytes."
        )

    monkeypatch.setattr(jax, "block_until_ready", refused)
    out = tmp_path / "ckpt"
    result = icnn("init", "-c", write_config({"model": tiny_model()}), "--out", out)
    assert result.exit_code == 1
    assert result.stderr.startswith("icnn: error: out of memory while running the init on cpu")
    assert result.stderr.endswith("try --mesh or a smaller dim_hidden\n")
    assert "unexpected failure" not in result.stderr
    assert not out.exists()


def test_other_failures_are_not_taken_for_a_full_disk():
    assert not resources.is_disk_full(ValueError("NOT_FOUND: no such key"))
    assert not resources.is_disk_full(
        RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 4 bytes")
    )
    assert resources.is_disk_full(OSError(28, "No space left on device"))
    assert resources.is_out_of_memory(
        RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 4 bytes")
    )


def test_every_init_caller_refuses_a_too_big_model_with_the_same_numbers(
    icnn, write_config, tmp_path
):
    # One init plan (pipeline.plan_init): icnn init, --seeds and icnn_cli.init check alike.
    import icnn_cli
    from icnn_cli.errors import ResourcesExceeded

    config = write_config({"model": HUGE})
    single = icnn("init", "-c", config, "--out", tmp_path / "one")
    sweep = icnn("init", "-c", config, "--seeds", "0:4", "--out", tmp_path / "many")
    with pytest.raises(ResourcesExceeded) as python:
        icnn_cli.init(config, out=tmp_path / "py")

    assert single.exit_code == sweep.exit_code == 2
    figures = single.stderr.strip().removeprefix("icnn: error: ").split(";")[0]
    assert figures.startswith("the init needs ~") and "GiB at its peak" in figures
    assert sweep.stderr.strip().removeprefix("icnn: error: ").split(";")[0] == figures
    assert str(python.value).split(";")[0] == figures
    assert "sharding.mesh" in str(python.value) and "--mesh" not in str(python.value)
    assert sorted(tmp_path.iterdir()) == [config]
