"""The ``icnn init`` pipeline: config -> module -> keys -> variables -> checkpoint -> summary."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from icnn_cli import distributed, export_cache, model, recipes, resources, rngs
from icnn_cli.checkpoint.layout import Checkpoint, open_checkpoint
from icnn_cli.checkpoint.metadata import quiet_absl
from icnn_cli.checkpoint.provenance import commit_time, orbax_facts, provenance_of
from icnn_cli.checkpoint.spec import (
    METADATA_KEY,
    CheckpointSpec,
    SampleSpec,
    StreamSpec,
    installed_versions,
)
from icnn_cli.checkpoint.storage import StoragePath
from icnn_cli.checkpoint.writing import check_output_path, write_checkpoint_atomically
from icnn_cli.config import IcnnConfig
from icnn_cli.errors import IcnnError, OutputExists, RuntimeFailure, first_line, param
from icnn_cli.fingerprint import fingerprint
from icnn_cli.jitted_init import abstract_variables, compiled_init, select_device
from icnn_cli.records import DryRun, LeafRecord, Summary, records_of_tree
from icnn_cli.sharding import Layout, plan_layout


@dataclasses.dataclass(frozen=True)
class InitRequest:
    """What an init was asked to do, once the config has validated.

    One request type for every caller: ``icnn init`` (one seed), ``icnn init --seeds`` (a
    sweep, :mod:`icnn_cli.sweep`) and ``icnn_cli.init``; all of them prepare through
    :func:`plan_init`.
    """

    config: IcnnConfig
    config_dir: Path
    output: StoragePath | None = (
        None  # None: compute only, write nothing (the Python API's default)
    )
    force: bool = False
    platform: str | None = None
    dry_run: bool = False
    use_compile_cache: bool = True  # JAX's persistent cache and the cached exported init
    seeds: Sequence[int] | None = None  # a sweep: one checkpoint per seed
    resume: bool = False  # a sweep: keep the seeds whose checkpoint exists and verifies


@dataclasses.dataclass(frozen=True)
class InitResult:
    summary: Summary
    spec: CheckpointSpec | None  # None for a dry run
    variables: Any = None
    prepared: PreparedInit | None = None  # None for a dry run

    def module(self) -> Any:
        """OTT's ICNN of this init (built here when the cached export ran instead of it)."""
        assert self.prepared is not None, "a dry run builds no module"
        return self.prepared.module or build_module(self.prepared.config, self.prepared.samples)

    refusal: IcnnError | None = None  # a dry run's: why the real run would be refused


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
    samples: tuple[Any, Any] | None = None  # the Gaussian-map samples the module was built with


def plan_init(request: InitRequest, outputs: Sequence[StoragePath] = ()) -> PreparedInit:
    """THE init plan: every init (``icnn init``, ``--seeds``, ``icnn_cli.init``) prepares here.

    In order, before anything is computed: the runtime (low-peak XLA flags, the compile
    cache), the ``outputs`` (each must be free, or replaceable with ``force``), the module
    and its jitted (or cached exported) init, then the memory and disk the init and its
    ``outputs`` need. A step added to the init is added here, once. In a multi-process run
    every process takes part and all fail together.
    """
    compile_cache = prepare_runtime(request.use_compile_cache)
    with distributed.all_or_none("preparing the init"):
        if distributed.is_primary():  # see write_checkpoint_atomically
            for output in outputs:
                check_output_path(output, request.force)
        prepared = prepare_init(request.config, request.config_dir, request.platform, compile_cache)
        check_resources(prepared, outputs)
    return prepared


def prepare_runtime(use_compile_cache: bool) -> Path | None:
    """Set up JAX for an init before its backend starts; the compile cache directory in use.

    Idempotent: callers that touch a JAX backend before :func:`plan_init` (process counts,
    meshes) call it first themselves.
    """
    from icnn_cli.compile_cache import configure_compile_cache

    resources.prefer_low_peak_memory()
    return configure_compile_cache(enabled=use_compile_cache)


def prepare_init(
    config: IcnnConfig, config_dir: Path, platform: str | None, compile_cache: Path | None = None
) -> PreparedInit:
    """Build the ICNN and its jitted init once; every seed then only runs it.

    With ``compile_cache`` (the directory :func:`~icnn_cli.compile_cache.configure_compile_cache`
    set up), the init is also exported there (:mod:`icnn_cli.export_cache`), and a later call
    with the same architecture loads that export instead of building the module: no OTT or
    Flax import. Without it, or on a mesh, this is the plain jit of ``module.init``. A
    ``data-dependent`` recipe's probe samples file is read here and recorded with the
    Gaussian-map sample files (the spec, the export key).
    """
    device = select_device(platform)
    samples, sample_files = model.load_gaussian_map_samples(config.model, config_dir)
    probes, probe_files = recipes.load_probe_samples(config, config_dir)
    return prepare_init_with_samples(
        config, samples, sample_files + probe_files, device, compile_cache, probes
    )


