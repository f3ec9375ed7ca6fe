"""`build_report`: result files + the paper CSV -> reports/*.md, figures, aggregate.{csv,json}."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from partbench.fsutil import atomic_write_text
from partbench.report.aggregate import aggregate_rows, write_aggregate
from partbench.report.beyond import beyond_section
from partbench.report.claims import ClaimResult, check_claims
from partbench.report.figures import part_vs_object_figure, retrieval_projection_figure
from partbench.report.mapping import Column
from partbench.report.reference import load_paper_cells, paper_values, reference_path
from partbench.report.render import SMOKE_BANNER, fmt, fmt_delta, render_claims, render_table, tolerance_line
from partbench.report.results import (
    SMOKE_SUITE,
    Measurement,
    ReportInputError,
    load_measurements,
    read_results,
)
from partbench.report.tables import DEFAULT_TOLERANCE, Table, build_table, column_header, pick, table_specs

FIGURE_NAMES = ("part_vs_object", "retrieval_encoded_vs_projected")
OTHER_RESULTS_LIMIT = 200


@dataclass
class ReportSummary:
    """What `build_report` wrote and how our numbers compare with the paper's."""

    out_dir: Path
    report: Path
    files: list[Path] = field(default_factory=list)
    n_results: int = 0
    n_compared: int = 0
    n_within: int = 0
    smoke: bool = False
    claims: dict[tuple[str, str], list[ClaimResult]] = field(default_factory=dict)


def _scores(chosen: dict[tuple, Measurement], group: tuple[str, str]) -> dict[tuple[str, Column], float]:
    return {
        (model, col): m.value
        for (suite, protocol, model, col), m in chosen.items()
        if (suite, protocol) == group
    }


def _group_name(group: tuple[str, str]) -> str:
    return f"suite {group[0]}, protocol {group[1]}"


def _clear_figures(fig_dir: Path) -> None:
    if fig_dir.is_dir():
        for png in fig_dir.glob("*.png"):
            if png.name.startswith(FIGURE_NAMES):
                png.unlink()


def _deviations(tables: list[Table], limit: int = 10) -> list[str]:
    worst = []
    for t in tables:
        for row in t.rows:
            for col, cell in zip(t.spec.columns, row.cells, strict=True):
                if cell.within is False:
                    worst.append(
                        (
                            abs(cell.delta or 0.0),
                            f"{row.label} ({row.suite}, {row.protocol}) {t.spec.name} "
                            f"{column_header(col)}: {fmt(cell.ours.value)} vs paper {fmt(cell.paper)} "
                            f"({fmt_delta(cell.delta)})",
                        )
                    )
    worst.sort(key=lambda x: -x[0])
    return [text for _, text in worst[:limit]]


def _other_results(measurements: list[Measurement]) -> str:
    others = [m for m in measurements if m.column is None]
    if not others:
        return ""
    lines = ["## Other results (no paper column)", ""]
    if len(others) > OTHER_RESULTS_LIMIT:
        return "\n".join([*lines, f"{len(others)} numbers without a paper column: see `aggregate.csv`.", ""])
    lines += [
        "| model | task | dataset | feature | probe | protocol | suite | metric | value |",
        "|" + "---|" * 9,
    ]
    for m in sorted(
        others, key=lambda m: (m.suite, m.task, m.dataset, m.model, m.feature, m.probe, m.metric)
    ):
        lines.append(
            f"| {m.model} | {m.task} | {m.dataset} | {m.feature} | {m.probe} | {m.protocol} | {m.suite} | "
            f"{m.metric} | {fmt(m.value)} |"
        )
    return "\n".join([*lines, ""])


