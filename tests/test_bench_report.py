"""`bench/run.py --only N`: a partial run replaces its items' sections and keeps the rest."""

from __future__ import annotations

import importlib.util
import sys

from tests.helpers import REPO


def _bench_run():
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


EXISTING = """# Benchmarks

| date | 2026-11-26 |

Items 10 re-run on 2026-11-30 (old); the other sections are from the run the table above describes.

## 1. One checkpoint

old one

## 1b. Where it spends

old one b

## 4. inspect

old four

## 10. Python API

old ten

## 9. GPU

old gpu text
"""


def test_a_partial_run_replaces_only_its_items_and_keeps_the_rest_in_order():
    bench = _bench_run()
    fresh = ["## 1. One checkpoint\n\nnew one\n", "## 10. Python API\n\nnew ten\n"]
    kept = ["## 9. GPU\n\nkept gpu text\n"]

    merged = bench.merged_report(EXISTING, fresh, {"1", "10"}, kept, "Items 1, 10 re-run on X.")

    titles = [line for line in merged.splitlines() if line.startswith("## ")]
    assert titles == ["## 4. inspect", "## 1. One checkpoint", "## 10. Python API", "## 9. GPU"]
    assert "old one" not in merged and "old ten" not in merged and "old gpu" not in merged
    assert "new one" in merged and "old four" in merged and "kept gpu text" in merged
    assert "(old)" not in merged, "the earlier note of items now re-run goes"
    assert merged.startswith("# Benchmarks\n\n| date | 2026-11-26 |\n\nItems 1, 10 re-run on X.\n")


def test_an_earlier_note_stays_while_some_of_its_items_are_not_re_run():
    bench = _bench_run()
    existing = EXISTING.replace("Items 10 re-run", "Items 4, 10 re-run")

    merged = bench.merged_report(existing, ["## 10. Python API\n\nnew\n"], {"10"}, [], "Now.")

    assert "Items 4, 10 re-run on 2026-11-30 (old)" in merged and "Now." in merged
    assert "old four" in merged
