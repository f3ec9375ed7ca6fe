"""Per-block features of one model/data set/split, made in ONE backbone pass and cached.

Files, beside the main cache in `features/<model>/<dataset>/<split>/`:
`layers.safetensors` with
  `mean` [L,N,D]   mean of the patch tokens of block b's raw output (prefix tokens left out, no final norm)
  `cls`  [L,N,D]   the cls token of block b's raw output (no final norm)
  `embedding`, `cls_token` [N,D]  the last block after the final norm (= the main cache's features)
  `projection` [N,P]              the projector on the normed cls token (mocov3, dino, ibot)
  `labels` [N] int64              part labels; `object_labels` [N] int64 when the data set has them
`layers_items.csv` (the main cache's `items.csv` columns) and `layers.json` (key parts, shapes), written
last: a `layers.json` whose key equals the key inside `layers.safetensors` marks a complete cache.

The key hashes what the main cache's key hashes (checkpoint sha256, encoder, arch, protocol, data set
fingerprint, split, transform, dtype, version) plus the layer recipe; a different key rebuilds. A
rebuild of the main cache swaps its whole folder and so drops these files; they are remade on demand.
No shards or resume: a killed run simply starts again.

Object labels: `cub-parts` -> the bird class of the patch's image (`image_class_labels.txt`, 0-based);
other part sets have none (COCO keypoints are all on persons).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from partbench import feature_cache as fc
from partbench.errors import CacheError, DatasetError, PartbenchError
from partbench.fsutil import atomic_write, atomic_write_json
from partbench.progress import ProgressBar

LAYERS_FILE = "layers.safetensors"
LAYERS_ITEMS_FILE = "layers_items.csv"
LAYERS_MANIFEST = "layers.json"
LAYER_RECIPE = "per-block raw output: mean of patch tokens and cls token; last block also final-normed"


@dataclass
class LayerFeatures:
    """A loaded per-block cache; row i of every array is row i of `items`."""

    mean: torch.Tensor  # [L, N, D]
    cls: torch.Tensor  # [L, N, D]
    embedding: torch.Tensor  # [N, D]
    cls_token: torch.Tensor  # [N, D]
    projection: torch.Tensor | None
    labels: torch.Tensor  # [N]
    object_labels: torch.Tensor | None  # [N]
    items: Any  # pandas.DataFrame
    manifest: dict[str, Any]
    cache_key: str
    cache_dir: Path

    @property
    def num_blocks(self) -> int:
        return int(self.mean.shape[0])

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def object_labels_for(dataset: str, root: Path, items: list) -> list[int] | None:
    """Object class per item: CUB's bird class of the item's image (0-based), else None."""
    if dataset != "cub-parts":
        return None
    from partbench.datasets.cub import read_images

    images = read_images(root)
    path = root / "image_class_labels.txt"
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the bird classes ({exc})") from None
    by_id: dict[int, int] = {}
    for n, fields in ((n, ln.split()) for n, ln in enumerate(lines, 1) if ln.strip()):
        if len(fields) != 2 or not all(f.isdigit() for f in fields):
            raise DatasetError(f"{path}:{n}: expected '<image_id> <class_id>', got {' '.join(fields)!r}")
        by_id[int(fields[0])] = int(fields[1]) - 1
    by_name = {name: by_id.get(image_id) for image_id, (name, _) in images.items()}
    out = []
    for it in items:
        cls = by_name.get(it.image)
        if cls is None:
            raise DatasetError(f"{path}: image {it.image} has no class")
        out.append(cls)
    return out


def extract_layers(
    model: str,
    dataset: str,
    split: str = "retrieval",
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    arch: str | dict[str, Any] | None = None,
    protocol: str = "study",
    data_root: str | os.PathLike[str] | None = None,
    features_dir: str | os.PathLike[str] = Path("features"),
    device: str = "auto",
    batch_size: int = 256,
    num_workers: int | None = None,
    dtype: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Build (or reuse) the per-block cache of `model` on `dataset`/`split`; returns the cache folder."""
    from torch.utils.data import DataLoader

    from partbench.devices import resolve_device, resolve_dtype
    from partbench.encoders import load_encoder, parse_arch
    from partbench.extract_loop import key_parts, resolve_data

    if batch_size < 1:
        raise PartbenchError(f"--batch-size must be at least 1, got {batch_size}")
    cache_dir = fc.cache_dir_for(features_dir, model, dataset, split)
    dev = resolve_device(device)
    dev_type = dev.type
    dt = resolve_dtype(dtype, dev_type)
    arch_kw = parse_arch(arch)
    enc = load_encoder(model, checkpoint=checkpoint, protocol=protocol, **arch_kw).to(dev)
    data = resolve_data(dataset, split, protocol, data_root, enc.mean, enc.std)
    if not data.items:
        raise PartbenchError(f"{data.root}: split {split!r} of {dataset} has no items")
    rows = fc.item_rows(data.items)
    parts = key_parts(enc, model, arch_kw, protocol, dataset, split, data, rows, dt, mae_batching=batch_size)
    parts["layers"] = LAYER_RECIPE
    key = fc.cache_key(parts)
    if _complete_key(cache_dir) == key:
        if log:
            log(f"cached: {cache_dir / LAYERS_FILE}")
        return cache_dir

    obj = object_labels_for(dataset, data.root, data.items)
    patches = data.make_dataset(data.items)
    per_image = max(1.0, len(data.items) / max(1, len(patches)))  # type: ignore[arg-type]
    workers = num_workers if num_workers is not None else min(8, os.cpu_count() or 1)
    loader = DataLoader(
        patches,
        batch_size=max(1, int(batch_size / per_image)),
        shuffle=False,
        num_workers=workers,
        collate_fn=data.collate,
        pin_memory=dev_type == "cuda",
    )
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dt)  # fp32: no autocast
    n, depth, dim = len(rows), enc.num_blocks, enc.embed_dim
    out = {
        "mean": torch.empty(depth, n, dim),
        "cls": torch.empty(depth, n, dim),
        "embedding": torch.empty(n, dim),
        "cls_token": torch.empty(n, dim),
    }
    projections: list[tuple[torch.Tensor, torch.Tensor]] = []
    seen = torch.zeros(n, dtype=torch.bool)
    npfx = enc.num_prefix_tokens
    blocks = list(range(depth))
    with ProgressBar(f"layers {model}/{dataset}/{split}", n, enabled=progress) as bar:
        for x, idx in loader:
            x = x.to(dev, non_blocking=True)
            with torch.inference_mode(), torch.autocast(dev_type, dtype=amp, enabled=amp is not None):
                toks = enc.block_tokens(x, blocks)  # ONE backbone pass for every block
                normed = enc.backbone.norm(toks[-1])
                proj = enc.projector(normed[:, 0]) if enc.projector is not None else None
            for b, t in enumerate(toks):
                out["mean"][b, idx] = t[:, npfx:].float().mean(dim=1).cpu()
                out["cls"][b, idx] = t[:, 0].float().cpu()
            out["embedding"][idx] = normed[:, npfx:].float().mean(dim=1).cpu()
            out["cls_token"][idx] = normed[:, 0].float().cpu()
            if proj is not None:
                projections.append((idx, proj.float().cpu()))
            seen[idx] = True
            bar.advance(len(idx))
    if not bool(seen.all()):
        raise CacheError(f"{cache_dir}: {int((~seen).sum())} items were never extracted")
    if projections:
        first = projections[0][1]
        out["projection"] = torch.empty(n, first.shape[1])
        for idx, p in projections:
            out["projection"][idx] = p
    out["labels"] = torch.tensor([r[2] for r in rows], dtype=torch.int64)
    if obj is not None:
        out["object_labels"] = torch.tensor(obj, dtype=torch.int64)
    _write(cache_dir, key, parts, rows, out, str(data.images_dir))
    return cache_dir


