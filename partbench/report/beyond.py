"""The report's "Beyond the paper" section: layer-wise curves and retrieval grids, with generated facts.

`layer curves` (from `results/layers/...`, written by `partbench probe layers`): part-level and
object-level score against depth, one line per encoder, bootstrap bands; the final-normed output
(`norm`) and the projector output (`proj`) are the last points. Segmentation curves (`--task
segment`, blocks only) put a part set beside its object twin (ade20k-part | ade20k-object,
pascal-part | pascal-object; `SEG_TWINS`), one panel each; a set without a twin gets one panel.
`retrieval grid` (opt-in, from the main feature caches): for one query patch per part class, each
encoder's top-k retrieved patches (the query itself left out), framed green when the part matches
and red when it does not (`report/retrieval_grid.py`).

Every number in the paragraphs is computed here from the result files or caches it names, never
typed; the grid's numbers are also written beside it as `figures/retrieval_grid__<dataset>.json`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from partbench.errors import PartbenchError
from partbench.fsutil import atomic_write, atomic_write_json
from partbench.probes.results import iter_results
from partbench.report.mapping import PRIMARY_METRIC, TASKS, display_model, model_sort_key

BEYOND_FIGURES = ("retrieval-grid",)  # opt-in figures (`partbench report --figures ...`)
LEVELS = ("part", "object")
METRIC = {task: PRIMARY_METRIC[paper_task] for task, paper_task in TASKS.items()}  # retrieval: AP, ...
METRIC_LABEL = {
    "AP": "retrieval AP (%)",
    "top1": "linear-probe top-1 (%)",
    "mIoU": "linear segmentation mIoU (%)",
}
# Segmentation: a part set and its object twin (same images) share one figure, one panel each.
SEG_TWINS = {
    "ade20k-part": "ade20k",
    "ade20k-object": "ade20k",
    "pascal-part": "pascal",
    "pascal-object": "pascal",
}
CURVE_PREFIX, GRID_PREFIX = "layers__", "retrieval_grid__"
CURVE_SIZE, CURVE_DPI = (12.0, 4.8), 110  # inches, dots per inch: 1320 x 528 px


# --- layer curves ------------------------------------------------------------------------------


@dataclass
class Point:
    """One point of one encoder's curve: `x` is the plotting position (blocks 1..L, then norm, proj)."""

    name: str
    stage: str
    block: int
    values: dict[str, float]
    ci: dict[str, tuple[float, float]]
    path: Path


@dataclass
class Curves:
    """All encoders' points for one (dataset, task, feature, protocol, suite)."""

    dataset: str
    task: str
    feature: str
    protocol: str
    suite: str
    by_model: dict[str, list[Point]] = field(default_factory=dict)
    sources: dict[str, set[str]] = field(default_factory=dict)  # level -> data sets its points come from

    @property
    def metric(self) -> str:
        return METRIC[self.task]

    @property
    def stem(self) -> str:
        return f"{CURVE_PREFIX}{self.dataset}__{self.task}-{self.feature}"


def load_layer_curves(
    results_dir: Path,
    suite: str | None = None,
    *,
    results: Iterable[tuple[Path, dict[str, Any]]] | None = None,
) -> list[Curves]:
    """Group every `layers` result under `results_dir` into curves; points sorted along the depth.

    `results`: the (path, result) pairs of `results_dir` when the caller has already read them.
    """
    groups: dict[tuple[str, ...], Curves] = {}
    for path, res in results if results is not None else iter_results(Path(results_dir)):
        cfg, metrics = res["config"], res["metrics"]
        if cfg.get("task") != "layers" or (suite is not None and cfg.get("suite") != suite):
            continue
        task = str(cfg.get("probe_task"))
        if task not in METRIC:
            raise PartbenchError(f"{path}: layers result with unknown probe_task {task!r}")
        key = tuple(str(cfg.get(k)) for k in ("dataset", "probe_task", "layer_feature", "protocol", "suite"))
        if task == "segment":
            key = (SEG_TWINS.get(key[0], key[0]), *key[1:])
        curves = groups.setdefault(key, Curves(*key))
        ci = metrics.get("ci95") or {}
        values, bands = {}, {}
        for level in LEVELS:
            name = f"{level}_{METRIC[task]}"
            if isinstance(metrics.get(name), int | float):
                values[level] = float(metrics[name])
                if name in ci:
                    bands[level] = (float(ci[name][0]), float(ci[name][1]))
        for level in values:
            curves.sources.setdefault(level, set()).add(str(cfg.get("dataset")))
        point = Point(str(cfg["point"]), str(cfg["stage"]), int(cfg["block"]), values, bands, path)
        curves.by_model.setdefault(str(cfg["model"]), []).append(point)
    order = {"block": 0, "norm": 1, "projection": 2}
    for curves in groups.values():
        for points in curves.by_model.values():
            points.sort(key=lambda p: (order.get(p.stage, 3), p.block))
    return [groups[k] for k in sorted(groups)]


