"""Plain data about a checkpoint: leaf records, statistics, filters, tree rows, header facts.

No rendering here and no I/O: readers (``icnn_cli.checkpoint``) and the init path
build these records, ``icnn_cli.analysis`` adds to them, and ``icnn_cli.render``
shows them. Like Flax's ``Module.tabulate``: rows first, rendering second.
"""

from icnn_cli.records.header import (
    DryRun,
    FingerprintCheck,
    ManagerStep,
    OrbaxFacts,
    OrbaxItem,
    Provenance,
    SampleRecord,
    StreamRecord,
)
from icnn_cli.records.leaves import (
    LeafFilter,
    LeafRecord,
    LeafStats,
    combine_stats,
    filter_leaves,
    leaf_matches,
    leaf_statistics,
    records_of_tree,
    records_of_values,
)
from icnn_cli.records.summary import MAX_SHOWN_JSON, ItemRecord, Summary, format_bytes
from icnn_cli.records.tree import SummaryRow, summary_rows, tree_rows

__all__ = [
    "MAX_SHOWN_JSON",
    "DryRun",
    "FingerprintCheck",
    "ItemRecord",
    "LeafFilter",
    "LeafRecord",
    "LeafStats",
    "ManagerStep",
    "OrbaxFacts",
    "OrbaxItem",
    "Provenance",
    "SampleRecord",
    "StreamRecord",
    "Summary",
    "SummaryRow",
    "combine_stats",
    "filter_leaves",
    "format_bytes",
    "leaf_matches",
    "leaf_statistics",
    "records_of_tree",
    "records_of_values",
    "summary_rows",
    "tree_rows",
]
