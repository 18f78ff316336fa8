"""Summary rows checked field by field; golden text at a pinned width with colour off."""

from __future__ import annotations

import math

import numpy as np
import pytest

from icnn_cli.records import (
    DryRun,
    LeafFilter,
    LeafRecord,
    LeafStats,
    Summary,
    combine_stats,
    filter_leaves,
    format_bytes,
    leaf_statistics,
    summary_rows,
)
from icnn_cli.render.summary import tree_guide
from tests.helpers import plain_text

LEAVES = [
    LeafRecord(("params", "w_zs_0", "kernel"), (4, 4), "float32", 64),
    LeafRecord(("params", "w_xs_0", "bias"), (4,), "float32", 16),
    LeafRecord(("params", "w_xs_0", "lin_kernel"), (2, 4), "float32", 32),
]


def _float32(path: tuple[str, ...], shape: tuple[int, ...]) -> LeafRecord:
    return LeafRecord(path, shape, "float32", 4 * math.prod(shape))


def deep_icnn_leaves(hidden: int = 8, width: int = 4, dim: int = 2) -> list[LeafRecord]:
    """The leaves of OTT's ICNN with ``hidden`` equal hidden layers, in Orbax's sorted order."""

    def potential(name: str, dim_out: int) -> list[LeafRecord]:
        return [
            _float32(("params", name, "bias"), (dim_out,)),
            _float32(("params", name, "diag_kernel"), (dim, dim_out)),
            _float32(("params", name, "lin_kernel"), (dim, dim_out)),
            _float32(("params", name, "quad_kernel"), (dim_out, dim, 1)),
        ]

    leaves = potential("pos_def_potentials", 1)
    for index in range(hidden):
        leaves += potential(f"w_xs_{index}", width)
    leaves += potential(f"w_xs_{hidden}", 1)
    leaves += [
        _float32(("params", f"w_zs_{i}", "kernel"), (width, width)) for i in range(hidden - 1)
    ]
    leaves.append(_float32(("params", f"w_zs_{hidden - 1}", "kernel"), (width, 1)))
    # Orbax lists dict keys in string order: w_xs_10 would come before w_xs_2.
    return sorted(leaves, key=lambda leaf: leaf.path)


def test_rows_are_collection_module_leaf_with_subtotals():
    rows = summary_rows(LEAVES)

    assert [(tree_guide(row), row.name, row.depth, row.params, row.nbytes) for row in rows] == [
        ("", "params", 0, 28, 112),
        ("├── ", "w_xs_0", 1, 12, 48),
        ("│   ├── ", "bias", 2, 4, 16),
        ("│   └── ", "lin_kernel", 2, 8, 32),
        ("└── ", "w_zs_0", 1, 16, 64),
        ("    └── ", "kernel", 2, 16, 64),
    ]
    assert [row.shape for row in rows if row.is_leaf] == [(4,), (2, 4), (4, 4)]
    assert [row.arrays for row in rows] == [3, 2, 1, 1, 1, 1]


def test_siblings_come_in_natural_order():
    leaves = [_float32(("layers", str(index)), (1,)) for index in (10, 2, 1)]

    rows = summary_rows(leaves, expand=True)

    assert [row.name for row in rows] == ["layers", "1", "2", "10"]


def test_repeated_layers_collapse_into_one_row_with_summed_counts():
    rows = summary_rows(deep_icnn_leaves())

    modules = [row for row in rows if row.depth == 1]
    assert [(row.name, row.count, row.arrays, row.params, row.nbytes) for row in modules] == [
        ("pos_def_potentials", 1, 4, 7, 28),
        ("w_xs_{0..7}", 8, 32, 8 * 28, 8 * 112),
        ("w_xs_8", 1, 4, 7, 28),
        ("w_zs_{0..6}", 7, 7, 7 * 16, 7 * 64),
        ("w_zs_7", 1, 1, 4, 16),
    ]
    kernel = rows[rows.index(modules[3]) + 1]
    assert (kernel.name, kernel.shape, kernel.params, tree_guide(kernel)) == (
        "kernel",
        (4, 4),
        7 * 16,
        "│   └── ",
    )
    assert sum(row.params for row in modules) == sum(leaf.size for leaf in deep_icnn_leaves())