def prepare_init_with_samples(
    config: IcnnConfig,
    samples: tuple[Any, Any] | None,
    sample_files: list[model.SampleFile],
    device: Any,
    compile_cache: Path | None = None,
    probes: Any = None,
) -> PreparedInit:
    """:func:`prepare_init` with the Gaussian-map samples (and a recipe's probe points)
    already loaded and the device chosen (``icnn verify`` takes them from the files and
    platform recorded in a checkpoint's spec; with the same ``compile_cache`` it finds the
    export the sweep that wrote it stored)."""
    if compile_cache is None or config.mesh_shape():
        return _prepare_jitted_init(config, samples, sample_files, device, probes)
    versions = installed_versions()
    key = export_cache.export_key(
        compile_cache, config, [f.sha256 for f in sample_files], versions, device
    )
    input_shape = config.resolved_input_shape()
    with default_device(device):
        loaded = export_cache.load_exported_init(key, config.init, device.id)
    if loaded is not None:
        return PreparedInit(
            config, device, loaded, sample_files, versions, exported="loaded", samples=samples
        )
    with default_device(device):
        module = build_module(config, samples)
        try:
            stream_keys, _ = rngs.derive_stream_keys(config.init)
            stored = export_cache.export_and_store(
                key,
                module,
                config.init,
                input_shape,
                stream_keys,
                device.platform,
                probes,
                device.id,
            )
        except Exception as error:  # not exportable: the plain jit below traces it again
            export_cache.note_fallback(key, "is not exportable", error)
            stored = None
        if stored is not None:
            return PreparedInit(
                config,
                device,
                stored,
                sample_files,
                versions,
                module=module,
                exported="stored",
                samples=samples,
            )
        init_variables = compiled_init(module, config.init, input_shape, probes=probes)
    return PreparedInit(
        config, device, init_variables, sample_files, versions, module=module, samples=samples
    )


def _prepare_jitted_init(
    config: IcnnConfig,
    samples: tuple[Any, Any] | None,
    sample_files: list[model.SampleFile],
    device: Any,
    probes: Any = None,
) -> PreparedInit:
    """The plain jit of ``module.init`` (on ``config``'s mesh, when it has one)."""
    with default_device(device):
        module = build_module(config, samples)
        layout = _plan_layout(module, config, device.platform, probes)
        init_variables = compiled_init(
            module,
            config.init,
            config.resolved_input_shape(),
            out_shardings=layout.shardings if layout else None,
            probes=probes,
        )
    return PreparedInit(
        config,
        device,
        init_variables,
        sample_files,
        installed_versions(),
        layout,
        module,
        samples=samples,
    )


def build_module(config: IcnnConfig, samples: tuple[Any, Any] | None) -> Any:
    """OTT's ICNN of ``config``, its ``init.method`` checked: the one place a module is built."""
    module = model.build_icnn(config.model, samples)
    model.check_method(module, config.init.method)
    return module


