"""The init as a ``jax.export`` program, cached so a warm ``icnn init`` imports no OTT or Flax.

The first ``icnn init`` of an architecture traces ``module.init`` once, exports it
(StableHLO plus its input tree: the stream keys and the dummy input) and runs that very
program; the serialized export is stored in ``exports/`` inside JAX's compilation cache
directory (:mod:`icnn_cli.compile_cache`). A later run with the same cache key
deserializes it and calls it with the new seed's keys: it never builds the module, so
neither OTT (~2 s of imports on a 2-core CPU: flax, jaxopt, lineax, equinox, ...) nor
Flax is imported, and JAX's persistent cache supplies the compiled executable.

The key is a sha256 of everything that can change the program or its output: the
resolved ``model`` and ``init`` sections (the seed excluded: keys are inputs; the
recipe and overrides included), the sha256 of the Gaussian-map samples and of a recipe's
probe samples file, the installed versions (jax, jaxlib, flax, ott-jax,
orbax-checkpoint, icnn-cli) and this package's own init-path sources, the platform and
device kind, ``jax_threefry_partitionable``, ``jax_enable_x64`` and ``XLA_FLAGS``.

Each entry is one file, written atomically: the sha256 of the rest, a JSON header (the
key, what went into it, and the output tree) and the serialized export. An entry that is
unreadable, damaged or from another format is ignored (and rewritten); the directory is
safe to delete at any time. Each such fallback to a plain trace is said in one line on
stderr and kept in :data:`FALLBACKS` (a missing entry, the first run, is no fallback).

The output tree is stored as JSON here rather than trusted to ``Exported.out_tree``: the
export returns the flat list of leaves, and the header says how to nest them again
(dicts in their original key order, lists, tuples), so no Flax type is ever needed to
read an entry back. An output holding any other container is not exported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from icnn_cli.compile_cache import write_cache_file
from icnn_cli.config import IcnnConfig, InitConfig
from icnn_cli.errors import first_line
from icnn_cli.jitted_init import cast_floating, dummy_input, init_function

ENTRY_FORMAT = "icnn-export/1"
DIRECTORY_NAME = "exports"  # inside the compile cache; JAX's own entries are files `*-cache`
ENTRY_SUFFIX = ".icnn-export"
# This package's modules that decide what the traced init computes: a change to one of
# them (an editable install keeps its version number) must not reuse an old export.
SOURCE_MODULES = (
    "config.py",
    "export_cache.py",
    "jitted_init.py",
    "model.py",
    "recipes.py",
    "registry.py",
)
# jax.export has no public switch for its LAPACK setup (see _lapack_setup): this private
# hook, at the jax of requirements.lock, is what a program without custom calls skips.
# tests/test_export_cache.py checks it is still there, so a JAX upgrade that moves it fails
# a test rather than quietly costing every warm init the scipy import again.
LAPACK_HOOK_MODULE = "jax._src.export._export"
LAPACK_HOOK = "_ensure_backends_initialized"

Structure = Any  # JSON: {"dict": [[key, node], ...]} | {"list": [...]} | {"tuple": [...]}
# | {"none": None} | {"leaf": index into the exported program's flat outputs}


class NotExportable(Exception):
    """The init's output holds a container the JSON tree cannot describe."""


@dataclasses.dataclass(frozen=True)
class Fallback:
    """A time the cache could not serve the init, and the init was traced as without it."""

    entry: Path
    reason: str  # "is unreadable", "is damaged or foreign", "does not load", "is not exportable"
    detail: str  # the error: its type and first line


FALLBACKS: list[Fallback] = []
"""This process's fallbacks, oldest first."""


def fallback_count() -> int:
    """How many times this process fell back from the export cache to a plain trace."""
    return len(FALLBACKS)


def note_fallback(key: ExportKey, reason: str, error: BaseException) -> None:
    """Count a fallback and say it in one line on stderr (stdout stays the result's)."""
    fallback = Fallback(key.path, reason, f"{type(error).__name__}: {first_line(error)}")
    FALLBACKS.append(fallback)
    sys.stderr.write(
        f"icnn: note: the cached exported init {key.path.name} {reason} "
        f"({fallback.detail}); tracing the init instead\n"
    )


