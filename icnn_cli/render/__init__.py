"""Every human rendering: rich tables and trees, plain text, Markdown.

The analysis and checkpoint layers build plain records; this package turns them
into cells. Every string that came from a checkpoint or a config passes
:func:`icnn_cli.render.safe_text.visible` on its way out, so a hostile key can
neither drive the terminal nor split a row. ``rich`` is imported only here (and
by the CLI), inside the functions that draw.
"""
