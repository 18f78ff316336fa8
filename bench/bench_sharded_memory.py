"""Peak memory per process of a multi-process ``icnn init``: near its share, not the whole model.

Runs ``icnn init`` as N processes on this machine (CPU devices forced by
``XLA_FLAGS``, gloo between processes, as on a cluster) for a model N times
larger than one process's share, and reads each process's peak resident set
size from ``wait4``. The JAX runtime alone costs a few hundred MiB, so the same
processes also init a tiny model: the difference is what the model itself costs
each process. A one-process, one-device init of the same model is the reference.

Usage::

    .venv/bin/python bench/bench_sharded_memory.py                 # 4 processes x 2 devices
    .venv/bin/python bench/bench_sharded_memory.py --dim-data 16384 --hidden 2048
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ICNN = Path(sys.executable).parent / "icnn"
MIB = 1 << 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_config(directory: Path, name: str, dim_data: int, hidden: int) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(f"model: {{dim_data: {dim_data}, dim_hidden: [{hidden}, {hidden}]}}\n")
    return path


def run_group(
    config: Path, out: Path, processes: int, devices: int, mesh: bool
) -> list[tuple[int, int, str, str]]:
    """Start the processes and reap each with ``wait4``.

    Returns:
      per process: exit code, peak RSS in bytes, stdout, stderr.
    """
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "NO_COLOR": "1",
    }
    command = [str(ICNN), "init", "-c", str(config), "--out", str(out), "--json"]
    if mesh:
        command += ["--mesh", str(processes * devices)]
    if processes > 1:
        command += ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", str(processes)]
    with contextlib.ExitStack() as files:
        started = []
        for index in range(processes):
            logs = [files.enter_context(tempfile.TemporaryFile("w+")) for _ in range(2)]
            extra = ["--process-id", str(index)] if processes > 1 else []
            process = subprocess.Popen(command + extra, stdout=logs[0], stderr=logs[1], env=env)
            started.append((process, logs))
        results = []
        for process, logs in started:
            # Popen.wait() drops the child's resource usage; wait4 returns it.
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            texts = []
            for log in logs:
                log.seek(0)
                texts.append(log.read())
            results.append((process.returncode, usage.ru_maxrss * 1024, *texts))  # KiB on Linux
        return results


def measure(args: argparse.Namespace, workdir: Path) -> dict:
    big = write_config(workdir, "big", args.dim_data, args.hidden)
    tiny = write_config(workdir, "tiny", 8 * args.processes * args.devices, 8)
    runs = {
        "tiny, sharded": run_group(tiny, workdir / "tiny", args.processes, args.devices, True),
        "model, sharded": run_group(big, workdir / "big", args.processes, args.devices, True),
        "model, one device": run_group(big, workdir / "one", 1, 1, False),
    }
    for name, results in runs.items():
        for code, _, _, stderr in results:
            if code != 0:
                raise SystemExit(f"{name}: icnn init failed ({code}): {stderr[-2000:]}")
    summary = json.loads(runs["model, sharded"][0][2])
    return {
        "model_bytes": summary["total_bytes"],
        "params": summary["total_params"],
        "peaks": {name: [peak for _, peak, _, _ in results] for name, results in runs.items()},
    }


def report(args: argparse.Namespace, measured: dict) -> str:
    total = measured["model_bytes"]
    share = total / args.processes
    runtime = max(measured["peaks"]["tiny, sharded"])
    lines = [
        f"model: dim_data {args.dim_data}, dim_hidden [{args.hidden}, {args.hidden}]: "
        f"{measured['params']:,} params, {total / MIB:.0f} MiB; {args.processes} processes x "
        f"{args.devices} CPU devices: share {share / MIB:.0f} MiB per process",
        "",
        "| run | process | peak RSS | minus runtime (tiny model) | in shares |",
        "|---|---|---|---|---|",
    ]
    for name, peaks in measured["peaks"].items():
        for index, peak in enumerate(peaks):
            extra = peak - runtime
            lines.append(
                f"| {name} | {index} | {peak / MIB:.0f} MiB | {extra / MIB:+.0f} MiB | "
                f"{extra / share:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--devices", type=int, default=2, help="CPU devices per process")
    parser.add_argument("--dim-data", type=int, default=8192)
    parser.add_argument("--hidden", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="icnn-bench-") as workdir:
        print(report(args, measure(args, Path(workdir))))


if __name__ == "__main__":
    main()
