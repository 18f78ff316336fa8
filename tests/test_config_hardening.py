"""Hostile configs are refused as bad input, and ``icnn init -c -`` reads standard input.

Configs are written by scripts and downloaded: every case here once crashed the reader
(``RecursionError``, ``ReaderError``) or could make it run for ever (alias bombs, huge files).
Each must end as exit 2 with one ``icnn: error: FILE[:LINE:COL]: ...`` line on stderr, no
traceback and nothing written at ``--out``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from icnn_cli import yaml_source
from icnn_cli.config import load_config
from tests.helpers import ICNN

GOOD_MODEL = "model: {dim_data: 2, dim_hidden: [8]}\n"


def billion_laughs(levels: int = 9) -> str:
    lines = ['lol0: &lol0 "lol"']
    for level in range(1, levels + 1):
        aliases = ", ".join([f"*lol{level - 1}"] * 10)
        lines.append(f"lol{level}: &lol{level} [{aliases}]")
    return (GOOD_MODEL + "\n".join(lines) + "\n").encode()


def nested_mapping(depth: int) -> str:
    return "".join(f"{'  ' * level}k{level}:\n" for level in range(depth)) + "  " * depth + "1\n"


# One row per hostile config: (its bytes, what the one stderr line says after the file name).
HOSTILE: dict[str, tuple[bytes, str]] = {
    "a list nested 500 deep": (
        f"model: {{dim_data: 2, dim_hidden: {'[' * 500}{']' * 500}}}\n".encode(),
        ":1:64: config has nested more than 32 levels deep",
    ),
    "a mapping nested 500 deep (block style)": (
        (GOOD_MODEL + nested_mapping(500)).encode(),
        ":33:63: config has nested more than 32 levels deep",
    ),
    "a NUL byte": (
        b"model:\n  dim_data: 2\x00\n  dim_hidden: [8]\n",
        ":2:14: config contains an unreadable character NUL",
    ),
    "an ESC byte": (b"model: {dim_data: 2, dim_hidden: [8]}\x1b[2J\n", ":1:38: "),
    "a C1 control character": ("model: \u0081\n".encode(), ":1:8: config contains an unreadable"),
    "invalid UTF-8, with its line": (
        b"model:\n  dim_data: 2\n  dim_hidden: [\xff]\n",
        ":3:16: config is not UTF-8 text",
    ),
    "billion laughs": (
        billion_laughs(),
        ":6:7: config has more than 10000 values once aliases are expanded",
    ),
    "an alias that contains itself": (
        b"model: &m {dim_data: 2, dim_hidden: [8], again: *m}\n",
        ":1:49: config has an alias that contains itself (a recursive structure)",
    ),
    "aliases nesting past the depth limit": (
        (
            GOOD_MODEL
            + "a0: &a0 [[[[[[[[1]]]]]]]]\n"
            + "".join(f"a{n}: &a{n} [[[[[[[[*a{n - 1}]]]]]]]]\n" for n in range(1, 6))
        ).encode(),
        ":5:5: config has nested more than 32 levels deep once aliases are expanded",
    ),
    "20000 values without an alias": (
        f"{GOOD_MODEL}junk: [{', '.join(['1'] * 20_000)}]\n".encode(),
        ":2:29978: config has more than 10000 values",  # item 9991, the 10001st node
    ),
    "a value of 5000 characters": (
        f"{GOOD_MODEL}output: {'x' * 5000}\n".encode(),
        ":2:9: config has a value of 5000 characters (the limit is 4096)",
    ),
    "a plain key of 5000 characters": (
        f"{GOOD_MODEL}{'k' * 5000}: 1\n".encode(),
        ":2:5001: YAML error: while scanning a simple key, could not find expected ':'",
    ),
    "an explicit key of 5000 characters": (
        f"{GOOD_MODEL}? {'k' * 5000}\n: 1\n".encode(),
        ":2:3: config has a value of 5000 characters",
    ),
    "2 MiB of comments": (
        b"# padding\n" * 200_000 + GOOD_MODEL.encode(),
        ": config is 2000038 bytes, over the limit of 1048576 bytes (1 MiB)",
    ),
    "two documents": (
        f"{GOOD_MODEL}---\n{GOOD_MODEL}".encode(),
        ":2:1: YAML error: expected a single document in the stream, but found another document",
    ),
}


def assert_refused(result: Any, out: Path, *expected: str) -> str:
    """Exit 2, nothing on stdout, one error line holding ``expected``; nothing at ``out``."""
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("icnn: error: ")
    for fragment in expected:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists()
    return lines[0]


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_config_is_one_line_exit_2_and_writes_nothing(case, icnn, tmp_path):
    content, expected = HOSTILE[case]
    config = tmp_path / "cfg.yaml"
    config.write_bytes(content)
    out = tmp_path / "out"

    result = icnn("init", "--config", config, "--out", out)

    line = assert_refused(result, out, f"{config}{expected}")
    # the line is short and safe for a terminal, whatever the config held
    assert len(line) < 400
    assert all(char.isprintable() for char in line)
    assert sorted(tmp_path.iterdir()) == [config]


@pytest.mark.parametrize("case", ["a list nested 500 deep", "a NUL byte", "billion laughs"])
def test_hostile_config_on_stdin_names_stdin(case, icnn, runner, tmp_path):
    from icnn_cli.cli import app

    content, expected = HOSTILE[case]
    out = tmp_path / "out"

    result = runner.invoke(app, ["init", "-c", "-", "--out", str(out)], input=content)

    assert_refused(result, out, f"icnn: error: <stdin>{expected}")


def test_a_huge_file_is_refused_before_it_is_parsed(icnn, tmp_path, monkeypatch):
    config = tmp_path / "cfg.yaml"
    config.write_text(GOOD_MODEL + "#" * (yaml_source.MAX_CONFIG_BYTES + 1))

    def parse(*args: Any) -> None:
        raise AssertionError("a file over the limit reached the YAML parser")

    monkeypatch.setattr(yaml_source, "parse_yaml_mapping", parse)
    result = icnn("init", "-c", config, "--out", tmp_path / "out")

    assert_refused(result, tmp_path / "out", f"config is {config.stat().st_size} bytes")


def test_a_huge_stdin_is_refused_without_reading_it_all(runner, tmp_path):
    from icnn_cli.cli import app

    result = runner.invoke(
        app, ["init", "-c", "-", "--out", str(tmp_path / "out")], input=b"#" * (3 << 20)
    )

    assert_refused(
        result, tmp_path / "out", "<stdin>: config is more than 1048576 bytes, over the limit"
    )


def test_a_config_of_exactly_the_size_limit_is_parsed(icnn, tmp_path):
    # An unknown key stops it at validation (no JAX), after the whole file was read.
    text = GOOD_MODEL + "outptu: ckpt\n"
    config = tmp_path / "cfg.yaml"
    config.write_text(text + "#" * (yaml_source.MAX_CONFIG_BYTES - len(text)))
    assert config.stat().st_size == yaml_source.MAX_CONFIG_BYTES

    result = icnn("init", "-c", config, "--out", tmp_path / "out")

    assert_refused(result, tmp_path / "out", "unknown key 'outptu' (did you mean 'output'?)")


def test_nesting_within_the_limit_reaches_the_schema(icnn, tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(f"model: {{dim_data: 2, dim_hidden: {'[' * 20}8{']' * 20}}}\n")

    result = icnn("init", "-c", config, "--out", tmp_path / "out")

    assert_refused(result, tmp_path / "out", "model.dim_hidden.0: expected a whole number")


def test_anchors_and_aliases_within_the_bounds_are_accepted(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "model: {dim_data: 2, dim_hidden: &layers [8, 8]}\n"
        "init: {input_shape: [1, 2]}\n"
        "sharding:\n"
        "  rules:\n"
        "    - {path: 'params/w_zs_*/kernel', spec: &rows [x, null]}\n"
        "    - {path: 'params/w_xs_*/kernel', spec: *rows}\n"
    )

    loaded = load_config(config)

    assert loaded.model.dim_hidden == [8, 8]
    assert [rule.spec for rule in loaded.sharding.rules] == [["x", None], ["x", None]]


def test_control_characters_in_a_key_are_shown_as_escapes(icnn, tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text('model: {dim_data: 2, dim_hidden: [8], "\\e]0;pwned\\a": 1}\n')

    result = icnn("init", "-c", config, "--out", tmp_path / "out")

    assert_refused(result, tmp_path / "out", "model: unknown key '\\x1b]0;pwned\\x07'")
    assert "\x1b" not in result.stderr


def test_a_long_value_is_quoted_short(icnn, tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(f"model: {{dim_data: 2, dim_hidden: [8], act_fn: {'x' * 3000}}}\n")

    result = icnn("init", "-c", config, "--out", tmp_path / "out")

    line = assert_refused(result, tmp_path / "out", "model.act_fn: unknown activation 'xxx")
    assert "...' (3000 chars)" in line
    assert len(line) < 400


def test_unknown_key_in_a_list_item_suggests_the_field(icnn, tmp_path):
    # The suggestion walks model_fields through list[ShardingRule]; a list index used to
    # be looked up as a field name (KeyError, exit 1).
    config = tmp_path / "cfg.yaml"
    config.write_text(f"{GOOD_MODEL}sharding: {{rules: [{{path: x, spce: []}}]}}\n")

    result = icnn("init", "-c", config, "--out", tmp_path / "out")

    assert_refused(
        result, tmp_path / "out", "sharding.rules.0: unknown key 'spce' (did you mean 'spec'?)"
    )


def test_yaml_source_imports_no_schema():
    source = Path(yaml_source.__file__).read_text()

    assert "icnn_cli.config" not in source
    assert "from icnn_cli import config" not in source


# --- icnn init -c -: the config from standard input


def test_stdin_config_gives_the_same_checkpoint_as_the_file(runner, tmp_path):
    from icnn_cli.cli import app

    text = "model: {dim_data: 2, dim_hidden: [8, 8]}\ninit: {seed: 3}\n"
    config = tmp_path / "cfg.yaml"
    config.write_text(text)

    from_stdin = runner.invoke(
        app, ["init", "-c", "-", "--out", str(tmp_path / "a"), "--json"], input=text
    )
    from_file = runner.invoke(
        app, ["init", "-c", str(config), "--out", str(tmp_path / "b"), "--json"]
    )

    assert from_stdin.exit_code == 0, from_stdin.stderr
    assert from_file.exit_code == 0, from_file.stderr
    stdin_spec = json.loads(from_stdin.stdout)["spec"]
    file_spec = json.loads(from_file.stdout)["spec"]
    assert stdin_spec["fingerprint"] == file_spec["fingerprint"]
    assert stdin_spec["config"] == file_spec["config"]


def test_stdin_errors_name_stdin_and_the_line(runner, tmp_path):
    from icnn_cli.cli import app

    result = runner.invoke(
        app,
        ["init", "-c", "-", "--out", str(tmp_path / "out")],
        input="model:\n  dim_data: 2\n  dim_hiden: [8]\n",
    )

    assert_refused(
        result,
        tmp_path / "out",
        "icnn: error: <stdin>:3:3: model: unknown key 'dim_hiden' (did you mean 'dim_hidden'?)",
    )


def test_empty_stdin_is_an_empty_config(runner, tmp_path):
    from icnn_cli.cli import app

    result = runner.invoke(app, ["init", "-c", "-", "--out", str(tmp_path / "out")], input="")

    assert_refused(result, tmp_path / "out", "<stdin>: config is empty")


def test_stdin_sample_paths_are_relative_to_the_current_directory(runner, tmp_path, monkeypatch):
    from icnn_cli.cli import app

    samples = tmp_path / "samples"
    samples.mkdir()
    rng = np.random.default_rng(0)
    for role in ("source", "target"):
        np.save(samples / f"{role}.npy", rng.standard_normal((16, 2)))
    monkeypatch.chdir(tmp_path)
    text = (
        "model:\n  dim_data: 2\n  dim_hidden: [8]\n"
        "  gaussian_map_samples: {source: samples/source.npy, target: samples/target.npy}\n"
    )

    result = runner.invoke(app, ["init", "-c", "-", "--out", "ckpt", "--json"], input=text)

    assert result.exit_code == 0, result.stderr
    recorded = json.loads(result.stdout)["spec"]["gaussian_map_samples"]
    assert [record["path"] for record in recorded] == [
        str(samples / "source.npy"),
        str(samples / "target.npy"),
    ]


def test_stdin_sample_paths_do_not_follow_a_config_directory(runner, tmp_path, monkeypatch):
    from icnn_cli.cli import app

    monkeypatch.chdir(tmp_path)
    text = (
        "model:\n  dim_data: 2\n  dim_hidden: [8]\n"
        "  gaussian_map_samples: {source: configs/samples/source.npy, target: t.npy}\n"
    )

    result = runner.invoke(app, ["init", "-c", "-", "--out", "ckpt"], input=text)

    assert_refused(
        result,
        tmp_path / "ckpt",
        "configs/samples/source.npy: model.gaussian_map_samples.source: sample file not found",
    )


def test_init_help_says_what_dash_means(icnn):
    result = icnn("init", "--help")

    text = " ".join(result.stdout.replace("│", " ").split())
    assert "'-' reads it from standard input" in text
    assert "current directory" in text


@pytest.mark.slow
def test_a_shell_pipeline_into_init(tmp_path):
    result = subprocess.run(
        f"printf 'model: {{dim_data: 3, dim_hidden: [8]}}\\n' | '{ICNN}' init -c - --out ckpt",
        shell=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
    )

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ckpt" / "commit_success.txt").exists() or any((tmp_path / "ckpt").iterdir())
    inspected = subprocess.run(
        [str(ICNN), "inspect", "ckpt", "--json"], capture_output=True, text=True, cwd=tmp_path
    )
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["spec"]["config"]["model"]["dim_data"] == 3


def test_check_reads_its_architecture_config_from_stdin(runner, tmp_path):
    from icnn_cli.cli import app

    tiny = "model: {dim_data: 2, dim_hidden: [4]}\n"
    ckpt = str(tmp_path / "ckpt")
    assert runner.invoke(app, ["init", "-c", "-", "--out", ckpt], input=tiny).exit_code == 0

    # a small search: what is checked here is where the architecture comes from
    same = runner.invoke(
        app, ["check", ckpt, "--config", "-", "--json", "--samples", "64"], input=tiny
    )
    other = runner.invoke(app, ["check", ckpt, "--config", "-"], input=tiny.replace("[4]", "[5]"))
    broken = runner.invoke(app, ["check", ckpt, "--config", "-"], input="model: [\n")

    assert same.exit_code in (0, 1), same.stderr  # 1: the verdict is not 'certified'
    assert json.loads(same.stdout)
    assert other.exit_code == 2
    assert "does not match the config -:" in other.stderr
    assert broken.exit_code == 2
    assert broken.stderr.startswith("icnn: error: <stdin>:2:1: YAML error")
