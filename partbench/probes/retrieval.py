"""Part retrieval on cached features: cosine similarity, AP per query as sklearn, AP and mAP.

Each item of the `retrieval` split queries the whole database (the study's code). One result file per
feature: `embedding` (mean of patch tokens; the report shows it as the paper's "Encoded" column),
`cls_token` (shown beside it, since the paper does not say which of the two "Encoded" was) and
`projection` (the paper's "Projected"; only for encoders with a projector).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from partbench.config import as_protocol
from partbench.devices import resolve_device
from partbench.errors import CacheError
from partbench.feature_cache import FEATURE_NAMES, FeatureSet, cache_dir_for, load_features
from partbench.metrics import bootstrap_ci, class_mean_ap, retrieval_ap
from partbench.probes.results import measure_run, provenance, result_path, write_result

DEFAULT_FEATURES = FEATURE_NAMES  # ("embedding", "cls_token", "projection")


def manifest_value(manifest: dict[str, Any], key: str) -> Any:
    """`key` from the cache manifest, at the top level or one level down (its `parts`)."""
    if key in manifest:
        return manifest[key]
    for value in manifest.values():
        if isinstance(value, dict) and key in value:
            return value[key]
    return None


def cache_protocol(fs: FeatureSet) -> str:
    """The protocol the cache was extracted under (`study` when the manifest does not say)."""
    return str(manifest_value(fs.manifest, "protocol") or "study")


def part_names(fs: FeatureSet) -> dict[int, str]:
    """label → part name, from `items.csv` (the label itself when the part column is empty)."""
    pairs = fs.items[["label", "part"]].drop_duplicates("label")
    return {
        int(lab): (str(part) or str(lab)) for lab, part in zip(pairs["label"], pairs["part"], strict=True)
    }


def run_retrieval(
    model: str,
    dataset: str,
    *,
    features_dir: str | os.PathLike[str] = Path("features"),
    results_dir: str | os.PathLike[str] = Path("results"),
    split: str = "retrieval",
    features: Sequence[str] | None = None,
    protocol: str | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    device: str = "auto",
    suite: str = "custom",
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Retrieval AP/mAP of each cached feature of `model` on `dataset`; one result JSON per feature.

    `features=None` means embedding, cls_token, and projection when the cache has one (a missing
    projection is reported through `log`); naming `projection` explicitly when it is absent is an
    error. `protocol=None` takes the cache's protocol. `bootstrap=N` adds 95% intervals from N
    resamples of the queries. Returns the result paths written.
    """
    cache_dir = cache_dir_for(features_dir, model, dataset, split)
    fs = load_features(cache_dir)
    proto = as_protocol(protocol or cache_protocol(fs))
    dev = resolve_device(device)
    wanted = list(features) if features is not None else list(DEFAULT_FEATURES)
    unknown = [f for f in wanted if f not in FEATURE_NAMES]
    if unknown:
        raise CacheError(
            f"{cache_dir}: unknown feature {unknown[0]!r} (choose from {', '.join(FEATURE_NAMES)})"
        )
    names = part_names(fs)
    paths: list[Path] = []
    for feature in wanted:
        values = getattr(fs, feature)
        if values is None:
            if features is not None:
                raise CacheError(f"{cache_dir}: the cache has no {feature!r} (this encoder has no projector)")
            if log:
                log(f"{model}/{dataset}: no {feature} in the cache (encoder without projector), skipped")
            continue
        with measure_run() as stats:
            res = retrieval_ap(values.to(dev), fs.labels.to(dev), protocol=proto)
            metrics: dict[str, Any] = {
                "AP": 100.0 * res.ap,
                "mAP": 100.0 * res.map,
                "AP_per_class": {names.get(c, str(c)): 100.0 * v for c, v in res.per_class.items()},
            }
            if bootstrap > 0:
                ap_ci = bootstrap_ci(res.per_query, n=bootstrap, seed=seed)
                map_ci = bootstrap_ci((res.per_query, res.labels), class_mean_ap, n=bootstrap, seed=seed)
                metrics["ci95"] = {"AP": [100.0 * x for x in ap_ci], "mAP": [100.0 * x for x in map_ci]}
        config = {
            "task": "retrieval",
            "dataset": dataset,
            "model": model,
            "feature": feature,
            "probe": "-",
            "protocol": str(proto),
            "suite": suite,
            "split": split,
            "n_items": len(fs),
            "n_classes": len(res.per_class),
            "similarity": "cosine",
            "query_in_ranking": proto == "study",
            "bootstrap": bootstrap,
            "seed": seed,
        }
        prov = provenance(
            stats,
            cache_key=fs.cache_key,
            checkpoint_sha256=manifest_value(fs.manifest, "checkpoint_sha256"),
            cache_protocol=cache_protocol(fs),
            features_dim=int(values.shape[1]),
        )
        path = result_path(Path(results_dir), "retrieval", dataset, model, feature)
        paths.append(write_result(path, metrics, config, prov))
    return paths
