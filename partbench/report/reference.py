"""The paper's numbers: `paper_tables.csv` read into typed cells (the only source of paper values)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import partbench
from partbench.errors import PartbenchError
from partbench.report.mapping import METHOD_TO_MODEL, Column

CSV_COLUMNS = ("table", "level", "task", "dataset", "method", "feature", "probe", "metric", "value", "source")
DEFAULT_REFERENCE = Path("reports/paper/paper_tables.csv")


class ReferenceError(PartbenchError):
    """The paper's reference table is missing or malformed."""


@dataclass(frozen=True)
class PaperCell:
    """One number printed in the paper."""

    table: str
    level: str  # "object" | "part"
    column: Column
    model: str  # partbench encoder name (deit, mocov3, ...)
    method: str  # the paper's name (DeiT, MoCo v3, ...)
    value: float
    source: str

    @property
    def cell_id(self) -> str:
        """A stable, readable id: `table3/retrieval/cub-parts/encoded/-/AP/dino`."""
        c = self.column
        return f"{self.table}/{c.task}/{c.dataset}/{c.feature}/{c.probe}/{c.metric}/{self.model}"


def default_reference_path() -> Path:
    """`reports/paper/paper_tables.csv` in the working directory, else beside the source checkout."""
    if DEFAULT_REFERENCE.exists():
        return DEFAULT_REFERENCE
    return Path(partbench.__file__).resolve().parents[1] / DEFAULT_REFERENCE


def reference_path(reference: str | Path | None) -> Path:
    """The CSV a `--reference` value names: None or `paper` (DESIGN: `partbench report --reference
    paper`) is the paper's table, `default_reference_path()`; anything else is a path."""
    if reference is None or (str(reference) == "paper" and not Path(reference).is_file()):
        return default_reference_path()
    return Path(reference)


def load_paper_cells(path: str | Path | None = None) -> list[PaperCell]:
    """Read and validate the paper CSV (`path` read by `reference_path`); errors name the file and line."""
    path = reference_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReferenceError(
            f"{path}: cannot read the paper's reference table ({exc.strerror or exc})"
        ) from exc
    reader = csv.DictReader(text.splitlines())
    if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
        raise ReferenceError(f"{path}: header must be {','.join(CSV_COLUMNS)}, got {reader.fieldnames}")
    cells: list[PaperCell] = []
    seen: set[str] = set()
    for lineno, row in enumerate(reader, start=2):
        method = row["method"]
        if method not in METHOD_TO_MODEL:
            raise ReferenceError(f"{path}:{lineno}: unknown method {method!r}")
        try:
            value = float(row["value"])
        except (TypeError, ValueError):
            raise ReferenceError(f"{path}:{lineno}: value {row['value']!r} is not a number") from None
        if not 0.0 <= value <= 100.0:
            raise ReferenceError(f"{path}:{lineno}: value {value} is not a percentage")
        column = Column(row["task"], row["dataset"], row["feature"], row["probe"], row["metric"])
        cell = PaperCell(
            row["table"], row["level"], column, METHOD_TO_MODEL[method], method, value, row["source"]
        )
        if cell.cell_id in seen:
            raise ReferenceError(f"{path}:{lineno}: duplicate cell {cell.cell_id}")
        seen.add(cell.cell_id)
        cells.append(cell)
    if not cells:
        raise ReferenceError(f"{path}: the paper's reference table has no rows")
    return cells


def paper_values(cells: list[PaperCell]) -> dict[tuple[str, Column], float]:
    """`{(model, column): value}` for looking up the paper's number beside ours."""
    return {(c.model, c.column): c.value for c in cells}
