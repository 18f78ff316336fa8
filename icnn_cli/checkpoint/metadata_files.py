"""Orbax's metadata files read directly: the tree, each array's zarr header, typed-key impls.

``StandardCheckpointer().metadata()`` opens every array through tensorstore one
by one: about 12 s for 10,000 leaves on a busy 2-core machine (BENCHMARKS.md).
The same facts sit in small JSON files: ``_METADATA`` has the tree (key paths
and value types) and each array's zarr header (``<name>/.zarray`` or
``<name>/zarr.json``, inside the OCDBT store or as plain files) has its shape
and dtype. Reading those in one batch takes well under a second.

These files are not a public Orbax API, so the reader is strict: anything it
does not recognise raises :class:`UnexpectedLayout` and the caller falls back
to Orbax's ``metadata()``. ``tests/test_layouts.py`` compares both on golden
checkpoints of every layout, so a format change in an Orbax upgrade shows up
as a failing test rather than as wrong output.

Typed PRNG keys are stored as their ``uint32`` key data; only
``array_metadatas/process_*`` records the impl (Orbax's ``metadata()`` shows
``uint32``), so :func:`key_impls` reads it for either path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from icnn_cli.checkpoint import guarded_files
from icnn_cli.checkpoint.guarded_files import PER_LEAF_JSON_BYTES, ZARR_HEADER_BYTES
from icnn_cli.checkpoint.layout import MSGPACK_TREE, TREE_METADATA, is_msgpack_tree_only
from icnn_cli.checkpoint.storage import (
    StoragePath,
    is_remote,
    kvstore_spec,
    tensorstore_context,
)
from icnn_cli.errors import CheckpointRefused, DamagedCheckpoint, first_line
from icnn_cli.records import LeafRecord, records_of_values
from icnn_cli.sharding import describe_spec

ARRAY_METADATAS = "array_metadatas"
ARRAY_VALUE_TYPES = frozenset({"np.ndarray", "jax.Array"})
SCALAR_VALUE_TYPE = "scalar"  # a Python int, float or bool, stored as a 0-d zarr array
STRING_VALUE_TYPE = "string"  # a Python str, stored in _strings.json (Orbax 0.11 on)
STRINGS = "_strings.json"
OCDBT_MANIFEST = "manifest.ocdbt"
EMPTY_VALUE_TYPES = frozenset({"None", "Dict", "List", "Tuple"})  # dropped by tree flattening
SEQUENCE_KEY = 1  # Orbax's KeyType.SEQUENCE; 2 is a dict key
KEY_DATA_WORDS = {"threefry2x32": 2, "rbg": 4, "unsafe_rbg": 4}  # jax.random key_data shapes


class UnexpectedLayout(Exception):
    """The metadata files do not look as this reader expects; use Orbax's API instead."""


def _load_json(path: StoragePath, name: str, cap: int = PER_LEAF_JSON_BYTES) -> Any:
    """The JSON file ``name`` of the item at ``path``, through the guarded opener.

    A missing or undecodable file is an :class:`UnexpectedLayout` (Orbax's API is tried
    instead); a file that breaks a safety rule is refused (:class:`CheckpointRefused`).
    """
    file = guarded_files.inside(path, name, "file name")
    try:
        return guarded_files.load_json(guarded_files.read_bytes(path, file, cap), path, name)
    except (OSError, ValueError) as error:
        raise UnexpectedLayout(f"{name}: {first_line(error)}") from None


