"""``icnn init``: YAML spec -> jitted ICNN.init -> Orbax checkpoint + tree summary."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from icnn_cli.cli.errors import cli_message, reported_errors
from icnn_cli.cli.options import JsonOpt
from icnn_cli.cli.output import Output

if TYPE_CHECKING:
    from icnn_cli.config import IcnnConfig
    from icnn_cli.distributed import ProcessGroup
    from icnn_cli.pipeline import InitRequest


class Platform(StrEnum):
    cpu = "cpu"
    gpu = "gpu"
    tpu = "tpu"


def init(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="YAML config: model fields of OTT's ICNN, init options. '-' reads it from "
            "standard input; relative sample-file paths then start at the current directory.",
        ),
    ],
    seed: Annotated[
        int | None,
        typer.Option(help="Master seed, 0..2**32-1; overrides init.seed from the config."),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            help="Checkpoint directory to create, or a gs:// URL; overrides the config's 'output'.",
            show_default="the config's output, ckpt",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing checkpoint at --out, atomically."),
    ] = False,
    platform: Annotated[
        Platform | None,
        typer.Option(help="JAX backend to run the init on.", show_default="JAX's default backend"),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Show the tree from jax.eval_shape; compute and write nothing."
        ),
    ] = False,
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Sweep many seeds with one compile: 0:64 (seeds 0..63), 0,3,9, or mixed "
            "(0:8,100); writes OUT/seed-N, or OUT with {seed} replaced.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="With --seeds: skip seeds whose checkpoint exists and verifies; write the rest.",
        ),
    ] = False,
    no_compile_cache: Annotated[
        bool,
        typer.Option(
            "--no-compile-cache",
            help="Do not use JAX's persistent compilation cache nor the cached exported init "
            "(also: ICNN_NO_COMPILE_CACHE=1).",
        ),
    ] = False,
    mesh: Annotated[
        str | None,
        typer.Option(
            help="Shard the init over a device mesh, e.g. 8 or 2x4 (all devices of all "
            "processes); overrides sharding.mesh.",
        ),
    ] = None,
    distributed: Annotated[
        bool,
        typer.Option(
            "--distributed",
            help="Run as one of several processes: call jax.distributed.initialize(), which "
            "detects TPU pods, SLURM and Open MPI by itself.",
        ),
    ] = False,
    coordinator: Annotated[
        str | None,
        typer.Option(help="HOST:PORT of process 0's coordinator (implies --distributed)."),
    ] = None,
    num_processes: Annotated[
        int | None,
        typer.Option(help="Number of processes (implies --distributed)."),
    ] = None,
    process_id: Annotated[
        int | None,
        typer.Option(help="This process's index, 0..N-1 (implies --distributed)."),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Initialise an ICNN from a YAML config and write it as an Orbax checkpoint."""
    output = Output(json_output)
    with reported_errors():
        from icnn_cli import distributed as processes
        from icnn_cli.checkpoint.storage import storage_path
        from icnn_cli.config import config_directory, load_config, validate_seed
        from icnn_cli.errors import IcnnError
        from icnn_cli.pipeline import InitRequest
        from icnn_cli.sweep import parse_seeds

        _check_flag_combinations(seed, seeds, resume, dry_run)
        group = processes.ProcessGroup(coordinator, num_processes, process_id, distributed)
        group.check()
        if seeds is not None and (mesh is not None or group.requested):
            raise IcnnError("--seeds: runs on one device; drop --mesh and the multi-process flags")
        loaded = load_config(config)
        if seed is not None:
            try:
                loaded = loaded.with_seed(validate_seed(seed))
            except ValueError as error:
                raise IcnnError(f"--seed: {error}") from None
        if mesh is not None:
            loaded = _with_mesh(loaded, mesh)
        request = InitRequest(
            config=loaded,
            config_dir=config_directory(config),
            output=storage_path(out if out is not None else loaded.output),
            force=force,
            platform=platform.value if platform else None,
            dry_run=dry_run,
            use_compile_cache=not no_compile_cache,
            seeds=parse_seeds(seeds) if seeds is not None else None,
            resume=resume,
        )
        if request.seeds is not None:
            _sweep(output, request)
            return
        _init(output, request, group)


def _init(output: Output, request: InitRequest, group: ProcessGroup) -> None:
    from icnn_cli import distributed as processes
    from icnn_cli.pipeline import run_init
    from icnn_cli.render.summary import render_table

    with processes.session(group):
        with output.status("Initialising ICNN (jit compile + init + save)…"):
            result = run_init(request)
        primary = processes.is_primary()
    if primary and result.refusal is not None:
        Output.warn(f"the run without --dry-run would be refused: {cli_message(result.refusal)}")
    if primary:
        output.result(result.summary.as_json(), lambda: render_table(result.summary))


def _with_mesh(config: IcnnConfig, text: str) -> IcnnConfig:
    from pydantic import ValidationError

    from icnn_cli.errors import UsageError
    from icnn_cli.sharding import parse_mesh
    from icnn_cli.validation_errors import problems_of

    try:
        return config.with_mesh(parse_mesh(text))
    except ValidationError as error:
        problem = problems_of(error)[0]
        raise UsageError(
            f"sharding.{problem.field}: {problem.text}", parameter="mesh", value=text
        ) from None


def _check_flag_combinations(
    seed: int | None, seeds: str | None, resume: bool, dry_run: bool
) -> None:
    from icnn_cli.errors import IcnnError

    if seeds is None:
        if resume:
            raise IcnnError("--resume: only works with --seeds")
        return
    if seed is not None:
        raise IcnnError("--seeds: give either --seed or --seeds, not both")
    if dry_run:
        raise IcnnError("--seeds: --dry-run shows one tree; run it without --seeds")


def _sweep(output: Output, request: InitRequest) -> None:
    from icnn_cli.render.reports import render_sweep
    from icnn_cli.sweep import run_sweep

    assert request.seeds is not None
    with output.progress(len(request.seeds), "compiling") as step:
        result = run_sweep(
            request, lambda item: step(f"seed {item.seed} {item.status}: {item.path}")
        )
    output.result(result.as_json(), lambda: render_sweep(result))