def test_expand_keeps_every_module():
    rows = summary_rows(deep_icnn_leaves(), expand=True)

    names = [row.name for row in rows if row.depth == 1]
    assert names == ["pos_def_potentials", *(f"w_xs_{i}" for i in range(9))] + [
        f"w_zs_{i}" for i in range(8)
    ]
    assert all(row.count == 1 for row in rows)


def test_collapse_keeps_gaps_and_nested_repeats_visible():
    leaves = [
        *(
            _float32(("blocks", f"block{i}", f"dense_{j}", "w"), (3, 3))
            for i in (0, 1, 2, 5)
            for j in range(3)
        ),
        _float32(("blocks", "block3", "dense_0", "w"), (3, 4)),
    ]

    rows = summary_rows(leaves)

    assert [(tree_guide(row) + row.name, row.count, row.params) for row in rows] == [
        ("blocks", 1, 4 * 27 + 12),
        ("├── block{0..2,5}", 4, 4 * 27),
        ("│   └── dense_{0..2}", 3, 4 * 27),
        ("│       └── w", 1, 4 * 27),
        ("└── block3", 1, 12),
        ("    └── dense_0", 1, 12),
        ("        └── w", 1, 12),
    ]


def test_depth_cuts_the_tree_and_keeps_subtotals():
    rows = summary_rows(deep_icnn_leaves(), max_depth=2)

    assert max(row.depth for row in rows) == 1
    assert [(row.name, row.truncated) for row in rows[:2]] == [
        ("params", False),
        ("pos_def_potentials", True),
    ]
    assert rows[0].params == sum(row.params for row in rows[1:])

    collections = summary_rows(deep_icnn_leaves(), max_depth=1)
    assert [(row.name, row.arrays, row.truncated) for row in collections] == [("params", 48, True)]


def test_filter_matches_leaf_paths_and_module_paths():
    leaves = deep_icnn_leaves()

    by_module = filter_leaves(leaves, ["params/w_zs_*"])
    by_leaf = filter_leaves(leaves, ["*/bias"])

    assert [leaf.path_string for leaf in by_module] == [f"params/w_zs_{i}/kernel" for i in range(8)]
    assert len(by_leaf) == 10 and all(leaf.path[-1] == "bias" for leaf in by_leaf)
    both = filter_leaves(leaves, ["params/w_zs_7", "params/w_xs_8/bias"])
    assert [leaf.path_string for leaf in both] == ["params/w_xs_8/bias", "params/w_zs_7/kernel"]


def test_nan_inf_and_zero_counts_and_flags():
    values = np.array([1.0, np.nan, -np.inf, 3.0, np.nan], np.float32)

    stats = leaf_statistics(values)

    assert (stats.nan, stats.inf) == (2, 1)
    assert (stats.mean, stats.min, stats.max) == (2.0, 1.0, 3.0)
    assert stats.std == pytest.approx(1.0)
    assert stats.negative_fraction == pytest.approx(1 / 5)
    assert stats.flags == ("nan", "inf")
    assert leaf_statistics(np.zeros((2, 2))).flags == ("all_zero",)
    assert leaf_statistics(np.ones(3)).flags == ()
    all_nan = leaf_statistics(np.full(3, np.nan)).as_json()
    assert (all_nan["mean"], all_nan["nan"], all_nan["flags"]) == (None, 3, ["nan"])


def test_combined_stats_equal_the_stats_of_the_concatenation():
    parts = [
        np.array([1.0, 2.0, np.nan]),
        np.array([-4.0, np.inf, 0.5, 7.0]),
        np.array([np.nan]),
    ]

    combined = combine_stats([(leaf_statistics(part), part.size) for part in parts])

    expected = leaf_statistics(np.concatenate(parts))
    assert combined.mean == pytest.approx(expected.mean)
    assert combined.std == pytest.approx(expected.std)
    assert (combined.min, combined.max, combined.nan, combined.inf) == (
        expected.min,
        expected.max,
        expected.nan,
        expected.inf,
    )
    assert combined.negative_fraction == pytest.approx(expected.negative_fraction)


def test_combined_std_of_values_far_from_zero_keeps_its_digits():
    # a module's biases all near 1e4 with a spread of 1e-3: E[x^2] - mean^2 loses it all
    rng = np.random.default_rng(0)
    parts = [1e4 + 1e-3 * rng.standard_normal(size) for size in (100, 300, 50)]

    combined = combine_stats([(leaf_statistics(part), part.size) for part in parts])

    assert combined.std == pytest.approx(np.concatenate(parts).std(), rel=1e-6)


