"""Markdown for the report: cells `ours ±ci (paper, Δ) ✓`, tables, banner, claims."""

from __future__ import annotations

import math

from partbench.report.claims import ClaimResult
from partbench.report.mapping import ENCODED_CLS
from partbench.report.tables import Cell, Table, column_header

MISSING = "—"
SMOKE_BANNER = (
    "> **SMOKE SUITE: these numbers come from synthetic data and randomly initialised tiny encoders.**\n"
    "> They show that every stage runs end to end; they say nothing about the encoders or the paper's\n"
    "> claims. Rows from the smoke suite are marked `smoke`."
)


def fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.1f}"


def fmt_delta(delta: float) -> str:
    if math.isnan(delta):
        return "Δ nan"
    return f"Δ {delta:+.1f}".replace("-", "−")


def format_cell(cell: Cell) -> str:
    """`50.3 ±0.8 (paper 50.8, Δ −0.5) ✓`; `— (paper 50.8)` when we have no number; `—` when nobody has."""
    if cell.ours is None:
        return MISSING if cell.paper is None else f"{MISSING} (paper {fmt(cell.paper)})"
    text = fmt(cell.ours.value)
    if cell.ours.ci95 is not None:
        lo, hi = cell.ours.ci95
        text += f" ±{(hi - lo) / 2:.1f}"
    if cell.paper is not None and cell.delta is not None:
        text += f" (paper {fmt(cell.paper)}, {fmt_delta(cell.delta)})"
        if cell.within is not None:
            text += " ✓" if cell.within else " ✗"
    return text


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_table(table: Table) -> str:
    """A markdown table: encoder, protocol, suite, then one column per paper column."""
    headers = ["Encoder", "protocol", "suite", *(column_header(c) for c in table.spec.columns)]
    lines = [
        f"### {table.spec.title}",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] * 3 + [":---:"] * len(table.spec.columns)) + "|",
    ]
    for row in table.rows:
        cells = [
            row.label,
            row.protocol or MISSING,
            row.suite or MISSING,
            *(format_cell(c) for c in row.cells),
        ]
        lines.append("| " + " | ".join(_escape(c) for c in cells) + " |")
    lines.append("")
    if any(c.feature == ENCODED_CLS for c in table.spec.columns):
        lines.append(
            "`encoded (cls)` is the cls token; the paper's *Encoded* column does not say whether it was the "
            "patch-token mean (`embedding`, judged) or the cls token, so that column shows the paper's value "
            "for reference and is not judged."
        )
        lines.append("")
    lines.extend(f"- note: {n}" for n in table.notes)
    return "\n".join(lines).rstrip() + "\n"


def render_claims(results: list[ClaimResult], title: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| claim | status | paper's statement | on our numbers |",
        "|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r.claim_id} | **{r.status}** | {_escape(r.statement)} | {_escape(r.detail)} |")
    return "\n".join(lines) + "\n"


def tolerance_line(tolerance: dict[str, float]) -> str:
    return "Tolerance (|ours − paper|): " + ", ".join(f"{k} ±{v:g}" for k, v in tolerance.items())