def _x_positions(curves: Curves) -> tuple[int, dict[str, int]]:
    """The depth and the positions of the points after the blocks (only the stages present)."""
    depth = max(p.block for pts in curves.by_model.values() for p in pts)
    stages = {p.stage for pts in curves.by_model.values() for p in pts}
    tail = [s for s in ("norm", "projection") if s in stages]
    return depth, {s: depth + 1 + i for i, s in enumerate(tail)}


def _x(point: Point, extra: dict[str, int]) -> int:
    return point.block if point.stage == "block" else extra[point.stage]


def layer_curve_figure(curves: Curves, path: Path, title: str = "") -> Path:
    """Two panels (part level | object level) of score vs depth; one colour per encoder."""
    depth, extra = _x_positions(curves)
    levels = [lv for lv in LEVELS if any(lv in p.values for pts in curves.by_model.values() for p in pts)]
    fig, axes = plt.subplots(1, len(levels), figsize=CURVE_SIZE, squeeze=False, layout="constrained")
    colours = plt.get_cmap("tab10")
    models = sorted(curves.by_model, key=model_sort_key)
    for ax, level in zip(axes[0], levels, strict=True):
        for i, model in enumerate(models):
            pts = [p for p in curves.by_model[model] if level in p.values]
            colour = colours(i % 10)
            blocks = [p for p in pts if p.stage == "block"]
            xs = [p.block for p in blocks]
            ax.plot(
                xs, [p.values[level] for p in blocks], "-o", color=colour, ms=4, label=display_model(model)
            )
            banded = [p for p in blocks if level in p.ci]
            if banded:
                ax.fill_between(
                    [p.block for p in banded],
                    [p.ci[level][0] for p in banded],
                    [p.ci[level][1] for p in banded],
                    color=colour,
                    alpha=0.15,
                    linewidth=0,
                )
            tail = [p for p in pts if p.stage != "block"]
            nudge = 0.08 * (i - (len(models) - 1) / 2)  # side by side, so the intervals stay visible
            if blocks and tail:  # dotted continuation to the final-norm and projector points
                seq = [blocks[-1], *tail]
                xs_tail = [_x(p, extra) + (nudge if p.stage != "block" else 0.0) for p in seq]
                ax.plot(xs_tail, [p.values[level] for p in seq], ":", color=colour)
            for p in tail:
                marker, size = ("s", 7) if p.stage == "norm" else ("*", 12)
                ax.plot(_x(p, extra) + nudge, p.values[level], marker, color=colour, ms=size)
                if level in p.ci:
                    lo, hi = p.ci[level]
                    ax.vlines(_x(p, extra) + nudge, lo, hi, color=colour, alpha=0.6)
        short = {"norm": "norm", "projection": "proj"}
        ax.set_xticks(
            [*range(1, depth + 1), *extra.values()], [*map(str, range(1, depth + 1)), *map(short.get, extra)]
        )
        ax.set_xlim(0.5, depth + len(extra) + 0.5)
        if extra:
            ax.axvline(depth + 0.5, color="0.7", lw=0.8)
        if curves.task == "segment":
            what = ", ".join(sorted(curves.sources.get(level, ())))
            if len(levels) == 1:
                what += f"; no {'object' if level == 'part' else 'part'}-level twin results"
        else:
            what = "part label" if level == "part" else "object class of the image"
            if levels == ["part"]:
                what += "; no object classes in this data set"
        ax.set_title(f"{level}-level ({what})")
        ax.set_ylabel(f"{level}-level {METRIC_LABEL[curves.metric]}")
        ax.grid(alpha=0.3)
    tails = {"norm": "norm = last block + final LayerNorm", "projection": "proj = projector output"}
    fig.supxlabel("; ".join(["block (1 = first", *(tails[s] for s in extra)]) + ")")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="encoder", fontsize=9, loc="outside right upper")
    band = (
        "shaded: bootstrap 95% interval"
        if any(p.ci for pts in curves.by_model.values() for p in pts)
        else "no bootstrap"
    )
    fig.suptitle(
        (title or f"{curves.dataset}: {curves.task} on each block ({curves.feature} feature)") + f" — {band}"
    )
    save_png(fig, path, CURVE_DPI)
    return path


