"""Figures (matplotlib, Agg): part-vs-object segmentation bars, retrieval encoded vs projected."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from partbench.report.beyond import save_png
from partbench.report.claims import encoded, projected
from partbench.report.mapping import SEGMENT_FEATURE, Column, display_model, model_sort_key

Scores = Mapping[tuple[str, Column], float]

PART_OBJECT_PAIRS = (
    ("ADE20K", "ade20k-part-209", "ade20k-object-59"),
    ("Pascal", "pascal-part-193", "pascal-object-16"),
)


def _seg(dataset: str) -> Column:
    return Column("segmentation", dataset, SEGMENT_FEATURE, "linear", "mIoU")


def _bars(ax: plt.Axes, models: list[str], series: list[tuple[str, list[float]]], title: str) -> None:
    x = np.arange(len(models))
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, [display_model(m) for m in models], rotation=30, ha="right")
    ax.set_title(title)
    ax.legend(fontsize=8)


def _nan(scores: Scores, model: str, column: Column) -> float:
    return scores.get((model, column), float("nan"))


def part_vs_object_figure(scores: Scores, path: Path, title: str = "") -> Path | None:
    """mIoU bars per encoder: object-level vs part-level on the same hierarchy (Fig. 6).

    Returns None (and writes nothing) when no encoder has any of these numbers.
    """
    columns = [_seg(d) for _, p, o in PART_OBJECT_PAIRS for d in (p, o)]
    models = sorted({m for m, c in scores if c in columns}, key=model_sort_key)
    if not models:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (name, part, obj) in zip(axes, PART_OBJECT_PAIRS, strict=True):
        series = [
            (f"{name}-Object", [_nan(scores, m, _seg(obj)) for m in models]),
            (f"{name}-Part", [_nan(scores, m, _seg(part)) for m in models]),
        ]
        _bars(ax, models, series, f"{name}: object vs part")
    axes[0].set_ylabel("mIoU (%)")
    fig.suptitle(title or "Object-level vs part-level segmentation")
    save_png(fig, path, 110, tight=True)
    return path


def retrieval_projection_figure(scores: Scores, path: Path, title: str = "") -> Path | None:
    """AP bars per encoder with a projector: encoded vs projected features, CUB and COCO."""
    datasets = (("CUB", "cub-parts"), ("COCO", "coco-parts"))
    models = sorted({m for m, c in scores if c in [projected(d) for _, d in datasets]}, key=model_sort_key)
    if not models:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    for ax, (name, d) in zip(axes, datasets, strict=True):
        series = [
            ("encoded", [_nan(scores, m, encoded(d)) for m in models]),
            ("projected", [_nan(scores, m, projected(d)) for m in models]),
        ]
        _bars(ax, models, series, f"{name} part retrieval")
    axes[0].set_ylabel("AP (%)")
    fig.suptitle(title or "Part retrieval: encoded vs projected features")
    save_png(fig, path, 110, tight=True)
    return path
