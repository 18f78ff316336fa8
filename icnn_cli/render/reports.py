"""The reports of ``diff``, ``verify``, ``check``, ``inspect --health`` and ``init --seeds``.

Each report is plain data built in ``icnn_cli.analysis`` (or ``icnn_cli.sweep``);
here it becomes a rich renderable (and Markdown where the command offers it),
with its tables drawn from the same column model as the checkpoint tree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from icnn_cli.records import format_bytes
from icnn_cli.render.safe_text import visible
from icnn_cli.render.table import (
    Column,
    markdown_table,
    markdown_text,
    rich_facts,
    rich_table,
    text_cell,
)

if TYPE_CHECKING:
    from icnn_cli.analysis.convexity import CheckOutcome, ConvexityReport
    from icnn_cli.analysis.diff import DiffReport, LeafDiff
    from icnn_cli.analysis.health import ConvexityAtInit, HealthReport, LayerHealth, Verdict
    from icnn_cli.analysis.verify import VerifyReport, VerifySummary
    from icnn_cli.sweep import SweepItem, SweepResult


def _text(text: str, style: str | None = None) -> Any:
    from rich.text import Text

    return Text(visible(text), style=style or "")


def _group(*parts: Any) -> Any:
    from rich.console import Group

    return Group(*parts)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


# --- diff ------------------------------------------------------------------------------------

DIFF_COLUMNS: list[Column[LeafDiff]] = [
    Column("leaf", lambda leaf: text_cell(leaf.path), no_wrap=True),
    Column("status", lambda leaf: text_cell(f"{leaf.status} {leaf.detail}".strip())),
    Column("max abs diff", lambda leaf: text_cell(_number(leaf.max_abs_diff)), justify="right"),
    Column("max rel diff", lambda leaf: text_cell(_number(leaf.max_rel_diff)), justify="right"),
]


def render_diff(report: DiffReport) -> Any:
    """The leaves that differ as a table, and a one-line verdict."""
    header = rich_facts([("a", str(report.a)), ("b", str(report.b)), ("atol", f"{report.atol:g}")])
    differing = [leaf for leaf in report.leaves if leaf.status != "same"]
    parts: list[Any] = [header, _text("")]
    if differing:
        parts += [rich_table(DIFF_COLUMNS, differing), _text("")]
    verdict = (
        f"identical: {len(report.leaves)} leaves"
        + (f" (within atol {report.atol:g})" if report.atol else "")
        if report.identical
        else f"different: {len(differing)} of {len(report.leaves)} leaves differ"
    )
    parts.append(_text(verdict, "bold"))
    return _group(*parts)


# --- verify ----------------------------------------------------------------------------------


def render_verify(reports: list[VerifyReport]) -> Any:
    """One verdict line per checkpoint, then its two checks."""
    from rich.table import Table

    parts: list[Any] = []
    for report in reports:
        verdict = "verified" if report.ok else "NOT VERIFIED"
        parts.append(_text(f"{report.path}: {verdict}"))
        checks = Table.grid(padding=(0, 2))
        for name, check in (
            ("integrity", report.integrity),
            ("reproducibility", report.reproducibility),
        ):
            checks.add_row(_text(f"  {name}"), _text(check.status), _text(check.detail))
        parts.append(checks)
    return _group(*parts)


def verify_summary_line(summary: VerifySummary) -> str:
    """``8 checkpoints: 7 verified; 7 intact, 1 damaged; 7 reproducible, 0 not reproducible``."""
    line = (
        f"{summary.checkpoints} checkpoints: {summary.verified} verified; "
        f"{summary.intact} intact, {summary.damaged} damaged; "
        f"{summary.reproducible} reproducible, {summary.not_reproducible} not reproducible"
    )
    if summary.not_checked:
        line += f"; {summary.not_checked} not checked"
    return line


# --- check (convexity) -------------------------------------------------------------------------

OFFENDING_COLUMNS: list[Column[Any]] = [
    Column("offending leaf", lambda leaf: text_cell(leaf.path)),
    Column("used as", lambda leaf: text_cell(leaf.effective)),
    Column("negative", lambda leaf: text_cell(f"{leaf.negative_fraction:.1%}"), justify="right"),
    Column("min", lambda leaf: text_cell(f"{leaf.min:.4g}"), justify="right"),
]


def _vector(values: list[float], shown: int = 8) -> str:
    text = ", ".join(f"{value:.6g}" for value in values[:shown])
    more = f", … ({len(values)} values)" if len(values) > shown else ""
    return f"[{text}{more}]"


def render_convexity(report: ConvexityReport) -> Any:
    """The verdict, why, the offending leaves and the counterexample."""
    style = {"certified": "bold green", "violated": "bold red"}.get(report.verdict, "bold yellow")
    parts: list[Any] = [_text(report.verdict, style), _text(" ".join(report.reasons))]
    if report.offending_leaves:
        parts += [_text(""), rich_table(OFFENDING_COLUMNS, report.offending_leaves)]
    example = report.counterexample
    if example is not None:
        facts = [
            ("x", _vector(example.x)),
            ("y", _vector(example.y)),
            ("t", f"{example.t:.6g}"),
            ("gap", f"{example.gap:.6g}"),
        ]
        parts += [_text(""), _text("counterexample", "bold"), rich_facts(facts)]
    return _group(*parts)


def render_checks(outcome: CheckOutcome) -> Any:
    """Each checkpoint of ``icnn check PATH...``: its path, then its report."""
    parts: list[Any] = []
    for check in outcome.checks:
        if parts:
            parts.append(_text(""))
        parts.append(_text(check.path, "bold"))
        if check.report is None:
            parts.append(_text(f"{check.verdict}: {check.problem}", "bold red"))
        else:
            parts.append(render_convexity(check.report))
    return _group(*parts)


def check_summary_line(outcome: CheckOutcome) -> str:
    """``3 checkpoints: 1 certified, 2 violated, 0 uncertified`` (and any unreadable)."""
    counts = outcome.summary
    line = (
        f"{counts['checkpoints']} checkpoints: {counts['certified']} certified, "
        f"{counts['violated']} violated, {counts['uncertified']} uncertified"
    )
    if counts["unreadable"]:
        line += f", {counts['unreadable']} unreadable"
    return line


# --- inspect --health ----------------------------------------------------------------------------

HEALTH_COLUMNS: list[Column[LayerHealth]] = [
    Column("layer", lambda layer: text_cell(layer.name)),
    Column("computes", lambda layer: text_cell(layer.formula, "code")),
    Column("units", lambda layer: text_cell(layer.units), justify="right"),
    Column(
        "dead",
        lambda layer: text_cell(f"{layer.dead_units} ({layer.dead_fraction:.0%})"),
        justify="right",
    ),
    Column("mean", lambda layer: text_cell(f"{layer.mean:.4g}"), justify="right"),
    Column("std", lambda layer: text_cell(f"{layer.std:.4g}"), justify="right"),
    Column(
        "pre mean", lambda layer: text_cell(f"{layer.pre_activation_mean:.3g}"), justify="right"
    ),
    Column(
        "pre var", lambda layer: text_cell(f"{layer.pre_activation_variance:.3g}"), justify="right"
    ),
    Column(
        "corr",
        lambda layer: text_cell("" if layer.correlation is None else f"{layer.correlation:.2f}"),
        justify="right",
    ),
]


def convexity_line(convexity: ConvexityAtInit) -> str:
    if convexity.certified:
        return "convex at init  certified: " + " ".join(convexity.conditions)
    found = (
        f"Jensen gap violated at {convexity.violations} of {convexity.pairs} probe pairs "
        f"(largest gap {convexity.worst_gap:.3g}): not convex"
        if convexity.violations
        else f"no Jensen-gap violation in {convexity.pairs} probe pairs (not a proof)"
    )
    return f"convex at init  not certified ({' '.join(convexity.conditions)}); {found}"


def verdict_line(verdict: Verdict) -> str:
    growth = f"x{verdict.variance_growth:.3g} per layer"
    try_recipe = f"; try `init.recipe: {verdict.suggestion}`" if verdict.suggestion else ""
    if verdict.kind == "exploding":
        text = f"variance grows {growth}: exploding from layer {verdict.from_layer}"
    elif verdict.kind == "vanishing":
        text = f"variance shrinks {growth}: vanishing from layer {verdict.from_layer}"
    elif verdict.kind == "inputs alike":
        text = (
            f"inputs look alike from layer {verdict.from_layer} (correlation "
            f"{verdict.correlation:.2f}), so later layers cannot tell them apart"
        )
    elif verdict.kind == "dead units":
        text = f"{verdict.dead_fraction:.0%} of layer {verdict.from_layer}'s units are dead"
    else:
        text = f"healthy: pre-activation variance changes {growth}"
    return f"verdict         {text}{try_recipe}"


def _health_lines(report: HealthReport) -> list[str]:
    lines = []
    if report.verdict is not None:
        lines.append(verdict_line(report.verdict))
    if report.convexity is not None:
        lines.append(convexity_line(report.convexity))
    lines.append(f"potential f  mean {report.potential_mean:.4g}, std {report.potential_std:.4g}")
    if report.transport is not None:
        transport = report.transport
        reference = "x" if transport.reference == "identity" else "the Bures map"
        lines.append(
            f"map grad f   RMS distance from {reference} {transport.rms_distance:.4g} "
            f"({transport.relative_distance:.1%} of its size)"
        )
    else:
        lines.append(f"map grad f   not compared: {report.note}")
    return lines


def render_health(report: HealthReport) -> Any:
    """A per-layer table, then the potential's and the map's lines."""
    return _group(
        _text(f"health on {report.probe}", "bold"),
        rich_table(HEALTH_COLUMNS, report.layers),
        *(_text(line) for line in _health_lines(report)),
    )


def render_health_markdown(report: HealthReport) -> str:
    """The same as :func:`render_health`, as GitHub-flavoured Markdown."""
    lines = [f"**{markdown_text(f'health on {report.probe}')}**", ""]
    lines += markdown_table(HEALTH_COLUMNS, report.layers)
    lines += ["", *(markdown_text(line) for line in _health_lines(report))]
    return "\n".join(lines) + "\n"


# --- init --seeds ---------------------------------------------------------------------------------

SWEEP_COLUMNS: list[Column[SweepItem]] = [
    Column("seed", lambda item: text_cell(item.seed), justify="right"),
    Column("status", lambda item: text_cell(item.status)),
    Column("fingerprint", lambda item: text_cell(_short(item.fingerprint)), no_wrap=True),
    Column("path", lambda item: text_cell(str(item.path)), no_wrap=True),
]


def _short(fingerprint: str) -> str:
    from icnn_cli.fingerprint import short_fingerprint

    return short_fingerprint(fingerprint)


def render_sweep(result: SweepResult) -> Any:
    """One row per checkpoint and a total line."""
    data = result.as_json()
    counts = ", ".join(
        f"{data[status]} {status}" for status in ("written", "replaced", "skipped") if data[status]
    )
    count = len(result.items)
    total = (
        f"{count} checkpoint{'s' * (count != 1)} ({counts}), "
        f"{data['total_params']:,} params ({format_bytes(data['total_bytes'])}) each"
    )
    return _group(rich_table(SWEEP_COLUMNS, result.items), _text(""), _text(total, "bold"))