@dataclasses.dataclass(frozen=True)
class ExportKey:
    """Where an entry lives and what went into its name."""

    directory: Path
    digest: str
    inputs: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.directory / f"{self.digest}{ENTRY_SUFFIX}"


def export_directory(compile_cache: Path) -> Path:
    return compile_cache / DIRECTORY_NAME


def export_key(
    compile_cache: Path,
    config: IcnnConfig,
    sample_sha256: Sequence[str],
    versions: Mapping[str, str],
    device: Any,
) -> ExportKey:
    """The cache key of ``config``'s init on ``device`` (any seed)."""
    import jax

    inputs = {
        "format": ENTRY_FORMAT,
        "model": config.model.model_dump(mode="json"),
        "init": config.init.model_dump(mode="json", exclude={"seed"}),
        "input_shape": list(config.resolved_input_shape()),
        "gaussian_map_samples": list(sample_sha256),
        "versions": dict(versions),
        "sources": _source_digest(),
        "platform": device.platform,
        "device_kind": device.device_kind,
        "threefry_partitionable": bool(jax.config.values["jax_threefry_partitionable"]),
        "enable_x64": bool(jax.config.values["jax_enable_x64"]),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()
    return ExportKey(export_directory(compile_cache), digest, inputs)


def _source_digest() -> str:
    digest = hashlib.sha256()
    package = Path(__file__).parent
    for name in SOURCE_MODULES:
        digest.update(name.encode() + b"\0" + (package / name).read_bytes())
    return digest.hexdigest()


# The runners this process already compiled, by entry and device: a second init of the
# same architecture in one process (icnn_cli.init in a loop, verify, a notebook) calls the
# compiled program again instead of reading, deserializing and compiling the entry anew
# (~80 ms on a 2-core CPU). The entry file's identity is part of the key, so an entry that
# was rewritten or replaced since (by another process, or after a fallback) is read again.
_COMPILED: dict[tuple[str, int, tuple[int, int, int]], Callable[[Any], Any]] = {}


def _compiled_key(key: ExportKey, device_id: int) -> tuple[str, int, tuple[int, int, int]]:
    status = key.path.stat()
    return key.digest, device_id, (status.st_ino, status.st_size, status.st_mtime_ns)


def load_exported_init(key: ExportKey, init: InitConfig, device_id: int = 0) -> Any:
    """The cached init as ``rngs -> variables``, or ``None`` when there is no usable entry.

    ``None`` for a missing entry (the first run of this architecture); for an unusable one
    too, after :func:`note_fallback`: the cold path then traces the init and rewrites it.
    ``device_id`` is the device the init runs on (the key names only its kind).
    """
    try:
        compiled_key = _compiled_key(key, device_id)
        if compiled_key in _COMPILED:
            return _COMPILED[compiled_key]
        raw = key.path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        note_fallback(key, "is unreadable", error)
        return None
    try:
        header, payload = _parse_entry(raw, key)
    except ValueError as error:  # a wrong checksum, a cut file, other JSON, another key
        note_fallback(key, "is damaged or foreign", error)
        return None
    import jax

    try:
        exported = jax.export.deserialize(bytearray(payload))
        structure = header["out_tree"]
        _check_structure(structure, len(exported.out_avals))
        runner = _runner(exported, structure, init, header["custom_calls"] is not False)
    # jax.export documents no error class for a program it cannot read back or compile
    # (flatbuffers, MLIR and XLA each raise their own): any of them falls back, said.
    except Exception as error:
        note_fallback(key, "does not load", error)
        return None
    _COMPILED[compiled_key] = runner
    return runner


def export_and_store(
    key: ExportKey,
    module: Any,
    init: InitConfig,
    input_shape: tuple[int, ...],
    rngs: Any,
    platform: str,
    probes: Any = None,
    device_id: int = 0,
) -> Callable[[Any], Any]:
    """Export ``module``'s init, store it under ``key`` and return it as ``rngs -> variables``.

    Raises whatever tracing or exporting raises (the caller falls back to a plain jit);
    a cache that cannot be written costs only the next run's warm start.
    """
    import jax

    exported, structure = _export(
        module, init, input_shape, rngs, _lowering_platform(platform), probes
    )
    payload = exported.serialize()
    custom_calls = "custom_call" in exported.mlir_module()
    header = {"format": ENTRY_FORMAT, "key": key.digest, "inputs": key.inputs}
    header.update(out_tree=structure, custom_calls=custom_calls)
    _write_entry(key.path, header, payload)
    # Run the deserialized program, as a warm run will: the same lowering, so the same
    # persistent-cache entry and the same bits.
    runner = _runner(jax.export.deserialize(bytearray(payload)), structure, init, custom_calls)
    with contextlib.suppress(OSError):  # an entry that was not written is not remembered
        _COMPILED[_compiled_key(key, device_id)] = runner
    return runner


def _lowering_platform(platform: str) -> str:
    """jax.export's name for a Device's platform: GPUs by vendor ('cuda', 'rocm')."""
    if platform != "gpu":
        return platform  # 'cpu' and 'tpu' are the same in both
    import jax

    # A GPU device comes from JAX's GPU backend, its default one when there is a GPU.
    default = jax.export.default_export_platform()
    return default if default in ("cuda", "rocm") else "cuda"


def _export(
    module: Any,
    init: InitConfig,
    input_shape: tuple[int, ...],
    rngs: Any,
    platform: str,
    probes: Any = None,
) -> tuple[Any, Structure]:
    import jax

    function = init_function(module, init, probes)
    traced: dict[str, Any] = {}

    def init_leaves(rngs: Any, inputs: Any) -> list[Any]:
        variables = function(rngs, inputs)
        traced["tree"] = variables
        return jax.tree.leaves(variables)

    # Named like the plain jit (jit_init), so the compile cache's entries read the same.
    init_leaves.__name__ = "init"
    abstract_input = jax.eval_shape(lambda: dummy_input(input_shape))
    exported = jax.export.export(jax.jit(init_leaves), platforms=[platform])(rngs, abstract_input)
    return exported, describe_tree(traced["tree"])


def _runner(
    exported: Any, structure: Structure, init: InitConfig, custom_calls: bool
) -> Callable[[Any], Any]:
    """``rngs -> variables`` through ``exported``, compiled now (from JAX's persistent cache
    when it has the program), so a program that does not compile fails here, not later."""
    import jax
    import numpy as np
    from jax.core import Tracer

    def init_program(rngs: Any, inputs: Any) -> Any:
        return exported.call(rngs, inputs)

    init_program.__name__ = "init"
    (arguments, _) = jax.tree.unflatten(
        exported.in_tree,
        [jax.ShapeDtypeStruct(aval.shape, aval.dtype) for aval in exported.in_avals],
    )
    with _lapack_setup(needed=custom_calls):
        compiled = jax.jit(init_program).lower(*arguments).compile()
    # The ones of dummy_input, made by numpy: jnp.ones would compile (or load) two more programs.
    inputs = np.ones(arguments[1].shape, arguments[1].dtype)

    def run(rngs: Any) -> Any:
        traced = any(isinstance(key, Tracer) for key in jax.tree.leaves(rngs))
        # Under jax.eval_shape (the resource check) a compiled program cannot be called;
        # the export itself can, and gives the output shapes without lowering anything.
        leaves = init_program(rngs, inputs) if traced else compiled(rngs, inputs)
        return cast_floating(rebuild_tree(structure, leaves), init.dtype)

    return run


@contextlib.contextmanager
def _lapack_setup(needed: bool) -> Iterator[None]:
    """Skip jax.export's LAPACK setup when the program calls no LAPACK (no custom call at all).

    Lowering any exported CPU program initialises JAX's LAPACK kernels first, which imports
    scipy.linalg: 0.3-1 s on a 2-core CPU, more than the rest of a warm init. The ICNN init
    without Gaussian-map samples is plain HLO; with them (matrix square roots) it keeps it.
    """
    import importlib

    module = importlib.import_module(LAPACK_HOOK_MODULE)
    original = getattr(module, LAPACK_HOOK, None)
    if needed or original is None:
        yield
        return
    setattr(module, LAPACK_HOOK, lambda platforms: None)
    try:
        yield
    finally:
        setattr(module, LAPACK_HOOK, original)


# --- the output tree as JSON ------------------------------------------------------------


def describe_tree(tree: Any) -> Structure:
    """``tree``'s containers as JSON, each leaf its index in ``jax.tree.leaves(tree)``.

    Dicts keep their own key order (JAX flattens them sorted), so the rebuilt tree
    equals the original one, down to the order Orbax writes its metadata in.

    Raises:
      NotExportable: a container other than dict (string keys), list, tuple or None.
    """
    import jax

    index_of = {
        tuple(_path_entry(entry) for entry in path): index
        for index, (path, _) in enumerate(jax.tree_util.tree_flatten_with_path(tree)[0])
    }

    def describe(node: Any, path: tuple[Any, ...]) -> Structure:
        if path in index_of:
            return {"leaf": index_of[path]}
        if node is None:
            return {"none": None}
        if type(node) is dict and all(isinstance(key, str) for key in node):
            return {"dict": [[key, describe(value, (*path, key))] for key, value in node.items()]}
        if type(node) in (list, tuple):
            kind = type(node).__name__
            return {kind: [describe(value, (*path, i)) for i, value in enumerate(node)]}
        raise NotExportable(f"cannot describe a {type(node).__name__} in the init's output")

    return describe(tree, ())


def _path_entry(entry: Any) -> Any:
    from jax.tree_util import DictKey, SequenceKey

    if isinstance(entry, DictKey) and isinstance(entry.key, str):
        return entry.key
    if isinstance(entry, SequenceKey):
        return entry.idx
    raise NotExportable(f"cannot describe the path entry {entry!r}")


def rebuild_tree(structure: Structure, leaves: Sequence[Any]) -> Any:
    """The tree :func:`describe_tree` described, with ``leaves`` in their flat order."""
    ((kind, content),) = structure.items()
    if kind == "leaf":
        return leaves[content]
    if kind == "none":
        return None
    if kind == "dict":
        return {key: rebuild_tree(node, leaves) for key, node in content}
    children = [rebuild_tree(node, leaves) for node in content]
    return tuple(children) if kind == "tuple" else children


def _check_structure(structure: Structure, leaf_count: int) -> None:
    """Every output used exactly once, in a well-formed tree; else ``ValueError``."""
    seen: list[int] = []

    def walk(node: Any) -> None:
        if not isinstance(node, dict) or len(node) != 1:
            raise ValueError("malformed output tree")
        ((kind, content),) = node.items()
        if kind == "leaf" and type(content) is int:
            seen.append(content)
        elif kind == "dict" and isinstance(content, list):
            for pair in content:
                if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                    raise ValueError("malformed output tree")
                walk(pair[1])
        elif kind in ("list", "tuple") and isinstance(content, list):
            for child in content:
                walk(child)
        elif not (kind == "none" and content is None):
            raise ValueError("malformed output tree")

    walk(structure)
    if sorted(seen) != list(range(leaf_count)):
        raise ValueError("output tree does not match the exported outputs")


# --- entries on disk --------------------------------------------------------------------


def _parse_entry(raw: bytes, key: ExportKey) -> tuple[dict[str, Any], bytes]:
    digest, separator, body = raw.partition(b"\n")
    if not separator or hashlib.sha256(body).hexdigest().encode() != digest:
        raise ValueError("damaged entry")
    header_text, separator, payload = body.partition(b"\n")
    header = json.loads(header_text)
    if not separator or header.get("format") != ENTRY_FORMAT or header.get("key") != key.digest:
        raise ValueError("not this entry")
    return header, payload


def _write_entry(path: Path, header: dict[str, Any], payload: bytes) -> None:
    body = json.dumps(header, sort_keys=True).encode() + b"\n" + payload
    data = hashlib.sha256(body).hexdigest().encode() + b"\n" + body
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # an unwritable cache must never stop an init
    write_cache_file(path, data)