def build_report(
    results_dir: Path = Path("results"),
    reference: str | Path | None = None,
    out: Path = Path("reports"),
    tolerance: dict[str, float] | None = None,
    suite: str | None = None,
    figures: Sequence[str] = (),
    features_dir: Path = Path("features"),
) -> ReportSummary:
    """Read every result JSON under `results_dir` and write the report into `out`.

    `figures` adds opt-in figures to the "Beyond the paper" section (`retrieval-grid`, drawn from the
    feature caches under `features_dir`); see `report/beyond.py`.

    `tolerance` overrides the per-metric defaults (`DEFAULT_TOLERANCE`); `suite` keeps one suite only.
    Every number comes from a result file; the paper's numbers come only from `reference`.
    """
    tol = {**DEFAULT_TOLERANCE, **(tolerance or {})}
    reference = reference_path(reference)
    cells = load_paper_cells(reference)
    results = read_results(results_dir)  # every result JSON read once, for the tables and "Beyond"
    measurements = load_measurements(results_dir, suite, results=results)
    if not measurements:
        only = f" of suite {suite!r}" if suite else ""
        raise ReportInputError(
            f"{results_dir}: no result files{only} (run `partbench probe ...` or `partbench run`)"
        )
    out = Path(out)
    chosen, notes = pick(measurements)
    paper = paper_values(cells)
    tables = [build_table(spec, chosen, paper, tol) for spec in table_specs(cells)]
    groups = sorted({m.group for m in measurements})
    smoke = any(m.suite == SMOKE_SUITE for m in measurements)
    banner = SMOKE_BANNER + "\n\n" if smoke else ""
    summary = ReportSummary(out, out / "report.md", smoke=smoke)
    summary.n_results = len({m.path for m in measurements})
    judged = [c for t in tables for r in t.rows for c in r.cells if c.within is not None]
    summary.n_compared, summary.n_within = len(judged), sum(bool(c.within) for c in judged)

    fig_dir = out / "figures"
    _clear_figures(fig_dir)
    claims_md, figures_md = [], []
    for group in groups:
        scores = _scores(chosen, group)
        summary.claims[group] = check_claims(scores)
        claims_md.append(
            render_claims(summary.claims[group], f"Claims on our numbers ({_group_name(group)})")
        )
        suffix = "" if len(groups) == 1 else f"__{group[0]}-{group[1]}"
        for name, draw in zip(
            FIGURE_NAMES, (part_vs_object_figure, retrieval_projection_figure), strict=True
        ):
            path = draw(
                scores,
                fig_dir / f"{name}{suffix}.png",
                title=f"{name.replace('_', ' ')} ({_group_name(group)})",
            )
            if path is not None:
                summary.files.append(path)
                figures_md.append(f"![{name} ({_group_name(group)})](figures/{path.name})")

    for table in tables:
        path = out / f"{table.spec.name}.md"
        atomic_write_text(path, banner + render_table(table))
        summary.files.append(path)
    claims_text = (
        "## Claims (paper.md section 4) judged on our numbers\n\n"
        "A claim holds when every comparison with both numbers present holds; partial evidence is said.\n\n"
        + "\n".join(claims_md)
    )
    atomic_write_text(out / "claims.md", banner + claims_text)
    summary.files.append(out / "claims.md")
    summary.files.extend(write_aggregate(aggregate_rows(measurements, cells, tol), out))

    deviations = _deviations(tables)
    head = [
        "# partbench report",
        "",
        banner.rstrip(),
        "" if banner else None,
        f"{summary.n_results} result files under `{Path(results_dir).as_posix()}`; paper numbers from "
        f"`{reference.as_posix()}`. Cells read `ours ±CI95/2 (paper value, Δ = ours − paper)` with ✓/✗ "
        "against the tolerance.",
        "",
        tolerance_line(tol),
        "",
        f"**{summary.n_within} of {summary.n_compared}** judged cells are within tolerance.",
        "",
    ]
    if deviations:
        head += ["Largest deviations:", "", *(f"- {d}" for d in deviations), ""]
    if notes:
        head += ["Duplicates:", "", *(f"- {n}" for n in notes), ""]
    body = [
        "## Tables",
        "",
        *(render_table(t) for t in tables),
        claims_text,
        "## Figures",
        "",
        *figures_md,
        "",
    ]
    beyond_md, beyond_files = beyond_section(  # "Beyond the paper" (report/beyond.py)
        results_dir, out, suite=suite, figures=figures, features_dir=features_dir, results=results
    )
    body.append(beyond_md)
    summary.files.extend(beyond_files)
    body.append(_other_results(measurements))
    text = "\n".join(line for line in head if line is not None) + "\n" + "\n".join(body)
    atomic_write_text(summary.report, text.rstrip() + "\n")
    summary.files.insert(0, summary.report)
    return summary
