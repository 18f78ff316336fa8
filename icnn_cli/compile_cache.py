"""JAX's persistent compilation cache, on by default in a per-user cache directory.

A second ``icnn init`` of the same architecture then loads the compiled init
from disk instead of compiling it again. Where the cache lives:

* ``ICNN_COMPILE_CACHE_DIR`` if set;
* else ``$XDG_CACHE_HOME/icnn/jax``;
* else ``~/.cache/icnn/jax``.

``ICNN_NO_COMPILE_CACHE=1`` (or ``--no-compile-cache``) turns it off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

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
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    # JAX only stores programs that took >= 1 s to compile; an ICNN init takes
    # 0.3-1 s on a small CPU, which is most of a warm run's time, so store all.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return directory
