"""Sizes as people read them, for tables and for error messages alike."""

from __future__ import annotations


def format_bytes(count: int) -> str:
    """Human-readable binary size: ``16.0 KiB``, ``37.3 GiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
