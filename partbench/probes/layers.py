"""`partbench probe layers`: the part- and object-level probe on every block's output.

Points along the depth of an encoder with L blocks (features from `layer_cache`, one backbone pass):
`block01` .. `blockL` (raw block outputs: the mean of the patch tokens, or the cls token, with
`feature="cls"`), `norm` (the last block after the final LayerNorm: the main cache's `embedding` /
`cls_token`) and, for encoders with a projector (mocov3, dino, ibot), `projection`.

Levels: `part` = the part label of each patch; `object` = the object class of the patch's image
(CUB's bird class; data sets without object classes get the part level only).

Tasks: `retrieval` (cosine AP/mAP on the `retrieval` split, `metrics.retrieval_ap`, the query in its
own ranking under `study`) and `classify` (a linear head per point trained on `train`, top-1 on
`val`, the study's linear recipe: SGD momentum 0.9, lr 0.1 x bs/256, cosine, no weight decay).
`segment` (a segmentation set, fast mode): `seg_layers.run_segment_layers`, one linear
segmentation head per block on maps cached in one backbone pass; `part_mIoU` or `object_mIoU`.

One result JSON per point: `results/layers/<dataset>/<model>__<task>-<feature>-<point>.json` with
metrics `part_AP`, `part_mAP`, `object_AP`, `object_mAP` (retrieval) or `part_top1`, `object_top1`
(classify), in percent, and bootstrap 95% intervals in `ci95`; segmentation writes
`<model>__segment-blockNN.json` with `part_mIoU`/`part_mAcc`/`part_aAcc` (part sets) or `object_*`
(object sets), blocks only (no norm/projection point: the study's segmentation reads raw blocks).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from partbench.config import as_protocol
from partbench.devices import resolve_device
from partbench.errors import PartbenchError
from partbench.metrics import bootstrap_ci, class_mean_ap, retrieval_ap
from partbench.probes.classify import BASE_LR as CLASSIFY_BASE_LR
from partbench.probes.classify import train_linear_probe
from partbench.probes.layer_cache import LayerFeatures, extract_layers, load_layers
from partbench.probes.results import measure_run, provenance, result_path, write_result

TASKS = ("retrieval", "classify")  # and "segment": `seg_layers.run_segment_layers`
FEATURES = ("mean", "cls")
LEVELS = ("part", "object")
PRIMARY = {"retrieval": "AP", "classify": "top1"}
BASE_LR = CLASSIFY_BASE_LR["linear"]  # the study's linear probe
OBJECT_LEVEL = "class of the patch's image (CUB: image_class_labels.txt)"


@dataclass(frozen=True)
class LayerPoint:
    """One place along the depth: `stage` is `block`, `norm` or `projection`; `block` is 1-based."""

    name: str
    block: int
    stage: str


def layer_points(lf: LayerFeatures, feature: str) -> list[tuple[LayerPoint, torch.Tensor]]:
    """(point, features [N, D]) for every block, the final norm and the projection when present."""
    per_block = lf.mean if feature == "mean" else lf.cls
    depth = lf.num_blocks
    out = [(LayerPoint(f"block{b + 1:02d}", b + 1, "block"), per_block[b]) for b in range(depth)]
    out.append((LayerPoint("norm", depth, "norm"), lf.embedding if feature == "mean" else lf.cls_token))
    if lf.projection is not None:
        out.append((LayerPoint("projection", depth, "projection"), lf.projection))
    return out


def level_labels(lf: LayerFeatures) -> dict[str, torch.Tensor]:
    levels = {"part": lf.labels}
    if lf.object_labels is not None:
        levels["object"] = lf.object_labels
    return levels


def run_layers(
    model: str,
    dataset: str,
    *,
    task: str = "retrieval",
    feature: str = "mean",
    checkpoint: str | os.PathLike[str] | None = None,
    arch: str | dict[str, Any] | None = None,
    protocol: str = "study",
    data_root: str | os.PathLike[str] | None = None,
    features_dir: str | os.PathLike[str] = Path("features"),
    results_dir: str | os.PathLike[str] = Path("results"),
    bootstrap: int = 200,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 256,
    num_workers: int | None = None,
    epochs: int = 90,
    probe_batch_size: int = 1024,
    suite: str = "custom",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    segment: dict[str, Any] | None = None,
) -> list[Path]:
    """Probe every block of `model` on `dataset` at the part and object level; one result JSON per point.

    `task="segment"` runs `seg_layers.run_segment_layers` on a segmentation set (its level is the
    set's); `segment` passes its own options (iters, batch_size, crop, blocks_per_pass, runs_dir).
    """
    if task == "segment":
        from partbench.probes.seg_layers import run_segment_layers

        return run_segment_layers(
            model,
            dataset,
            checkpoint=checkpoint,
            arch=arch,
            data_root=data_root,
            protocol=protocol,
            device=device,
            results_dir=results_dir,
            bootstrap=bootstrap,
            seed=seed,
            suite=suite,
            progress=progress,
            log=log,
            num_workers=4 if num_workers is None else num_workers,
            **(segment or {}),
        )
    if task not in TASKS:
        raise PartbenchError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    from partbench.datasets import PART_DATASETS

    if dataset not in PART_DATASETS:
        known = ", ".join(PART_DATASETS)
        raise PartbenchError(f"--dataset must be a part data set ({known}), got {dataset!r}")
    if feature not in FEATURES:
        raise PartbenchError(f"--feature must be one of {', '.join(FEATURES)}, got {feature!r}")
    proto = as_protocol(protocol)
    common = dict(
        checkpoint=checkpoint,
        arch=arch,
        protocol=str(proto),
        data_root=data_root,
        features_dir=features_dir,
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        log=log,
    )
    splits = ("retrieval",) if task == "retrieval" else ("train", "val")
    caches = [load_layers(extract_layers(model, dataset, s, **common)) for s in splits]  # type: ignore[arg-type]
    if task == "classify" and "object" in level_labels(caches[0]) and caches[1].object_labels is None:
        raise PartbenchError(f"{caches[1].cache_dir}: val split has no object labels but train has")
    dev = resolve_device(device)
    base = {
        "task": "layers",
        "dataset": dataset,
        "model": model,
        "protocol": str(proto),
        "suite": suite,
        "probe_task": task,
        "layer_feature": feature,
        "num_blocks": caches[0].num_blocks,
        "levels": list(level_labels(caches[0])),
        "object_level": None if caches[0].object_labels is None else OBJECT_LEVEL,
        "bootstrap": bootstrap,
        "seed": seed,
    }
    paths: list[Path] = []
    train_points = layer_points(caches[0], feature)
    val_points = layer_points(caches[-1], feature)
    for (point, x), (_, x_val) in zip(train_points, val_points, strict=True):
        with measure_run() as stats:
            if task == "retrieval":
                metrics, extra = _retrieval(x, level_labels(caches[0]), proto, bootstrap, seed, dev)
            else:
                metrics, extra = _classify(x, x_val, caches, epochs, probe_batch_size, bootstrap, seed, dev)
        config = {
            **base,
            **extra,
            "feature": f"{feature}@{point.name}",
            "probe": "-" if task == "retrieval" else "linear",
            "point": point.name,
            "block": point.block,
            "stage": point.stage,
            "dim": int(x.shape[1]),
        }
        prov = provenance(
            stats,
            cache_key=caches[0].cache_key,
            val_cache_key=caches[-1].cache_key if task == "classify" else None,
            checkpoint_sha256=caches[0].manifest.get("key_parts", {}).get("checkpoint_sha256"),
            layers_cache=str(caches[0].cache_dir),
        )
        path = result_path(Path(results_dir), "layers", dataset, model, f"{task}-{feature}-{point.name}")
        paths.append(write_result(path, metrics, config, prov))
        if log:
            shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if isinstance(v, float))
            log(f"{model} {point.name}: {shown}")
    return paths


def _retrieval(
    x: torch.Tensor,
    levels: dict[str, torch.Tensor],
    proto: Any,
    bootstrap: int,
    seed: int,
    dev: torch.device,
) -> tuple[dict[str, Any], dict[str, Any]]:
    metrics: dict[str, Any] = {}
    ci: dict[str, list[float]] = {}
    extra: dict[str, Any] = {"split": "retrieval", "n_items": int(x.shape[0]), "similarity": "cosine"}
    for level, labels in levels.items():
        res = retrieval_ap(x.to(dev), labels.to(dev), protocol=proto)
        metrics[f"{level}_AP"] = 100.0 * res.ap
        metrics[f"{level}_mAP"] = 100.0 * res.map
        extra[f"n_{level}_classes"] = len(res.per_class)
        if bootstrap > 0:
            ci[f"{level}_AP"] = [100.0 * v for v in bootstrap_ci(res.per_query, n=bootstrap, seed=seed)]
            pair = (res.per_query, res.labels)
            lo_hi = bootstrap_ci(pair, class_mean_ap, n=bootstrap, seed=seed)
            ci[f"{level}_mAP"] = [100.0 * v for v in lo_hi]
    if ci:
        metrics["ci95"] = ci
    return metrics, extra


def _classify(
    x_train: torch.Tensor,
    x_val: torch.Tensor,
    caches: list[LayerFeatures],
    epochs: int,
    batch_size: int,
    bootstrap: int,
    seed: int,
    dev: torch.device,
) -> tuple[dict[str, Any], dict[str, Any]]:
    train, val = caches
    metrics: dict[str, Any] = {}
    ci: dict[str, list[float]] = {}
    extra: dict[str, Any] = {
        "split": "train->val",
        "n_train": len(train),
        "n_val": len(val),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": BASE_LR * batch_size / 256,
    }
    val_levels = level_labels(val)
    for level, y_train in level_labels(train).items():
        y_val = val_levels[level]
        correct = train_linear_probe(
            x_train,
            y_train,
            x_val,
            y_val,
            epochs=epochs,
            batch_size=batch_size,
            lr=BASE_LR * batch_size / 256,
            seed=seed,
            device=dev,
        )
        metrics[f"{level}_top1"] = 100.0 * float(correct.mean())
        if bootstrap > 0:
            ci[f"{level}_top1"] = [100.0 * v for v in bootstrap_ci(correct, n=bootstrap, seed=seed)]
    if ci:
        metrics["ci95"] = ci
    return metrics, extra
