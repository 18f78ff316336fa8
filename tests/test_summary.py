"""Summary rows checked field by field; golden text at a pinned width with colour off."""

from __future__ import annotations

import io

from rich.console import Console

from icnn_cli.summary import LeafRecord, Summary, format_bytes, render_table, summary_rows

LEAVES = [
    LeafRecord(("params", "w_zs_0", "kernel"), (4, 4), "float32", 64),
    LeafRecord(("params", "w_xs_0", "bias"), (4,), "float32", 16),
    LeafRecord(("params", "w_xs_0", "lin_kernel"), (2, 4), "float32", 32),
]


def test_rows_are_collection_module_leaf_with_subtotals():
    rows = summary_rows(LEAVES)

    assert [(row.guide, row.name, row.depth, row.params, row.nbytes) for row in rows] == [
        ("", "params", 0, 28, 112),
        ("├── ", "w_zs_0", 1, 16, 64),
        ("│   └── ", "kernel", 2, 16, 64),
        ("└── ", "w_xs_0", 1, 12, 48),
        ("    ├── ", "bias", 2, 4, 16),
        ("    └── ", "lin_kernel", 2, 8, 32),
    ]
    assert [row.shape for row in rows if row.is_leaf] == [(4, 4), (4,), (2, 4)]


def test_format_bytes():
    assert [format_bytes(n) for n in (0, 1023, 1024, 5 * 2**20, 3 * 2**30)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]


def test_golden_plain_text_at_fixed_width():
    summary = Summary(path="ckpt", leaves=LEAVES, header=[("seed", "0")])
    buffer = io.StringIO()
    Console(file=buffer, width=80, no_color=True, color_system=None, force_terminal=False).print(
        render_table(summary)
    )

    assert buffer.getvalue() == (
        "path  ckpt\n"
        "seed  0   \n"
        "\n"
        "tree                shape   dtype    params  bytes\n"
        "params                                   28  112 B\n"
        "├── w_zs_0                               16   64 B\n"
        "│   └── kernel      (4, 4)  float32      16   64 B\n"
        "└── w_xs_0                               12   48 B\n"
        "    ├── bias        (4,)    float32       4   16 B\n"
        "    └── lin_kernel  (2, 4)  float32       8   32 B\n"
        "\n"
        "total: 28 params, 112 B in 3 arrays\n"
    )
