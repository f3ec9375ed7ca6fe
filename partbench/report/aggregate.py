"""`reports/aggregate.{csv,json}`: every number of every result file, with the paper's beside it."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from partbench.fsutil import atomic_write_json, atomic_write_text
from partbench.report.mapping import Column
from partbench.report.reference import PaperCell
from partbench.report.results import Measurement
from partbench.report.tables import within_tolerance

FIELDS = (
    "task",
    "dataset",
    "model",
    "feature",
    "probe",
    "protocol",
    "suite",
    "metric",
    "value",
    "ci95_lo",
    "ci95_hi",
    "paper_table",
    "paper_value",
    "delta",
    "tolerance",
    "within_tolerance",
    "result_file",
)


def aggregate_rows(
    measurements: list[Measurement], cells: list[PaperCell], tolerance: dict[str, float]
) -> list[dict[str, Any]]:
    """One row per measurement, sorted; paper columns filled where the paper printed that cell."""
    paper: dict[tuple[str, Column], PaperCell] = {(c.model, c.column): c for c in cells}
    rows = []
    for m in measurements:
        ref = paper.get((m.model, m.column.reference)) if m.column is not None else None
        judged = ref is not None and m.column is not None and m.column == m.column.reference
        delta = None if ref is None else m.value - ref.value
        tol = tolerance.get(m.metric)
        within = None
        if judged and tol is not None and delta is not None:
            within = within_tolerance(delta, tol)
        rows.append(
            {
                "task": m.task,
                "dataset": m.dataset,
                "model": m.model,
                "feature": m.feature,
                "probe": m.probe,
                "protocol": m.protocol,
                "suite": m.suite,
                "metric": m.metric,
                "value": m.value,
                "ci95_lo": None if m.ci95 is None else m.ci95[0],
                "ci95_hi": None if m.ci95 is None else m.ci95[1],
                "paper_table": None if ref is None else ref.table,
                "paper_value": None if ref is None else ref.value,
                "delta": None if delta is None else round(delta, 6),
                "tolerance": tol if judged else None,
                "within_tolerance": within,
                "result_file": m.path.as_posix(),
            }
        )
    rows.sort(
        key=lambda r: tuple(
            str(r[k]) for k in ("suite", "protocol", "task", "dataset", "model", "feature", "probe", "metric")
        )
    )
    return rows


def write_aggregate(rows: list[dict[str, Any]], out_dir: Path) -> tuple[Path, Path]:
    """Write `aggregate.csv` and `aggregate.json` (the same rows) atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in FIELDS})
    csv_path, json_path = Path(out_dir) / "aggregate.csv", Path(out_dir) / "aggregate.json"
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_json(json_path, {"rows": rows})
    return csv_path, json_path
