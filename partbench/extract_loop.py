"""The extraction itself: resolve items and encoder, compute the cache key, run the shards, finalise.

Imported only once `features.run_extract` knows the cache must be (re)built, so that the "cached"
path never imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from partbench import __version__
from partbench import distributed as D
from partbench import feature_cache as fc
from partbench.devices import resolve_device, resolve_dtype
from partbench.errors import CacheError, PartbenchError
from partbench.extract_runner import Forward, ShardRunner, one_line_errors
from partbench.features import patch_transform, transform_name
from partbench.image_folder import IMAGE_EXTENSIONS, IMAGE_FOLDER_DATASETS
from partbench.progress import ProgressBar


@dataclass
class ResolvedData:
    """The items of one data set split and how to turn them into patches."""

    items: list
    images_dir: Path
    root: Path
    transform: str  # the name that goes into the cache key
    stamp_paths: list[Path]
    make_dataset: Callable[[list], Dataset]
    collate: Callable


def key_parts(
    enc: Any, model: str, arch: dict[str, Any], protocol: str, dataset: str, split: str, data: ResolvedData,
    rows: list[tuple[Any, ...]], dtype: str, mae_batching: Any,
) -> dict[str, Any]:  # fmt: skip
    """What identifies a feature cache (the main one and the per-block one): checkpoint, encoder, arch,
    protocol, data set fingerprint, split, transform, dtype, version. `mae_batching` enters only under
    the MAE study shuffle, whose token order depends on the position in the batch."""
    parts = {
        "checkpoint_sha256": enc.checkpoint_sha256,
        "encoder": model,
        "arch": {k: arch[k] for k in sorted(arch)},
        "protocol": str(protocol),
        "dataset": dataset,
        "dataset_fingerprint": fc.dataset_fingerprint(data.root, data.stamp_paths, fc.items_digest(rows)),
        "split": split,
        "transform": data.transform,
        "dtype": dtype,
        "partbench_version": __version__,
    }
    if getattr(enc, "study_mae_shuffle", False):
        parts["mae_study_batching"] = mae_batching
    return parts


def resolve_data(
    dataset: str, split: str, protocol: str, data_root: Any, mean: Any, std: Any
) -> ResolvedData:
    """Items, image folder, key transform name and a patch-dataset factory for `dataset`/`split`."""
    if dataset in IMAGE_FOLDER_DATASETS:
        from partbench import image_folder as imf
        from partbench.config import data_dir

        root = Path(data_root) if data_root is not None else data_dir() / dataset
        items = imf.image_folder_items(root, split)
        images_dir = root / split
        return ResolvedData(
            items=items,
            images_dir=images_dir,
            root=root,
            transform=transform_name(dataset, split),
            stamp_paths=imf.image_folder_stamp_paths(root, split),
            make_dataset=lambda sub: imf.ImageFolderDataset(sub, images_dir, mean=mean, std=std),
            collate=_collate_groups,
        )
    from partbench.datasets import (
        PatchImageDataset,
        collate_patch_groups,
        part_images_dir,
        part_patches,
        resolve_data_root,
    )

    root = Path(resolve_data_root(dataset, data_root))
    items = part_patches(dataset, root, split=split, protocol=protocol)
    images_dir = Path(part_images_dir(dataset, root, split))
    transform = patch_transform(split)
    return ResolvedData(
        items=list(items),
        images_dir=images_dir,
        root=root,
        transform=transform_name(dataset, split),
        stamp_paths=annotation_files(root, skip=images_dir),
        make_dataset=lambda sub: PatchImageDataset(sub, images_dir, transform=transform, mean=mean, std=std),
        collate=collate_patch_groups,
    )


def annotation_files(root: Path, skip: Path) -> list[Path]:
    """Every non-image, non-hidden file under `root` (the images folder itself is not walked)."""
    skip = skip.resolve()
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (Path(dirpath) / d).resolve() != skip
        )
        found.extend(
            Path(dirpath) / f
            for f in sorted(filenames)
            if not f.startswith(".") and not f.lower().endswith(IMAGE_EXTENSIONS)
        )
    return found


def _collate_groups(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([b[0] for b in batch]), torch.cat([b[1] for b in batch])


class _Offset(Dataset):
    """A shard's patch dataset with its item indices shifted to global item order."""

    def __init__(self, inner: Dataset, offset: int) -> None:
        self.inner, self.offset = inner, offset

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        patches, idx = self.inner[i]
        return patches, idx + self.offset


