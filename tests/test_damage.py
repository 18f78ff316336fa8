"""Damaged checkpoints: every command that reads arrays fails with exit 1 and one line.

Orbax does not checksum array data and reports broken metadata as ``None`` or
``{}``; these tests damage a real checkpoint the ways a disk or a careless copy
does and check that no reading command ever exits 0 with wrong numbers.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import icnn_cli
from icnn_cli.errors import IcnnError, RuntimeFailure
from tests.helpers import flip_bytes, largest_data_file, run_icnn, tiny_model


def truncate_data_file(checkpoint: Path) -> None:
    data = largest_data_file(checkpoint)
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def delete_data_file(checkpoint: Path) -> None:
    largest_data_file(checkpoint).unlink()


def garble_tree_metadata(checkpoint: Path) -> None:
    path = checkpoint / "_METADATA"
    content = bytearray(path.read_bytes())
    content[100:110] = b"\x00garbage!\x01"
    path.write_bytes(bytes(content))


def garble_checkpoint_metadata(checkpoint: Path) -> None:
    path = checkpoint / "_CHECKPOINT_METADATA"
    content = bytearray(path.read_bytes())
    content[300:310] = b"\x00garbage!\x01"
    path.write_bytes(bytes(content))


def truncate_checkpoint_metadata(checkpoint: Path) -> None:
    path = checkpoint / "_CHECKPOINT_METADATA"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "flipped bytes in a data file": (flip_bytes, "does not match the recorded fingerprint"),
    "truncated data file": (truncate_data_file, "cannot read array data"),
    "deleted data file": (delete_data_file, "cannot read array data"),
    "garbled _METADATA": (garble_tree_metadata, "_METADATA is unreadable or damaged"),
    "garbled _CHECKPOINT_METADATA": (
        garble_checkpoint_metadata,
        "_CHECKPOINT_METADATA is not valid JSON",
    ),
    "truncated _CHECKPOINT_METADATA": (
        truncate_checkpoint_metadata,
        "_CHECKPOINT_METADATA is not valid JSON",
    ),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """An icnn checkpoint with leaves large enough to land in unchecksummed data files."""
    import yaml

    base = tmp_path_factory.mktemp("pristine")
    config = base / "cfg.yaml"
    config.write_text(yaml.safe_dump({"model": tiny_model(dim_hidden=[64, 64])}))
    out = base / "ckpt"
    from typer.testing import CliRunner

    from icnn_cli.cli import app

    result = CliRunner().invoke(app, ["init", "-c", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(params=sorted(DAMAGE))
def damaged(request, pristine, tmp_path) -> tuple[Path, str]:
    damage, expected = DAMAGE[request.param]
    copy = tmp_path / "damaged"
    shutil.copytree(pristine, copy)
    damage(copy)
    return copy, expected


def test_pristine_checkpoint_reads_cleanly(icnn, pristine):
    result = icnn("inspect", pristine, "--stats", "--json")

    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""


READING_COMMANDS = {
    "inspect --stats": lambda damaged, pristine: ["inspect", damaged, "--stats", "--json"],
    # The damage sits in w_zs_0's data file; the filter shows other leaves only.
    "inspect --stats --filter": lambda damaged, pristine: [
        "inspect",
        damaged,
        "--stats",
        "--filter",
        "params/w_xs_*",
        "--json",
    ],
    "check": lambda damaged, pristine: ["check", damaged, "--json"],
    "diff": lambda damaged, pristine: ["diff", pristine, damaged, "--json"],
}


@pytest.mark.parametrize("command", sorted(READING_COMMANDS))
def test_reading_commands_refuse_damage(command, icnn, damaged, pristine):
    path, expected = damaged

    result = icnn(*READING_COMMANDS[command](path, pristine))

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"icnn: error: {path}: ")
    assert expected in result.stderr


def test_verify_reports_damage(icnn, damaged):
    path, expected = damaged

    result = icnn("verify", path, "--json")

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["checkpoints"][0]["integrity"]["status"] in ("damaged", "unreadable")
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"icnn: error: {path}: not verified: integrity ")
    assert expected in result.stderr


def test_load_refuses_damage(damaged):
    path, expected = damaged

    with pytest.raises(IcnnError) as raised:
        icnn_cli.load(path)

    assert isinstance(raised.value, RuntimeFailure)
    assert expected in raised.value.message


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated data file", "garbled _METADATA"])
def test_failed_restore_in_a_real_process_prints_exactly_one_line(damage, pristine, tmp_path):
    # After a failed restore tensorstore may print "Event loop is closed"
    # tracebacks at interpreter exit; only a real process shows them.
    copy = tmp_path / "damaged"
    shutil.copytree(pristine, copy)
    DAMAGE[damage][0](copy)

    result = run_icnn("inspect", copy, "--stats")

    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert DAMAGE[damage][1] in result.stderr
