"""Sharded init on a device mesh: the layout rules, and bit-identity with the one-device init.

JAX reads ``XLA_FLAGS`` once, when it starts, and this test process already runs
on one CPU device; the 8-device cases therefore run in a subprocess started with
``--xla_force_host_platform_device_count=8``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import icnn_cli
from icnn_cli.config import ShardingConfig
from icnn_cli.errors import IcnnError
from icnn_cli.sharding import default_spec, describe_spec, parse_mesh, partition_specs
from tests.helpers import (
    assert_trees_identical,
    restore_onto_one_device,
    restore_plain,
    tiny_model,
)

X8 = (("x", 8),)
XY = (("x", 2), ("y", 4))
MIB = 1 << 20


@pytest.mark.parametrize(
    ("shape", "nbytes", "axes", "expected"),
    [
        ((16, 32), MIB, X8, (None, "x")),  # the largest dimension
        ((32, 32), MIB, X8, ("x",)),  # of equal ones, the first
        ((12, 24), MIB, X8, (None, "x")),
        ((24, 12), MIB, X8, ("x",)),
        ((6, 10), MIB, X8, ()),  # nothing divisible: replicated
        ((64, 64), MIB - 1, X8, ()),  # below min_bytes: replicated
        ((), MIB, X8, ()),
        ((3, 40, 8), MIB, XY, (None, ("x", "y"))),  # all axes at once
    ],
)
def test_default_rule(shape, nbytes, axes, expected):
    assert default_spec(shape, nbytes, axes, min_bytes=MIB) == expected


def test_rules_override_the_default_first_match_wins():
    config = ShardingConfig(
        min_bytes=0,
        rules=[
            {"path": "params/w_zs_*/kernel", "spec": [None, "y"]},
            {"path": "params/*", "spec": [["x", "y"]]},
            {"path": "params/w_zs_0/kernel", "spec": []},  # shadowed by the first rule
        ],
    )
    leaves = {
        ("params", "w_zs_0", "kernel"): ((8, 8), 256),
        ("params", "w_xs_0", "bias"): ((16,), 64),
        ("batch_stats", "mean"): ((16,), 64),
    }

    specs = partition_specs(leaves, XY, config)

    assert specs == {
        ("params", "w_zs_0", "kernel"): (None, "y"),
        ("params", "w_xs_0", "bias"): (("x", "y"),),
        ("batch_stats", "mean"): (("x", "y"),),  # default rule
    }
    assert [describe_spec(spec) for spec in specs.values()] == [
        "P(None, 'y')",
        "P(('x', 'y'))",
        "P(('x', 'y'))",
    ]
    assert describe_spec((None, None)) == "replicated"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"path": "params/k", "spec": ["z"]}, "sharding.rules[0].spec: unknown mesh axis 'z'"),
        ({"path": "params/k", "spec": ["x", "x"]}, "mesh axis 'x' is used twice"),
        ({"path": "params/k", "spec": [None, None, "x"]}, "3 entries for params/k of shape"),
        ({"path": "params/k", "spec": [None, "y"]}, "dimension 1 of params/k has size 6"),
        ({"path": "params/w_*", "spec": []}, "sharding.rules[0].path: 'params/w_*' matches no"),
    ],
)
def test_bad_rules_name_the_rule(rule, message):
    config = ShardingConfig(rules=[rule])

    with pytest.raises(IcnnError, match="^sharding") as error:
        partition_specs({("params", "k"): ((8, 6), 192)}, XY, config)

    assert message in error.value.message


def test_parse_mesh():
    assert parse_mesh("8") == [8]
    assert parse_mesh("2x4") == [2, 4]
    for bad in ("", "2x", "0", "x4", "2*4", "-1"):
        with pytest.raises(IcnnError) as error:
            parse_mesh(bad)
        assert error.value.parameter == "mesh"
        assert error.value.value == bad
        assert error.value.problem.startswith("expected positive sizes")


@pytest.mark.slow  # 2.4 s of CPU on a warm cache (--cpu-durations)
def test_mesh_of_one_device_gives_the_plain_init_and_shows_the_layout(icnn, write_config, tmp_path):
    config = write_config({"model": tiny_model(), "sharding": {"min_bytes": 0}})

    plain = icnn("init", "-c", config, "--out", tmp_path / "plain", "--json")
    meshed = icnn("init", "-c", config, "--out", tmp_path / "mesh", "--mesh", "1", "--json")
    inspected = icnn("inspect", tmp_path / "mesh", "--json")

    assert plain.exit_code == meshed.exit_code == inspected.exit_code == 0, meshed.stderr
    assert_trees_identical(restore_plain(tmp_path / "mesh"), restore_plain(tmp_path / "plain"))
    summary = json.loads(meshed.stdout)
    assert summary["spec"]["fingerprint"] == json.loads(plain.stdout)["spec"]["fingerprint"]
    assert summary["spec"]["device"] == "cpu: 1 device (cpu), mesh x=1"
    layout = {leaf["path"]: leaf["sharding"] for leaf in summary["leaves"]}
    assert layout["params/w_zs_0/kernel"] == "P('x')"  # (8, 8): split along dimension 0
    assert layout["params/w_xs_0/lin_kernel"] == "P(None, 'x')"  # (2, 8)
    assert "sharding" not in json.loads(plain.stdout)["leaves"][0]
    assert [leaf["sharding"] for leaf in json.loads(inspected.stdout)["leaves"]] == [
        leaf["sharding"] for leaf in summary["leaves"]
    ]


@pytest.mark.parametrize(
    ("args", "sharding", "message"),
    [
        (
            ["--mesh", "2"],
            {},
            "--mesh 2: needs 2 devices, but JAX sees 1 cpu device(s) in this process (on CPU, "
            "XLA_FLAGS=--xla_force_host_platform_device_count=2 gives 2 devices)",
        ),
        (["--mesh", "8"], {"axes": ["a", "b"]}, "--mesh 8: sharding.axes: 2 names for a mesh"),
        (["--mesh", "2x"], {}, "--mesh 2x: expected positive sizes joined by 'x'"),
        (["--coordinator", "nohost"], {}, "--coordinator nohost: expected HOST:PORT"),
        (["--num-processes", "2", "--process-id", "2"], {}, "--process-id 2: must be below"),
    ],
)
def test_bad_mesh_or_process_flags_exit_2(args, sharding, message, icnn, write_config, tmp_path):
    config = write_config({"model": tiny_model(), "sharding": sharding})

    result = icnn("init", "-c", config, "--out", tmp_path / "ckpt", *args)

    assert result.exit_code == 2
    assert result.stderr.startswith(f"icnn: error: {message}")
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "ckpt").exists()


def test_sharding_section_is_validated_with_its_line(icnn, write_config, tmp_path):
    config = write_config(
        "model: {dim_data: 2, dim_hidden: [8]}\nsharding:\n  mesh: [2, 4]\n  axes: [data]\n"
    )

    result = icnn("init", "-c", config, "--out", tmp_path / "ckpt")

    assert result.exit_code == 2
    assert result.stderr.startswith(
        "icnn: error: " + str(config) + ":4:3: sharding.axes: 1 names for a mesh of 2"
    )


EIGHT_DEVICES = """
import json, sys
from pathlib import Path
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P
from icnn_cli.fingerprint import fingerprint
from icnn_cli.cli import app
from icnn_cli.sharding import host_blocks

