"""Retrieval probe on feature caches written in the real cache format (`feature_cache.finalise`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from partbench.errors import CacheError
from partbench.feature_cache import cache_dir_for, finalise
from partbench.probes.retrieval import run_retrieval

PARTS = ("right_eye", "right_leg", "left_wing", "tail")


def write_cache(
    features_dir: Path,
    model: str,
    dataset: str,
    split: str,
    labels: np.ndarray,
    embedding: np.ndarray,
    cls_token: np.ndarray | None = None,
    projection: np.ndarray | None = None,
    tokens: np.ndarray | None = None,
    protocol: str = "study",
) -> Path:
    """A complete feature cache in the on-disk format that `partbench extract` writes."""
    n = len(labels)
    rows = [(f"img{i // 4}.jpg", PARTS[lab % 4], int(lab), 0, 0, 8, 8, "") for i, lab in enumerate(labels)]
    feats = {
        "embedding": torch.tensor(embedding, dtype=torch.float32),
        "cls_token": torch.tensor(embedding if cls_token is None else cls_token, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    if projection is not None:
        feats["projection"] = torch.tensor(projection, dtype=torch.float32)
    key = f"test-{model}-{dataset}-{split}-{n}"
    manifest = {"protocol": protocol, "checkpoint_sha256": "ab" * 32, "split": split}
    return finalise(
        cache_dir_for(features_dir, model, dataset, split),
        key=key,
        manifest=manifest,
        stamps={},
        rows=rows,
        features=feats,
        token_shards=None if tokens is None else [tokens.astype(np.float16)],
        token_shape=None if tokens is None else tuple(tokens.shape),
    )


def _sklearn_ap(feats: np.ndarray, labels: np.ndarray) -> float:
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    return float(
        np.mean(
            [average_precision_score(labels == labels[i], (unit[i] * unit).sum(1)) for i in range(len(feats))]
        )
    )


@pytest.fixture
def cached(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 15)
    centers = rng.normal(size=(4, 16)) * 2.0
    emb = centers[labels] + rng.normal(size=(60, 16))  # separable clusters: AP well above chance
    cls = rng.normal(size=(60, 16))  # no class signal: AP near chance (class share = 0.25)
    proj = centers[labels] + 3.0 * rng.normal(size=(60, 16))
    write_cache(tmp_path / "features", "dino", "cub-parts", "retrieval", labels, emb, cls, proj)
    return tmp_path, labels, emb


def test_run_retrieval_writes_one_result_per_feature(cached):
    root, labels, emb = cached
    paths = run_retrieval("dino", "cub-parts", features_dir=root / "features", results_dir=root / "results")
    assert [p.name for p in paths] == [
        "dino__embedding.json",
        "dino__cls_token.json",
        "dino__projection.json",
    ]
    res = {p.name.split("__")[1][:-5]: json.loads(p.read_text()) for p in paths}
    emb_res = res["embedding"]
    assert emb_res["metrics"]["AP"] == pytest.approx(
        100 * _sklearn_ap(emb.astype(np.float32), labels), abs=1e-3
    )
    assert emb_res["metrics"]["AP"] > 80
    assert res["cls_token"]["metrics"]["AP"] < 50
    assert set(emb_res["metrics"]["AP_per_class"]) == set(PARTS)
    cfg = emb_res["config"]
    assert (cfg["task"], cfg["dataset"], cfg["model"], cfg["feature"]) == (
        "retrieval",
        "cub-parts",
        "dino",
        "embedding",
    )
    assert cfg["protocol"] == "study" and cfg["query_in_ranking"] is True and cfg["n_items"] == 60
    assert emb_res["provenance"]["cache_key"] == "test-dino-cub-parts-retrieval-60"
    assert emb_res["provenance"]["checkpoint_sha256"] == "ab" * 32


def test_run_retrieval_clean_and_bootstrap(cached):
    root, _, _ = cached
    kw = {"features_dir": root / "features", "results_dir": root / "results", "features": ["embedding"]}
    study = json.loads(run_retrieval("dino", "cub-parts", **kw)[0].read_text())["metrics"]
    clean_path = run_retrieval("dino", "cub-parts", protocol="clean", bootstrap=200, **kw)[0]
    clean = json.loads(clean_path.read_text())["metrics"]
    assert clean["AP"] < study["AP"]  # the self-match no longer helps
    lo, hi = clean["ci95"]["AP"]
    assert lo <= clean["AP"] <= hi
    assert clean["ci95"]["mAP"][0] <= clean["mAP"] <= clean["ci95"]["mAP"][1]
    again = json.loads(
        run_retrieval("dino", "cub-parts", protocol="clean", bootstrap=200, **kw)[0].read_text()
    )
    assert again["metrics"]["ci95"] == clean["ci95"]


def test_run_retrieval_without_projection(tmp_path: Path):
    labels = np.repeat(np.arange(2), 5)
    emb = np.random.default_rng(1).normal(size=(10, 8))
    write_cache(tmp_path / "features", "mae", "coco-parts", "retrieval", labels, emb)
    said: list[str] = []
    paths = run_retrieval(
        "mae", "coco-parts", features_dir=tmp_path / "features", results_dir=tmp_path / "r", log=said.append
    )
    assert len(paths) == 2 and "projection" in said[0]
    with pytest.raises(CacheError, match="no 'projection'"):
        run_retrieval(
            "mae",
            "coco-parts",
            features_dir=tmp_path / "features",
            results_dir=tmp_path / "r",
            features=["projection"],
        )


def test_run_retrieval_missing_cache(tmp_path: Path):
    with pytest.raises(CacheError, match="run `partbench extract` first"):
        run_retrieval("dino", "cub-parts", features_dir=tmp_path / "none", results_dir=tmp_path / "r")


def test_cli_probe_retrieval(cached):
    from typer.testing import CliRunner

    from partbench.cli import app

    root, _, _ = cached
    args = [
        "probe",
        "retrieval",
        "--model",
        "dino",
        "--dataset",
        "cub-parts",
        "--feature",
        "embedding",
        "--features-dir",
        str(root / "features"),
        "--results-dir",
        str(root / "results"),
        "--protocol",
        "clean",
        "--bootstrap",
        "50",
        "--device",
        "cpu",
    ]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "dino__embedding.json: AP" in out.output
    saved = json.loads((root / "results/retrieval/cub-parts/dino__embedding.json").read_text())
    assert saved["config"]["protocol"] == "clean" and "ci95" in saved["metrics"]


def test_cli_missing_cache_is_one_line(tmp_path: Path, capsys, monkeypatch):
    import sys

    from partbench.cli import main

    argv = ["partbench", "probe", "retrieval", "--model", "dino", "--dataset", "cub-parts"]
    monkeypatch.setattr(sys, "argv", [*argv, "--features-dir", str(tmp_path / "none")])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no complete feature cache" in err and "\n" not in err
