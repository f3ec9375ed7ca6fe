"""Retrieval and classification probes end to end: synthetic CUB/COCO twins in their real layouts,
a tiny DINO checkpoint in the official layout, the real extractor, then the probes on its caches.

The chance level is measured, not assumed: the same features with the labels shuffled.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from partbench.datasets.synth import write_part_sets
from partbench.encoders.synthetic import write_official_checkpoint
from partbench.features import cache_dir_for, extract_features, load_features
from partbench.metrics import retrieval_ap
from partbench.probes.classify import run_classify
from partbench.probes.retrieval import run_retrieval

pytestmark = pytest.mark.timeout(300)
ARCH = "embed_dim=64,depth=2,num_heads=4"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("e2e")
    data = write_part_sets(root / "data")
    ckpt = write_official_checkpoint(
        "dino", root / "dino_full.pth", seed=0, embed_dim=64, depth=2, num_heads=4
    )
    return data["coco-parts"], ckpt, root / "features"


def _extract(setup: tuple[Path, Path, Path], split: str, tokens: bool = False) -> Path:
    data, ckpt, features = setup
    return extract_features(
        "dino",
        "coco-parts",
        split,
        checkpoint=ckpt,
        arch=ARCH,
        data_root=data,
        features_dir=features,
        device="cpu",
        batch_size=32,
        num_workers=0,
        tokens=tokens,
        progress=False,
    )


def test_retrieval_end_to_end_beats_shuffled_labels(setup, tmp_path: Path):
    cache = _extract(setup, "retrieval")
    assert cache == cache_dir_for(setup[2], "dino", "coco-parts", "retrieval")
    paths = run_retrieval("dino", "coco-parts", features_dir=setup[2], results_dir=tmp_path, device="cpu")
    assert {p.name for p in paths} == {
        "dino__embedding.json",
        "dino__cls_token.json",
        "dino__projection.json",
    }
    fs = load_features(cache)
    shuffled = np.random.default_rng(0).permutation(fs.labels.numpy())
    chance = retrieval_ap(fs.embedding, shuffled).ap * 100
    got = json.loads((tmp_path / "retrieval/coco-parts/dino__embedding.json").read_text())
    assert got["metrics"]["AP"] > chance + 10, (got["metrics"]["AP"], chance)
    assert got["provenance"]["cache_key"] == fs.cache_key


@pytest.mark.slow
def test_classify_end_to_end_linear_and_attentive(setup, tmp_path: Path):
    for split in ("train", "val"):
        _extract(setup, split, tokens=True)
    val = load_features(cache_dir_for(setup[2], "dino", "coco-parts", "val"))
    majority = np.bincount(val.labels.numpy()).max() / len(val) * 100
    for head, lr in (("linear", 0.5), ("attentive", 0.1)):
        path = run_classify(
            "dino",
            "coco-parts",
            head=head,
            features_dir=setup[2],
            results_dir=tmp_path,
            epochs=15,
            batch_size=32,
            lr=lr,
            device="cpu",
        )
        top1 = json.loads(path.read_text())["metrics"]["top1_best"]
        assert top1 > majority + 15, (head, top1, majority)
        print(f"{head}: top1_best {top1:.1f} vs majority class {majority:.1f}")
