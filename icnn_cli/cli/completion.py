"""Shell-completion callbacks (Typer's ``autocompletion=``): values read from the disk, no JAX.

Options with a fixed set of values (``--format``, ``--platform``) and path arguments are
completed by Typer itself; this module completes values that depend on the checkpoint the
command line names. A callback never raises: no candidates is the answer to a bad path.
"""

from __future__ import annotations

import typer

from icnn_cli.checkpoint.storage import storage_path


def complete_item_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """``--item``: the item names of the checkpoint (or step, with ``--step``) at PATH."""
    from icnn_cli.checkpoint.layout import locate

    # With the cursor after "--item", Click's resilient parse stops at the option
    # lacking its value and leaves PATH unparsed, in ctx.args.
    path = ctx.params.get("path") or next(iter(ctx.args), None)
    if path is None:
        return []
    try:
        location = locate(storage_path(path), ctx.params.get("step"))
    except Exception:  # an unfinished or wrong path while typing: offer nothing
        return []
    names = [item.name for item in location.checkpoint.items if item.name]
    return [name for name in names if name.startswith(incomplete)]
