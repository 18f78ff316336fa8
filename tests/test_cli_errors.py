"""Bad input: exit 2, one line on stderr naming file and field, no traceback, nothing written."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import run_icnn, tiny_model

GOOD_MODEL = "model: {dim_data: 2, dim_hidden: [8]}\n"


def model_with(line: str) -> str:
    return f"model:\n  dim_data: 2\n  dim_hidden: [8]\n  {line}\n"


def init_with(line: str) -> str:
    return f"{GOOD_MODEL}init:\n  {line}\n"


def samples_config(source: Any, target: Any = None) -> Callable[[Path], list]:
    """A Gaussian-map config whose source sample is ``source`` (an array, or a callable
    that makes the file); the target is a valid sample unless given."""

    def setup(tmp: Path) -> list:
        for name, content in (("source.npy", source), ("target.npy", target)):
            if content is None:
                np.save(tmp / name, np.random.default_rng(0).standard_normal((16, 2)))
            elif callable(content):
                content(tmp / name)
            else:
                np.save(tmp / name, content, allow_pickle=True)
        return init_args(
            tmp,
            "model:\n  dim_data: 2\n  dim_hidden: [8]\n"
            "  gaussian_map_samples: {source: source.npy, target: target.npy}\n",
        )

    return setup


def init_args(tmp: Path, text: str, *extra: Any) -> list:
    (tmp / "cfg.yaml").write_text(text)
    return ["init", "-c", tmp / "cfg.yaml", "--out", tmp / "out", *extra]


def config_text(text: str, *extra: Any) -> Callable[[Path], list]:
    return lambda tmp: init_args(tmp, text, *extra)


def not_a_checkpoint(command: str, make: Callable[[Path], Path]) -> Callable[[Path], list]:
    if command == "diff":
        return lambda tmp: [command, make(tmp), tmp / "other-side-is-never-reached"]
    return lambda tmp: [command, make(tmp)]


def make_dir(name: str, *files: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.mkdir()
        for file in files:
            (path / file).parent.mkdir(parents=True, exist_ok=True)
            (path / file).write_text("{}")
        return path

    return make


def make_file(tmp: Path) -> Path:
    (tmp / "file.txt").write_text("not a checkpoint")
    return tmp / "file.txt"


def write_bytes(content: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(content)


def non_utf8_config(tmp: Path) -> list:
    (tmp / "cfg.yaml").write_bytes(b"model: \xff\xfe\n")
    return ["init", "-c", tmp / "cfg.yaml"]


def out_at(make_out: Callable[[Path], Path], *extra: Any) -> Callable[[Path], list]:
    def setup(tmp: Path) -> list:
        out = make_out(tmp)
        return [*init_args(tmp, GOOD_MODEL)[:-1], out, *extra]

    return setup


def existing_file(tmp: Path) -> Path:
    (tmp / "taken").write_text("x")
    return tmp / "taken"


PICKLED = np.array([{"a": 1}, None], dtype=object)

# One row per kind of bad input: (how to make it, what the one stderr line must say).
BAD_INPUT: dict[str, tuple[Callable[[Path], list], str]] = {
    # --- the config file itself
    "config: missing file": (
        lambda tmp: ["init", "-c", tmp / "nope.yaml"],
        "config file not found",
    ),
    "config: a directory": (
        lambda tmp: ["init", "-c", tmp],
        "config is a directory, expected a YAML file",
    ),
    "config: not UTF-8": (
        non_utf8_config,
        "config is not UTF-8 text",
    ),
    "config: empty file": (config_text(""), "config is empty"),
    "config: only comments": (config_text("# nothing here\n"), "config is empty"),
    "config: YAML syntax error": (config_text("model: [dim_data: 2\n"), "cfg.yaml:2:1: YAML error"),
    "config: top level is a list": (config_text("- 1\n- 2\n"), "top level must be a mapping"),
    "config: top level is a scalar": (config_text("42\n"), "top level must be a mapping"),
    "config: duplicate key": (
        config_text("model:\n  dim_data: 2\n  dim_data: 3\n  dim_hidden: [8]\n"),
        "cfg.yaml:3:3: model.dim_data: duplicate key (first given on line 2",
    ),
    "config: duplicate section": (
        config_text(f"{GOOD_MODEL}{GOOD_MODEL}"),
        "cfg.yaml:2:1: model: duplicate key",
    ),
    "config: unknown section": (
        config_text(f"{GOOD_MODEL}intit: {{seed: 1}}\n"),
        "cfg.yaml:2:1: (top level): unknown key 'intit' (did you mean 'init'?)",
    ),
    "config: unknown key": (
        config_text("model:\n  dim_data: 2\n  dim_hiden: [8]\n"),
        "cfg.yaml:3:3: model: unknown key 'dim_hiden' (did you mean 'dim_hidden'?)",
    ),
    "config: unknown init key": (
        config_text(init_with("sede: 3")),
        "init: unknown key 'sede' (did you mean 'seed'?)",
    ),
    "config: missing model section": (
        config_text("init: {seed: 1}\n"),
        "(top level): missing required key 'model'",
    ),
    "config: missing dim_hidden": (
        config_text("model: {dim_data: 2}\n"),
        "model: missing required key 'dim_hidden'",
    ),
    # --- wrong types and out-of-range values
    "type: dim_data is a string": (
        config_text("model: {dim_data: two, dim_hidden: [8]}\n"),
        "model.dim_data: expected a whole number, got 'two'",
    ),
    "type: dim_data is a float": (
        config_text("model: {dim_data: 2.5, dim_hidden: [8]}\n"),
        "model.dim_data: expected a whole number, got 2.5",
    ),
    "type: dim_hidden is not a list": (
        config_text("model: {dim_data: 2, dim_hidden: 8}\n"),
        "model.dim_hidden: expected a list, got 8",
    ),
    "type: pos_weights is not a bool": (
        config_text(model_with("pos_weights: maybe")),
        "model.pos_weights: expected true or false, got 'maybe'",
    ),
    "type: output is not a string": (
        config_text(f"{GOOD_MODEL}output: [a]\n"),
        "output: expected text, got ['a']",
    ),
    "range: dim_data 0": (
        config_text("model:\n  dim_data: 0\n  dim_hidden: [8]\n"),
        "cfg.yaml:2:3: model.dim_data: must be greater than 0, got 0",
    ),
    "range: dim_data negative": (
        config_text("model: {dim_data: -3, dim_hidden: [8]}\n"),
        "model.dim_data: must be greater than 0, got -3",
    ),
    "range: dim_hidden empty": (
        config_text("model: {dim_data: 2, dim_hidden: []}\n"),
        "model.dim_hidden: needs at least 1 item, got []",
    ),
    "range: dim_hidden has a zero": (
        config_text("model: {dim_data: 2, dim_hidden: [8, 0]}\n"),
        "model.dim_hidden.1: must be greater than 0, got 0",
    ),
    "range: negative ranks": (config_text(model_with("ranks: -1")), "ranks must be >= 0, got -1"),
    "range: negative rank in a list": (
        config_text(model_with("ranks: [1, -2, 1]")),
        "ranks must be >= 0, got -2",
    ),
    "range: ranks list of the wrong length": (
        config_text(model_with("ranks: [1, 1]")),
        "cfg.yaml:4:3: model.ranks: a list needs len(dim_hidden) + 2 = 3 entries",
    ),
    # --- registry names and arguments
    "unknown activation": (
        config_text(model_with("act_fn: rellu")),
        "model.act_fn: unknown activation 'rellu'",
    ),
    "unknown rectifier": (
        config_text(model_with("rectifier_fn: nope")),
        "model.rectifier_fn: unknown activation 'nope'",
    ),
    "rectifier that can be negative": (
        config_text(model_with("rectifier_fn: elu")),
        "model.rectifier_fn: 'elu' can return negative values",
    ),
    "unknown initializer": (
        config_text(model_with("init_fn: lecun_normall")),
        "model.init_fn: unknown initializer 'lecun_normall'",
    ),
    "unknown initializer argument": (
        config_text(model_with("init_fn: {name: normal, sttdev: 0.1}")),
        "model.init_fn: initializer 'normal' takes no argument 'sttdev'",
    ),
    "initializer argument of the wrong type": (
        config_text(model_with("init_fn: {name: normal, stddev: big}")),
        "argument 'stddev' must be a finite number",
    ),
    "activation as a Python path": (
        config_text(model_with("act_fn: os.system")),
        "model.act_fn: unknown activation 'os.system'",
    ),
    **{
        f"non-convex activation {name}": (
            config_text(model_with(f"act_fn: {name}")),
            f"model.act_fn: '{name}' is not convex",
        )
        for name in ("tanh", "sigmoid", "gelu", "silu")
    },
    "decreasing activation (leaky_relu slope -1)": (
        config_text(model_with("act_fn: {name: leaky_relu, negative_slope: -1.0}")),
        "'leaky_relu' with negative_slope=-1.0 is not convex and non-decreasing",
    ),
    # --- init section
    "bad rng_impl": (
        config_text(init_with("rng_impl: mersenne")),
        "init.rng_impl: expected one of 'threefry2x32', 'rbg' or 'unsafe_rbg', got 'mersenne'",
    ),
    "bad dtype": (
        config_text(init_with("dtype: float64")),
        "init.dtype: expected one of 'float32'",
    ),
    "rngs entry negative": (
        config_text(init_with("rngs: {params: -1}")),
        "init.rngs.params: seed must be in 0..4294967295",
    ),
    "rngs entry not a seed": (
        config_text(init_with("rngs: {dropout: random}")),
        "init.rngs.dropout: a stream takes an integer seed or 'derive'",
    ),
    "rngs is not a mapping": (
        config_text(init_with("rngs: [params]")),
        "init.rngs: expected a mapping, got ['params']",
    ),
    "input_shape last dimension": (
        config_text(init_with("input_shape: [1, 3]")),
        "init.input_shape: last dimension must equal model.dim_data = 2",
    ),
    "input_shape with a zero": (
        config_text(init_with("input_shape: [0, 2]")),
        "init.input_shape.0: must be greater than 0, got 0",
    ),
    "input_shape is not a list": (
        config_text(init_with("input_shape: 2")),
        "init.input_shape: expected a list, got 2",
    ),
    # --- YAML tags that would construct Python objects
    "YAML python/object/apply tag": (
        config_text('model: !!python/object/apply:os.system ["touch PWNED"]\n'),
        "could not determine a constructor for the tag",
    ),
    "YAML python/name tag": (
        config_text(
            "model:\n  dim_data: 2\n  dim_hidden: [8]\n  act_fn: !!python/name:os.system\n"
        ),
        "could not determine a constructor for the tag",
    ),
    # --- seeds
    "seed negative in config": (config_text(init_with("seed: -1")), "init.seed: seed must be in"),
    "seed 2**32 in config": (
        config_text(init_with("seed: 4294967296")),
        "cfg.yaml:3:3: init.seed: seed must be in 0..4294967295",
    ),
    "seed float in config": (
        config_text(init_with("seed: 1.5")),
        "init.seed: seed must be an integer in 0..4294967295, got 1.5",
    ),
    "seed boolean in config": (
        config_text(init_with("seed: true")),
        "init.seed: seed must be an integer in 0..4294967295, got True",
    ),
    "seed string in config": (
        config_text(init_with("seed: seven")),
        "init.seed: seed must be an integer in 0..4294967295, got 'seven'",
    ),
    "--seed negative": (config_text(GOOD_MODEL, "--seed", -1), "--seed: seed must be in"),
    "--seed 2**32": (
        config_text(GOOD_MODEL, "--seed", 2**32),
        "--seed: seed must be in 0..4294967295, got 4294967296",
    ),
    # --- Gaussian-map samples
    "samples: missing file": (
        samples_config(lambda path: None),
        "model.gaussian_map_samples.source: sample file not found",
    ),
    "samples: a directory": (
        samples_config(lambda path: path.mkdir()),
        "model.gaussian_map_samples.source: sample file not a regular file",
    ),
    "samples: not a .npy file": (
        samples_config(write_bytes(b"1,2\n3,4\n")),
        "model.gaussian_map_samples.source: not a .npy file",
    ),
    "samples: a .npz archive": (
        samples_config(
            lambda path: (
                np.savez(path.with_suffix(".tmp"), np.ones((4, 2)))
                or path.with_suffix(".tmp.npz").rename(path)
            )
        ),
        "model.gaussian_map_samples.source: not a .npy file",
    ),
    "samples: 1-D array": (
        samples_config(np.zeros(8, np.float32)),
        "expected a 2-D array [n, 2], got shape (8,)",
    ),
    "samples: 3-D array": (
        samples_config(np.zeros((4, 2, 1), np.float32)),
        "expected a 2-D array [n, 2], got shape (4, 2, 1)",
    ),
    "samples: integer array": (
        samples_config(np.ones((8, 2), np.int64)),
        "expected a float array, got dtype int64",
    ),
    "samples: wrong feature dimension": (
        samples_config(np.ones((8, 3), np.float32)),
        "has 3 features per point, but model.dim_data is 2",
    ),
    "samples: NaN": (
        samples_config(np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]])),
        "contains NaN or inf",
    ),
    "samples: inf": (
        samples_config(None, np.array([[0.0, 1.0], [np.inf, 2.0], [1.0, 1.0]])),
        "model.gaussian_map_samples.target: contains NaN or inf",
    ),
    "samples: too few points": (
        samples_config(np.ones((1, 2), np.float32)),
        "needs at least 2 points for a covariance, got 1",
    ),
    "samples: pickled object array": (
        samples_config(PICKLED),
        "holds pickled Python objects, which are refused",
    ),
    # --- output paths
    "--out is an existing file": (
        out_at(existing_file),
        "exists and is a file, not a checkpoint directory",
    ),
    "--out under a file": (
        out_at(lambda tmp: existing_file(tmp) / "ckpt"),
        "is not a directory",
    ),
    "--force on a directory that is not a checkpoint": (
        out_at(make_dir("mine", "notes.txt"), "--force"),
        "is a non-empty directory that is not an Orbax checkpoint",
    ),
    # --- reading commands on things that are not checkpoints
    **{
        f"{command}: {what}": (not_a_checkpoint(command, make), expected)
        for command in ("inspect", "verify", "check", "diff")
        for what, make, expected in (
            ("missing path", lambda tmp: tmp / "nope", "no such checkpoint"),
            ("a file", make_file, "not an Orbax checkpoint (it is a file"),
            ("an empty directory", make_dir("empty"), "not an Orbax checkpoint (no _METADATA"),
            (
                "an Orbax tmp leftover",
                make_dir("ckpt.orbax-checkpoint-tmp-1732", "_METADATA"),
                "an unfinished save left this temporary directory",
            ),
            (
                "an icnn staging leftover",
                make_dir(".ckpt.icnn-staging-4242", "_METADATA"),
                "an unfinished save left this temporary directory",
            ),
            (
                "no commit marker",
                make_dir("uncommitted", "_METADATA", "_CHECKPOINT_METADATA"),
                "was never committed (no commit_success.txt, and no commit time in "
                "_CHECKPOINT_METADATA)",
            ),
            (
                "a directory of steps",
                make_dir("run", "100/_METADATA", "200/_METADATA"),
                "it holds step directories 100, 200",
            ),
        )
        # inspect reads a CheckpointManager root's latest step (tests/test_inspect_ci.py)
        if (command, what) != ("inspect", "a directory of steps")
    },
    # Orbax 0.5 on records a commit time when it finalizes a step; these have none.
    "inspect: a directory of uncommitted steps": (
        not_a_checkpoint(
            "inspect",
            make_dir(
                "run",
                "100/_METADATA",
                "100/_CHECKPOINT_METADATA",
                "200/_METADATA",
                "200/_CHECKPOINT_METADATA",
            ),
        ),
        "run/200: Orbax checkpoint was never committed",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, icnn, tmp_path):
    make_args, expected = BAD_INPUT[case]
    args = make_args(tmp_path)
    before = sorted(tmp_path.rglob("*"))

    result = icnn(*args)

    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("icnn: error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert sorted(tmp_path.rglob("*")) == before
    assert not (Path.cwd() / "PWNED").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["init", "-c", "cfg.yaml", "--seed", "seven"],
            "init: Invalid value for '--seed': expected a whole number, got 'seven'",
        ),
        (
            ["init", "-c", "cfg.yaml", "--seed", "1.5"],
            "init: Invalid value for '--seed': expected a whole number, got '1.5'",
        ),
        (
            ["inspect", "ckpt", "--format", "html"],
            "inspect: Invalid value for '--format': 'html' is not one of 'text', 'md', 'json'",
        ),
        (
            ["inspect", "ckpt", "--debug"],
            "inspect: No such option: --debug (--debug is a global option: put it before the "
            "command, 'icnn --debug inspect ...')",
        ),
        (["init", "--seed", "1"], "init: Missing option '--config'"),
        (["inspect", "a", "b"], "inspect: Got unexpected extra argument(s) (b)"),
        (
            ["verify", "ckpt", "--atol", "-1"],
            "verify: Invalid value for '--atol': must be at least 0.0, got '-1'",
        ),
        (["init", "-c", "cfg.yaml", "--bogus"], "init: No such option: --bogus"),
    ],
)
def test_bad_flags_in_a_real_process_are_one_line(args, expected, tmp_path):
    # Typer prints usage errors as a boxed panel; the entry point makes them one line.
    (tmp_path / "cfg.yaml").write_text(GOOD_MODEL)

    result = run_icnn(*args, cwd=tmp_path)

    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"icnn: error: {expected}")
    assert "Input should" not in result.stderr and "Value error" not in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cfg.yaml"]


def test_seed_flag_out_of_range_names_the_flag(icnn, write_config, tmp_path):
    result = icnn(
        "init", "-c", write_config({"model": tiny_model()}), "--seed", -1, "--out", tmp_path / "o"
    )

    assert result.exit_code == 2
    assert "icnn: error: --seed: seed must be in 0..4294967295, got -1" in result.stderr
    assert not (tmp_path / "o").exists()


def test_existing_out_is_refused_without_force(icnn, write_config, tmp_path):
    config = write_config({"model": tiny_model()})
    out = tmp_path / "ckpt"
    assert icnn("init", "-c", config, "--out", out).exit_code == 0
    before = sorted(p.name for p in out.iterdir())

    again = icnn("init", "-c", config, "--out", out, "--seed", 1)

    assert again.exit_code == 2
    assert f"--out {out}: already exists (pass --force to replace it)" in again.stderr
    assert sorted(p.name for p in out.iterdir()) == before


def test_force_replaces_with_the_new_seed(icnn, write_config, tmp_path):
    config = write_config({"model": tiny_model()})
    out = tmp_path / "ckpt"
    assert icnn("init", "-c", config, "--out", out, "--seed", 1, "--json").exit_code == 0

    result = icnn("init", "-c", config, "--out", out, "--seed", 2, "--force", "--json")
    inspected = icnn("inspect", out, "--json")

    assert result.exit_code == 0
    assert '"seed": 2' in inspected.stdout
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_unknown_platform_is_a_usage_error(icnn, write_config, tmp_path):
    result = icnn("init", "-c", write_config({"model": tiny_model()}), "--platform", "abacus")

    assert result.exit_code == 2
    assert "abacus" in result.stderr


def test_unavailable_platform_exits_2_naming_the_flag(icnn, write_config, tmp_path):
    result = icnn(
        "init",
        "-c",
        write_config({"model": tiny_model()}),
        "--platform",
        "tpu",
        "--out",
        tmp_path / "o",
    )

    assert result.exit_code == 2
    assert "icnn: error: --platform tpu: no TPU backend is available here" in result.stderr
    assert not (tmp_path / "o").exists()


def test_inspect_missing_path_exits_2(icnn, tmp_path):
    result = icnn("inspect", tmp_path / "nope")

    assert result.exit_code == 2
    assert result.stderr.strip() == f"icnn: error: {tmp_path / 'nope'}: no such checkpoint"


def test_inspect_directory_that_is_not_a_checkpoint_exits_2(icnn, tmp_path):
    (tmp_path / "plain").mkdir()

    result = icnn("inspect", tmp_path / "plain")

    assert result.exit_code == 2
    assert "not an Orbax checkpoint" in result.stderr


needs_permission_bits = pytest.mark.skipif(
    os.geteuid() == 0, reason="root reads and writes regardless of permission bits"
)


@needs_permission_bits
def test_unreadable_config_exits_2(icnn, write_config, tmp_path):
    config = write_config({"model": tiny_model()})
    config.chmod(0)

    result = icnn("init", "-c", config, "--out", tmp_path / "out")

    assert result.exit_code == 2
    assert (
        result.stderr == f"icnn: error: {config}: config file is not readable (permission denied)\n"
    )
    assert not (tmp_path / "out").exists()


@needs_permission_bits
def test_out_in_an_unwritable_directory_exits_2(icnn, write_config, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)

    result = icnn("init", "-c", write_config({"model": tiny_model()}), "--out", locked / "ckpt")

    assert result.exit_code == 2
    assert (
        f"icnn: error: --out {locked / 'ckpt'}: directory {locked} is not writable" in result.stderr
    )
    assert list(locked.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--debug", "inspect", "no-such-ckpt"], "icnn: error: no-such-ckpt: no such checkpoint"),
        (["--debug", "init", "-c", "cfg.yaml", "--bogus"], "init: No such option: --bogus"),
    ],
)
def test_debug_adds_the_traceback_and_keeps_the_exit_code(args, expected, tmp_path):
    (tmp_path / "cfg.yaml").write_text(GOOD_MODEL)

    result = run_icnn(*args, cwd=tmp_path)

    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert expected in result.stderr.splitlines()[-1]


def test_a_dry_run_onto_an_existing_out_warns_that_the_run_would_be_refused(
    icnn, write_config, tmp_path
):
    config = write_config(GOOD_MODEL)
    (tmp_path / "ckpt").mkdir()

    warned = icnn("init", "-c", config, "--out", tmp_path / "ckpt", "--dry-run")
    forced = icnn("init", "-c", config, "--out", tmp_path / "ckpt", "--dry-run", "--force")
    fresh = icnn("init", "-c", config, "--out", tmp_path / "new", "--dry-run")

    assert warned.exit_code == forced.exit_code == fresh.exit_code == 0
    assert warned.stderr == (
        "icnn: warning: the run without --dry-run would be refused: "
        f"--out {tmp_path / 'ckpt'}: already exists (pass --force to replace it)\n"
    )
    assert forced.stderr == fresh.stderr == ""
    assert "checkpoint   ~" in warned.stdout and "peak memory  ~" in warned.stdout
    assert "at its peak" not in warned.stdout
