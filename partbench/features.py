"""`partbench extract`: run a frozen encoder over a data set's items once and cache the features.

The cache (`feature_cache.py`) is content-addressed: its key hashes the checkpoint, encoder name,
architecture overrides, protocol, data set fingerprint, split, transform, dtype, tokens flag and
partbench version. Work is written in shards of `shard_size` consecutive items, so a killed run
resumes from its last complete shard; batches never straddle shards, so the result is bit-identical
to an uninterrupted run. Under torchrun each rank extracts every `world_size`-th shard and rank 0
writes the cache (`distributed.py`).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from partbench import __version__
from partbench.distributed import env_world_size
from partbench.errors import CacheError, PartbenchError
from partbench.feature_cache import (
    FeatureSet,
    cache_dir_for,
    load_features,
    stamps_match,
)

__all__ = [
    "ExtractOutcome",
    "FeatureSet",
    "cache_dir_for",
    "extract_features",
    "load_features",
    "run_extract",
]

DEFAULT_BATCH_SIZE = 256
DEFAULT_SHARD_SIZE = 4096
DEFAULT_TOKEN_SHARD_SIZE = 512  # token grids are large: keep a shard's RAM bounded
DTYPES = ("auto", "fp32", "bf16", "fp16")
IMAGE_FOLDER_DATASETS = ("imagenet",)  # object-level sets read by `partbench.image_folder`
# What each transform does; this text enters the cache key (see datasets/patch_loader.py and
# image_folder.py for the pixel pipelines it names).
PATCH_TRANSFORMS = {
    "eval": "part-patch:crop+resize224-bicubic+norm",
    "train": "part-patch:crop+resize256-bicubic+centercrop224+norm",
}
IMAGE_FOLDER_TRANSFORM = "image:resize256-bicubic+centercrop224+norm"


def patch_transform(split: str) -> str:
    """The part-patch transform of a split: `train` for the classification train split, else `eval`."""
    return "train" if split == "train" else "eval"


def transform_name(dataset: str, split: str) -> str:
    """The transform description that goes into the cache key."""
    if dataset in IMAGE_FOLDER_DATASETS:
        return IMAGE_FOLDER_TRANSFORM
    return PATCH_TRANSFORMS[patch_transform(split)]


def default_shard_size(tokens: bool) -> int:
    """Items per shard: token grids are large, so shards with tokens are smaller."""
    return DEFAULT_TOKEN_SHARD_SIZE if tokens else DEFAULT_SHARD_SIZE


def default_split(dataset: str) -> str:
    """`val` for the image-folder sets, `retrieval` for the part sets."""
    return "val" if dataset in IMAGE_FOLDER_DATASETS else "retrieval"


@dataclass
class ExtractOutcome:
    """What `run_extract` did: `status` is `cached`, `built` or `resumed`."""

    cache_dir: Path
    status: str
    n_items: int = 0
    seconds: float = 0.0
    shards_total: int = 0
    shards_reused: int = 0
    cache_key: str = ""
    rank: int = 0


def extract_features(
    model: str,
    dataset: str,
    split: str,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    arch: str | dict[str, Any] | None = None,
    protocol: str = "study",
    data_root: str | os.PathLike[str] | None = None,
    features_dir: str | os.PathLike[str] = Path("features"),
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int | None = None,
    dtype: str = "auto",
    tokens: bool = False,
    compile: bool = False,
    progress: bool = True,
    shard_size: int | None = None,
    on_shard: Callable[[int], None] | None = None,
) -> Path:
    """Extract (or reuse) the feature cache of `model` on `dataset`/`split`; returns the cache folder."""
    return run_extract(
        model,
        dataset,
        split,
        checkpoint=checkpoint,
        arch=arch,
        protocol=protocol,
        data_root=data_root,
        features_dir=features_dir,
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        dtype=dtype,
        tokens=tokens,
        compile=compile,
        progress=progress,
        shard_size=shard_size,
        on_shard=on_shard,
    ).cache_dir


def fast_request(
    model: str,
    dataset: str,
    split: str,
    *,
    checkpoint: str | os.PathLike[str] | None,
    arch: str | dict[str, Any] | None,
    protocol: str,
    data_root: str | os.PathLike[str] | None,
    device: str,
    dtype: str,
    tokens: bool,
) -> dict[str, Any]:
    """Everything a repeated command must repeat for the cache to be reused without recomputing its key."""
    from partbench.config import partbench_home

    return {
        "model": model,
        "dataset": dataset,
        "split": split,
        "checkpoint": None if checkpoint is None else os.path.abspath(checkpoint),
        "arch": canonical_arch_text(arch),
        "protocol": str(protocol),
        "data_root": None if data_root is None else os.path.abspath(data_root),
        "home": str(partbench_home()),
        "device": device,
        "dtype": dtype,
        "tokens": bool(tokens),
        "transform": transform_name(dataset, split),
        "version": __version__,
        "has_gpu": _gpu_node_present() if device == "auto" else None,
    }


def canonical_arch_text(arch: str | dict[str, Any] | None) -> str:
    """`embed_dim=64,depth=2` in a canonical order ('' for none)."""
    if not arch:
        return ""
    if isinstance(arch, dict):
        return ",".join(f"{k}={arch[k]}" for k in sorted(arch))
    return ",".join(sorted(p.strip() for p in arch.split(",") if p.strip()))


def _gpu_node_present() -> bool:
    """Cheap stand-in for `torch.cuda.is_available()` on the fast path (never decides a rebuild alone)."""
    return os.path.exists("/dev/nvidiactl")


def run_extract(
    model: str,
    dataset: str,
    split: str,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    arch: str | dict[str, Any] | None = None,
    protocol: str = "study",
    data_root: str | os.PathLike[str] | None = None,
    features_dir: str | os.PathLike[str] = Path("features"),
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int | None = None,
    dtype: str = "auto",
    tokens: bool = False,
    compile: bool = False,
    progress: bool = True,
    shard_size: int | None = None,
    on_shard: Callable[[int], None] | None = None,
) -> ExtractOutcome:
    """`extract_features`, reporting whether the cache was reused, built or resumed."""
    if dtype not in DTYPES:
        raise PartbenchError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if batch_size < 1:
        raise PartbenchError(f"--batch-size must be at least 1, got {batch_size}")
    if shard_size is not None and shard_size < 1:
        raise PartbenchError(f"--shard-size must be at least 1, got {shard_size}")
    if str(protocol) not in ("study", "clean"):
        raise PartbenchError(f"--protocol must be 'study' or 'clean', got {protocol!r}")
    cache_dir = cache_dir_for(features_dir, model, dataset, split)
    request = fast_request(
        model,
        dataset,
        split,
        checkpoint=checkpoint,
        arch=arch,
        protocol=protocol,
        data_root=data_root,
        device=device,
        dtype=dtype,
        tokens=tokens,
    )
    # Under torchrun the ranks decide together (rank 0's view) past the fast path: a rank that
    # returned alone would leave the others waiting at the rendezvous.
    key = stamps_match(cache_dir, request) if env_world_size() <= 1 else None
    if key is not None:
        return ExtractOutcome(cache_dir=cache_dir, status="cached", cache_key=key)
    _check_writable(cache_dir)

    from partbench.extract_loop import Extraction  # torch and the encoders: only past the fast path

    job = Extraction(
        model=model,
        dataset=dataset,
        split=split,
        checkpoint=checkpoint,
        arch=arch,
        protocol=protocol,
        data_root=data_root,
        cache_dir=cache_dir,
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        dtype=dtype,
        tokens=tokens,
        compile=compile,
        progress=progress and sys.stderr.isatty(),
        shard_size=shard_size if shard_size is not None else default_shard_size(tokens),
        on_shard=on_shard,
        request=request,
    )
    start = time.perf_counter()
    outcome = job.run()
    outcome.seconds = time.perf_counter() - start
    return outcome


def _check_writable(cache_dir: Path) -> None:
    """Fail early, in one line, when the cache folder cannot be created or written."""
    parent = cache_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(f"{parent}: cannot create the feature cache folder ({exc.strerror or exc})") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CacheError(f"{parent}: feature cache folder is not writable")


def shard_ranges(n_items: int, shard_size: int) -> list[tuple[int, int]]:
    """Consecutive item ranges `[start, stop)` of at most `shard_size` items."""
    n_shards = max(1, math.ceil(n_items / shard_size))
    return [(i * shard_size, min(n_items, (i + 1) * shard_size)) for i in range(n_shards)]
