"""Data side of the segmentation probe: run geometry, the resumable augmentation stream, fast-mode cache.

- `SegGeometry`: crop, train/test scales and slide window of a run (the set's, or scaled with `--crop`).
- `StreamDataset`: training samples keyed by `(index, draw)`; the augmentation epoch is
  `draw // N`, so the stream is a pure function of the seed and the iteration (resumable).
- Fast mode: `ResizedTrainSet` (each training image resized to the crop, no augmentation),
  `build_fast_cache` (concatenated block maps, fp16, memory-mapped under the run folder),
  `cached_batches` (the sampler's batches read from that cache).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from partbench.datasets import SegmentationDataset
from partbench.datasets import seg_transforms as T
from partbench.datasets.segmentation import SegDatasetSpec, load_image, load_label
from partbench.distributed import DistContext, barrier
from partbench.errors import PartbenchError
from partbench.fsutil import atomic_write_json
from partbench.probes.seg_head import FrozenBackbone
from partbench.probes.seg_train import ResumableBatchSampler


@dataclass(frozen=True)
class SegGeometry:
    """Crop, scales and sliding window of one run: the set's, or all scaled by crop / the set's crop."""

    crop: tuple[int, int]
    train_scale: tuple[int, int]
    test_scale: tuple[int, int]
    slide_crop: tuple[int, int]
    slide_stride: tuple[int, int]

    @classmethod
    def for_spec(cls, spec: SegDatasetSpec, crop: int | None, patch_size: int) -> SegGeometry:
        if crop is None:
            geo = cls(spec.crop_size, spec.train_scale, spec.test_scale, spec.slide_crop, spec.slide_stride)
        else:
            r = crop / spec.crop_size[0]
            scale = lambda s: (round(s[0] * r), round(s[1] * r))  # noqa: E731
            stride = tuple(max(1, round(s * r)) for s in spec.slide_stride)
            geo = cls((crop, crop), scale(spec.train_scale), scale(spec.test_scale), (crop, crop), stride)  # type: ignore[arg-type]
        if any(c <= 0 or c % patch_size for c in geo.crop):
            raise PartbenchError(
                f"--crop {geo.crop[0]} must be a positive multiple of the patch size {patch_size}"
            )
        return geo


# --- data ---------------------------------------------------------------------------------------


def data_fingerprint(train_set: SegmentationDataset) -> str:
    """sha256 over the training files' relative names and sizes: a cheap identity of the split."""
    digest = hashlib.sha256()
    for sample in train_set.samples:
        for path in (sample.image, sample.label):
            digest.update(f"{path.name}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()


class StreamDataset(Dataset):
    """Wraps a training `SegmentationDataset`: item `(index, draw)` augments with the stream's epoch."""

    def __init__(self, base: SegmentationDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor]:
        index, draw = key
        self.base.set_epoch(draw // len(self.base))
        return self.base[index]


class ResizedTrainSet(Dataset):
    """Fast mode: each training image resized to the crop (bilinear; label nearest), no augmentation."""

    def __init__(self, base: SegmentationDataset, crop: tuple[int, int]) -> None:
        self.base, self.crop = base, crop

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        sample = self.base.samples[index]
        image = load_image(sample.image)
        label = load_label(sample.label, self.base.spec, image.shape[:2])
        image, label = T.resize_image(image, self.crop), T.resize_label(label, self.crop)
        return T.normalize(image, self.base.mean, self.base.std), torch.from_numpy(label.astype(np.int64))


def build_fast_cache(
    backbone: FrozenBackbone,
    train_set: SegmentationDataset,
    crop: tuple[int, int],
    cache_dir: Path,
    key: dict[str, Any],
    ctx: DistContext,
    num_workers: int,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Features `[N, 4D, h, w]` fp16 and labels `[N, crop, crop]` uint8, memory-mapped; built once by rank 0.

    The cache is reused only when its `manifest.json` holds the same key (model, checkpoint hash,
    layers, crop, data set and its size); the manifest is written last, so a killed build is redone.
    """
    manifest = cache_dir / "manifest.json"
    feats_path, labels_path = cache_dir / "features.npy", cache_dir / "labels.npy"

    want = json.loads(json.dumps(key))  # as it reads back from JSON

    def valid() -> bool:
        try:
            return json.loads(manifest.read_text()) == want
        except (OSError, ValueError):
            return False

    if ctx.is_main and not valid():
        manifest.unlink(missing_ok=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        loader = DataLoader(ResizedTrainSet(train_set, crop), batch_size=batch_size, num_workers=num_workers)
        feats = labels = None
        start = 0
        for images, labs in loader:
            out = backbone(images).to(torch.float16).cpu().numpy()
            if feats is None:
                shape = (len(train_set), *out.shape[1:])
                feats = np.lib.format.open_memmap(feats_path, mode="w+", dtype=np.float16, shape=shape)
                labels = np.lib.format.open_memmap(
                    labels_path, mode="w+", dtype=np.uint8, shape=(len(train_set), *crop)
                )
            feats[start : start + len(out)] = out
            labels[start : start + len(out)] = labs.numpy().astype(np.uint8)  # type: ignore[index]
            start += len(out)
        feats.flush()  # type: ignore[union-attr]
        labels.flush()  # type: ignore[union-attr]
        del feats, labels
        atomic_write_json(manifest, key)
    barrier(ctx)
    if not valid():
        raise PartbenchError(f"{manifest}: fast-mode feature cache missing or stale after building it")
    return np.load(feats_path, mmap_mode="r"), np.load(labels_path, mmap_mode="r")


def cached_batches(
    feats: np.ndarray, labels: np.ndarray, sampler: ResumableBatchSampler
) -> Iterator[tuple[Tensor, Tensor]]:
    """Fast mode: this rank's batches of cached maps (fp16) and labels, in the sampler's order."""
    for batch in sampler:
        idx = [i for i, _ in batch]
        yield torch.from_numpy(np.asarray(feats[idx])), torch.from_numpy(np.asarray(labels[idx]))