def _write(
    cache_dir: Path, key: str, parts: dict[str, Any], rows: list, out: dict[str, torch.Tensor], images: str
) -> None:
    """safetensors and items first, the manifest last (its key = the safetensors key = complete)."""
    from safetensors.torch import save_file

    tmp = cache_dir / f".{LAYERS_FILE}.tmp-{os.getpid()}"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        (cache_dir / LAYERS_MANIFEST).unlink(missing_ok=True)
        # straight to a temp file (no in-memory copy of the [L,N,D] arrays), fsync, rename
        save_file({k: v.contiguous() for k, v in out.items()}, str(tmp), metadata={"cache_key": key})
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, cache_dir / LAYERS_FILE)
        with atomic_write(cache_dir / LAYERS_ITEMS_FILE) as fh:
            fh.write(fc.items_csv_bytes(rows))
        manifest = {
            "cache_key": key,
            "key_parts": parts,
            "n_items": len(rows),
            "num_blocks": int(out["mean"].shape[0]),
            "arrays": {k: list(v.shape) for k, v in sorted(out.items())},
            "images_dir": images,
            "recipe": LAYER_RECIPE,
        }
        atomic_write_json(cache_dir / LAYERS_MANIFEST, manifest)
    except OSError as exc:
        raise CacheError(f"{cache_dir}: cannot write the per-block cache ({exc.strerror or exc})") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _complete_key(cache_dir: Path) -> str | None:
    manifest = fc.read_json(cache_dir / LAYERS_MANIFEST)
    if manifest is None or not (cache_dir / LAYERS_FILE).is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(cache_dir / LAYERS_FILE), framework="pt") as fh:
            stored = (fh.metadata() or {}).get("cache_key")
    except Exception:
        return None
    return stored if stored == manifest.get("cache_key") else None


def load_layers(cache_dir: str | os.PathLike[str]) -> LayerFeatures:
    """Read a complete per-block cache; a missing, partial or damaged one raises `CacheError`."""
    import pandas as pd
    from safetensors.torch import load_file

    cache_dir = Path(cache_dir)
    key = _complete_key(cache_dir)
    if key is None:
        raise CacheError(f"{cache_dir}: no complete per-block cache here (run `partbench probe layers`)")
    manifest = fc.read_json(cache_dir / LAYERS_MANIFEST) or {}
    try:
        t = load_file(str(cache_dir / LAYERS_FILE))
        items = pd.read_csv(cache_dir / LAYERS_ITEMS_FILE, keep_default_na=False)
    except Exception as exc:
        raise CacheError(f"{cache_dir / LAYERS_FILE}: unreadable ({exc})") from exc
    n = int(t["labels"].shape[0])
    if len(items) != n or t["mean"].shape[1] != n or t["cls"].shape[:2] != t["mean"].shape[:2]:
        raise CacheError(f"{cache_dir}: per-block arrays and {LAYERS_ITEMS_FILE} disagree on the item count")
    return LayerFeatures(
        mean=t["mean"],
        cls=t["cls"],
        embedding=t["embedding"],
        cls_token=t["cls_token"],
        projection=t.get("projection"),
        labels=t["labels"],
        object_labels=t.get("object_labels"),
        items=items,
        manifest=manifest,
        cache_key=key,
        cache_dir=cache_dir,
    )