def test_format_bytes():
    assert [format_bytes(n) for n in (0, 1023, 1024, 5 * 2**20, 3 * 2**30)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]


def test_golden_plain_text_at_fixed_width():
    summary = Summary(path="ckpt", leaves=LEAVES, dry_run=DryRun("ckpt", 0, "cpu:0 (cpu)"))

    assert plain_text(summary) == (
        "path    ckpt (dry run: nothing written)\n"
        "seed    0                              \n"
        "device  cpu:0 (cpu)                    \n"
        "\n"
        "tree                shape   dtype    params  bytes\n"
        "params                                   28  112 B\n"
        "├── w_xs_0                               12   48 B\n"
        "│   ├── bias        (4,)    float32       4   16 B\n"
        "│   └── lin_kernel  (2, 4)  float32       8   32 B\n"
        "└── w_zs_0                               16   64 B\n"
        "    └── kernel      (4, 4)  float32      16   64 B\n"
        "\n"
        "total: 28 params, 112 B in 3 arrays\n"
    )


def test_golden_collapsed_deep_model():
    assert plain_text(Summary(path="ckpt", leaves=deep_icnn_leaves())) == (
        "path  ckpt\n"
        "\n"
        "tree                    shape      dtype    params    bytes\n"
        "params                                         354  1.4 KiB\n"
        "├── pos_def_potentials                           7     28 B\n"
        "│   ├── bias            (1,)       float32       1      4 B\n"
        "│   ├── diag_kernel     (2, 1)     float32       2      8 B\n"
        "│   ├── lin_kernel      (2, 1)     float32       2      8 B\n"
        "│   └── quad_kernel     (1, 2, 1)  float32       2      8 B\n"
        "├── w_xs_{0..7}  x8                            224    896 B\n"
        "│   ├── bias            (4,)       float32      32    128 B\n"
        "│   ├── diag_kernel     (2, 4)     float32      64    256 B\n"
        "│   ├── lin_kernel      (2, 4)     float32      64    256 B\n"
        "│   └── quad_kernel     (4, 2, 1)  float32      64    256 B\n"
        "├── w_xs_8                                       7     28 B\n"
        "│   ├── bias            (1,)       float32       1      4 B\n"
        "│   ├── diag_kernel     (2, 1)     float32       2      8 B\n"
        "│   ├── lin_kernel      (2, 1)     float32       2      8 B\n"
        "│   └── quad_kernel     (1, 2, 1)  float32       2      8 B\n"
        "├── w_zs_{0..6}  x7                            112    448 B\n"
        "│   └── kernel          (4, 4)     float32     112    448 B\n"
        "└── w_zs_7                                       4     16 B\n"
        "    └── kernel          (4, 1)     float32       4     16 B\n"
        "\n"
        "total: 354 params, 1.4 KiB in 48 arrays\n"
    )


def test_golden_depth_and_filter():
    leaves = deep_icnn_leaves()
    kept = filter_leaves(leaves, ["params/w_zs_*"])
    summary = Summary(
        path="ckpt",
        leaves=kept,
        leaf_filter=LeafFilter(globs=("params/w_zs_*",), kept=len(kept), of=len(leaves)),
    )

    assert plain_text(summary, max_depth=2) == (
        "path  ckpt\n"
        "\n"
        "tree                   shape  dtype  params  bytes\n"
        "params                                  116  464 B\n"
        "├── w_zs_{0..6}  x7 …                   112  448 B\n"
        "└── w_zs_7 …                              4   16 B\n"
        "\n"
        "total of filtered leaves (params/w_zs_*): 116 params, 464 B in 8 of 48 arrays\n"
    )