def _tree_entries(document: Any, path: StoragePath) -> list[tuple[tuple[str, ...], str]]:
    """``(path parts, value type)`` of every leaf in ``_METADATA``, in jax's tree order.

    Each leaf's stored name (its parts joined by ``.``) is where Orbax and tensorstore
    look for its array: one that leaves the item is refused before anything opens it.
    """
    try:
        entries = document["tree_metadata"].values()
    except (KeyError, TypeError, AttributeError):
        raise UnexpectedLayout("no tree_metadata") from None
    leaves = []
    for entry in entries:
        try:
            keys = entry["key_metadata"]
            parts = tuple(str(key["key"]) for key in keys)
            sort_key = tuple(
                int(key["key"]) if key["key_type"] == SEQUENCE_KEY else str(key["key"])
                for key in keys
            )
            value = entry["value_metadata"]
            value_type = value["value_type"]
            if not isinstance(value_type, str):
                raise TypeError("value_type is not a string")
        except (KeyError, TypeError, ValueError, OverflowError):
            raise UnexpectedLayout("unexpected tree_metadata entry") from None
        guarded_files.inside(path, ".".join(parts), "leaf name", resolve=False)
        if value_type in EMPTY_VALUE_TYPES:
            continue
        if value_type not in (*ARRAY_VALUE_TYPES, SCALAR_VALUE_TYPE, STRING_VALUE_TYPE):
            raise UnexpectedLayout(f"value type {value_type!r}")
        if value.get("skip_deserialize"):
            raise UnexpectedLayout("values inside the msgpack tree (Orbax 0.4 aggregate)")
        leaves.append((sort_key, parts, value_type))
    # jax's tree flattening (Orbax's metadata() order): dict keys sorted, lists by index
    return [(parts, value_type) for _, parts, value_type in sorted(leaves, key=lambda x: x[0])]


def _zarr_headers(
    path: StoragePath, names: Sequence[str], use_ocdbt: bool, use_zarr3: bool
) -> list[Any]:
    header_file = "zarr.json" if use_zarr3 else ".zarray"
    if not use_ocdbt:
        return [_load_json(path, f"{name}/{header_file}", ZARR_HEADER_BYTES) for name in names]
    import tensorstore as ts

    try:
        spec = {"driver": "ocdbt", "base": kvstore_spec(path)}
        store = ts.KvStore.open(spec, context=tensorstore_context(path)).result()
        reads = [store.read(f"{name}/{header_file}") for name in names]
        headers = []
        for name, read in zip(names, reads, strict=True):
            value = read.result().value
            if len(value) > ZARR_HEADER_BYTES:
                raise CheckpointRefused(
                    f"{path}: {name}/{header_file} is larger than {ZARR_HEADER_BYTES} bytes"
                )
            headers.append(guarded_files.load_json(value, path, f"{name}/{header_file}"))
        return headers
    except (ValueError, RuntimeError) as error:  # tensorstore reports missing data as ValueError
        raise UnexpectedLayout(first_line(error)) from None


def _dtype(name: str) -> Any:
    import ml_dtypes
    import numpy as np

    try:
        return np.dtype(name)
    except TypeError:
        found = getattr(ml_dtypes, name, None)
        if found is None:
            raise UnexpectedLayout(f"dtype {name!r}") from None
        return np.dtype(found)


def _shape_and_dtype(header: Any, use_zarr3: bool) -> tuple[tuple[int, ...], Any]:
    try:
        shape = tuple(header["shape"])
        if not all(isinstance(dim, int) and not isinstance(dim, bool) for dim in shape):
            raise ValueError("a dimension that is not an integer")
        if any(dim < 0 for dim in shape):
            raise ValueError("negative dimension")
        dtype = _dtype(header["data_type"] if use_zarr3 else header["dtype"])
    except (KeyError, TypeError, ValueError):
        raise UnexpectedLayout("unexpected zarr header") from None
    return shape, dtype


def storage_flags(path: StoragePath) -> tuple[bool, bool]:
    """``(use_ocdbt, use_zarr3)`` of the PyTree item at ``path``.

    From ``_METADATA``; a tree without one (:func:`is_msgpack_tree_only`) is zarr v2, in
    OCDBT where ``manifest.ocdbt`` is at the top (zarr3 came after those releases).
    """
    if is_msgpack_tree_only(path):
        return (path / OCDBT_MANIFEST).is_file(), False
    _, use_ocdbt, use_zarr3 = _tree_document(path)
    return use_ocdbt, use_zarr3


