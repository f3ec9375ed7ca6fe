"""The feature cache on disk: where it lives, its key, its manifest, its shards, and reading it back.

Layout of `features/<model>/<dataset>/<split>/`:
`features.safetensors` (`embedding`, `cls_token`, optional `projection`, `labels` int64),
optional `tokens.npy` ([N,T,D] fp16, memory-mapped on read), `items.csv`, `manifest.json` (the cache
key and its parts) and `stamps.json` (file sizes/mtimes that let a repeated `extract` say "cached"
without hashing or importing torch).

This module imports neither torch nor pandas at import time: the "cache is complete" check must
stay fast.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from partbench.errors import CacheError
from partbench.fsutil import atomic_write, atomic_write_json

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch

FEATURES_FILE = "features.safetensors"
TOKENS_FILE = "tokens.npy"
ITEMS_FILE = "items.csv"
MANIFEST_FILE = "manifest.json"
STAMPS_FILE = "stamps.json"
ITEMS_COLUMNS = ("image", "part", "label", "x0", "y0", "x1", "y1", "ann_id")
FEATURE_NAMES = ("embedding", "cls_token", "projection")
SMALL_FILE_BYTES = 16 << 20  # annotation files up to this size are hashed; larger ones stamped


def cache_dir_for(features_dir: str | os.PathLike[str], model: str, dataset: str, split: str) -> Path:
    """`features_dir/<model>/<dataset>/<split>`; characters unsafe in folder names become `_`."""
    return Path(features_dir) / _safe(model) / _safe(dataset) / _safe(split)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", name)


# --- cache key -----------------------------------------------------------------------------------


def cache_key(parts: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the key parts."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def items_digest(rows: Iterable[Sequence[Any]]) -> str:
    """SHA-256 of the item list, exactly as `items.csv` would hold it."""
    return hashlib.sha256(items_csv_bytes(rows)).hexdigest()


def file_stamp(path: str | os.PathLike[str]) -> list[Any]:
    """`[path, size, mtime_ns]` of a file or folder (what the fast path compares)."""
    st = os.stat(path)
    return [str(path), st.st_size, st.st_mtime_ns]


def dataset_fingerprint(root: Path, files: Sequence[Path], items_sha: str) -> str:
    """Hash of the files that define the items (bytes when small, size+mtime when large) and the item list."""
    digest = hashlib.sha256()
    for path in sorted(files):
        rel = os.path.relpath(path, root)
        st = os.stat(path)
        if path.is_dir():
            token = f"dir:{st.st_mtime_ns}"
        elif st.st_size <= SMALL_FILE_BYTES:
            token = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            token = f"size:{st.st_size}:mtime:{st.st_mtime_ns}"
        digest.update(f"{rel}\0{token}\n".encode())
    digest.update(f"items:{items_sha}".encode())
    return digest.hexdigest()


# --- items.csv -----------------------------------------------------------------------------------


def item_rows(items: Sequence[Any]) -> list[tuple[Any, ...]]:
    """`PartItem`s as `items.csv` rows: image, part, label, x0, y0, x1, y1, ann_id ('' when None)."""
    return [
        (
            it.image,
            it.part,
            int(it.label),
            *(int(v) for v in it.box),
            "" if it.ann_id is None else int(it.ann_id),
        )
        for it in items
    ]


def items_csv_bytes(rows: Iterable[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(ITEMS_COLUMNS)
    writer.writerows(rows)
    return buf.getvalue().encode()


# --- the fast "already complete" check -----------------------------------------------------------


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def is_complete(cache_dir: Path) -> bool:
    """All files the manifest lists exist (finalisation is atomic, so this means a finished cache)."""
    manifest = read_json(cache_dir / MANIFEST_FILE)
    if manifest is None or "cache_key" not in manifest:
        return False
    return all((cache_dir / name).is_file() for name in manifest.get("files", {}))


def stamps_match(cache_dir: Path, request: dict[str, Any]) -> str | None:
    """The cache key when `request` and every stamped file are unchanged since the cache was built.

    Only ever says yes when it is sure; anything else (returns None) means: compute the full key.
    """
    stamps = read_json(cache_dir / STAMPS_FILE)
    if stamps is None or stamps.get("request") != request or not is_complete(cache_dir):
        return None
    try:
        for stamp in stamps.get("files", []):
            if file_stamp(stamp[0]) != stamp:
                return None
    except OSError:
        return None
    manifest = read_json(cache_dir / MANIFEST_FILE) or {}
    key = manifest.get("cache_key")
    return key if key == stamps.get("cache_key") else None


def complete_key(cache_dir: Path) -> str | None:
    """The key of a complete cache at `cache_dir`, else None."""
    if not is_complete(cache_dir):
        return None
    return (read_json(cache_dir / MANIFEST_FILE) or {}).get("cache_key")


# --- shards --------------------------------------------------------------------------------------


def shards_dir_for(cache_dir: Path, key: str) -> Path:
    """Temp folder holding the shards of an unfinished extraction with this key."""
    return cache_dir.parent / f".{cache_dir.name}.shards-{key[:20]}" / "shards"


def shard_path(shards_dir: Path, index: int) -> Path:
    return shards_dir / f"shard-{index:06d}.safetensors"


def write_shard(path: Path, tensors: dict[str, torch.Tensor], key: str, start: int, stop: int) -> None:
    """Write one shard atomically (`safetensors` bytes with the key and item range in its metadata)."""
    from safetensors.torch import save

    meta = {"cache_key": key, "start": str(start), "stop": str(stop)}
    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta)
    with atomic_write(path) as fh:
        fh.write(data)


def read_shard(
    path: Path, key: str, start: int, stop: int, skip: Sequence[str] = ()
) -> dict[str, torch.Tensor] | None:
    """The shard's tensors (less `skip`), or None when it is missing, unreadable or of another key/range."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta != {"cache_key": key, "start": str(start), "stop": str(stop)}:
                return None
            return {name: fh.get_tensor(name) for name in fh.keys() if name not in skip}  # noqa: SIM118
    except Exception:  # a truncated or foreign file is simply recomputed
        return None


