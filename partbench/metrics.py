"""Metrics: retrieval AP/mAP, top-1 accuracy, confusion-matrix mIoU/mAcc/aAcc, bootstrap intervals.

Pure: arrays or tensors in, numbers out (fractions in [0, 1]; result files show percent). Nothing
here knows the pipeline. Every check of the inputs raises `MetricInputError` with one line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from partbench.config import Protocol, as_protocol
from partbench.errors import MetricInputError

ArrayLike = np.ndarray | torch.Tensor


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"{name}: not an array ({exc})") from None


# --- retrieval ---------------------------------------------------------------------------------


@dataclass
class RetrievalResult:
    """AP = mean of per-query AP; mAP = mean over classes of the per-class mean AP (fractions)."""

    ap: float
    map: float
    per_class: dict[int, float]
    per_query: np.ndarray  # [N] float64, row i = query i
    labels: np.ndarray  # [N] int64, the labels the queries were grouped by
    protocol: str = "study"


def average_precision(scores: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Per-row AP of `scores` [Q, N] against boolean `positives` [Q, N], exactly as sklearn.

    sklearn's `average_precision_score` evaluates precision only at distinct score thresholds: all
    items tied at a score enter the ranking together. So each positive gets the precision at the end
    of its tie group: AP = sum over positives of tp(end) / (end + 1), divided by the positive count.
    Rows without positives give 0 (sklearn warns and returns 0 too). Returns float64 [Q].
    """
    vals, order = torch.sort(scores, dim=1, descending=True, stable=True)
    pos_sorted = positives.gather(1, order)
    tp = torch.cumsum(pos_sorted, dim=1, dtype=torch.int64)
    neg = -vals  # ascending, so searchsorted finds the end of each tie group
    group_len = torch.searchsorted(neg, neg, right=True)  # items ranked at or above each score
    tp_end = tp.gather(1, group_len - 1)
    precision = tp_end.to(torch.float64) / group_len.to(torch.float64)
    n_pos = tp[:, -1].to(torch.float64)
    summed = (precision * pos_sorted).sum(dim=1)
    return torch.where(n_pos > 0, summed / n_pos.clamp_min(1), torch.zeros_like(summed))


def _sort_rows(x: torch.Tensor, use_numpy: bool | None = None) -> torch.Tensor:
    """Each row sorted ascending (values only); numpy's vectorised sort on CPU is ~10x torch's."""
    if x.device.type == "cpu" if use_numpy is None else use_numpy:
        return torch.from_numpy(np.sort(x.numpy(), axis=1))
    return torch.sort(x, dim=1).values


def _first_of_ties(x: torch.Tensor, use_numpy: bool | None = None) -> torch.Tensor:
    """For rows sorted ascending: the index of the first element equal to each element (int64)."""
    q, p = x.shape
    if x.device.type == "cpu" if use_numpy is None else use_numpy:  # numpy's running max: ~6x cummax
        a = x.numpy()
        starts = np.ones((q, p), dtype=bool)
        starts[:, 1:] = a[:, 1:] != a[:, :-1]
        first = np.where(starts, np.arange(p, dtype=np.int64), 0)
        return torch.from_numpy(np.maximum.accumulate(first, axis=1))
    starts = torch.ones((q, p), dtype=torch.bool, device=x.device)
    starts[:, 1:] = x[:, 1:] != x[:, :-1]
    first = torch.where(starts, torch.arange(p, device=x.device), 0)
    return first.cummax(dim=1).values