def _tree_document(path: StoragePath) -> tuple[dict[str, Any], bool, bool]:
    """``_METADATA`` and its storage flags: ``(document, use_ocdbt, use_zarr3)``."""
    document = _load_json(path, TREE_METADATA)
    if not isinstance(document, dict):
        raise UnexpectedLayout(f"{TREE_METADATA} is not an object")
    use_ocdbt, use_zarr3 = document.get("use_ocdbt"), document.get("use_zarr3")
    if use_zarr3 is None and use_ocdbt is None and "tree_metadata" in document:
        # Orbax 0.4.1 (StandardCheckpointer) to 0.4.4 wrote _METADATA with neither flag,
        # before zarr3 existed: zarr v2 is all they wrote.
        use_zarr3 = False
    if use_ocdbt is None:
        # Orbax before 0.11 did not record it; its OCDBT saves have a manifest at the top.
        use_ocdbt = (path / OCDBT_MANIFEST).is_file()
    if not isinstance(use_ocdbt, bool) or not isinstance(use_zarr3, bool):
        raise UnexpectedLayout("use_ocdbt/use_zarr3 missing")
    return document, use_ocdbt, use_zarr3


def leaf_records(path: StoragePath) -> list[LeafRecord]:
    """One record per leaf, as ``metadata.leaf_records(metadata())`` gives, from the files.

    Arrays need only their zarr headers; a Python scalar's value is read too (one
    element), and a string's comes from ``_strings.json``.
    """
    document, use_ocdbt, use_zarr3 = _tree_document(path)
    entries = _tree_entries(document, path)
    stored = [(parts, kind) for parts, kind in entries if kind != STRING_VALUE_TYPE]
    names = [".".join(parts) for parts, _ in stored]
    headers = dict(zip(names, _zarr_headers(path, names, use_ocdbt, use_zarr3), strict=True))
    stored_strings = strings(path) if len(stored) < len(entries) else {}
    specs = partition_specs(path)
    read = None
    records = []
    for parts, kind in entries:
        name = ".".join(parts)
        if kind == STRING_VALUE_TYPE:
            if not isinstance(stored_strings.get(name), str):
                raise UnexpectedLayout(f"string {name!r} not in {STRINGS}")
            records.append(LeafRecord.of_scalar(parts, stored_strings[name], "str"))
            continue
        shape, dtype = _shape_and_dtype(headers[name], use_zarr3)
        if kind == SCALAR_VALUE_TYPE:
            if shape:
                raise UnexpectedLayout(f"scalar {name!r} has shape {list(shape)}")
            read = read or array_reader(path)
            try:
                value = read(LeafRecord.of_array(parts, shape, dtype))
            except (ValueError, RuntimeError) as error:  # tensorstore: bad header, bad data
                raise DamagedCheckpoint(
                    f"{path}: cannot read array data ({first_line(error)})"
                ) from None
            records.append(LeafRecord.of_scalar(parts, value.item(), python_type_name(dtype)))
            continue
        sharding = describe_spec(specs[name]) if name in specs else None
        records.append(LeafRecord.of_array(parts, shape, dtype, sharding=sharding))
    return records


def python_type_name(dtype: Any) -> str:
    """The Python type Orbax restores a scalar of this dtype as: bool, int, float or complex."""
    return {"b": "bool", "i": "int", "u": "int", "f": "float", "c": "complex"}.get(
        dtype.kind, str(dtype)
    )


def strings(path: StoragePath) -> dict[str, Any]:
    document = _load_json(path, STRINGS)
    if not isinstance(document, dict):
        raise UnexpectedLayout(f"{STRINGS} is not an object")
    return document


