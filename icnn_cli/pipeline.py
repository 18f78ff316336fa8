"""The ``icnn init`` pipeline: config -> module -> keys -> variables -> checkpoint -> summary."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from icnn_cli import distributed, export_cache, model, recipes, resources, rngs
from icnn_cli.checkpoint.metadata import quiet_absl
from icnn_cli.checkpoint.provenance import header_lines
from icnn_cli.checkpoint.spec import (
    METADATA_KEY,
    CheckpointSpec,
    SampleSpec,
    StreamSpec,
    installed_versions,
)
from icnn_cli.checkpoint.writing import check_output_path, write_checkpoint_atomically
from icnn_cli.config import IcnnConfig
from icnn_cli.errors import RUNTIME_ERROR, IcnnError, first_line
from icnn_cli.fingerprint import fingerprint
from icnn_cli.init import abstract_variables, compiled_init, select_device
from icnn_cli.records import LeafRecord, Summary, records_of_tree
from icnn_cli.sharding import Layout, plan_layout


@dataclasses.dataclass(frozen=True)
class InitRequest:
    """What ``icnn init`` was asked to do, after the config has been validated."""

    config: IcnnConfig
    config_dir: Path
    output: Path
    force: bool = False
    platform: str | None = None
    dry_run: bool = False
    compile_cache: Path | None = None  # JAX's compile cache in use; the export cache is inside


@dataclasses.dataclass(frozen=True)
class InitResult:
    summary: Summary
    spec: CheckpointSpec | None  # None for a dry run
    variables: Any = None


def leaf_records_of(tree: Any, layout: Layout | None = None) -> list[LeafRecord]:
    """Leaf records of an in-memory pytree of arrays or ``ShapeDtypeStruct``s."""
    return records_of_tree(tree, layout.spec_text if layout else None)


@dataclasses.dataclass(frozen=True)
class PreparedInit:
    """The built module and its compiled init: everything a seed does not change."""

    config: IcnnConfig
    device: Any
    init_variables: Callable[[Any], Any]  # rngs -> variables (jitted once)
    sample_files: list[model.SampleFile]  # Gaussian-map samples, then a recipe's probe file
    versions: dict[str, str]
    layout: Layout | None = None  # with a mesh: where each leaf lives
    module: Any = None  # the OTT ICNN whose init this is; None when loaded from the export cache
    exported: str | None = None  # "stored" or "loaded": run as the cached jax.export program


def prepare_init(
    config: IcnnConfig, config_dir: Path, platform: str | None, compile_cache: Path | None = None
) -> PreparedInit:
    """Build the ICNN and its jitted init once; every seed then only runs it.

    With ``compile_cache`` (the directory :func:`~icnn_cli.compile_cache.configure_compile_cache`
    set up), the init is also exported there (:mod:`icnn_cli.export_cache`), and a later call
    with the same architecture loads that export instead of building the module: no OTT or
    Flax import. Without it, or on a mesh, this is the plain jit of ``module.init``.
    """
    device = select_device(platform)
    samples, sample_files = model.load_gaussian_map_samples(config.model, config_dir)
    probes, probe_files = recipes.load_probe_samples(config, config_dir)
    sample_files = sample_files + probe_files
    if compile_cache is None or config.mesh_shape():
        return prepare_init_with_samples(config, samples, sample_files, device, probes)
    versions = installed_versions()
    key = export_cache.export_key(
        compile_cache, config, [f.sha256 for f in sample_files], versions, device
    )
    input_shape = config.resolved_input_shape()
    with default_device(device):
        loaded = export_cache.load_exported_init(key, config.init)
    if loaded is not None:
        return PreparedInit(config, device, loaded, sample_files, versions, exported="loaded")
    with default_device(device):
        module = _build_module(config, samples)
        try:
            stream_keys, _ = rngs.derive_stream_keys(config.init)
            stored = export_cache.export_and_store(
                key, module, config.init, input_shape, stream_keys, device.platform, probes
            )
        except Exception:  # not exportable: the plain jit below traces it again
            stored = None
        if stored is None:
            init_variables = compiled_init(module, config.init, input_shape, probes=probes)
    if stored is not None:
        return PreparedInit(
            config, device, stored, sample_files, versions, module=module, exported="stored"
        )
    return PreparedInit(config, device, init_variables, sample_files, versions, module=module)


def prepare_init_with_samples(
    config: IcnnConfig,
    samples: tuple[Any, Any] | None,
    sample_files: list[model.SampleFile],
    device: Any,
    probes: Any = None,
) -> PreparedInit:
    """:func:`prepare_init` with the Gaussian-map samples (and a recipe's probe samples)
    already loaded (``icnn verify`` takes them from the files recorded in a checkpoint's spec)."""
    with default_device(device):
        module = _build_module(config, samples)
        layout = _plan_layout(module, config, device.platform, probes)
        init_variables = compiled_init(
            module,
            config.init,
            config.resolved_input_shape(),
            out_shardings=layout.shardings if layout else None,
            probes=probes,
        )
    return PreparedInit(
        config, device, init_variables, sample_files, installed_versions(), layout, module
    )


def _build_module(config: IcnnConfig, samples: tuple[Any, Any] | None) -> Any:
    module = model.build_icnn(config.model, samples)
    model.check_method(module, config.init.method)
    return module


def _plan_layout(
    module: Any, config: IcnnConfig, platform: str | None, probes: Any = None
) -> Layout | None:
    """The layout on ``config``'s mesh, from ``eval_shape``; ``None`` without a mesh."""
    if not config.mesh_shape():
        return None
    stream_keys, _ = rngs.derive_stream_keys(config.init)
    shapes = abstract_variables(
        module, stream_keys, config.init, config.resolved_input_shape(), probes
    )
    return plan_layout(shapes, config.sharding, platform)


def initialize_seed(prepared: PreparedInit, seed: int) -> tuple[Any, CheckpointSpec]:
    """The variables for ``seed`` (computed on the prepared device) and the spec to embed."""
    import jax

    config = prepared.config.with_seed(seed)
    with default_device(prepared.device):
        stream_keys, stream_records = rngs.derive_stream_keys(config.init)
        try:
            variables = jax.block_until_ready(prepared.init_variables(stream_keys))
        except Exception as error:
            if not resources.is_out_of_memory(error):
                raise
            # Another process took the memory the check before found free: one plain line.
            raise IcnnError(
                f"out of memory while running the init on {prepared.device.platform} "
                f"({first_line(error, limit=120)}); free some memory, or try --mesh or a "
                "smaller dim_hidden",
                RUNTIME_ERROR,
            ) from None
    device = prepared.device
    spec = CheckpointSpec(
        config=config.model_dump(mode="json", exclude_none=True),
        seed=seed,
        streams=[StreamSpec(**dataclasses.asdict(record)) for record in stream_records],
        rng_impl=config.init.rng_impl,
        input_shape=list(config.resolved_input_shape()),
        dtype=config.init.dtype,
        threefry_partitionable=bool(jax.config.jax_threefry_partitionable),
        versions=prepared.versions,
        device=(
            prepared.layout.device_text(distributed.process_count())
            if prepared.layout
            else f"{device.platform}:{device.id} ({device.device_kind})"
        ),
        fingerprint=fingerprint(variables),
        gaussian_map_samples=[
            SampleSpec(role=f.role, path=str(f.path), sha256=f.sha256, shape=list(f.shape))
            for f in prepared.sample_files
            if f.role != recipes.PROBE_ROLE
        ],
        init_samples=[
            SampleSpec(role=f.role, path=str(f.path), sha256=f.sha256, shape=list(f.shape))
            for f in prepared.sample_files
            if f.role == recipes.PROBE_ROLE
        ],
    )
    return variables, spec


def write_seed_checkpoint(
    output: Path, variables: Any, spec: CheckpointSpec, force: bool = False
) -> None:
    with quiet_absl():
        write_checkpoint_atomically(
            output,
            variables,
            {METADATA_KEY: spec.model_dump(mode="json")},
            force,
        )


def default_device(device: Any) -> Any:
    import jax

    return jax.default_device(device)


def run_init(request: InitRequest) -> InitResult:
    """Build the ICNN, run its jitted init, and write the checkpoint (unless dry run).

    In a multi-process run every process calls this with the same request;
    together they write one checkpoint.
    """
    request = _with_default_mesh(request)
    config = request.config
    distributed.check_same_everywhere("config, --seed, --out or --force", _request_text(request))
    if request.dry_run:
        return _dry_run(request)
    with distributed.all_or_none("preparing the init"):
        if distributed.is_primary():  # see write_checkpoint_atomically
            check_output_path(request.output, request.force)
        prepared = prepare_init(config, request.config_dir, request.platform, request.compile_cache)
        check_resources(prepared, request.output)
    variables, spec = initialize_seed(prepared, config.init.seed)
    write_seed_checkpoint(request.output, variables, spec, request.force)
    summary = Summary(
        path=str(request.output),
        leaves=leaf_records_of(variables, prepared.layout),
        header=header_lines(spec),
        spec=spec.model_dump(mode="json"),
    )
    return InitResult(summary=summary, spec=spec, variables=variables)


def check_resources(prepared: PreparedInit, output: Path) -> resources.ResourceEstimate:
    """Refuse (exit 2) an init whose peak memory or checkpoint cannot fit, before compiling.

    The shapes come from ``eval_shape`` of the prepared (not yet compiled) init, which
    JAX traces once for both this and the real call.
    """
    import jax

    with default_device(prepared.device):
        # Inside the device context, as initialize_seed makes them: elsewhere the keys' small
        # programs would be compiled (or loaded from the persistent cache) a second time.
        stream_keys, _ = rngs.derive_stream_keys(prepared.config.init)
        shapes = jax.eval_shape(prepared.init_variables, stream_keys)
    figures = resources.estimate(shapes, output, _devices(prepared.layout, prepared.device))
    figures.check(output)
    return figures


def _devices(layout: Layout | None, device: Any) -> list[Any]:
    return list(layout.mesh.devices.flat) if layout else [device]


def _dry_run(request: InitRequest) -> InitResult:
    config = request.config
    with distributed.all_or_none("preparing the dry run"):
        device = select_device(request.platform)
        samples, _ = model.load_gaussian_map_samples(config.model, request.config_dir)
        probes, _ = recipes.load_probe_samples(config, request.config_dir)
        with default_device(device):
            module = _build_module(config, samples)
            stream_keys, _ = rngs.derive_stream_keys(config.init)
            shapes = abstract_variables(
                module, stream_keys, config.init, config.resolved_input_shape(), probes
            )
            layout = _plan_layout(module, config, request.platform, probes)
    device_text = layout.device_text(distributed.process_count()) if layout else str(device)
    figures = resources.estimate(shapes, request.output, _devices(layout, device))
    summary = Summary(
        path=f"{request.output} (dry run: nothing written)",
        leaves=leaf_records_of(shapes, layout),
        header=[("seed", str(config.init.seed)), ("device", device_text), *figures.lines()],
        resources=figures.as_json(),
    )
    return InitResult(summary=summary, spec=None)


def _with_default_mesh(request: InitRequest) -> InitRequest:
    """Several processes without a mesh: one flat mesh over all their devices."""
    import jax

    if distributed.process_count() == 1 or request.config.mesh_shape():
        return request
    devices = jax.devices(request.platform) if request.platform else jax.devices()
    return dataclasses.replace(request, config=request.config.with_mesh([len(devices)]))


def _request_text(request: InitRequest) -> str:
    # What must be equal on every process; config_dir may differ between hosts.
    return "|".join(
        (
            request.config.model_dump_json(),
            str(request.output),
            str(request.force),
            str(request.platform),
            str(request.dry_run),
        )
    )