def test_golden_stats_show_flags_and_collapsed_rows_count_them():
    def with_stats(leaf: LeafRecord, values: list[float]) -> LeafRecord:
        stats = leaf_statistics(np.array(values, np.float32))
        return LeafRecord(leaf.path, leaf.shape, leaf.dtype, leaf.nbytes, stats)

    leaves = [
        with_stats(_float32(("params", "w_0", "kernel"), (2,)), [1.0, -1.0]),
        with_stats(_float32(("params", "w_1", "kernel"), (2,)), [3.0, np.nan]),
        with_stats(_float32(("params", "w_2", "bias"), (2,)), [0.0, 0.0]),
    ]

    assert plain_text(Summary(path="ckpt", leaves=leaves), width=100) == (
        "path  ckpt\n"
        "\n"
        "tree             shape  dtype    params  bytes  mean    std  min  max  neg  flags   \n"
        "params                                6   24 B                                      \n"
        "├── w_{0,1}  x2                       4   16 B                                      \n"
        # one of the two kernels has a NaN: the collapsed row says how many
        "│   └── kernel   (2,)   float32       4   16 B     1  1.633   -1    3  25%  nan 1/2 \n"
        "└── w_2                               2    8 B                                      \n"
        "    └── bias     (2,)   float32       2    8 B     0      0    0    0   0%  all_zero\n"
        "\n"
        "total: 6 params, 24 B in 3 arrays\n"
        # a zero bias at init is no fault: the flag says so
        "all_zero: only zeros, as expected at init for biases and for kernels the init zeroes\n"
    )


def test_json_lists_every_leaf_and_module_subtotals_down_to_depth():
    leaves = deep_icnn_leaves()

    document = Summary(path="ckpt", leaves=leaves).as_json(max_depth=2)

    assert [leaf["path"] for leaf in document["leaves"]] == [leaf.path_string for leaf in leaves]
    assert document["filter"] is None
    modules = {module["path"]: module for module in document["modules"]}
    assert len(modules) == 1 + 18
    assert modules["params"] == {
        "path": "params",
        "depth": 0,
        "params": 354,
        "bytes": 1416,
        "arrays": 48,
    }
    assert modules["params/w_zs_3"]["params"] == 16


def test_leaf_stats_json_keys():
    stats = LeafStats(0.5, 0.1, 0.0, 1.0, 0.0, nan=1, inf=0)

    assert stats.as_json() == {
        "mean": 0.5,
        "std": 0.1,
        "min": 0.0,
        "max": 1.0,
        "negative_fraction": 0.0,
        "nan": 1,
        "inf": 0,
        "flags": ["nan"],
    }


def test_a_module_cut_by_depth_shows_the_pooled_stats_and_flags_of_its_leaves():
    first = np.array([1.0, -1.0], np.float32)
    second = np.array([3.0, np.nan], np.float32)
    leaves = [
        LeafRecord(("params", "a", "w"), (2,), "float32", 8, leaf_statistics(first)),
        LeafRecord(("params", "b", "w"), (2,), "float32", 8, leaf_statistics(second)),
    ]

    (params,) = summary_rows(leaves, max_depth=1)

    expected = leaf_statistics(np.concatenate([first, second]))
    assert params.truncated and params.flags == ("nan",)
    assert (params.stats.mean, params.stats.nan, params.stats.max) == (
        expected.mean,
        expected.nan,
        expected.max,
    )
    assert params.stats.std == pytest.approx(expected.std)


def test_pooled_stats_leave_out_key_leaves_which_have_none():
    values = np.array([2.0, -4.0], np.float32)
    leaves = [
        LeafRecord(("rngs", "dropout"), (), "key<threefry2x32>", 8, key_impl="threefry2x32"),
        LeafRecord(("rngs", "scale"), (2,), "float32", 8, leaf_statistics(values)),
    ]

    (rngs,) = summary_rows(leaves, max_depth=1)

    assert rngs.stats == leaf_statistics(values)
    assert rngs.arrays == 2 and rngs.params == 3


def test_siblings_with_other_dtypes_or_shapes_do_not_collapse():
    leaves = [
        LeafRecord(("params", "w_0", "kernel"), (2, 2), "float32", 16),
        LeafRecord(("params", "w_1", "kernel"), (2, 2), "bfloat16", 8),
        LeafRecord(("params", "w_2", "kernel"), (2, 3), "float32", 24),
        LeafRecord(("params", "w_3", "kernel"), (2, 2), "float32", 16),
    ]

    rows = summary_rows(leaves)

    assert [(row.name, row.count) for row in rows if row.depth == 1] == [
        ("w_{0,3}", 2),
        ("w_1", 1),
        ("w_2", 1),
    ]