def _ap_from_sorted(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """sklearn's AP from each query's positive [Q, P] and negative [Q, M] scores, sorted ascending.

    At the threshold of a positive scoring s, every item scoring >= s is retrieved (ties enter
    together), so AP = mean over positives of  #pos(>= s) / (#pos(>= s) + #neg(>= s)).
    """
    p, m = pos.shape[1], neg.shape[1]
    pos_ge = p - _first_of_ties(pos)
    neg_ge = m - torch.searchsorted(neg, pos, side="left") if m else torch.zeros_like(pos_ge)
    return (pos_ge.to(torch.float64) / (pos_ge + neg_ge).to(torch.float64)).mean(dim=1)


def _check_retrieval_inputs(features: torch.Tensor, labels: torch.Tensor) -> None:
    if features.ndim != 2 or features.shape[0] == 0:
        raise MetricInputError(
            f"features: expected a non-empty [N, D] array, got shape {tuple(features.shape)}"
        )
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise MetricInputError(
            f"labels: expected {features.shape[0]} labels (one per feature row), "
            f"got shape {tuple(labels.shape)}"
        )
    if not features.is_floating_point():
        raise MetricInputError(f"features: expected floating point values, got {features.dtype}")
    bad = ~torch.isfinite(features).all(dim=1)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten()
        raise MetricInputError(
            f"features: {rows.numel()} row(s) contain NaN or inf (first: row {int(rows[0])})"
        )


def retrieval_ap(
    features: ArrayLike,
    labels: ArrayLike,
    protocol: str | Protocol = "study",
    chunk_size: int | None = None,
) -> RetrievalResult:
    """Cosine-similarity retrieval: every item queries the whole database; AP per query as sklearn.

    `study`: the query stays in its own ranking (similarity 1, a positive, so always first), as the
    study's code did. `clean`: the query is left out, so every class needs at least two items.
    Computed in the features' dtype (float16 is raised to float32) on the features' device, in
    chunks of `chunk_size` queries (default: about 2**22 scores per chunk on CPU, 2**24 on CUDA).
    """
    proto = as_protocol(protocol)
    feats = _as_tensor(features, "features")
    labs = _as_tensor(labels, "labels")
    _check_retrieval_inputs(feats, labs)
    if feats.dtype in (torch.float16, torch.bfloat16):
        feats = feats.float()
    labs = labs.to(device=feats.device, dtype=torch.int64)
    n = feats.shape[0]
    classes, counts = torch.unique(labs, return_counts=True)
    if proto is Protocol.CLEAN and bool((counts < 2).any()):
        lone = int(classes[counts < 2][0])
        raise MetricInputError(
            f"labels: class {lone} has a single item, so under protocol 'clean' (query left out) "
            "it has no positive to retrieve"
        )
    # Identical rows must score identically (they are ties for sklearn), whatever the BLAS kernel
    # does at tile edges: score against the distinct rows, then spread the columns back.
    unit, inverse = torch.unique(
        torch.nn.functional.normalize(feats, dim=1, eps=1e-12), dim=0, return_inverse=True
    )
    if chunk_size is None:
        budget = 2**24 if feats.is_cuda else 2**22
        chunk_size = max(1, budget // n)
    per_query = torch.empty(n, dtype=torch.float64, device=feats.device)
    # Queries of one class share their positives: score them in chunks, split positives/negatives.
    for c in classes:
        members = torch.nonzero(labs == c).flatten()
        cols_pos, cols_neg = inverse[members], inverse[labs != c]
        for start in range(0, len(members), chunk_size):
            rows = members[start : start + chunk_size]
            scores = unit[inverse[rows]] @ unit.T
            pos = scores[:, cols_pos]
            if proto is Protocol.CLEAN:  # the query's own column sorts first as -inf, then is dropped
                own = torch.arange(len(rows), device=feats.device)
                pos[own, own + start] = -torch.inf
            pos = _sort_rows(pos)[:, 1:].contiguous() if proto is Protocol.CLEAN else _sort_rows(pos)
            per_query[rows] = _ap_from_sorted(pos, _sort_rows(scores[:, cols_neg]))
    ap_np = per_query.cpu().numpy()
    labs_np = labs.cpu().numpy()
    per_class = {int(c): float(ap_np[labs_np == int(c)].mean()) for c in classes.cpu()}
    return RetrievalResult(
        ap=float(ap_np.mean()),
        map=float(np.mean(list(per_class.values()))),
        per_class=per_class,
        per_query=ap_np,
        labels=labs_np,
        protocol=str(proto),
    )


def class_mean_ap(per_query: np.ndarray, labels: np.ndarray) -> float:
    """mAP from per-query APs: the mean over classes of each class's mean AP (for bootstrap)."""
    classes, inverse = np.unique(labels, return_inverse=True)
    sums = np.bincount(inverse, weights=per_query, minlength=len(classes))
    counts = np.bincount(inverse, minlength=len(classes))
    return float(np.mean(sums / counts))


# --- classification ----------------------------------------------------------------------------


def top1_accuracy(logits_or_pred: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of items whose top-scoring class (or given prediction) equals the label."""
    out = _as_tensor(logits_or_pred, "logits")
    labs = _as_tensor(labels, "labels").to(out.device)
    pred = out.argmax(dim=1) if out.ndim == 2 else out
    if pred.ndim != 1 or labs.ndim != 1 or pred.shape[0] != labs.shape[0]:
        raise MetricInputError(
            f"labels: {tuple(labs.shape)} does not match predictions {tuple(out.shape)} (one label per row)"
        )
    if pred.shape[0] == 0:
        raise MetricInputError("labels: no items to score")
    return float((pred.long() == labs.long()).double().mean())


# --- segmentation ------------------------------------------------------------------------------


@dataclass
class IoUResult:
    """mmseg's metrics from summed areas. Per class: `iou` (NaN when absent from pred and label),
    `acc` (NaN when absent from label). `miou`/`macc` are nanmeans; `aacc` = correct / labelled."""

    iou: np.ndarray
    acc: np.ndarray
    miou: float
    macc: float
    aacc: float
    areas: np.ndarray = field(repr=False)  # [3, C]: intersect, label, pred pixel counts


def iou_from_areas(areas: ArrayLike) -> IoUResult:
    """IoU/Acc from `areas` [3, C] = (intersect, label, pred) pixel counts, as mmseg's
    `total_area_to_metrics`: IoU = I / (L + P − I), Acc = I / L, aAcc = ΣI / ΣL, means are nanmeans."""
    a = np.asarray(areas.cpu() if isinstance(areas, torch.Tensor) else areas, dtype=np.float64)
    inter, lab, pred = a[0], a[1], a[2]
    union = lab + pred - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
        acc = inter / lab
        aacc = float(inter.sum() / lab.sum()) if lab.sum() > 0 else float("nan")
    miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
    macc = float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")
    return IoUResult(iou=iou, acc=acc, miou=miou, macc=macc, aacc=aacc, areas=a)


class ConfusionMatrix:
    """Accumulates a [C, C] confusion matrix (rows label, columns pred) batch by batch, on device.

    `update(pred, label)`: integer maps of equal shape; with `per_image=True` inputs of ndim >= 3
    count as a batch of images along dim 0 (ndim <= 2: one image), and each image's areas
    (intersect, label, pred per class) are kept for `bootstrap`. Labels are mapped as mmseg does:
    with `reduce_zero_label`, 0 → ignore and k → k − 1 (label only); then `ignore_index` pixels drop.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        reduce_zero_label: bool = False,
        device: str | torch.device | None = None,
        per_image: bool = False,
    ) -> None:
        if num_classes < 1:
            raise MetricInputError(f"num_classes: expected >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reduce_zero_label = reduce_zero_label
        self.device = torch.device(device) if device is not None else None
        self.per_image = per_image
        self.matrix: torch.Tensor | None = None
        self._image_areas: list[torch.Tensor] = []

    def _prepare(self, pred: Any, label: Any) -> tuple[torch.Tensor, torch.Tensor]:
        p, t = _as_tensor(pred, "pred"), _as_tensor(label, "label")
        if p.shape != t.shape:
            raise MetricInputError(f"pred shape {tuple(p.shape)} differs from label shape {tuple(t.shape)}")
        if p.is_floating_point() or t.is_floating_point():
            raise MetricInputError("pred/label: expected integer class maps, got floating point values")
        dev = self.device or p.device
        p, t = p.to(dev, torch.int64), t.to(dev, torch.int64)
        if self.reduce_zero_label:
            t = torch.where(t == 0, 255, t) - 1
            t = torch.where(t == 254, 255, t)
        return p, t

    def _check(self, p: torch.Tensor, t: torch.Tensor) -> None:
        c = self.num_classes
        bad_t = t[(t < 0) | (t >= c)]
        if bad_t.numel():
            raise MetricInputError(
                f"label: value {int(bad_t[0])} outside the class range 0..{c - 1} "
                f"(ignore_index {self.ignore_index}, reduce_zero_label {self.reduce_zero_label})"
            )
        bad_p = p[(p < 0) | (p >= c)]
        if bad_p.numel():
            raise MetricInputError(f"pred: value {int(bad_p[0])} outside the class range 0..{c - 1}")

    def update(self, pred: Any, label: Any) -> None:
        """Add one batch (or one image) of predictions and labels."""
        p, t = self._prepare(pred, label)
        c = self.num_classes
        images = p.shape[0] if (self.per_image and p.ndim >= 3) else 1
        p, t = p.reshape(images, -1), t.reshape(images, -1)
        keep = t != self.ignore_index
        image_id = torch.arange(images, device=p.device)[:, None].expand_as(t)[keep]
        p, t = p[keep], t[keep]
        self._check(p, t)
        counts = torch.bincount(t * c + p, minlength=c * c).reshape(c, c)
        self.matrix = counts if self.matrix is None else self.matrix + counts
        if self.per_image:
            off = image_id * c
            n = images * c
            inter = torch.bincount(off[p == t] + t[p == t], minlength=n).reshape(images, c)
            lab = torch.bincount(off + t, minlength=n).reshape(images, c)
            prd = torch.bincount(off + p, minlength=n).reshape(images, c)
            self._image_areas.append(torch.stack([inter, lab, prd], dim=1))

    def areas(self) -> np.ndarray:
        """[3, C] float64: intersect (diagonal), label (row sums), pred (column sums)."""
        if self.matrix is None:
            raise MetricInputError("confusion matrix: no pixels were added")
        m = self.matrix.cpu().to(torch.float64)
        return torch.stack([torch.diagonal(m), m.sum(1), m.sum(0)]).numpy()

    def result(self) -> IoUResult:
        """mIoU/mAcc/aAcc over everything added so far."""
        return iou_from_areas(self.areas())

    def per_image_areas(self) -> np.ndarray:
        """[M, 3, C] float64 areas of each image added (needs `per_image=True`)."""
        if not self.per_image or not self._image_areas:
            raise MetricInputError("confusion matrix: per-image areas need per_image=True and some updates")
        return torch.cat(self._image_areas).cpu().to(torch.float64).numpy()

    def bootstrap(self, n: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, tuple[float, float]]:
        """Percentile intervals of mIoU, mAcc, aAcc, resampling images with replacement."""
        per_img = self.per_image_areas()
        out = {}
        for key in ("miou", "macc", "aacc"):
            out[key] = bootstrap_ci(
                per_img, lambda a, k=key: getattr(iou_from_areas(a.sum(0)), k), n=n, seed=seed, alpha=alpha
            )
        return {"mIoU": out["miou"], "mAcc": out["macc"], "aAcc": out["aacc"]}


def mean_iou(
    pred: Any,
    label: Any,
    num_classes: int,
    ignore_index: int = 255,
    reduce_zero_label: bool = False,
) -> IoUResult:
    """mmseg's mIoU/mAcc/aAcc: areas summed over every pixel of every image, then per-class ratios.

    `pred`, `label`: arrays or tensors of any (equal) shape, or lists of per-image maps. Classes
    absent from the label get NaN acc; absent from both get NaN IoU; `miou`/`macc` are nanmeans
    over classes (mmseg's `np.nanmean`), so such classes do not count. A value outside
    0..num_classes-1 in `pred`, or in `label` where it is not `ignore_index`, raises
    `MetricInputError` (mmseg's `histc` would drop it silently).
    """
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index, reduce_zero_label=reduce_zero_label)
    if isinstance(pred, list | tuple) or isinstance(label, list | tuple):
        if (
            not isinstance(pred, list | tuple)
            or not isinstance(label, list | tuple)
            or len(pred) != len(label)
        ):
            raise MetricInputError("pred/label: lists of per-image maps must have the same length")
        for p, t in zip(pred, label, strict=True):
            cm.update(p, t)
    else:
        cm.update(pred, label)
    return cm.result()


# --- bootstrap ---------------------------------------------------------------------------------


def bootstrap_ci(
    data: ArrayLike | Sequence[ArrayLike],
    statistic: Callable[..., float] | None = None,
    *,
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval: resample items (rows of `data`) with replacement `n` times.

    `data`: per-item values [M, ...] (e.g. per-query AP, per-image areas [M, 3, C]), or a tuple of
    arrays resampled together (e.g. `(per_query_ap, labels)`). `statistic` maps the resampled
    array(s) to a number (default: the mean). Same `seed`, same interval.
    """
    arrays = list(data) if isinstance(data, tuple | list) else [data]
    arrays = [a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a) for a in arrays]
    m = len(arrays[0])
    if m == 0 or any(len(a) != m for a in arrays):
        raise MetricInputError("bootstrap: data must be non-empty arrays with one row per item")
    if not 0 < alpha < 1 or n < 1:
        raise MetricInputError(f"bootstrap: need 0 < alpha < 1 and n >= 1, got alpha={alpha}, n={n}")
    stat = statistic or (lambda a: float(np.mean(a)))
    rng = np.random.default_rng(seed)
    values = np.empty(n, dtype=np.float64)
    for i in range(n):
        idx = rng.integers(0, m, size=m)
        values[i] = stat(*[a[idx] for a in arrays])
    lo, hi = np.nanquantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)
