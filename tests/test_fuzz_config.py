"""A seeded fuzzer: mutated shipped configs and flag sets never crash ``icnn init``.

Each example takes a config from ``configs/``, mutates it (keys dropped, duplicated or
retyped, numbers made negative, huge, fractional or strings, junk bytes inserted, the file
truncated) and runs ``icnn init`` in-process with a drawn set of flags. Whatever it is given,
the command must end in exit 0, or exit 2 with one ``icnn: error:`` line, never a traceback or
an "unexpected failure", and leave nothing at ``--out`` unless it wrote a checkpoint there.

Most examples are ``--dry-run`` (``jax.eval_shape``: nothing allocated) or are refused by
validation before JAX is imported; only mutations that cannot make the model bigger are run
for real, so a huge ``dim_hidden`` is never allocated. ``derandomize=True`` makes every run
draw the same examples.
"""

from __future__ import annotations

import copy
import itertools
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parent.parent
CONFIGS = {path.stem: path.read_text() for path in sorted((REPO / "configs").glob("*.yaml"))}
# configs/large.yaml (36M parameters) is only fuzzed with --dry-run.
SMALL = [name for name in CONFIGS if name != "large"]

# ICNN_FUZZ_EXAMPLES=2000 fuzzes longer, with fresh random draws (not part of make test).
LONG_RUN = os.environ.get("ICNN_FUZZ_EXAMPLES")
EXAMPLES = int(LONG_RUN or 80)

