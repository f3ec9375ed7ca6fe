"""Paper tables with our numbers beside the paper's: table specs, rows, cells, tolerance marks."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from partbench.report.mapping import (
    ENCODED_CLS,
    PAPER_METHODS,
    SEGMENT_FEATURE,
    Column,
    display_model,
    model_sort_key,
)
from partbench.report.reference import PaperCell
from partbench.report.results import Measurement

DEFAULT_TOLERANCE: dict[str, float] = {
    "AP": 1.0,
    "mAP": 1.0,
    "top1": 1.0,
    "top1_best": 1.0,
    "mIoU": 1.0,
    "mAcc": 1.0,
    "aAcc": 1.0,
}

TABLE_TITLES: dict[str, str] = {
    "table1": "Table 1: ImageNet-1k classification (top-1, %), linear and attentive probing",
    "table2": "Table 2: ADE20K object-level linear segmentation (150 classes)",
    "table3": "Table 3: part retrieval (AP, %) and part classification (top-1, %) on CUB and COCO",
    "table4": "Table 4: part-level linear segmentation on ADE20K-Part, Pascal-Part and LIP",
    "fig6": "Figure 6: object-level vs part-level segmentation (mIoU, %); the paper's values are unpublished",
}
DATASET_LABELS: dict[str, str] = {
    "imagenet-1k": "ImageNet",
    "ade20k-150": "ADE20K-150",
    "cub-parts": "CUB",
    "coco-parts": "COCO",
    "ade20k-part-209": "ADE20K-Part",
    "pascal-part-193": "Pascal-Part",
    "lip-19": "LIP",
    "ade20k-object-59": "ADE20K-Object",
    "pascal-object-16": "Pascal-Object",
}
FEATURE_LABELS: dict[str, str] = {
    "encoded": "encoded",
    ENCODED_CLS: "encoded (cls)",
    "projected": "projected",
    "cls_token": "linear",
    "tokens": "attentive",
    SEGMENT_FEATURE: "",
}
# Figure 6 has no numbers in the paper: its columns are ours only.
FIG6_COLUMNS = tuple(
    Column("segmentation", d, SEGMENT_FEATURE, "linear", "mIoU")
    for d in ("ade20k-object-59", "ade20k-part-209", "pascal-object-16", "pascal-part-193")
)


def within_tolerance(delta: float, tolerance: float) -> bool:
    """|ours − paper| ≤ tolerance (with float slack); a NaN difference is never within."""
    return not math.isnan(delta) and abs(delta) <= tolerance + 1e-9


def column_header(column: Column) -> str:
    """`CUB retr. encoded AP`, `ADE20K-Part mIoU`, ..."""
    task = {"retrieval": "retr.", "classification": "cls.", "segmentation": ""}[column.task]
    parts = [
        DATASET_LABELS.get(column.dataset, column.dataset),
        task,
        FEATURE_LABELS.get(column.feature, column.feature),
    ]
    parts.append(column.metric)
    return " ".join(p for p in parts if p)


@dataclass(frozen=True)
class TableSpec:
    """A paper table: its name, title and columns in printed order."""

    name: str
    title: str
    columns: tuple[Column, ...]
    judged: bool = True  # Fig. 6 repeats Table 4's part columns: shown there, judged only once


def table_specs(cells: list[PaperCell]) -> list[TableSpec]:
    """One spec per table of the CSV (columns in CSV order, `encoded (cls)` after `encoded`) + Fig. 6."""
    by_table: dict[str, list[Column]] = defaultdict(list)
    for cell in cells:
        cols = by_table[cell.table]
        extra = [cell.column]
        if cell.column.feature == "encoded":
            extra.append(Column(cell.column.task, cell.column.dataset, ENCODED_CLS, "-", cell.column.metric))
        cols.extend(c for c in extra if c not in cols)
    specs = [
        TableSpec(name, TABLE_TITLES.get(name, name), tuple(_ordered(cols)))
        for name, cols in by_table.items()
    ]
    specs.sort(key=lambda s: s.name)
    specs.append(TableSpec("fig6", TABLE_TITLES["fig6"], FIG6_COLUMNS, judged=False))
    return specs


def _ordered(columns: list[Column]) -> list[Column]:
    # retrieval before classification per dataset, as printed; otherwise keep CSV order
    tasks = ["retrieval", "classification", "segmentation"]
    first_seen = {c.dataset: i for i, c in reversed(list(enumerate(columns)))}
    return sorted(columns, key=lambda c: (tasks.index(c.task), first_seen[c.dataset], columns.index(c)))


@dataclass(frozen=True)
class Cell:
    """Our number (or None), the paper's (or None), and whether they agree within tolerance."""

    ours: Measurement | None
    paper: float | None
    tolerance: float | None
    marked: bool  # False for `encoded (cls)`: shown beside the paper's Encoded value, never judged

    @property
    def delta(self) -> float | None:
        if self.ours is None or self.paper is None:
            return None
        return self.ours.value - self.paper

    @property
    def within(self) -> bool | None:
        """True/False against the tolerance; None when there is nothing to judge."""
        d = self.delta
        if d is None or not self.marked or self.tolerance is None:
            return None
        return within_tolerance(d, self.tolerance)


