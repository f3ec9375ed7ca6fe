"""Feature-cache machinery without an encoder: shard batching, cache key, atomic finalisation, loading."""

from __future__ import annotations

import json

import pytest
import torch

from partbench import feature_cache as fc
from partbench.errors import CacheError
from partbench.extract_runner import ShardRunner
from partbench.features import cache_dir_for, canonical_arch_text, shard_ranges


class _SumForward:
    """A stand-in encoder: embedding = per-patch pixel sum; records every batch it sees."""

    def __init__(self) -> None:
        self.batches: list[list[float]] = []

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        s = x.flatten(1).sum(1)
        self.batches.append(s.tolist())
        return {"embedding": s[:, None], "cls_token": -s[:, None]}


def test_shard_runner_batches_never_straddle_shards_and_rows_land_at_their_items() -> None:
    # 10 items, shards of 4 -> [0,4) [4,8) [8,10); batch size 3.
    # Patches arrive grouped by image, not in item order: item i is a 1-pixel patch with value i.
    order = [1, 0, 3, 2, 5, 4, 7, 6, 9, 8]
    loader_batches = [order[:3], order[3:7], order[7:]]  # loader batches cross shard boundaries
    written: dict[int, dict[str, torch.Tensor]] = {}
    fwd = _SumForward()
    runner = ShardRunner(
        fwd, shard_ranges(10, 4), 4, 3, lambda i, out: written.__setitem__(i, out), lambda n: None
    )
    for b in loader_batches:
        idx = torch.tensor(b)
        runner.feed(idx.float().view(-1, 1, 1, 1), idx)
    runner.close()
    # Hand-worked: shard 0 sees 1,0,3 then 2 (flushed alone); shard 1 sees 5,4,7 then 6; shard 2: 9,8.
    assert fwd.batches == [[1, 0, 3], [2], [5, 4, 7], [6], [9, 8]]
    assert sorted(written) == [0, 1, 2]
    assert written[0]["embedding"].flatten().tolist() == [0, 1, 2, 3]
    assert written[1]["cls_token"].flatten().tolist() == [-4, -5, -6, -7]
    assert written[2]["embedding"].flatten().tolist() == [8, 9]


def test_shard_runner_rejects_a_shard_with_missing_patches() -> None:
    runner = ShardRunner(_SumForward(), shard_ranges(4, 4), 4, 8, lambda i, out: None, lambda n: None)
    idx = torch.tensor([0, 1, 2])
    runner.feed(idx.float().view(-1, 1, 1, 1), idx)
    with pytest.raises(Exception, match="3 patches for the 4 items"):
        runner.close()


def test_shard_ranges_and_paths() -> None:
    assert shard_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert shard_ranges(4, 4) == [(0, 4)]
    assert cache_dir_for("features", "timm:vit_tiny", "cub-parts", "val").as_posix() == (
        "features/timm_vit_tiny/cub-parts/val"
    )
    assert canonical_arch_text("depth=2, embed_dim=64") == canonical_arch_text({"embed_dim": 64, "depth": 2})


def test_cache_key_is_canonical_json_sha256() -> None:
    parts = {"b": 1, "a": [1, 2]}
    import hashlib

    assert fc.cache_key(parts) == hashlib.sha256(b'{"a":[1,2],"b":1}').hexdigest()
    assert fc.cache_key({"a": [1, 2], "b": 1}) == fc.cache_key(parts)
    assert fc.cache_key({**parts, "b": 2}) != fc.cache_key(parts)


def test_items_csv_rows_and_digest() -> None:
    rows = [("a/1.jpg", "tail", 3, 0, 1, 10, 11, ""), ("b/2.jpg", "nose", 0, 5, 5, 9, 9, 42)]
    text = fc.items_csv_bytes(rows).decode()
    assert (
        text == "image,part,label,x0,y0,x1,y1,ann_id\na/1.jpg,tail,3,0,1,10,11,\nb/2.jpg,nose,0,5,5,9,9,42\n"
    )
    assert fc.items_digest(rows) != fc.items_digest(rows[:1])


def test_shard_roundtrip_checks_key_and_range(tmp_path) -> None:
    path = tmp_path / "shard-000000.safetensors"
    fc.write_shard(path, {"embedding": torch.ones(2, 3)}, "k" * 64, 0, 2)
    assert fc.shard_ok(path, "k" * 64, 0, 2)
    assert not fc.shard_ok(path, "j" * 64, 0, 2)
    assert not fc.shard_ok(path, "k" * 64, 0, 3)
    assert torch.equal(fc.read_shard(path, "k" * 64, 0, 2)["embedding"], torch.ones(2, 3))
    path.write_bytes(b"\x00\x01garbage")
    assert not fc.shard_ok(path, "k" * 64, 0, 2) and fc.read_shard(path, "k" * 64, 0, 2) is None


def _finalise(cache_dir, key="a" * 64, n=3):
    rows = [(f"{i}.jpg", "p", i % 2, 0, 0, 4, 4, "") for i in range(n)]
    feats = {"embedding": torch.arange(n * 2.0).view(n, 2), "cls_token": torch.zeros(n, 2)}
    feats["labels"] = torch.tensor([r[2] for r in rows])
    return fc.finalise(
        cache_dir,
        key=key,
        manifest={"key_parts": {"x": 1}},
        stamps={"request": {"r": 1}, "files": []},
        rows=rows,
        features=feats,
        token_shards=None,
        token_shape=None,
    )


def test_finalise_then_load_and_replace_atomically(tmp_path) -> None:
    cache = tmp_path / "m" / "d" / "s"
    _finalise(cache)
    fs = fc.load_features(cache)
    assert fs.cache_key == "a" * 64 and fs.projection is None and fs.tokens is None
    assert fs.labels.dtype == torch.int64 and fs.labels.tolist() == [0, 1, 0]
    assert fs.items["image"].tolist() == ["0.jpg", "1.jpg", "2.jpg"] and fs.items["ann_id"].isna().all()
    assert fc.stamps_match(cache, {"r": 1}) == "a" * 64
    assert fc.stamps_match(cache, {"r": 2}) is None
    _finalise(cache, key="b" * 64, n=2)  # a rebuild replaces the folder whole
    assert fc.load_features(cache).cache_key == "b" * 64 and len(fc.load_features(cache)) == 2
    assert sorted(p.name for p in cache.parent.iterdir()) == ["s"]  # no temp folders left


def test_load_features_missing_or_incomplete_names_the_folder(tmp_path) -> None:
    with pytest.raises(CacheError, match=str(tmp_path / "nothing")):
        fc.load_features(tmp_path / "nothing")
    cache = tmp_path / "c"
    _finalise(cache)
    (cache / fc.ITEMS_FILE).unlink()
    with pytest.raises(CacheError, match=r"incomplete feature cache, missing items.csv"):
        fc.load_features(cache)
    assert fc.complete_key(cache) is None and fc.stamps_match(cache, {"r": 1}) is None
    manifest = json.loads((cache / fc.MANIFEST_FILE).read_text())
    assert manifest["cache_key"] == "a" * 64