config, out = sys.argv[1], Path(sys.argv[2])
try:
    app(["init", "-c", config, "--out", str(out), "--mesh", "2x4", "--json"])
except SystemExit as exit:
    assert not exit.code, exit.code
# README, "Restoring on another mesh": target shardings for a 2x2 mesh of other devices
mesh = jax.make_mesh((2, 2), ("a", "b"), devices=jax.devices()[4:])
with ocp.StandardCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(out.absolute()).item_metadata.tree
    def onto_mesh(meta):
        spec = P("a") if meta.shape[0] % 2 == 0 else P()
        return jax.ShapeDtypeStruct(meta.shape, meta.dtype, sharding=NamedSharding(mesh, spec))

    target = jax.tree.map(onto_mesh, metadata)
    restored = checkpointer.restore(out.absolute(), target)
leaf = restored["params"]["w_zs_0"]["kernel"]
# The fingerprint of a leaf split across processes reads it in blocks of rows
# put together from the shards; blocks of 5 rows cross the shard boundaries.
values = np.arange(24 * 40, dtype=np.float32).reshape(24, 40) * -1.0  # -0.0 first
grid = jax.make_mesh((2, 4), ("data", "model"))
gathered = []
for spec in (P("data"), P(None, "model"), P(("data", "model")), P("model", "data"), P()):
    split = jax.device_put(values, NamedSharding(grid, spec))
    blocks = host_blocks(split, budget=5 * 40 * 4)
    gathered.append(b"".join(block.tobytes() for block in blocks) == values.tobytes())