@dataclass
class Extraction:
    """One `partbench extract` run past the fast path (see `features.run_extract`)."""

    model: str
    dataset: str
    split: str
    checkpoint: Any
    arch: Any
    protocol: str
    data_root: Any
    cache_dir: Path
    device: str
    batch_size: int
    num_workers: int | None
    dtype: str
    tokens: bool
    compile: bool
    progress: bool
    shard_size: int
    on_shard: Callable[[int], None] | None
    request: dict[str, Any]

    def run(self) -> Any:
        from partbench.features import ExtractOutcome, shard_ranges

        device = str(resolve_device(self.device))
        device_type = torch.device(device).type
        dtype = resolve_dtype(self.dtype, device_type)
        owns_group = not D.is_initialized()
        ctx = D.init_from_env(device_type)
        try:
            device = D.device_for(ctx, device)
            enc, arch = self._load_encoder(device)
            data = resolve_data(self.dataset, self.split, self.protocol, self.data_root, enc.mean, enc.std)
            if not data.items:
                raise PartbenchError(f"{data.root}: split {self.split!r} of {self.dataset} has no items")
            rows = fc.item_rows(data.items)
            parts = key_parts(
                enc, self.model, arch, self.protocol, self.dataset, self.split, data, rows, dtype,
                mae_batching=[self.batch_size, self.shard_size],
            )  # fmt: skip
            parts["tokens"] = self.tokens
            key = fc.cache_key(parts)
            stamps = self._stamps(enc, data)
            if D.from_main(ctx, fc.complete_key(self.cache_dir) == key):
                if ctx.is_main:
                    fc.atomic_write_json(self.cache_dir / fc.STAMPS_FILE, {**stamps, "cache_key": key})
                D.barrier(ctx)
                return ExtractOutcome(self.cache_dir, "cached", len(rows), cache_key=key, rank=ctx.rank)
            ranges = shard_ranges(len(rows), self.shard_size)
            shards_dir = fc.shards_dir_for(self.cache_dir, key)
            try:
                shards_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CacheError(f"{shards_dir}: cannot create the shards folder ({exc.strerror})") from exc

            def valid(i: int) -> bool:
                return fc.shard_ok(fc.shard_path(shards_dir, i), key, *ranges[i])

            todo = [i for i in range(len(ranges)) if ctx.owns(i) and not valid(i)]
            reused = sum(1 for i in range(len(ranges)) if ctx.owns(i)) - len(todo)
            error: BaseException | None = None
            try:
                self._extract_shards(enc, data, todo, ranges, shards_dir, key, device, dtype)
            except BaseException as exc:
                error = exc
            if not D.all_ok(ctx, error is None):
                if error is not None:
                    raise error
                raise PartbenchError("extraction failed on another rank (see its message)")
            D.gather_shards(ctx, len(ranges), lambda i: fc.shard_path(shards_dir, i), valid)
            if ctx.is_main:
                self._finalise(key, parts, stamps, rows, data, ranges, shards_dir, device_type)
            D.barrier(ctx)
            fc.remove_shards(shards_dir)
            status = "resumed" if reused else "built"
            return ExtractOutcome(
                self.cache_dir,
                status,
                len(rows),
                shards_total=len(ranges),
                shards_reused=reused,
                cache_key=key,
                rank=ctx.rank,
            )
        finally:
            if owns_group:
                D.shutdown(ctx)

    # --- pieces ----------------------------------------------------------------------------------

    def _load_encoder(self, device: str) -> tuple[Any, dict[str, Any]]:
        from partbench.encoders import load_encoder, parse_arch

        arch = parse_arch(self.arch)
        enc = load_encoder(self.model, checkpoint=self.checkpoint, protocol=self.protocol, **arch)
        enc = enc.to(device) if hasattr(enc, "to") else enc
        return enc, {k: arch[k] for k in sorted(arch)}

    def _stamps(self, enc: Any, data: ResolvedData) -> dict[str, Any]:
        """Sizes/mtimes of the checkpoint and the files defining the items, for the fast path."""
        files = [fc.file_stamp(p) for p in data.stamp_paths]
        ckpt = self.checkpoint
        if ckpt is None:  # the registry's file, found as `load_encoder` finds it
            from partbench.config import checkpoints_dir

            found = [checkpoints_dir() / f.filename for f in getattr(enc.spec, "files", ())]
            ckpt = next((p for p in found if p.is_file()), None)
        if ckpt is not None and str(ckpt) != "random" and Path(ckpt).is_file():
            files.append(fc.file_stamp(os.path.abspath(ckpt)))
        return {"request": self.request, "files": files}

    def _loader(
        self, data: ResolvedData, todo: list[int], ranges: list[tuple[int, int]], pin: bool
    ) -> DataLoader:
        parts = [
            _Offset(data.make_dataset(data.items[ranges[i][0] : ranges[i][1]]), ranges[i][0]) for i in todo
        ]
        dataset = ConcatDataset(parts)
        n_images = max(1, len(dataset))
        n_patches = sum(ranges[i][1] - ranges[i][0] for i in todo)
        per_image = max(1.0, n_patches / n_images)
        workers = self.num_workers if self.num_workers is not None else min(8, os.cpu_count() or 1)
        return DataLoader(
            dataset,
            # images per loader batch: enough to fill a forward batch, few enough that workers x
            # prefetch x batch stays a few hundred MB of float patches in shared memory
            batch_size=max(1, min(32, round(self.batch_size / per_image))),
            shuffle=False,
            num_workers=workers,
            collate_fn=data.collate,
            pin_memory=pin,
            prefetch_factor=2 if workers > 0 else None,
            persistent_workers=False,
        )

    def _extract_shards(
        self,
        enc: Any,
        data: ResolvedData,
        todo: list[int],
        ranges: list[tuple[int, int]],
        shards_dir: Path,
        key: str,
        device: str,
        dtype: str,
    ) -> None:
        if not todo:
            return
        forward = Forward(enc, device, dtype, self.tokens, self.compile)
        total = sum(ranges[i][1] - ranges[i][0] for i in todo)
        label = f"extract {self.model}/{self.dataset}/{self.split}"

        def write(i: int, out: dict[str, torch.Tensor]) -> None:
            fc.write_shard(fc.shard_path(shards_dir, i), out, key, *ranges[i])
            if self.on_shard is not None:
                self.on_shard(i)

        with ProgressBar(label, total, enabled=self.progress) as bar:
            runner = ShardRunner(forward, ranges, self.shard_size, self.batch_size, write, bar.advance)
            for x, idx in one_line_errors(self._loader(data, todo, ranges, forward.device.type == "cuda")):
                runner.feed(x, idx)
            runner.close()

    def _finalise(
        self,
        key: str,
        parts: dict[str, Any],
        stamps: dict[str, Any],
        rows: list,
        data: ResolvedData,
        ranges: list[tuple[int, int]],
        shards_dir: Path,
        device_type: str,
    ) -> None:
        chunks: dict[str, list[torch.Tensor]] = {}
        for i, (start, stop) in enumerate(ranges):
            shard = fc.read_shard(fc.shard_path(shards_dir, i), key, start, stop, skip=("tokens",))
            if shard is None:
                raise CacheError(f"{fc.shard_path(shards_dir, i)}: shard missing or damaged; rerun to resume")
            for name, t in shard.items():
                if name != "tokens":
                    chunks.setdefault(name, []).append(t)
        features = {name: torch.cat(ts) for name, ts in chunks.items()}
        features["labels"] = torch.tensor([r[2] for r in rows], dtype=torch.int64)
        token_shape = None
        token_iter = None
        if self.tokens:
            first = fc.read_shard(fc.shard_path(shards_dir, 0), key, *ranges[0])
            assert first is not None
            token_shape = (len(rows), *first["tokens"].shape[1:])
            token_iter = self._token_blocks(shards_dir, key, ranges)
        manifest = {
            "key_parts": parts,
            "n_items": len(rows),
            "features": {k: list(v.shape) for k, v in sorted(features.items())},
            "tokens_shape": list(token_shape) if token_shape else None,
            "device_type": device_type,
            "images_dir": str(data.images_dir),
        }
        fc.finalise(
            self.cache_dir,
            key=key,
            manifest=manifest,
            stamps=stamps,
            rows=rows,
            features=features,
            token_shards=token_iter,
            token_shape=token_shape,  # type: ignore[arg-type]
        )

    @staticmethod
    def _token_blocks(shards_dir: Path, key: str, ranges: list[tuple[int, int]]) -> Iterator[np.ndarray]:
        for i, (start, stop) in enumerate(ranges):
            shard = fc.read_shard(fc.shard_path(shards_dir, i), key, start, stop)
            assert shard is not None
            yield shard["tokens"].numpy()
