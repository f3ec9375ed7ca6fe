"""The retrieval grid of the report's "Beyond the paper" section (like the study's Figure 2).

For one query patch per part class (the first item of each class), each encoder's top-k retrieved
part patches by cosine similarity of a cached feature, the query itself left out; cells framed green
when the retrieved patch shows the query's part, red when not. `GridFacts` holds the numbers the
paragraph states: correct cells shown, and precision@k over every query of the data set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from partbench.errors import PartbenchError
from partbench.report.beyond import save_png
from partbench.report.mapping import display_model, model_sort_key

GRID_CELL, GRID_LABEL_W, GRID_TITLE_H, GRID_DPI = 1.2, 1.6, 0.9, 100  # inches; px = inches * dpi
GRID_THUMB = 96  # pixels of each thumbnail before matplotlib scales it into its cell


@dataclass
class GridFacts:
    """What the grid shows, per encoder: correct cells shown, and precision@k over every query."""

    dataset: str
    feature: str
    k: int
    queries: list[int]
    query_parts: list[str]
    shown_correct: dict[str, int]
    shown_total: int
    precision_at_k: dict[str, float]  # percent, mean over all queries, the query itself left out
    n_items: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def topk_others(features: Any, k: int) -> np.ndarray:
    """Indices [N, k] of each row's k most cosine-similar other rows (ties: lower index first)."""
    import torch

    x = torch.nn.functional.normalize(torch.as_tensor(features).float(), dim=1)
    scores = x @ x.T
    scores.fill_diagonal_(-math.inf)
    k = min(k, x.shape[0] - 1)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return order.numpy()


def _available_models(features_dir: Path, dataset: str, split: str) -> list[str]:
    from partbench.feature_cache import is_complete

    found = [d.name for d in sorted(Path(features_dir).glob("*")) if is_complete(d / dataset / split)]
    return sorted(found, key=model_sort_key)


def retrieval_grid(
    features_dir: Path,
    dataset: str,
    path: Path,
    *,
    models: Sequence[str] | None = None,
    n_queries: int = 4,
    k: int = 6,
    feature: str = "embedding",
    split: str = "retrieval",
) -> GridFacts | None:
    """Draw the grid for `dataset` from the main caches under `features_dir`; None when none exist.

    Queries: the first item of each part class (label order), up to `n_queries`; the same rows for
    every encoder (their `items.csv` must agree).
    """
    from PIL import Image

    from partbench.feature_cache import cache_dir_for, load_features

    models = list(models) if models is not None else _available_models(features_dir, dataset, split)
    if not models:
        return None
    sets = {m: load_features(cache_dir_for(features_dir, m, dataset, split)) for m in models}
    first = sets[models[0]]
    keycols = ["image", "part", "x0", "y0", "x1", "y1"]
    for fs in sets.values():
        if not fs.items[keycols].equals(first.items[keycols]):
            raise PartbenchError(f"{fs.cache_dir}: items differ from {first.cache_dir}; extract both alike")
        if getattr(fs, feature, None) is None:
            raise PartbenchError(f"{fs.cache_dir}: no {feature!r} in the cache")
    labels = first.labels.numpy()
    queries = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)][:n_queries]
    images_dir = Path(str(first.manifest.get("images_dir", "")))
    thumbs: dict[int, np.ndarray] = {}

    def thumb(row: int) -> np.ndarray:
        if row not in thumbs:
            it = first.items.iloc[row]
            try:
                with Image.open(images_dir / it["image"]) as im:
                    box = (int(it["x0"]), int(it["y0"]), int(it["x1"]), int(it["y1"]))
                    crop = im.convert("RGB").crop(box).resize((GRID_THUMB, GRID_THUMB), Image.BICUBIC)
            except OSError as exc:
                raise PartbenchError(f"{images_dir / it['image']}: cannot read the image ({exc})") from None
            thumbs[row] = np.asarray(crop)
        return thumbs[row]

    ranks = {m: topk_others(getattr(fs, feature), k) for m, fs in sets.items()}
    k = ranks[models[0]].shape[1]
    rows, cols = len(queries) * len(models), 1 + k
    size = (GRID_LABEL_W + cols * GRID_CELL, GRID_TITLE_H + rows * GRID_CELL)
    fig = plt.figure(figsize=size, dpi=GRID_DPI)
    left, top = GRID_LABEL_W / size[0], 1 - GRID_TITLE_H / size[1]
    cw, ch = GRID_CELL / size[0], GRID_CELL / size[1]
    parts = first.items["part"].astype(str).tolist()
    shown = {m: 0 for m in models}
    for qi, q in enumerate(queries):
        for mi, m in enumerate(models):
            r = qi * len(models) + mi
            y = top - (r + 1) * ch
            fig.text(left - 0.1 / size[0], y + ch / 2, f"{display_model(m)}\nquery: {parts[q]}",
                     ha="right", va="center", fontsize=8)  # fmt: skip
            cells = [(q, None), *((int(j), bool(labels[j] == labels[q])) for j in ranks[m][q])]
            for c, (row, ok) in enumerate(cells):
                ax = fig.add_axes((left + c * cw + 0.05 * cw, y + 0.08 * ch, 0.9 * cw, 0.78 * ch))
                ax.imshow(thumb(row))
                ax.set_xticks([])
                ax.set_yticks([])
                colour = "tab:blue" if ok is None else ("tab:green" if ok else "tab:red")
                for spine in ax.spines.values():
                    spine.set_color(colour)
                    spine.set_linewidth(4)
                label = "query" if ok is None else f"#{c} {'✓' if ok else '✗'} {parts[row]}"
                ax.set_title(label, fontsize=7, color=colour, pad=2)
                shown[m] += bool(ok)
    fig.suptitle(
        f"{dataset}: top-{k} retrieved part patches per encoder ({feature}, cosine, query left out)\n"
        "green ✓ = same part as the query, red ✗ = another part, blue = the query",
        fontsize=10,
        y=1 - 0.15 / size[1],
        va="top",
    )
    save_png(fig, path, GRID_DPI)
    precision = {m: 100.0 * float((labels[ranks[m]] == labels[:, None]).mean()) for m in models}
    return GridFacts(
        dataset=dataset,
        feature=feature,
        k=k,
        queries=queries,
        query_parts=[parts[q] for q in queries],
        shown_correct=shown,
        shown_total=len(queries) * k,
        precision_at_k=precision,
        n_items=len(labels),
    )


def grid_facts_text(facts: GridFacts) -> str:
    """One paragraph from the grid's facts."""
    per = "; ".join(
        f"{display_model(m)} {facts.shown_correct[m]}/{facts.shown_total} shown correct, "
        f"precision@{facts.k} {facts.precision_at_k[m]:.2f}%"
        for m in facts.precision_at_k
    )
    best = max(facts.precision_at_k, key=lambda m: facts.precision_at_k[m])
    return (
        f"Queries: the first patch of each part class ({', '.join(facts.query_parts)}); precision@{facts.k} "
        f"is over all {facts.n_items} patches of `{facts.dataset}` as queries ({facts.feature}). {per}. "
        f"Highest precision@{facts.k}: {display_model(best)}."
    )
