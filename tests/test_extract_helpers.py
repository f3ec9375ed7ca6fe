"""Shared inputs of the extract tests: a synthetic CUB twin and tiny official-layout DINO checkpoints."""

from __future__ import annotations

from pathlib import Path

from partbench.datasets import write_synthetic
from partbench.encoders.synthetic import write_official_checkpoint

REPO = Path(__file__).resolve().parents[1]
ARCH = "embed_dim=64,depth=2,num_heads=4"
ARCH_KW = {"depth": 2, "embed_dim": 64, "num_heads": 4}


def make_cub(out: Path) -> Path:
    """The synthetic data sets under `out`; returns the `cub-parts` root (68 retrieval patches)."""
    return write_synthetic(out)["cub-parts"]


def make_checkpoint(path: Path, seed: int = 0) -> Path:
    """A tiny DINO full checkpoint (teacher + student, with head) in the official layout."""
    return write_official_checkpoint("dino", path, seed=seed, **ARCH_KW)