def _plan_layout(
    module: Any, config: IcnnConfig, platform: str | None, probes: Any = None
) -> Layout | None:
    """The layout on ``config``'s mesh, from ``eval_shape``; ``None`` without a mesh."""
    if config.sharding is None or not config.mesh_shape():
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
            raise RuntimeFailure(
                f"out of memory while running the init on {prepared.device.platform} "
                f"({first_line(error, limit=120)}); free some memory, or try "
                f"{param('mesh')} or a smaller dim_hidden"
            ) from None
    device = prepared.device
    spec = CheckpointSpec(
        config=config.model_dump(mode="json", exclude_none=True),
        seed=seed,
        streams=[StreamSpec(**dataclasses.asdict(record)) for record in stream_records],
        rng_impl=config.init.rng_impl,
        input_shape=list(config.resolved_input_shape()),
        dtype=config.init.dtype,
        threefry_partitionable=bool(jax.config.values["jax_threefry_partitionable"]),
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
    output: StoragePath, variables: Any, spec: CheckpointSpec, force: bool = False
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
    """Build the ICNN, run its jitted init, and write the checkpoint (unless dry run, or no
    ``output``).

    In a multi-process run every process calls this with the same request;
    together they write one checkpoint.
    """
    if not request.dry_run:
        prepare_runtime(request.use_compile_cache)  # before anything starts a JAX backend
    request = _with_default_mesh(request)
    config = request.config
    distributed.check_same_everywhere(
        f"config, {param('seed')}, {param('out')} or {param('force')}", _request_text(request)
    )
    if request.dry_run:
        return _dry_run(request)
    outputs = [request.output] if request.output is not None else []
    prepared = plan_init(request, outputs)
    variables, spec = initialize_seed(prepared, config.init.seed)
    written = None
    if request.output is not None:
        write_seed_checkpoint(request.output, variables, spec, request.force)
        # What inspect would say of it; process 0 alone may see the committed directory.
        written = _read_back(request.output) if distributed.is_primary() else None
    summary = Summary(
        path=str(request.output) if request.output is not None else "(not written)",
        leaves=leaf_records_of(variables, prepared.layout),
        spec=spec.model_dump(mode="json"),
        written_at=commit_time(written) if written else None,
        orbax=orbax_facts(written) if written else None,
        provenance=provenance_of(spec, spec.versions),
    )
    return InitResult(summary=summary, spec=spec, variables=variables, prepared=prepared)


def _read_back(output: StoragePath) -> Checkpoint | None:
    """The checkpoint just written, as a reader sees it; ``None`` where a reader would refuse
    the path itself (an output named like a temporary directory), which the write does not."""
    try:
        return open_checkpoint(output)
    except IcnnError:
        return None


def check_resources(
    prepared: PreparedInit, outputs: Sequence[StoragePath] = ()
) -> resources.ResourceEstimate:
    """Refuse an init whose peak memory, or whose checkpoints at ``outputs``, cannot fit,
    before compiling.

    The shapes come from ``eval_shape`` of the prepared (not yet compiled) init, which
    JAX traces once for both this and the real call.
    """
    figures = estimate_resources(prepared, outputs)
    figures.check(outputs[0] if outputs else None)
    return figures


def estimate_resources(
    prepared: PreparedInit, outputs: Sequence[StoragePath] = ()
) -> resources.ResourceEstimate:
    """The memory and disk figures of a prepared init and its ``outputs``; refuses nothing
    (``verify`` words a re-run that does not fit its own way)."""
    import jax

    with default_device(prepared.device):
        # Inside the device context, as initialize_seed makes them: elsewhere the keys' small
        # programs would be compiled (or loaded from the persistent cache) a second time.
        stream_keys, _ = rngs.derive_stream_keys(prepared.config.init)
        shapes = jax.eval_shape(prepared.init_variables, stream_keys)
    output = outputs[0] if outputs else None
    return resources.estimate(
        shapes, output, _devices(prepared.layout, prepared.device), copies=max(len(outputs), 1)
    )


def _devices(layout: Layout | None, device: Any) -> list[Any]:
    return list(layout.mesh.devices.flat) if layout else [device]


def _dry_run(request: InitRequest) -> InitResult:
    config = request.config
    with distributed.all_or_none("preparing the dry run"):
        device = select_device(request.platform)
        samples, _ = model.load_gaussian_map_samples(config.model, request.config_dir)
        probes, _ = recipes.load_probe_samples(config, request.config_dir)
        with default_device(device):
            module = build_module(config, samples)
            stream_keys, _ = rngs.derive_stream_keys(config.init)
            shapes = abstract_variables(
                module, stream_keys, config.init, config.resolved_input_shape(), probes
            )
            layout = _plan_layout(module, config, request.platform, probes)
    device_text = layout.device_text(distributed.process_count()) if layout else str(device)
    figures = resources.estimate(shapes, request.output, _devices(layout, device))
    summary = Summary(
        path=str(request.output),
        leaves=leaf_records_of(shapes, layout),
        dry_run=DryRun(str(request.output), config.init.seed, device_text),
        resources=figures,
    )
    return InitResult(summary=summary, spec=None, refusal=_refusal_of(request))


def _refusal_of(request: InitRequest) -> IcnnError | None:
    """What the real run would say of ``--out`` (a dry run writes and repairs nothing)."""
    output = request.output
    if output is None:
        return None
    if not (output.exists() or (isinstance(output, Path) and output.is_symlink())):
        return None
    if output.is_file() or (isinstance(output, Path) and output.is_symlink()):
        problem = "exists and is a file, not a checkpoint directory"
    elif not request.force:
        problem = f"already exists (pass {param('force')} to replace it)"
    else:
        return None
    return OutputExists(problem, parameter="out", value=output)


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
