"""JAX's persistent compilation cache, on by default in a per-user cache directory.

A second ``icnn init`` of the same architecture then loads the compiled init
from disk instead of compiling it again. Where the cache lives:

* ``ICNN_COMPILE_CACHE_DIR`` if set;
* else ``$XDG_CACHE_HOME/icnn/jax``;
* else ``~/.cache/icnn/jax``.

``ICNN_NO_COMPILE_CACHE=1`` (or ``--no-compile-cache``) turns it off.

JAX writes an entry in place (``Path.write_bytes``) and never replaces one that exists, so
a run killed while writing (a CI timeout) leaves a truncated entry that every later run
fails to read, warns about in four lines, compiles around and cannot store. icnn's runs
write entries atomically instead (a temporary file, then a rename), and an entry JAX could
not read is compiled again and replaced, said in one line on stderr and counted in
:data:`REPLACED`. This hooks JAX's private ``get_file_cache`` (pinned by
``requirements.lock``; ``tests/test_compile_cache.py`` checks the hook is still there), and
only for JAX's unbounded cache: with ``jax_compilation_cache_max_size`` set, JAX's own
locked LRU cache is left as it is.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DIRECTORY_VARIABLE = "ICNN_COMPILE_CACHE_DIR"
DISABLE_VARIABLE = "ICNN_NO_COMPILE_CACHE"
_FALSE_WORDS = ("", "0", "false", "no", "off")


def cache_directory(environ: Mapping[str, str] = os.environ) -> Path:
    """Where compiled programs are kept (see the module docstring for the order)."""
    explicit = environ.get(DIRECTORY_VARIABLE)
    if explicit:
        return Path(explicit)
    xdg = environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "icnn" / "jax"


def disabled_by_environment(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get(DISABLE_VARIABLE, "").strip().lower() not in _FALSE_WORDS


def configure_compile_cache(enabled: bool) -> Path | None:
    """Point JAX's persistent cache at :func:`cache_directory`, or turn it off.

    Call before the first ``jit`` compile: JAX decides once per process whether
    the cache is used. Returns the directory in use, or ``None`` when off.
    """
    import jax

    if not enabled or disabled_by_environment():
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    directory = cache_directory()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        # An unwritable cache must never stop an init; it only costs the compile.
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    _write_entries_atomically()
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    # JAX only stores programs that took >= 1 s to compile; an ICNN init takes
    # 0.3-1 s on a small CPU, which is most of a warm run's time, so store all.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return directory


# JAX's module and function that build the file cache, and the suffix of its entries.
CACHE_HOOK_MODULE = "jax._src.compilation_cache"
CACHE_HOOK = "get_file_cache"
ENTRY_SUFFIX = "-cache"
ENTRY_MODE = 0o644
# JAX's warning for an entry it cannot read; icnn says it in one line of its own instead.
UNREADABLE_ENTRY_WARNING = "Error reading persistent compilation cache entry"

REPLACED: list[str] = []
"""The compile cache entries this process found damaged, compiled again and replaced."""


def _write_entries_atomically() -> None:
    """Make the file cache JAX builds next an :class:`AtomicEntries` (once per process)."""
    import importlib

    module = importlib.import_module(CACHE_HOOK_MODULE)
    original = getattr(module, CACHE_HOOK)
    if getattr(original, "icnn_atomic", False):
        return

    def get_file_cache(path: str) -> Any:
        built = original(path)
        if built is None:
            return None
        cache, where = built
        if getattr(cache, "eviction_enabled", True):  # JAX's locked LRU cache: its own rules
            return built
        # said in one line by AtomicEntries.put instead, for the entries it serves
        warnings.filterwarnings("ignore", message=UNREADABLE_ENTRY_WARNING, category=UserWarning)
        return AtomicEntries(Path(where)), where

    get_file_cache.icnn_atomic = True  # pyright: ignore[reportFunctionMemberAccess]
    setattr(module, CACHE_HOOK, get_file_cache)


def write_cache_file(path: Path, data: bytes) -> bool:
    """Write ``path`` whole or not at all (a temporary file beside it, then a rename).

    False when it could not be written: an unwritable cache never stops an init, it only
    costs the next run its compile.
    """
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
            os.chmod(temporary, ENTRY_MODE)  # as JAX's own entries, not mkstemp's 0600
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError:
        return False
    return True


class AtomicEntries:
    """JAX's unbounded file cache, each entry written whole or not at all.

    An entry this process read (``get`` gave bytes) and then had to store anyway (``put``:
    JAX compiled because it could not read it) was damaged: it is replaced, and said. An
    entry that appeared since a miss (another process compiled the same program) is kept.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._read: set[str] = set()

    def _entry(self, key: str) -> Path:
        return self._path / f"{key}{ENTRY_SUFFIX}"

    def get(self, key: str) -> bytes | None:
        try:
            value = self._entry(key).read_bytes()
        except OSError:
            return None
        self._read.add(key)
        return value

    def put(self, key: str, value: bytes) -> None:
        entry = self._entry(key)
        damaged = key in self._read
        if entry.exists() and not damaged:
            return
        if not write_cache_file(entry, value):
            return
        if damaged:
            self._read.discard(key)
            REPLACED.append(entry.name)
            program = key.split("-", 1)[0]
            sys.stderr.write(
                f"icnn: note: the compile cache entry of {program} could not be read (a run "
                "killed while writing it?); compiled again and replaced\n"
            )