def layer_facts(curves: Curves) -> str:
    """One paragraph of facts computed from the points: peaks, margins, projector effect."""
    metric = curves.metric
    sentences = []
    for model in sorted(curves.by_model, key=model_sort_key):
        pts = curves.by_model[model]
        blocks = [p for p in pts if p.stage == "block"]
        norm = next((p for p in pts if p.stage == "norm"), None)
        proj = next((p for p in pts if p.stage == "projection"), None)
        parts = []
        for level in LEVELS:
            lv = [p for p in blocks if level in p.values]
            if not lv:
                continue
            best = max(lv, key=lambda p: p.values[level])  # first block wins a tie
            text = (
                f"{level} {metric} peaks at block {best.block} of {max(p.block for p in lv)} "
                f"({best.values[level]:.2f}; block 1: {lv[0].values[level]:.2f})"
            )
            if norm is not None and level in norm.values:
                gap = best.values[level] - norm.values[level]
                side = "above" if gap >= 0 else "below"
                text += f", {abs(gap):.2f} points {side} the final-normed output ({norm.values[level]:.2f})"
                if proj is not None and level in proj.values:
                    delta = proj.values[level] - norm.values[level]
                    text += f"; the projector output scores {proj.values[level]:.2f} ({delta:+.2f} vs norm)"
            parts.append(text)
        if parts:
            sentences.append(f"**{display_model(model)}**: " + "; ".join(parts) + ".")
    folders = sorted({p.path.parent.as_posix() for pts in curves.by_model.values() for p in pts})
    where = ", ".join(f"`{f}/`" for f in folders)
    head = (
        f"Computed from {sum(len(p) for p in curves.by_model.values())} result files "
        f"({where}, {curves.task}, {curves.feature} feature, protocol "
        f"{curves.protocol}, suite {curves.suite}). "
    )
    return head + " ".join(sentences)


# --- the section -------------------------------------------------------------------------------


def beyond_section(
    results_dir: Path,
    out: Path,
    *,
    suite: str | None = None,
    figures: Iterable[str] = (),
    features_dir: Path = Path("features"),
    results: Iterable[tuple[Path, dict[str, Any]]] | None = None,
) -> tuple[str, list[Path]]:
    """Draw the section's figures into `out/figures/` and return (markdown, files written).

    Layer curves are drawn for every group of `layers` results; `figures` adds opt-in figures
    (`retrieval-grid`). Returns ("", []) when there is nothing to show. `results`: the result
    files of `results_dir` already read (`build_report` reads them once for the whole report).
    """
    figures = list(figures)
    unknown = [f for f in figures if f not in BEYOND_FIGURES]
    if unknown:
        raise PartbenchError(f"--figures: unknown figure {unknown[0]!r} (known: {', '.join(BEYOND_FIGURES)})")
    fig_dir = Path(out) / "figures"
    if fig_dir.is_dir():  # stale figures of an earlier report
        for old in fig_dir.iterdir():
            if old.name.startswith((CURVE_PREFIX, GRID_PREFIX)):
                old.unlink()
    md: list[str] = []
    files: list[Path] = []
    all_curves = load_layer_curves(results_dir, suite, results=results)
    multi = len({(c.protocol, c.suite) for c in all_curves}) > 1
    for curves in all_curves:
        stem = curves.stem + (f"__{curves.suite}-{curves.protocol}" if multi else "")
        path = layer_curve_figure(curves, fig_dir / f"{stem}.png")
        files.append(path)
        md += [
            f"### Layer-wise {curves.task}: {curves.dataset} ({curves.feature} feature)",
            "",
            f"![{stem}](figures/{path.name})",
            "",
            layer_facts(curves),
            "",
        ]
    if "retrieval-grid" in figures:
        for dataset in ("cub-parts", "coco-parts"):
            path = fig_dir / f"{GRID_PREFIX}{dataset}.png"
            from partbench.report.retrieval_grid import grid_facts_text, retrieval_grid

            facts = retrieval_grid(Path(features_dir), dataset, path)
            if facts is None:
                continue
            atomic_write_json(path.with_suffix(".json"), facts.as_dict())
            files += [path, path.with_suffix(".json")]
            md += [
                f"### Retrieval grid: {dataset}",
                "",
                f"![{path.stem}](figures/{path.name})",
                "",
                grid_facts_text(facts),
                "",
            ]
        if not any(f.name.startswith(GRID_PREFIX) for f in files):
            md += [
                f"No part-set feature cache under `{Path(features_dir).as_posix()}`: no retrieval grid.",
                "",
            ]
    if not md:
        return "", []
    intro = (
        "Where in the network does part knowledge live? Part- vs object-level scores on every block "
        "(`partbench probe layers`), and what the encoders retrieve. The paragraphs are generated from "
        "the result files."
    )
    return "\n".join(["## Beyond the paper", "", intro, "", *md]), files


def save_png(fig: plt.Figure, path: Path, dpi: int, tight: bool = False) -> None:
    """PNG written atomically, without a timestamp; exactly figsize x dpi pixels unless `tight`
    (cropped to the drawn content), then closed."""
    buf = io.BytesIO()
    bbox = "tight" if tight else None
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches=bbox, metadata={"Software": None})
    plt.close(fig)
    with atomic_write(path) as fh:
        fh.write(buf.getvalue())
