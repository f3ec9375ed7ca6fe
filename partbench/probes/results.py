"""Result files: one JSON per (task, dataset, model, variant) with metrics, config and provenance.

Layout: `results/<task>/<dataset>/<model>[__<variant>].json`; metric values are in percent.
"""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import partbench
from partbench.errors import CacheError
from partbench.fsutil import atomic_write_json

RESULT_TASKS = ("retrieval", "classify", "segment", "layers")


def safe_name(name: str) -> str:
    """A model or variant name as a file-name component (`timm:vit_small` -> `timm-vit_small`)."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def result_path(results_dir: Path, task: str, dataset: str, model: str, variant: str | None = None) -> Path:
    """`results/<task>/<dataset>/<model>[__<variant>].json`."""
    stem = safe_name(model) + (f"__{safe_name(variant)}" if variant else "")
    return Path(results_dir) / task / dataset / f"{stem}.json"


@dataclass
class RunStats:
    """Wall time and peak memory of one probe run, filled by `measure_run`."""

    wall_time_s: float = 0.0
    peak_rss_mb: float = 0.0
    peak_cuda_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


@contextmanager
def measure_run() -> Iterator[RunStats]:
    """Measure wall time, peak CPU RSS and (on CUDA) peak allocated GPU memory of a block."""
    stats = RunStats()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        yield stats
    finally:
        stats.wall_time_s = time.perf_counter() - start
        stats.peak_rss_mb = _peak_rss_mb()
        if torch.cuda.is_available():
            stats.peak_cuda_mb = torch.cuda.max_memory_allocated() / 2**20


def provenance(stats: RunStats | None = None, **extra: Any) -> dict[str, Any]:
    """Where and how a number was made: version, host, time, resources, plus caller's keys."""
    prov: dict[str, Any] = {
        "partbench_version": partbench.__version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    if stats is not None:
        prov.update(
            wall_time_s=round(stats.wall_time_s, 3),
            peak_rss_mb=round(stats.peak_rss_mb, 1),
            peak_cuda_mb=None if stats.peak_cuda_mb is None else round(stats.peak_cuda_mb, 1),
            **stats.extra,
        )
    prov.update(extra)
    return prov


def write_result(
    path: Path, metrics: Mapping[str, Any], config: Mapping[str, Any], prov: Mapping[str, Any]
) -> Path:
    """Write `{"metrics", "config", "provenance"}` atomically to `path` and return it."""
    for key in ("task", "dataset", "model"):
        if key not in config:
            raise ValueError(f"result config for {path} lacks {key!r}")
    atomic_write_json(path, {"metrics": dict(metrics), "config": dict(config), "provenance": dict(prov)})
    return path


def read_result(path: Path) -> dict[str, Any]:
    """Read one result JSON, with a one-line error naming the file when it is not a result."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CacheError(f"{path}: not a readable result file ({exc})") from exc
    missing = [k for k in ("metrics", "config", "provenance") if k not in data]
    if missing:
        raise CacheError(f"{path}: result file lacks {', '.join(missing)}")
    return data


def iter_results(results_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every result JSON under `results_dir`, sorted by path."""
    for path in sorted(Path(results_dir).rglob("*.json")):
        yield path, read_result(path)