def shard_ok(path: Path, key: str, start: int, stop: int) -> bool:
    """A complete shard of this key and range exists (writes are atomic, so the header suffices)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return (fh.metadata() or {}) == {"cache_key": key, "start": str(start), "stop": str(stop)}
    except Exception:
        return False


# --- finalisation --------------------------------------------------------------------------------


def finalise(
    cache_dir: Path,
    *,
    key: str,
    manifest: dict[str, Any],
    stamps: dict[str, Any],
    rows: Sequence[Sequence[Any]],
    features: dict[str, torch.Tensor],
    token_shards: Iterable[np.ndarray] | None,
    token_shape: tuple[int, int, int] | None,
) -> Path:
    """Write the cache into a temp folder beside `cache_dir`, then rename it into place."""
    import numpy as np
    from safetensors.torch import save

    for stale in cache_dir.parent.glob(f".{cache_dir.name}.tmp-{key[:20]}-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = cache_dir.parent / f".{cache_dir.name}.tmp-{key[:20]}-{os.getpid()}"
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise CacheError(f"{cache_dir.parent}: cannot write the feature cache here ({exc.strerror})") from exc
    try:
        files: dict[str, str] = {}
        blob = save({k: v.contiguous() for k, v in features.items()}, metadata={"cache_key": key})
        with atomic_write(tmp / FEATURES_FILE) as fh:
            fh.write(blob)
        files[FEATURES_FILE] = hashlib.sha256(blob).hexdigest()
        items_blob = items_csv_bytes(rows)
        with atomic_write(tmp / ITEMS_FILE) as fh:
            fh.write(items_blob)
        files[ITEMS_FILE] = hashlib.sha256(items_blob).hexdigest()
        if token_shards is not None and token_shape is not None:
            out = np.lib.format.open_memmap(tmp / TOKENS_FILE, mode="w+", dtype=np.float16, shape=token_shape)
            row = 0
            for block in token_shards:
                out[row : row + len(block)] = block
                row += len(block)
            out.flush()
            del out
            files[TOKENS_FILE] = "not hashed (large)"
        atomic_write_json(tmp / MANIFEST_FILE, {**manifest, "cache_key": key, "files": files})
        atomic_write_json(tmp / STAMPS_FILE, {**stamps, "cache_key": key})
        _swap_into_place(tmp, cache_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cache_dir


def _swap_into_place(tmp: Path, cache_dir: Path) -> None:
    old = None
    if cache_dir.exists():
        old = cache_dir.parent / f".{cache_dir.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(cache_dir, old)
    os.replace(tmp, cache_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_shards(shards_dir: Path) -> None:
    """Delete a shards folder (and its keyed parent) once the cache is final."""
    with contextlib.suppress(OSError):
        shutil.rmtree(shards_dir.parent)


# --- reading -------------------------------------------------------------------------------------


@dataclass
class FeatureSet:
    """A loaded cache: row i of every array is row i of `items`."""

    embedding: torch.Tensor
    cls_token: torch.Tensor
    projection: torch.Tensor | None
    labels: torch.Tensor
    items: pd.DataFrame
    tokens: np.memmap | None
    manifest: dict[str, Any]
    cache_key: str
    cache_dir: Path

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_features(cache_dir: str | os.PathLike[str]) -> FeatureSet:
    """Read a complete cache; a missing or incomplete one raises `CacheError` naming the folder."""
    import numpy as np
    import pandas as pd
    from safetensors.torch import load_file

    cache_dir = Path(cache_dir)
    manifest = read_json(cache_dir / MANIFEST_FILE)
    if manifest is None or "cache_key" not in manifest:
        raise CacheError(f"{cache_dir}: no complete feature cache here (run `partbench extract` first)")
    missing = [name for name in manifest.get("files", {}) if not (cache_dir / name).is_file()]
    if missing:
        raise CacheError(f"{cache_dir}: incomplete feature cache, missing {', '.join(missing)}")
    try:
        tensors = load_file(str(cache_dir / FEATURES_FILE))
    except Exception as exc:
        raise CacheError(f"{cache_dir / FEATURES_FILE}: unreadable ({exc})") from exc
    dtypes = {"image": str, "part": str, "label": "int64", "ann_id": "Int64"}
    dtypes.update({c: "int64" for c in ("x0", "y0", "x1", "y1")})
    items = pd.read_csv(
        cache_dir / ITEMS_FILE, dtype=dtypes, keep_default_na=False, na_values={"ann_id": [""]}
    )
    tokens = None
    if (cache_dir / TOKENS_FILE).is_file():
        tokens = np.load(cache_dir / TOKENS_FILE, mmap_mode="r")
    n = int(tensors["labels"].shape[0])
    if len(items) != n or (tokens is not None and tokens.shape[0] != n):
        raise CacheError(f"{cache_dir}: items.csv, features and tokens disagree on the number of items")
    return FeatureSet(
        embedding=tensors["embedding"],
        cls_token=tensors["cls_token"],
        projection=tensors.get("projection"),
        labels=tensors["labels"],
        items=items,
        tokens=tokens,
        manifest=manifest,
        cache_key=str(manifest["cache_key"]),
        cache_dir=cache_dir,
    )