print(json.dumps({
    "gathered": gathered,
    "fingerprint": fingerprint(restored),
    "devices": sorted(device.id for device in leaf.sharding.device_set),
    "spec": list(leaf.sharding.spec),
}), file=sys.stderr)
"""


@pytest.mark.slow
def test_eight_devices_write_what_one_device_writes(icnn, write_config, tmp_path):
    config = write_config(
        {
            "model": tiny_model(dim_data=4, dim_hidden=[16, 8], ranks=2),
            "init": {"dtype": "bfloat16"},
            "sharding": {
                "axes": ["data", "model"],
                "min_bytes": 0,
                "rules": [{"path": "params/w_zs_0/kernel", "spec": [None, "model"]}],
            },
        }
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}

    worker = subprocess.run(
        [sys.executable, "-c", EIGHT_DEVICES, str(config), str(tmp_path / "sharded")],
        capture_output=True,
        text=True,
        env=env,
    )
    single = icnn("init", "-c", config, "--out", tmp_path / "single", "--json")

    assert worker.returncode == 0, worker.stderr[-3000:]
    written = json.loads(worker.stdout)
    assert written["spec"]["device"] == "cpu: 8 devices (cpu), mesh data=2 model=4"
    layout = {leaf["path"]: leaf["sharding"] for leaf in written["leaves"]}
    assert layout["params/w_zs_0/kernel"] == "P(None, 'model')"  # the rule
    assert layout["params/w_xs_0/diag_kernel"] == "P(None, ('data', 'model'))"  # default
    assert layout["params/w_xs_2/bias"] == "replicated"  # shape (1,)
    expected = restore_plain(tmp_path / "single")
    assert_trees_identical(restore_onto_one_device(tmp_path / "sharded"), expected)
    assert_trees_identical(icnn_cli.load(tmp_path / "sharded")[1], expected)  # one device here
    assert icnn("inspect", tmp_path / "sharded", "--stats").exit_code == 0
    verified = icnn("verify", tmp_path / "sharded", "--json")  # re-runs on one device
    assert verified.exit_code == 0, verified.stdout
    assert written["spec"]["fingerprint"] == json.loads(single.stdout)["spec"]["fingerprint"]
    on_other_mesh = json.loads(worker.stderr.strip().splitlines()[-1])
    assert on_other_mesh["fingerprint"] == written["spec"]["fingerprint"]
    assert on_other_mesh["devices"] == [4, 5, 6, 7]
    assert on_other_mesh["spec"] == ["a"]
    assert on_other_mesh["gathered"] == [True] * 5
    assert np.asarray(expected["params"]["w_zs_0"]["kernel"]).dtype.name == "bfloat16"


def test_sharded_init_refuses_layout_dependent_random_bits(icnn, write_config, tmp_path):
    import jax

    config = write_config({"model": tiny_model()})
    jax.config.update("jax_threefry_partitionable", False)
    try:
        result = icnn("init", "-c", config, "--out", tmp_path / "ckpt", "--mesh", "1")
    finally:
        jax.config.update("jax_threefry_partitionable", True)

    assert result.exit_code == 2
    assert "a sharded init needs jax_threefry_partitionable on" in result.stderr
    assert not (tmp_path / "ckpt").exists()
