"""Two `icnn init` processes of 4 CPU devices each write one checkpoint over 127.0.0.1.

As on a cluster, every process runs the same command with its own --process-id;
gloo carries the collectives between them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from tests.helpers import (
    ICNN,
    assert_trees_identical,
    restore_onto_one_device,
    restore_plain,
    tiny_model,
)

PROCESSES = 2
TIMEOUT = 300  # a safety net against a hang, far above a normal run


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_processes(*args, per_process=lambda index: ()):
    """Start every process of the group, then wait for all; returns their CompletedProcess."""
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "NO_COLOR": "1",
    }
    coordinator = f"127.0.0.1:{free_port()}"
    commands = [
        [str(ICNN), "init", *map(str, args), *map(str, per_process(index))]
        + ["--coordinator", coordinator, "--num-processes", str(PROCESSES)]
        + ["--process-id", str(index)]
        for index in range(PROCESSES)
    ]
    running = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for command in commands
    ]
    finished = []
    for command, process in zip(commands, running, strict=True):
        stdout, stderr = process.communicate(timeout=TIMEOUT)
        finished.append(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
    return finished


@pytest.mark.slow
def test_two_processes_write_one_checkpoint_equal_to_one_device(icnn, write_config, tmp_path):
    # Split over 'y' only, this kernel has a copy on each process (axis 'x' spans
    # the processes): its fingerprint must count one copy, not both.
    rule = {"path": "params/w_zs_0/kernel", "spec": [None, "y"]}
    config = write_config(
        {
            "model": tiny_model(dim_data=4, dim_hidden=[16, 8]),
            "sharding": {"min_bytes": 0, "rules": [rule]},
        }
    )
    out = tmp_path / "ckpt"

    first, second = run_processes("-c", config, "--out", out, "--mesh", "2x4", "--json")
    single = icnn("init", "-c", config, "--out", tmp_path / "single", "--json")

    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads(first.stdout)  # exactly one JSON document: gloo's chatter is on stderr
    assert second.stdout == ""  # only process 0 prints the summary
    assert summary["spec"]["device"] == "cpu: 8 devices (cpu), mesh x=2 y=4, 2 processes"
    assert summary["spec"]["fingerprint"] == json.loads(single.stdout)["spec"]["fingerprint"]
    layout = {leaf["path"]: leaf["sharding"] for leaf in summary["leaves"]}
    assert layout["params/w_xs_0/quad_kernel"] == "P(('x', 'y'))"  # (16, 4, 1)
    assert layout["params/w_zs_0/kernel"] == "P(None, 'y')"
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= {path.name for path in out.iterdir()}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cfg.yaml", "ckpt", "single"]
    assert_trees_identical(restore_onto_one_device(out), restore_plain(tmp_path / "single"))


@pytest.mark.slow
def test_processes_given_different_commands_stop_together(write_config, tmp_path):
    config = write_config({"model": tiny_model()})

    results = run_processes(
        "-c", config, "--out", tmp_path / "ckpt", per_process=lambda index: ["--seed", index]
    )

    for result in results:
        assert result.returncode == 2, result.stderr[-3000:]
        assert (
            "icnn: error: process 1 was given a different config, --seed, --out or --force than "
            "process 0; every process must run the same icnn init command\n"
        ) in result.stderr
        assert result.stdout == ""
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.slow
def test_distributed_outside_a_cluster_says_which_flags_to_pass(write_config, tmp_path):
    config = write_config({"model": tiny_model()})
    cluster_variables = ("SLURM_", "OMPI_", "JAX_COORDINATOR", "KUBERNETES_", "TPU_")
    env = {
        name: value for name, value in os.environ.items() if not name.startswith(cluster_variables)
    }

    result = subprocess.run(
        [str(ICNN), "init", "-c", str(config), "--out", str(tmp_path / "ckpt"), "--distributed"],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
    )

    assert result.returncode == 2
    assert result.stderr.startswith("icnn: error: --distributed: ")
    assert "pass --coordinator, --num-processes and --process-id" in result.stderr
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.slow
def test_an_existing_out_stops_every_process_with_exit_2(write_config, tmp_path):
    config = write_config({"model": tiny_model()})
    out = tmp_path / "ckpt"
    out.mkdir()  # process 0 alone checks --out (it commits the checkpoint)

    first, second = run_processes("-c", config, "--out", out)

    refusal = f"icnn: error: --out {out}: already exists (pass --force to replace it)"
    assert (first.returncode, second.returncode) == (2, 2), second.stderr[-3000:]
    assert first.stderr.endswith(f"{refusal}\n")
    assert second.stderr.endswith(f"{refusal} (process 0, while preparing the init)\n")
    assert first.stdout == second.stdout == ""


def test_a_failure_record_carries_the_class_parameter_and_value():
    from icnn_cli.distributed import _error_from_record, _failure_record
    from icnn_cli.errors import OutputExists, RuntimeFailure, param

    refused = OutputExists(f"already exists (pass {param('force')})", parameter="out", value="c")
    failed = ValueError("boom")

    agreed = _error_from_record(_failure_record(refused), 0, "preparing the init")
    crashed = _error_from_record(_failure_record(failed), 1, "preparing the init")
    cut_short = _error_from_record(_failure_record(refused)[:20], 0, "preparing the init")

    assert type(agreed) is OutputExists
    assert (agreed.parameter, agreed.value) == ("out", "c")
    assert agreed.problem == refused.problem + " (process 0, while preparing the init)"
    assert type(crashed) is RuntimeFailure
    assert crashed.problem == "ValueError: boom (process 1, while preparing the init)"
    assert type(cut_short) is RuntimeFailure
