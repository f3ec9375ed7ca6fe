"""Result files read into flat measurements: one number per (result file, metric)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from partbench.errors import PartbenchError
from partbench.probes.results import iter_results
from partbench.report.mapping import Column, column_for

SMOKE_SUITE = "smoke"
PAPER_SUITE = "paper"
PERCENT_METRICS = frozenset({"AP", "mAP", "top1", "top1_best", "mIoU", "mAcc", "aAcc"})


class ReportInputError(PartbenchError):
    """A result file cannot be used by the report (missing config keys, bad metric values)."""


@dataclass(frozen=True)
class Measurement:
    """One metric of one result file, in our vocabulary, with its paper column when it has one."""

    task: str
    dataset: str
    model: str
    feature: str
    probe: str
    protocol: str
    suite: str
    metric: str
    value: float
    ci95: tuple[float, float] | None
    column: Column | None
    path: Path
    created: str

    @property
    def group(self) -> tuple[str, str]:
        """(suite, protocol): numbers from different groups are never mixed in one row."""
        return (self.suite, self.protocol)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _ci(ci95: Any, metric: str, path: Path) -> tuple[float, float] | None:
    if not isinstance(ci95, dict) or metric not in ci95:
        return None
    pair = ci95[metric]
    if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(_number(v) is not None for v in pair)):
        raise ReportInputError(f"{path}: metrics.ci95.{metric} must be [lo, hi], got {pair!r}")
    return (float(pair[0]), float(pair[1]))


def measurements_from(path: Path, result: dict[str, Any]) -> list[Measurement]:
    """The numeric metrics of one result (lists, dicts and `ci95` are skipped; NaN is kept)."""
    config = result["config"]
    if not isinstance(config, dict):
        raise ReportInputError(f"{path}: config must be an object")
    missing = [k for k in ("task", "dataset", "model") if k not in config]
    if missing:
        raise ReportInputError(f"{path}: config lacks {', '.join(missing)}")
    metrics = result["metrics"]
    if not isinstance(metrics, dict):
        raise ReportInputError(f"{path}: metrics must be an object")
    created = str(result.get("provenance", {}).get("created", ""))
    out: list[Measurement] = []
    for metric, raw in metrics.items():
        if metric == "ci95":
            continue
        value = _number(raw)
        if value is None:
            continue
        if metric in PERCENT_METRICS and not math.isnan(value) and not -1e-9 <= value <= 100.0 + 1e-9:
            raise ReportInputError(f"{path}: metric {metric}={value} is not a percentage")
        out.append(
            Measurement(
                task=str(config["task"]),
                dataset=str(config["dataset"]),
                model=str(config["model"]),
                feature=str(config.get("feature", "-")),
                probe=str(config.get("probe", "-")),
                protocol=str(config.get("protocol", "study"))
                + ("/fast" if config.get("mode") == "fast" else ""),
                suite=str(config.get("suite", "custom")),
                metric=metric,
                value=value,
                ci95=_ci(metrics.get("ci95"), metric, path),
                column=column_for(config, metric),
                path=path,
                created=created,
            )
        )
    return out


def read_results(results_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every result JSON under `results_dir`, read once (a report build shares the list)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ReportInputError(f"{results_dir}: no results folder (run the probes first)")
    return list(iter_results(results_dir))


def load_measurements(
    results_dir: Path,
    suite: str | None = None,
    *,
    results: Iterable[tuple[Path, dict[str, Any]]] | None = None,
) -> list[Measurement]:
    """Every numeric metric of every result JSON under `results_dir` (optionally one suite only).

    `results`: the (path, result) pairs of `results_dir` when the caller has already read them.
    """
    found: list[Measurement] = []
    for path, result in results if results is not None else read_results(results_dir):
        found.extend(m for m in measurements_from(path, result) if suite is None or m.suite == suite)
    return found
