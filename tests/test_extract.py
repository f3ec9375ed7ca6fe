"""`extract_features` end to end on a synthetic CUB twin with a tiny DINO checkpoint (official layout).

The reference is computed apart from the extractor: each part patch cropped and resized with PIL on
its own, normalised by hand, and pushed through `enc.extract` in one batch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_extract_helpers import ARCH, ARCH_KW, REPO, make_checkpoint, make_cub

from partbench.config import IMAGENET_MEAN, IMAGENET_STD
from partbench.datasets import part_images_dir, part_patches
from partbench.encoders import load_encoder
from partbench.errors import CacheError, DatasetError
from partbench.features import cache_dir_for, extract_features, load_features, run_extract

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cub(tmp_path_factory.mktemp("cub"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "dino_full.pth", seed=0)


def _run(cub: Path, ckpt: Path, features_dir: Path, **kw):
    split = kw.pop("split", "retrieval")
    args = {"checkpoint": ckpt, "arch": ARCH, "data_root": cub, "features_dir": features_dir, "device": "cpu"}
    args.update(num_workers=0, batch_size=16, progress=False)
    args.update(kw)
    return run_extract("dino", "cub-parts", split, **args)


def _reference_patches(cub: Path, split: str) -> tuple[list, torch.Tensor]:
    items = part_patches("cub-parts", cub, split=split, protocol="study")
    images = part_images_dir("cub-parts", cub, split)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    out = []
    for it in items:  # one decode per patch on purpose: the naive, obviously-right pipeline
        img = Image.open(images / it.image).convert("RGB").crop(it.box).resize((224, 224), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
        out.append((x - mean) / std)
    return items, torch.stack(out)


def test_cache_matches_a_direct_extract_call(cub: Path, ckpt: Path, tmp_path: Path) -> None:
    outcome = _run(cub, ckpt, tmp_path / "features", tokens=True)
    assert outcome.status == "built" and outcome.cache_dir == cache_dir_for(
        tmp_path / "features", "dino", "cub-parts", "retrieval"
    )
    fs = load_features(outcome.cache_dir)

    items, patches = _reference_patches(cub, "retrieval")
    enc = load_encoder("dino", checkpoint=ckpt, **ARCH_KW)
    ref = enc.extract(patches, tokens=True)
    assert len(fs) == len(items) > 20
    for name in ("embedding", "cls_token", "projection"):
        got = getattr(fs, name)
        assert got.dtype == torch.float32 and got.shape == ref[name].shape
        torch.testing.assert_close(got, ref[name], atol=2e-5, rtol=1e-4)
    assert fs.labels.dtype == torch.int64 and fs.labels.tolist() == [it.label for it in items]
    assert fs.items["image"].tolist() == [it.image for it in items]
    assert fs.items["part"].tolist() == [it.part for it in items]
    boxes = fs.items[["x0", "y0", "x1", "y1"]].to_numpy().tolist()
    assert boxes == [list(it.box) for it in items]
    # tokens: fp16 memmap [N, 1+196, D], the final-normed tokens incl. cls
    assert isinstance(fs.tokens, np.memmap) and fs.tokens.dtype == np.float16
    assert fs.tokens.shape == (len(items), 197, 64)
    np.testing.assert_allclose(fs.tokens[:, 0].astype(np.float32), ref["cls_token"].numpy(), atol=1e-2)
    np.testing.assert_allclose(fs.tokens.astype(np.float32), ref["tokens"].half().float().numpy(), atol=2e-3)
    # manifest: the key and its parts
    manifest = json.loads((outcome.cache_dir / "manifest.json").read_text())
    parts = manifest["key_parts"]
    assert manifest["cache_key"] == fs.cache_key == outcome.cache_key
    assert parts["checkpoint_sha256"] == enc.checkpoint_sha256 and parts["encoder"] == "dino"
    assert parts["arch"] == ARCH_KW and parts["protocol"] == "study" and parts["split"] == "retrieval"
    assert parts["dtype"] == "fp32" and parts["tokens"] is True and "resize224" in parts["transform"]
    assert not list(outcome.cache_dir.parent.glob(".*"))  # no shards or temp folders left behind


def test_train_split_uses_the_train_transform(cub: Path, ckpt: Path, tmp_path: Path) -> None:
    fs = load_features(_run(cub, ckpt, tmp_path, split="train").cache_dir)
    assert "centercrop224" in fs.manifest["key_parts"]["transform"]
    items = part_patches("cub-parts", cub, split="train")
    assert fs.labels.tolist() == [it.label for it in items]


def test_cli_builds_then_reuses_the_cache_fast_without_importing_torch(
    cub: Path, ckpt: Path, tmp_path: Path
) -> None:
    cmd = [sys.executable, "-m", "partbench", "extract", "--model", "dino", "--dataset", "cub-parts"]
    cmd += ["--split", "val", "--checkpoint", str(ckpt), "--arch", ARCH, "--data-root", str(cub)]
    cmd += ["--features-dir", str(tmp_path), "--device", "cpu", "--num-workers", "0", "--batch-size", "32"]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    assert first.stdout.startswith("built: ") and "34 items" in first.stdout
    cache = cache_dir_for(tmp_path, "dino", "cub-parts", "val")
    before = (cache / "features.safetensors").stat().st_mtime_ns
    code = (
        "import sys\n"
        "from partbench.features import run_extract\n"
        f"o = run_extract('dino', 'cub-parts', 'val', checkpoint={str(ckpt)!r}, arch={ARCH!r},"
        f" data_root={str(cub)!r}, features_dir={str(tmp_path)!r}, device='cpu', num_workers=0,"
        " batch_size=16, progress=False)\n"
        "print(o.status, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["cached", "False"]  # batch size is not part of the key
    start = time.perf_counter()
    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    assert second.stdout.startswith("cached: ")
    assert wall < 3.0  # the whole interpreter; ~0.25 s on an idle machine (see benchmarks/README.md)
    assert (cache / "features.safetensors").stat().st_mtime_ns == before


def test_changed_checkpoint_protocol_transform_or_tokens_rebuilds(
    cub: Path, ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _run(cub, ckpt, tmp_path, split="val")
    keys = {base.cache_key}
    other_ckpt = make_checkpoint(tmp_path / "other.pth", seed=1)
    for change in ({"checkpoint": other_ckpt}, {"protocol": "clean"}, {"tokens": True}, {"dtype": "bf16"}):
        again = _run(cub, ckpt, tmp_path, split="val", **change)
        assert again.status == "built", change
        assert again.cache_key not in keys
        keys.add(again.cache_key)
        assert load_features(again.cache_dir).cache_key == again.cache_key
    back = _run(cub, ckpt, tmp_path, split="val")
    assert back.status == "built" and back.cache_key == base.cache_key  # the bf16 cache was there
    ckpt.touch()  # same content, new mtime: the fast check fails, the full key matches -> reused
    assert _run(cub, ckpt, tmp_path, split="val").status == "cached"
    # a changed transform (the part-patch pipeline's description) changes the key
    from partbench import features

    monkeypatch.setitem(features.PATCH_TRANSFORMS, "eval", "part-patch:crop+resize224-bilinear+norm")
    changed = _run(cub, ckpt, tmp_path, split="val")
    assert changed.status == "built" and changed.cache_key not in keys


def test_changed_annotations_rebuild(ckpt: Path, tmp_path: Path) -> None:
    root = make_cub(tmp_path / "cub")
    first = _run(root, ckpt, tmp_path / "f", split="val")
    locs = root / "parts" / "part_locs.txt"
    lines = locs.read_text().splitlines()
    vis = [i for i, ln in enumerate(lines) if ln.split()[-1] == "1"]
    f = lines[vis[0]].split()
    lines[vis[0]] = " ".join([*f[:-1], "0"])  # hide one visible keypoint: the annotation bytes change
    locs.write_text("\n".join(lines) + "\n")
    second = _run(root, ckpt, tmp_path / "f", split="val")
    assert second.status == "built" and second.cache_key != first.cache_key


def test_corrupt_image_names_the_file_and_leaves_no_cache(cub: Path, ckpt: Path, tmp_path: Path) -> None:
    root = make_cub(tmp_path / "cub")
    victim = sorted((root / "images").rglob("*.jpg"))[3]
    victim.write_bytes(b"\xff\xd8 this is not a jpeg")
    for workers in (0, 1):
        with pytest.raises(DatasetError) as info:
            _run(root, ckpt, tmp_path / "f", num_workers=workers)
        msg = str(info.value)
        assert str(victim) in msg and "\n" not in msg
    assert not cache_dir_for(tmp_path / "f", "dino", "cub-parts", "retrieval").exists()


def test_unwritable_features_dir_is_a_one_line_error(cub: Path, ckpt: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(CacheError) as info:
        _run(cub, ckpt, blocker / "features")
    assert str(blocker) in str(info.value) and "\n" not in str(info.value)
    cmd = [sys.executable, "-m", "partbench", "extract", "--model", "dino", "--dataset", "cub-parts"]
    cmd += ["--features-dir", str(blocker / "features"), "--data-root", str(cub), "--checkpoint", str(ckpt)]
    out = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and str(blocker) in out.stderr


def test_bad_options_are_one_line_errors(cub: Path, ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="--dtype must be one of"):
        _run(cub, ckpt, tmp_path, dtype="int8")
    with pytest.raises(Exception, match="--batch-size must be at least 1"):
        _run(cub, ckpt, tmp_path, batch_size=0)
    with pytest.raises(Exception, match="--protocol must be 'study' or 'clean'"):
        _run(cub, ckpt, tmp_path, protocol="paper")
    with pytest.raises(Exception, match="--shard-size must be at least 1"):
        _run(cub, ckpt, tmp_path, shard_size=0)
    assert extract_features  # the public name exists beside run_extract


def test_coco_items_keep_ann_ids_and_workers_do_not_change_a_bit(
    cub: Path, ckpt: Path, tmp_path: Path
) -> None:
    coco = cub.parent / "coco-parts"
    common = {"checkpoint": ckpt, "arch": ARCH, "data_root": coco, "device": "cpu", "progress": False}
    common["batch_size"] = 16
    a = run_extract("dino", "coco-parts", "val", features_dir=tmp_path / "w0", num_workers=0, **common)
    b = run_extract("dino", "coco-parts", "val", features_dir=tmp_path / "w2", num_workers=2, **common)
    fa, fb = load_features(a.cache_dir), load_features(b.cache_dir)
    items = part_patches("coco-parts", coco, split="val")
    assert fa.items["ann_id"].tolist() == [it.ann_id for it in items] and items[0].ann_id is not None
    assert torch.equal(fa.embedding, fb.embedding) and torch.equal(fa.cls_token, fb.cls_token)
    assert (a.cache_dir / "features.safetensors").read_bytes() == (
        b.cache_dir / "features.safetensors"
    ).read_bytes()