def key_impls(path: StoragePath) -> dict[str, str]:
    """``{orbax param name: random key impl}`` for the typed PRNG key leaves, if recorded."""
    directory = path / ARRAY_METADATAS
    if not directory.is_dir():
        return {}
    impls: dict[str, str] = {}
    for file in sorted(directory.iterdir()):
        try:
            document = _load_json(path, f"{ARRAY_METADATAS}/{file.name}")
            for entry in document["array_metadatas"]:
                metadata = entry["array_metadata"]
                impl = (metadata.get("ext_metadata") or {}).get("random_key_impl")
                if impl:
                    impls[metadata["param_name"]] = str(impl)
        except (UnexpectedLayout, KeyError, TypeError, AttributeError):
            continue  # an unreadable file only loses the key impls: the keys show as uint32
    return impls


SHARDINGS = "_sharding"


def partition_specs(path: StoragePath) -> dict[str, list]:
    """``{orbax param name: PartitionSpec entries}`` of the arrays saved from a device mesh.

    ``_sharding`` maps each base64-encoded param name to a JSON description; only
    ``NamedSharding`` ones have a partition spec (one-device saves have none).
    """
    import base64

    try:
        document = _load_json(path, SHARDINGS)
        specs = {}
        for encoded, text in document.items():
            sharding = guarded_files.load_json(text, path, SHARDINGS)
            if sharding.get("sharding_type") == "NamedSharding":
                name = base64.b64decode(encoded).decode()
                specs[name] = list(sharding["partition_spec"])
    except (UnexpectedLayout, ValueError, KeyError, TypeError, AttributeError):
        return {}  # an unreadable file only loses the layout column
    return specs


def array_reader(path: StoragePath) -> Any:
    """A function ``leaf -> numpy array`` reading one leaf straight from its zarr array.

    Orbax's partial restore (``PLACEHOLDER`` for the other leaves) read and
    decoded far more than the leaf asked for when many leaves share one OCDBT
    data file: 5 s and 1.2 GB of memory per 64 MiB leaf of a 1 GB checkpoint,
    against 0.4 s and one leaf's memory reading the zarr array itself.

    Raises:
      UnexpectedLayout: the metadata files are not as expected (use Orbax instead).
    """
    import tensorstore as ts

    use_ocdbt, use_zarr3 = storage_flags(path)
    base = kvstore_spec(path)
    kvstore: Any = {"driver": "ocdbt", "base": base} if use_ocdbt else base
    driver = "zarr3" if use_zarr3 else "zarr"
    # One context: the OCDBT manifest is read once for all leaves, not once per leaf.
    context = tensorstore_context(path)
    # A committed checkpoint does not change: in a bucket, do not ask again per leaf
    # whether the cached manifest is still current (a request each).
    rechecks = {"recheck_cached_data": False, "recheck_cached_metadata": False}
    if not is_remote(path):
        rechecks = {}

    def read(leaf: LeafRecord) -> Any:
        if not use_ocdbt and not is_remote(path):
            guarded_files.check_chunk_files(path, ".".join(leaf.path), leaf.nbytes)
        spec = {"driver": driver, "kvstore": kvstore, "path": ".".join(leaf.path), **rechecks}
        store = ts.open(spec, open=True, read=True, context=context).result()
        return store.read().result()

    return read


MAX_MSGPACK_TREE_BYTES = 1 << 30  # Orbax 0.4 aggregated only small trees into this file
PLACEHOLDER_PREFIX = "PLACEHOLDER://"  # Orbax 0.4: "the value is in the array store"


def _msgpack_leaves(path: StoragePath) -> dict[tuple[str, ...], Any] | None:
    """Every leaf of the msgpack tree, values and placeholders; ``None`` without the file
    (or one too large to be Orbax 0.4's tree). Read through the guarded opener."""
    from icnn_cli.tree_paths import flatten_with_paths

    file = path / MSGPACK_TREE
    if not guarded_files.is_regular_file(path, file):
        return None
    if guarded_files.regular_file_size(path, file) > MAX_MSGPACK_TREE_BYTES:
        return None  # too large to be Orbax 0.4's aggregated tree
    guarded_files.check_msgpack_fits(path, file)
    data = guarded_files.read_bytes(path, file, MAX_MSGPACK_TREE_BYTES)
    tree = guarded_files.restore_msgpack(data, path, MSGPACK_TREE, UnexpectedLayout)
    return dict(flatten_with_paths(tree))