@dataclass(frozen=True)
class Row:
    model: str
    suite: str | None
    protocol: str | None
    cells: tuple[Cell, ...]

    @property
    def label(self) -> str:
        return display_model(self.model)


@dataclass
class Table:
    spec: TableSpec
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


def pick(measurements: list[Measurement]) -> tuple[dict[tuple, Measurement], list[str]]:
    """`{(suite, protocol, model, column): measurement}`; duplicates keep the newest, with a note."""
    chosen: dict[tuple, Measurement] = {}
    notes: list[str] = []
    for m in measurements:
        if m.column is None:
            continue
        key = (m.suite, m.protocol, m.model, m.column)
        old = chosen.get(key)
        if old is None:
            chosen[key] = m
            continue
        new, dropped = (m, old) if (m.created, str(m.path)) > (old.created, str(old.path)) else (old, m)
        chosen[key] = new
        notes.append(
            f"{new.model} {column_header(m.column)}: {new.path} used, {dropped.path} ignored (older)"
        )
    return chosen, notes


def build_table(
    spec: TableSpec,
    chosen: dict[tuple, Measurement],
    paper: dict[tuple[str, Column], float],
    tolerance: dict[str, float],
) -> Table:
    """Rows: the paper's seven in order (always), then any other encoder with a number in this table."""
    groups: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for suite, protocol, model, column in chosen:
        if column in spec.columns:
            groups[model].add((suite, protocol))
    models = sorted(set(PAPER_METHODS) | set(groups), key=model_sort_key)
    rows: list[Row] = []
    for model in models:
        for suite, protocol in sorted(groups.get(model, set())) or [(None, None)]:
            cells = []
            for col in spec.columns:
                ours = chosen.get((suite, protocol, model, col)) if suite is not None else None
                ref = paper.get((model, col.reference))
                cells.append(
                    Cell(
                        ours,
                        ref,
                        tolerance.get(col.metric),
                        marked=spec.judged and col.feature != ENCODED_CLS,
                    )
                )
            rows.append(Row(model, suite, protocol, tuple(cells)))
    return Table(spec, rows)


def parse_tolerance(text: str | None) -> dict[str, float]:
    """`None` -> {}; `'1.5'` -> every metric 1.5; `'AP=1,mIoU=1.5'` -> those metrics."""
    if text is None or not text.strip():
        return {}
    try:
        out: dict[str, float] = {}
        if "=" not in text:
            out = dict.fromkeys(DEFAULT_TOLERANCE, float(text))
        for part in text.split(",") if "=" in text else ():
            metric, value = part.split("=")
            out[metric.strip()] = float(value)
    except ValueError:
        raise ValueError(f"--tolerance: expected '1.5' or 'AP=1,mIoU=1.5', got {text!r}") from None
    if any(v < 0 for v in out.values()):
        raise ValueError(f"--tolerance: values must be >= 0, got {text!r}")
    return out