RETYPED = ["x", "", [], {}, None, True, 1.5, -1, [1, "a"], {"name": 3}, "derive", "-"]
JUNK = [
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\x1b[2J",
    b"\x07",
    b"\t",
    b"\r",
    b"\n",
    b"{",
    b"]",
    b":",
    b": ",
    b"- ",
    b"? ",
    b"&a ",
    b"*a",
    b"'",
    b'"',
    b"#",
    b"%YAML 1.1\n",
    b"---\n",
    b"!!python/object/apply:os.system ",
    b"\xef\xbb\xbf",
]
# Flags that need no devices beyond one CPU and cannot start a multi-process group.
FLAG_SETS = [
    [],
    [],
    [],
    [],
    ["--force"],
    ["--json"],
    ["--seed", "7"],
    ["--seed", "-1"],
    ["--seed", str(2**32)],
    ["--seeds", "0:2"],
    ["--seeds", "0,0"],
    ["--seeds", "2:1"],
    ["--seeds", "0:2", "--resume"],
    ["--resume"],
    ["--seed", "1", "--seeds", "0:2"],
    ["--mesh", "1"],
    ["--mesh", "2"],
    ["--mesh", "0"],
    ["--mesh", "2x"],
    ["--platform", "cpu"],
]


def leaf_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path and list index path in a parsed config, containers included."""
    paths = []
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        paths.append((*prefix, key))
        if isinstance(value, dict | list) and value:
            paths.extend(leaf_paths(value, (*prefix, key)))
    return paths


def parent_of(data: Any, path: tuple) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


def mutate_structure(data: dict, draw: Any, allow_growth: bool) -> tuple[dict, str]:
    """One schema-level mutation of a parsed config; returns it and what was done."""
    data = copy.deepcopy(data)
    paths = leaf_paths(data)
    kinds = ["keep", "keep", "drop", "retype", "number", "add"]
    kind = draw(st.sampled_from(kinds), label="structure mutation")
    if kind == "keep":
        return data, kind
    if kind == "add":
        path = draw(st.sampled_from([p for p in paths if isinstance(p[-1], str)] or [("x",)]))
        parent = parent_of(data, path)
        name = draw(st.sampled_from(["extra", "dim_hiden", "seed", "model", path[-1] + "_"]))
        parent[name] = draw(st.sampled_from(RETYPED))
        return data, f"add {name!r} beside {path}"
    if kind == "drop":
        path = draw(st.sampled_from(paths))
        del parent_of(data, path)[path[-1]]
        return data, f"drop {path}"
    if kind == "retype":
        path = draw(st.sampled_from(paths))
        parent_of(data, path)[path[-1]] = draw(st.sampled_from(RETYPED))
        return data, f"retype {path}"
    numeric = [
        p
        for p in paths
        if isinstance(parent_of(data, p)[p[-1]], int | float)
        and not isinstance(parent_of(data, p)[p[-1]], bool)
    ]
    if not numeric:
        return data, "no number to change"
    path = draw(st.sampled_from(numeric))
    value = parent_of(data, path)[path[-1]]
    choices = ["negative", "zero", "float", "string", "2**32"]
    if allow_growth:
        choices += ["huge", "2**64"]
    how = draw(st.sampled_from(choices))
    parent_of(data, path)[path[-1]] = {
        "negative": -abs(value) - 1,
        "zero": 0,
        "float": value + 0.5,
        "string": str(value),
        "2**32": 2**32,
        "huge": value * 10**12,
        "2**64": 2**64,
    }[how]
    return data, f"number {path} -> {how}"


def mutate_bytes(text: bytes, draw: Any) -> tuple[bytes, str]:
    """Junk inserted, a line duplicated, or the file cut: edits YAML's parser sees."""
    kind = draw(st.sampled_from(["keep", "keep", "keep", "junk", "duplicate line", "truncate"]))
    if kind == "keep" or not text:
        return text, "bytes kept"
    if kind == "junk":
        at = draw(st.integers(0, len(text)))
        junk = draw(st.sampled_from(JUNK))
        return text[:at] + junk + text[at:], f"insert {junk!r} at {at}"
    lines = text.splitlines(keepends=True)
    if kind == "duplicate line":
        index = draw(st.integers(0, len(lines) - 1))
        return b"".join([*lines[: index + 1], lines[index], *lines[index + 1 :]]), (
            f"duplicate line {index + 1}"
        )
    at = draw(st.integers(0, len(text) - 1))
    return text[:at], f"truncate at {at}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the shipped samples beside the configs, as in configs/."""
    directory = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(REPO / "configs" / "samples", directory / "samples")
    return directory


COUNTER = itertools.count()


@pytest.mark.slow  # 3.6 s of CPU on a warm cache (--cpu-durations)
@settings(
    max_examples=EXAMPLES,
    derandomize=LONG_RUN is None,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_configs_and_flags_end_in_exit_0_or_2(data, runner, workspace):
    from icnn_cli.cli import app

    draw = data.draw
    # one example in six runs for real, from a small config with no growing mutation
    real = draw(st.sampled_from([False] * 5 + [True]), label="real run")
    name = draw(st.sampled_from(SMALL if real else list(CONFIGS)), label="config")
    parsed, structure = mutate_structure(yaml.safe_load(CONFIGS[name]), draw, not real)
    text = yaml.safe_dump(parsed, sort_keys=False).encode()
    text, byte_edit = mutate_bytes(text, draw)
    flags = list(draw(st.sampled_from(FLAG_SETS), label="flags"))
    from_stdin = draw(st.sampled_from([False] * 3 + [True]), label="stdin")
    if not real:
        flags.append("--dry-run")

    number = next(COUNTER)
    config = workspace / f"cfg-{number}.yaml"
    config.write_bytes(text)
    out = workspace / f"out-{number}"
    before = sorted(path.name for path in workspace.iterdir())
    args = ["init", "-c", "-" if from_stdin else str(config), "--out", str(out), *flags]
    note(f"{name}: {structure}; {byte_edit}; stdin={from_stdin}\nargs: {args}\n{text!r}")

    result = runner.invoke(app, args, input=text if from_stdin else None, catch_exceptions=False)

    note(f"exit {result.exit_code}\nstderr: {result.stderr}")
    event(f"exit {result.exit_code}{'' if '--dry-run' in flags else ' (real run)'}")
    assert "Traceback" not in result.stderr
    assert result.exit_code in (0, 1, 2), result.stderr
    if result.exit_code != 0:
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("icnn: error: ")
        assert "unexpected failure" not in lines[0]
        assert result.stdout == ""
    # a runtime failure (exit 1) must name its cause; none is expected from these inputs
    assert result.exit_code != 1, result.stderr
    wrote = result.exit_code == 0 and "--dry-run" not in flags
    assert out.exists() == wrote, result.stderr
    after = sorted(path.name for path in workspace.iterdir())
    assert after == sorted([*before, out.name] if wrote else before)
    if wrote:
        shutil.rmtree(out)
    config.unlink()