def _placeholder_name(leaf: Any) -> str | None:
    """The param name a ``PLACEHOLDER://<name>`` leaf stands for; ``None`` for a value."""
    if isinstance(leaf, str) and leaf.startswith(PLACEHOLDER_PREFIX):
        return leaf[len(PLACEHOLDER_PREFIX) :]
    return None


def msgpack_values(path: StoragePath) -> dict[tuple[str, ...], Any] | None:
    """The leaves Orbax 0.4 stored inside its msgpack tree (``SaveArgs(aggregate=True)``).

    ``None`` when there is no such file or its leaves are placeholders for arrays
    stored in the array store (the default), which the zarr readers handle.
    """
    leaves = _msgpack_leaves(path)
    if leaves is None or any(_placeholder_name(leaf) for leaf in leaves.values()):
        return None
    return leaves


def msgpack_inline_values(path: StoragePath) -> dict[tuple[str, ...], Any]:
    """The leaves whose values the msgpack tree holds itself, where others are placeholders
    (``SaveArgs(aggregate=True)`` on some leaves only); ``{}`` without the file."""
    leaves = _msgpack_leaves(path) or {}
    return {parts: leaf for parts, leaf in leaves.items() if _placeholder_name(leaf) is None}


def msgpack_tree_records(path: StoragePath) -> list[LeafRecord]:
    """Records of a tree without ``_METADATA`` (:func:`is_msgpack_tree_only`), as Orbax
    restores it: the msgpack tree's own values, and for each ``PLACEHOLDER://<name>`` the
    zarr array ``<name>`` (in OCDBT, or a directory of its own), shape and dtype from its
    header. A Python scalar was stored as a 0-d array, so it is one here, as restored.

    Raises:
      UnexpectedLayout: the tree or an array's header is missing or unreadable; the text
        says which, for the caller's one line (Orbax's ``metadata()`` cannot read this
        layout, so there is nothing to fall back to).
    """
    leaves = _msgpack_leaves(path)
    if leaves is None:
        raise UnexpectedLayout(
            f"{MSGPACK_TREE} (the msgpack tree) is larger than {MAX_MSGPACK_TREE_BYTES} bytes"
        )
    stored = {parts: name for parts, leaf in leaves.items() if (name := _placeholder_name(leaf))}
    for parts, name in stored.items():
        if name != ".".join(parts):
            raise UnexpectedLayout(
                f"{MSGPACK_TREE}: the placeholder of {'/'.join(parts)} names {name!r}"
            )
    use_ocdbt, _ = storage_flags(path)
    names = list(stored.values())
    if names and not use_ocdbt:
        absent = [name for name in names if not (path / name).is_dir()]
        if absent:
            raise UnexpectedLayout(
                f"array data missing: no {OCDBT_MANIFEST} (the OCDBT store) and no "
                f"directory {absent[0]}/ for the array {absent[0]!r}"
                + (f", nor for {len(absent) - 1} other arrays" if len(absent) > 1 else "")
            )
    try:
        headers = dict(zip(names, _zarr_headers(path, names, use_ocdbt, False), strict=True))
    except UnexpectedLayout as error:
        store = f"the OCDBT store ({OCDBT_MANIFEST})" if use_ocdbt else "their directories"
        raise UnexpectedLayout(
            f"cannot read the arrays' zarr headers from {store}: {error}"
        ) from None

    inline = {
        record.path: record
        for record in records_of_values(
            {parts: leaf for parts, leaf in leaves.items() if parts not in stored}
        )
    }
    records = []
    for parts in leaves:
        if parts in stored:
            shape, dtype = _shape_and_dtype(headers[stored[parts]], False)
            records.append(LeafRecord.of_array(parts, shape, dtype))
        else:
            records.append(inline[parts])
    return records
