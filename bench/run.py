"""``make bench``: icnn against the plain hand-written alternative, side by side -> BENCHMARKS.md.

Every timing is the wall time of a fresh process (what a CI step pays), the
median of several runs, with the runs of the things compared interleaved so a
change in machine load hits both. Peak memory is each child's own ``ru_maxrss``
(from ``os.wait4``). This script imports no JAX itself; the work happens in
children: ``icnn`` and the baseline scripts beside this file.

    python bench/run.py [--repeats 3] [--plain-sweep-runs 16] [--only 1,5] [--out BENCHMARKS.md]

Item 2 times ``--plain-sweep-runs`` back-to-back runs of the plain script and
scales them to 64 (64 real runs take 5-13 minutes on a 2-core machine, most of
``make bench``'s 15-minute budget); pass 64 to time them all.

Item 8 (``bench/bench_init_recipes.py``) trains OTT's ``W2NeuralDual`` from each
``init.recipe``: 36 short trainings, about 40 minutes on a 2-core machine; leave it out with
``--only 1,2,3,4,5,6,7,10``. Item 10 (``bench/bench_python_api.py``) times
``icnn_cli.init`` in a loop. Item 9, the GPU check (``bench/gpu_check.py``), runs by hand on
a GPU machine; its results file is kept verbatim.

With ``--only``, the sections of the items named are replaced in the existing
BENCHMARKS.md and the others kept, with a line in the header saying what was re-run, when
and under what load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BIN = Path(sys.executable).parent
ICNN = str(BIN / "icnn")
PYTHON = sys.executable
DEFAULT_CONFIG = REPO / "configs" / "default.yaml"
LARGE_HIDDEN = [7000, 7000, 7000]  # with dim_data 64: about 100 million parameters
LARGE_DIM_DATA = 64


@dataclasses.dataclass(frozen=True)
class Run:
    seconds: float
    max_rss_mib: float
    stdout: str


def run(
    argv: list[str],
    env: dict[str, str] | None = None,
    exit_codes: tuple[int, ...] = (0,),
    cwd: Path | None = None,
) -> Run:
    """Run a child to completion: its wall time, its own peak resident memory, its stdout.

    ``exit_codes`` are the ones that count as done (``icnn check`` exits 1 for a verdict)."""
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(
            argv,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "NO_COLOR": "1", **(env or {})},
            cwd=cwd,
        )
        # wait4, unlike wait, gives this one child's resource usage (peak RSS).
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        if child.returncode not in exit_codes:
            raise SystemExit(f"bench: {' '.join(argv)} failed:\n{stderr.read().decode()[-2000:]}")
        return Run(seconds, usage.ru_maxrss / 1024, stdout.read().decode())


def medians(jobs: dict[str, Callable[[int], Run]], repeats: int) -> dict[str, float]:
    """Median seconds of each job, the jobs interleaved run by run."""
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for index in range(repeats):
        for name, job in jobs.items():
            times[name].append(job(index).seconds)
    return {name: statistics.median(values) for name, values in times.items()}


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> list[tuple[str, str]]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    memory_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("jax", "jaxlib", "flax", "orbax-checkpoint", "ott-jax", "icnn-cli")
    )
    return [
        ("CPU", f"{cpu}, {os.cpu_count()} cores (as the OS reports them)"),
        ("memory", f"{memory_kib / 1024 / 1024:.1f} GiB"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("packages", versions),
    ]


class Report:
    def __init__(self) -> None:
        self.sections: list[str] = []

    def table(
        self, title: str, note: str, header: list[str], rows: list[list[str]], verdict: str = ""
    ) -> None:
        lines = [f"## {title}", "", note, "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        if verdict:
            lines += ["", verdict]
        self.sections.append("\n".join(lines) + "\n")
        print("\n".join(lines) + "\n", flush=True)


def ratio(base: float, other: float) -> str:
    return f"{base / other:.1f}x"


def goal(text: str, met: bool) -> str:
    return f"**Goal {text}: {'met' if met else 'not met'}.**"


def without_exported_init(cache: Path, job: Callable[[], Run]) -> Run:
    """``job`` with JAX's compiled programs in ``cache`` but no exported init (the path before
    the export cache: build the OTT module, trace it, load the compiled init)."""
    shutil.rmtree(cache / "exports", ignore_errors=True)
    return job()


def bench_single_init(work: Path, repeats: int, report: Report) -> float:
    warm_cache = work / "cache-warm"
    run(
        [ICNN, "init", "-c", str(DEFAULT_CONFIG), "--out", str(work / "warmup"), "--force"],
        {"ICNN_COMPILE_CACHE_DIR": str(warm_cache)},
    )
    jobs = {
        "plain script": lambda i: run(
            [PYTHON, str(BENCH / "plain_init.py"), str(work / f"plain-{i}"), "--seed", "0"]
        ),
        "icnn init, cold compile cache": lambda i: run(
            [ICNN, "init", "-c", str(DEFAULT_CONFIG), "--out", str(work / f"cold-{i}")],
            {"ICNN_COMPILE_CACHE_DIR": str(work / f"cache-cold-{i}")},
        ),
        "icnn init, warm compile cache, exported init deleted": lambda i: without_exported_init(
            warm_cache,
            lambda: run(
                [ICNN, "init", "-c", str(DEFAULT_CONFIG), "--out", str(work / f"warm-jit-{i}")],
                {"ICNN_COMPILE_CACHE_DIR": str(warm_cache)},
            ),
        ),
        "icnn init, warm (compiled program + exported init)": lambda i: run(
            [ICNN, "init", "-c", str(DEFAULT_CONFIG), "--out", str(work / f"warm-{i}")],
            {"ICNN_COMPILE_CACHE_DIR": str(warm_cache)},
        ),
    }
    times = medians(jobs, repeats)
    plain = times["plain script"]
    warm_share = times["icnn init, warm (compiled program + exported init)"] / plain
    cold_share = times["icnn init, cold compile cache"] / plain
    report.table(
        "1. One checkpoint: `icnn init` vs the plain script",
        f"`configs/default.yaml` (5,070 parameters). Plain script: `bench/plain_init.py` (import "
        f"OTT, `jax.jit(ICNN.init)`, `StandardCheckpointer().save`). Cold: an empty cache "
        f"directory. Warm: the cache after one earlier run, which holds JAX's compiled init and "
        f'the exported init (`jax.export`, see README, "Exported init cache"); the row before '
        f"it deletes the exported init first, as the warm run was before it existed. Median of "
        f"{repeats} processes each.",
        ["command", "median wall time", "plain / this", "this / plain"],
        [
            [name, f"{seconds:.2f} s", ratio(plain, seconds), f"{seconds / plain:.2f}x"]
            for name, seconds in times.items()
        ],
        goal(
            f"warm at most 0.4x the plain script ({warm_share:.2f}x), cold at most 1.0x "
            f"({cold_share:.2f}x)",
            warm_share <= 0.4 and cold_share <= 1.0,
        ),
    )
    return plain


def bench_warm_breakdown(work: Path, repeats: int, report: Report) -> None:
    """Item 1b: the phases of a warm run, with and without the exported init."""
    cache = work / "cache-breakdown"
    env = {"ICNN_COMPILE_CACHE_DIR": str(cache)}
    script = str(BENCH / "warm_breakdown.py")
    for mode in ("export", "jit"):  # fill the cache: the exported init and the plain program
        run([PYTHON, script, str(DEFAULT_CONFIG), str(work / "breakdown"), mode, "fill"], env)
    phases: dict[str, dict[str, list[float]]] = {"export": {}, "jit": {}}
    for _ in range(repeats):
        for mode, found in phases.items():
            result = json.loads(
                run(
                    [PYTHON, script, str(DEFAULT_CONFIG), str(work / "breakdown"), mode], env
                ).stdout
            )
            for name, seconds in result["phases"].items():
                found.setdefault(name, []).append(seconds)
    imports = {
        mode: import_times(
            [
                PYTHON,
                "-X",
                "importtime",
                script,
                str(DEFAULT_CONFIG),
                str(work / "breakdown"),
                mode,
            ],
            env,
        )
        for mode in ("export", "jit")
    }
    names = list(dict.fromkeys([*phases["jit"], *phases["export"]]))
    rows = []
    for name in names:
        cells = []
        for mode in ("jit", "export"):
            values = phases[mode].get(name)
            cells.append(f"{statistics.median(values):.3f} s" if values else "")
        rows.append([name, *cells])
    totals = [
        f"**{sum(statistics.median(v) for v in phases[mode].values()):.2f} s**"
        for mode in ("jit", "export")
    ]
    rows.append(["**total in the process** (interpreter start not included)", *totals])
    report.table(
        "1b. Where a warm `icnn init` spends its time",
        "`bench/warm_breakdown.py` runs `icnn init`'s steps one by one with a clock between "
        "them (its imports first and explicit, so the later phases hold none), against a cache "
        "an earlier run filled: *before*, the path without the exported init (import OTT, build "
        "the module, trace its init, load the compiled program from JAX's cache); *now*, the "
        "exported init. The first call includes tracing or lowering, the compile-cache load and "
        "the stream keys' small programs; the second call is the init and fingerprint alone. "
        f"Median of {repeats} processes each.",
        ["phase", "before: OTT module + jit", "now: exported init"],
        rows,
    )
    packages = list(dict.fromkeys([*imports["jit"], *imports["export"]]))[:12]
    report.table(
        "1c. Import time of the warm run, by top-level package (`python -X importtime`)",
        "Self time of every module summed by its top-level package, one process each; the "
        "packages that take the most are listed. `ott` and `flax` bring optax, jaxopt, lineax, "
        "equinox, chex and scipy with them (each counted under its own name).",
        ["package", "before: OTT module + jit", "now: exported init"],
        [
            [
                package,
                *(
                    f"{imports[mode][package]:.3f} s" if package in imports[mode] else "-"
                    for mode in ("jit", "export")
                ),
            ]
            for package in packages
        ]
        + [
            [
                "**all imports**",
                *(f"**{sum(imports[mode].values()):.2f} s**" for mode in ("jit", "export")),
            ]
        ],
    )


def import_times(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    """Seconds of import self time by top-level package, largest first, from -X importtime."""
    with tempfile.TemporaryFile() as stderr:
        subprocess.run(
            argv, stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, **env}, check=True
        )
        stderr.seek(0)
        lines = stderr.read().decode().splitlines()
    totals: dict[str, float] = {}
    for line in lines:
        if not line.startswith("import time:") or "|" not in line:
            continue
        fields = [field.strip() for field in line.removeprefix("import time:").split("|")]
        if not fields[0].isdigit():
            continue  # the header line
        package = fields[2].split(".")[0]
        totals[package] = totals.get(package, 0.0) + int(fields[0]) / 1e6
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def bench_sweep(
    work: Path, repeats: int, plain_runs: int, plain_single: float, report: Report
) -> None:
    def sweep_run(out: str, cache: str) -> Run:
        argv = [ICNN, "init", "-c", str(DEFAULT_CONFIG), "--seeds", "0:64", "--out"]
        return run(
            [*argv, str(work / out), "--json", "--force"],
            {"ICNN_COMPILE_CACHE_DIR": str(work / cache)},
        )

    sweep_run("sweep-warmup", "cache-sweep-warm")
    sweeps = medians(
        {
            "sweep": lambda i: sweep_run(f"sweep-{i}", f"cache-sweep-{i}"),
            "warm": lambda i: sweep_run(f"sweep-warm-{i}", "cache-sweep-warm"),
        },
        repeats,
    )
    sweep, warm = sweeps["sweep"], sweeps["warm"]
    start = time.perf_counter()
    for seed in range(plain_runs):
        run(
            [
                PYTHON,
                str(BENCH / "plain_init.py"),
                str(work / f"plain-sweep-{seed}"),
                "--seed",
                str(seed),
            ]
        )
    plain_total = (time.perf_counter() - start) * 64 / plain_runs
    measured = (
        f"{plain_runs} runs measured back to back"
        if plain_runs == 64
        else f"{plain_runs} runs measured back to back, scaled to 64"
    )
    report.table(
        "2. 64 seeds: `icnn init --seeds 0:64` vs 64 runs of the plain script",
        f"Goals: at least 20x faster with an empty cache, at least 60x with a warm one. icnn: "
        f"median of {repeats} sweeps, each with an empty cache (one compile per sweep), and of "
        f"{repeats} with the cache an earlier sweep filled (the exported init: no OTT import, no "
        f"compile). Plain: {measured}; the median single run of item 1 times 64 is "
        f"{plain_single * 64:.0f} s.",
        ["command", "wall time", "per checkpoint", "plain / icnn"],
        [
            ["64 x plain script", f"{plain_total:.1f} s", f"{plain_total / 64:.2f} s", "1.0x"],
            [
                "icnn init --seeds 0:64, empty cache",
                f"{sweep:.1f} s",
                f"{sweep / 64:.3f} s",
                ratio(plain_total, sweep),
            ],
            [
                "icnn init --seeds 0:64, warm cache",
                f"{warm:.1f} s",
                f"{warm / 64:.3f} s",
                ratio(plain_total, warm),
            ],
        ],
        goal(
            f"at least 20x empty ({plain_total / sweep:.0f}x), at least 60x warm "
            f"({plain_total / warm:.0f}x)",
            plain_total / sweep >= 20 and plain_total / warm >= 60,
        ),
    )


def bench_large(work: Path, repeats: int, report: Report) -> None:
    config = work / "large.yaml"
    config.write_text(f"model:\n  dim_data: {LARGE_DIM_DATA}\n  dim_hidden: {LARGE_HIDDEN}\n")
    hidden = ",".join(map(str, LARGE_HIDDEN))
    jobs = {
        "bare jax.jit(init) + Orbax save (plain script)": lambda i: run(
            [
                PYTHON,
                str(BENCH / "plain_init.py"),
                str(work / f"large-plain-{i}"),
                "--dim-data",
                str(LARGE_DIM_DATA),
                "--dim-hidden",
                hidden,
            ]
        ),
        "icnn init, cold compile cache": lambda i: run(
            [ICNN, "init", "-c", str(config), "--out", str(work / f"large-icnn-{i}")],
            {"ICNN_COMPILE_CACHE_DIR": str(work / f"cache-large-{i}")},
        ),
    }
    times = {}
    for index in range(repeats):
        for name, job in jobs.items():
            times.setdefault(name, []).append(job(index).seconds)
            shutil.rmtree(work / f"large-plain-{index}", ignore_errors=True)
            shutil.rmtree(work / f"large-icnn-{index}", ignore_errors=True)
    medians_s = {name: statistics.median(values) for name, values in times.items()}
    memory = {
        name: run(argv).max_rss_mib
        for name, argv in {
            "bare jax.jit(init) + Orbax save (plain script)": [
                PYTHON,
                str(BENCH / "plain_init.py"),
                str(work / "large-plain-mem"),
                "--dim-data",
                str(LARGE_DIM_DATA),
                "--dim-hidden",
                hidden,
            ],
            "icnn init, cold compile cache": [
                ICNN,
                "init",
                "-c",
                str(config),
                "--out",
                str(work / "large-icnn-mem"),
                "--no-compile-cache",
            ],
        }.items()
    }
    shutil.rmtree(work / "large-plain-mem", ignore_errors=True)
    shutil.rmtree(work / "large-icnn-mem", ignore_errors=True)
    # The runtime's own peak (imports, compile, Orbax): the same commands on the
    # 5,070-parameter default config, whose arrays weigh nothing.
    runtime = {
        "bare jax.jit(init) + Orbax save (plain script)": run(
            [PYTHON, str(BENCH / "plain_init.py"), str(work / "tiny-plain-mem")]
        ).max_rss_mib,
        "icnn init, cold compile cache": run(
            [ICNN, "init", "-c", str(DEFAULT_CONFIG), "--out", str(work / "tiny-icnn-mem")]
            + ["--no-compile-cache"]
        ).max_rss_mib,
    }
    bare = medians_s["bare jax.jit(init) + Orbax save (plain script)"]
    icnn_ratio = medians_s["icnn init, cold compile cache"] / bare
    throughput = json.loads(
        run([PYTHON, str(BENCH / "init_throughput.py"), str(config), str(repeats)]).stdout
    )
    gigabytes = throughput["bytes"] / 1e9
    parameter_mib = throughput["bytes"] / 2**20
    icnn_name = "icnn init, cold compile cache"
    icnn_peak_ratio = (memory[icnn_name] - runtime[icnn_name]) / parameter_mib
    report.table(
        "3. A ~100M-parameter model: end to end, and init throughput",
        f"`dim_data: {LARGE_DIM_DATA}, dim_hidden: {LARGE_HIDDEN}`: "
        f"{throughput['bytes'] / 4 / 1e6:.0f} million float32 parameters, "
        f"{gigabytes:.2f} GB. Goal: icnn within 1.25x of the bare script. Median of {repeats} "
        "processes; peak memory (ru_maxrss) from one more run of each, and the runtime's own "
        "peak (imports, compile, Orbax) from the same command on the 5,070-parameter default "
        "config. icnn also fingerprints (sha256) every byte and fsyncs the checkpoint before "
        "its atomic rename.",
        [
            "command",
            "median wall time",
            "this / bare",
            "peak memory",
            "runtime's own",
            "above it / parameter bytes",
        ],
        [
            [
                name,
                f"{seconds:.2f} s",
                f"{seconds / bare:.2f}x",
                f"{memory[name]:.0f} MiB",
                f"{runtime[name]:.0f} MiB",
                f"{(memory[name] - runtime[name]) / parameter_mib:.2f}x",
            ]
            for name, seconds in medians_s.items()
        ],
        goal(f"icnn within 1.25x of the bare script ({icnn_ratio:.2f}x)", icnn_ratio <= 1.25)
        + "\n\n"
        + goal(
            "icnn init's peak at most 2x the parameter bytes above the runtime's own "
            f"({icnn_peak_ratio:.2f}x)",
            icnn_peak_ratio <= 2,
        ),
    )
    report.table(
        "3b. Init throughput (the jitted init alone, compile excluded)",
        f"Median of {repeats} inits of the model above (after one compile + first call of "
        f"{throughput['compile_and_first_init_s']:.1f} s) vs numpy's "
        "`Generator.standard_normal` (one core) filling as many float32 values.",
        ["generator", "median time", "throughput"],
        [
            [
                "icnn jitted ICNN.init (JAX CPU)",
                f"{throughput['init_s']:.2f} s",
                f"{gigabytes / throughput['init_s']:.2f} GB/s",
            ],
            [
                "numpy standard_normal, float32",
                f"{throughput['numpy_normal_s']:.2f} s",
                f"{gigabytes / throughput['numpy_normal_s']:.2f} GB/s",
            ],
        ],
    )


def bench_inspect(work: Path, repeats: int, report: Report) -> None:
    checkpoints = work / "inspect"
    start = time.perf_counter()
    run([PYTHON, str(BENCH / "make_checkpoints.py"), str(checkpoints)])
    made_in = time.perf_counter() - start
    rows = []
    icnn_times: dict[str, float] = {}
    for name, label in (
        ("small", "1 MB, 4 leaves"),
        ("large", "1 GB, 16 leaves"),
        ("many", "10,000 leaves (160 KB)"),
    ):
        path = str(checkpoints / name)
        times = medians(
            {
                "icnn": lambda i, path=path: run([ICNN, "inspect", path, "--json"]),
                "plain": lambda i, path=path: run([PYTHON, str(BENCH / "plain_metadata.py"), path]),
            },
            repeats,
        )
        rows.append(
            [
                label,
                f"{times['icnn']:.2f} s",
                f"{times['plain']:.2f} s",
                f"{times['icnn'] / times['plain']:.2f}x",
            ]
        )
        icnn_times[name] = times["icnn"]
    size_ratio = icnn_times["large"] / icnn_times["small"]
    report.table(
        "4. `icnn inspect` (metadata only) vs a plain `StandardCheckpointer().metadata()` script",
        f"Goal: time independent of checkpoint size. Foreign checkpoints written by "
        f"`bench/make_checkpoints.py` ({made_in:.0f} s, not timed below). Median of {repeats} "
        "processes each. The 10,000-leaf row shows the cost per leaf, which size does not change.",
        ["checkpoint", "icnn inspect --json", "plain metadata script", "icnn / plain"],
        rows,
        goal(
            f"time independent of checkpoint size (1 GB / 1 MB: {size_ratio:.2f}x)",
            size_ratio < 1.5,
        ),
    )
    runs = {
        "icnn inspect 1 GB (metadata only)": [
            ICNN,
            "inspect",
            str(checkpoints / "large"),
            "--json",
        ],
        "icnn inspect 1 MB --stats (4 leaves of 256 KiB)": [
            ICNN,
            "inspect",
            str(checkpoints / "small"),
            "--stats",
            "--json",
        ],
        "icnn inspect 1 GB --stats (16 leaves of 64 MiB)": [
            ICNN,
            "inspect",
            str(checkpoints / "large"),
            "--stats",
            "--json",
        ],
    }
    measured = {name: run(argv) for name, argv in runs.items()}
    small_stats, large_stats = list(measured.values())[1:]
    extra = large_stats.max_rss_mib - small_stats.max_rss_mib
    report.table(
        "4b. `icnn inspect --stats`: peak memory",
        "Each leaf is read on its own, straight from its zarr array, so reading 1 GB should cost "
        "only a few times the largest leaf (64 MiB) more than reading 1 MB: the same imports and "
        "code, 1,000 times the data.",
        ["command", "wall time", "peak memory"],
        [
            [name, f"{result.seconds:.2f} s", f"{result.max_rss_mib:.0f} MiB"]
            for name, result in measured.items()
        ],
        goal(
            "peak memory bounded by the largest leaf plus a constant (1 GB took "
            f"{extra:.0f} MiB more than 1 MB; met when under 6 x 64 MiB: the statistics work on "
            "float64 copies and masks of one leaf)",
            extra < 6 * 64,
        ),
    )


BEFORE_THIS_ROUND = "627b46d"  # main before the "every checkpoint" work: inspect's speed then


def bench_inspect_layouts(report: Report) -> None:
    table = run(
        [
            PYTHON,
            str(BENCH / "bench_inspect_layouts.py"),
            "--repeats",
            "2",
            "--before",
            BEFORE_THIS_ROUND,
        ]
    ).stdout
    lines = [line for line in table.splitlines() if line.startswith("|")]
    ratios = [
        float(cell.strip().removesuffix("x"))
        for line in lines[2:]
        for cell in line.strip("|").split("|")[-1:]
        if cell.strip().endswith("x")
    ]
    worst = max(ratios) if ratios else float("nan")
    report.sections.append(
        "## 4c. `icnn inspect` on 10,000 leaves, per Orbax layout\n\n"
        "`bench/bench_inspect_layouts.py`, best of 2: Orbax's `metadata()` (opens every array) "
        "against the leaf records icnn reads directly (`_METADATA` plus each array's zarr header) "
        "and the whole `icnn inspect` command in a fresh process; the last columns run "
        f"`icnn inspect --json` of the code at {BEFORE_THIS_ROUND} (before the layouts of other "
        "Orbax releases, items and formats were added) on the same checkpoint, where it could "
        "read it at all.\n\n"
        + "\n".join(lines)
        + "\n\n"
        + goal(
            f"no slower than before on the layouts it read (worst now/before: {worst:.2f}x; "
            "met within 1.15x, the spread of repeated runs here)",
            worst <= 1.15,
        )
        + "\n"
    )
    print(report.sections[-1], flush=True)


BEFORE_VERIFY = "5a08e7b"  # main before issue 22: verify re-ran each checkpoint on its own
VERIFY_MODEL = {"dim_data": 4, "dim_hidden": [64, 64, 64]}  # the CI sweep


def code_at(revision: str, work: Path) -> Path:
    """The package as it was at ``revision`` (``git archive``), run with this venv through
    ``PYTHONPATH``; no worktree is added to the repository."""
    target = work / f"code-{revision}"
    if not target.exists():
        target.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", revision, "icnn_cli"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def bench_verify(work: Path, repeats: int, report: Report) -> None:
    """Item 7: ``icnn verify`` of what a sweep wrote, beside the sweep; ``icnn check`` cold."""
    config = work / "verify-config.json"  # JSON is YAML
    config.write_text(json.dumps({"model": VERIFY_MODEL}))
    old_code = code_at(BEFORE_VERIFY, work)
    # `python -m` puts the working directory first on sys.path: run it from the old code's
    before = {"PYTHONPATH": str(old_code)}
    rows, ratios = [], {}
    for count in (32, 256):
        sweeps, verifies = [], []
        for index in range(repeats if count == 32 else 1):
            env = {"ICNN_COMPILE_CACHE_DIR": str(work / f"cache-verify-{count}-{index}")}
            out = work / f"verify-{count}-{index}"
            argv = [ICNN, "init", "-c", str(config), "--seeds", f"0:{count}", "--out", str(out)]
            sweeps.append(run([*argv, "--json"], env).seconds)
            paths = [str(out / f"seed-{seed}") for seed in range(count)]
            verifies.append(run([ICNN, "verify", *paths, "--json"], env).seconds)
        sweep, verify = statistics.median(sweeps), statistics.median(verifies)
        ratios[count] = verify / sweep
        old = ""
        if count == 32:
            old_run = run(
                [PYTHON, "-m", "icnn_cli", "verify", *paths, "--json"],
                {**env, **before},
                cwd=old_code,
            )
            old = f"{old_run.seconds:.1f} s ({old_run.seconds / sweep:.1f}x)"
        rows.append(
            [
                str(count),
                f"{sweep:.1f} s",
                f"{verify:.1f} s",
                f"{ratios[count]:.2f}x",
                old or "not run (about 8x the 32)",
            ]
        )
    report.table(
        "7. `icnn verify` of a sweep's output, beside the sweep",
        f"Goal: verify at most 1.5x the sweep. `icnn init --seeds 0:N` of dim_data 4, hidden "
        f"[64, 64, 64] with an empty compile cache, then `icnn verify` of its N checkpoints with "
        f"that cache (a CI job's two steps); median of {repeats} for 32, one run for 256. The last "
        f"column runs `icnn verify` of the code at {BEFORE_VERIFY} (each checkpoint re-run on its "
        "own) on the same checkpoints.",
        ["checkpoints", "sweep", "verify", "verify / sweep", f"verify at {BEFORE_VERIFY}"],
        rows,
        goal(
            "at most 1.5x the sweep ("
            + ", ".join(f"{count}: {value:.2f}x" for count, value in ratios.items())
            + ")",
            all(value <= 1.5 for value in ratios.values()),
        ),
    )
    checkpoint = str(work / "verify-32-0" / "seed-0")
    cold, warm, old = [], [], []
    for index in range(max(repeats - 1, 1)):
        env = {"ICNN_COMPILE_CACHE_DIR": str(work / f"cache-check-{index}")}
        argv = ["-m", "icnn_cli", "check", checkpoint, "--json"]
        old.append(run([PYTHON, *argv], {**env, **before}, (0, 1), old_code).seconds)
        cold.append(run([PYTHON, *argv], env, (0, 1), REPO).seconds)
        warm.append(run([PYTHON, *argv], env, (0, 1), REPO).seconds)
    times = {
        f"at {BEFORE_VERIFY} (no compile cache)": statistics.median(old),
        "now, empty compile cache (cold)": statistics.median(cold),
        "now, the cache a first check filled": statistics.median(warm),
    }
    base = times[f"at {BEFORE_VERIFY} (no compile cache)"]
    report.table(
        "7b. `icnn check` of one checkpoint (the search runs: OTT's default init is not convex)",
        f"One checkpoint of item 7's sweep, fresh processes interleaved, median of "
        f"{max(repeats - 1, 1)}. Before: the code at {BEFORE_VERIFY}.",
        ["code", "wall time", "before / this"],
        [[name, f"{seconds:.1f} s", ratio(base, seconds)] for name, seconds in times.items()],
    )


def bench_gcs_requests(report: Report) -> None:
    """Requests to a bucket (the local GCS emulator): icnn beside plain Orbax."""
    section = run([PYTHON, str(BENCH / "bench_gcs_requests.py")]).stdout
    report.sections.append(section)
    print(section, flush=True)


def bench_init_recipes(report: Report) -> None:
    """W2NeuralDual trained from each init.recipe (about 15 minutes on 2 cores)."""
    section = run([PYTHON, str(BENCH / "bench_init_recipes.py")]).stdout
    report.sections.append(section)
    print(section, flush=True)


def bench_python_api(repeats: int, report: Report) -> None:
    """``icnn_cli.init`` in a loop over seeds beside the plain jitted loop, in one process each."""
    argv = [PYTHON, str(BENCH / "bench_python_api.py"), "--repeats", str(repeats)]
    section = run(argv).stdout
    report.sections.append(section)
    print(section, flush=True)


def bench_help(repeats: int, report: Report) -> None:
    times = medians(
        {
            "icnn --help": lambda i: run([ICNN, "--help"]),
            "icnn init --help": lambda i: run([ICNN, "init", "--help"]),
            "python -c pass (interpreter start)": lambda i: run([PYTHON, "-c", "pass"]),
        },
        repeats,
    )
    report.table(
        "5. `icnn --help`",
        f"Goal: under 0.3 s. Median of {repeats} processes.",
        ["command", "median wall time"],
        [[name, f"{seconds * 1000:.0f} ms"] for name, seconds in times.items()],
        goal(f"under 0.3 s ({times['icnn --help']:.2f} s)", times["icnn --help"] < 0.3),
    )


ITEMS = ("1", "2", "3", "4", "5", "6", "7", "8", "10")  # 9 is the GPU check, run by hand
SECTION_ITEM = re.compile(r"## (\d+)[a-z]?\. ")


def merged_report(
    existing: str, fresh: list[str], only: set[str], kept: list[str], note: str
) -> str:
    """``existing`` BENCHMARKS.md with the sections of the items in ``only`` replaced by
    ``fresh`` (a partial run, ``--only``), the kept result files re-read, and ``note`` (what
    was re-run, when, under what load) added to the header."""
    header, *sections = re.split(r"(?m)^(?=## )", existing)
    kept_titles = {text.splitlines()[0] for text in kept}
    sections = [
        section
        for section in sections
        if section.splitlines()[0] not in kept_titles
        and not ((match := SECTION_ITEM.match(section)) and match.group(1) in only)
    ]
    # an earlier partial run's note goes when everything it re-ran is re-run now
    for earlier in re.finditer(r"(?m)^Items ([\d, ]+) re-run on .*\n*", header):
        if set(earlier.group(1).split(", ")) <= only:
            header = header.replace(earlier.group(0), "")
    header = header.rstrip("\n") + "\n\n" + note + "\n\n"
    return header + "\n".join(section.rstrip("\n") + "\n" for section in [*sections, *fresh, *kept])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement")
    parser.add_argument(
        "--plain-sweep-runs",
        type=int,
        default=16,
        help="plain-script runs measured for item 2 (scaled to 64)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--only", help="comma-separated items to run, e.g. 1,5")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else set(ITEMS)
    report = Report()
    load_before = load_average()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="icnn-bench-") as directory:
        work = Path(directory)
        plain_single = 0.0
        if "5" in only:
            bench_help(max(args.repeats, 10), report)
        if "1" in only or "2" in only:
            plain_single = bench_single_init(work, args.repeats, report)
        if "1" in only:
            bench_warm_breakdown(work, args.repeats, report)
        if "2" in only:
            bench_sweep(work, max(args.repeats - 1, 1), args.plain_sweep_runs, plain_single, report)
        if "3" in only:
            bench_large(work, max(args.repeats - 1, 1), report)
        if "4" in only:
            bench_inspect(work, args.repeats, report)
            bench_inspect_layouts(report)
        if "6" in only:
            bench_gcs_requests(report)
        if "7" in only:
            bench_verify(work, args.repeats, report)
        if "8" in only:
            bench_init_recipes(report)
        if "10" in only:
            bench_python_api(args.repeats, report)
    elapsed = time.perf_counter() - started
    # Measured where make bench cannot (a GPU machine) or by hand (a profile): kept verbatim.
    kept = [path.read_text() for path in sorted(REPO.glob("bench/*_results.md"))]
    if only != set(ITEMS) and args.out.exists():
        note = (
            f"Items {', '.join(sorted(only, key=int))} re-run on "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (`bench/run.py --only "
            f"{','.join(sorted(only, key=int))}`, {elapsed / 60:.1f} min, load average "
            f"before: {load_before}; after: {load_average()}); the other sections are from "
            "the run the table above describes."
        )
        text = merged_report(args.out.read_text(), report.sections, only, kept, note)
        args.out.write_text(text)
        print(f"bench: updated items {sorted(only, key=int)} of {args.out}")
        return
    header = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`bench/run.py`); rerun it to refresh this file. Every number is "
        "the wall time of fresh processes, as a CI step would pay it, and the things compared "
        "ran interleaved in the same session.",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {label} | {value} |" for label, value in machine()],
        f"| load average (1, 5, 15 min) | before: {load_before}; after: {load_average()} |",
        f"| bench wall time | {elapsed / 60:.1f} min |",
        f"| date | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} |",
        "",
        "The machine is shared: a load average above the core count means other work ran at "
        "the same time, which slows both sides of every comparison.",
        "",
    ]
    args.out.write_text("\n".join(header) + "\n" + "\n".join([*report.sections, *kept]))
    print(f"bench: wrote {args.out} in {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
