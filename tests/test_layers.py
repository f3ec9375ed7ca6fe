"""`probe layers`: per-block features in one backbone pass, part/object levels, one result per point.

References, computed apart from the code under test: patches cropped one by one with PIL and pushed
through timm's own token pipeline (`backbone._pos_embed`, then each block by hand); object classes
read from the synthetic CUB folder names (`001.Synth_Red_Bird/...` -> class 0); AP from sklearn.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score
from typer.testing import CliRunner

from partbench.cli import app
from partbench.config import IMAGENET_MEAN, IMAGENET_STD
from partbench.datasets import part_images_dir, part_patches
from partbench.datasets.synth import write_part_sets
from partbench.encoders import load_encoder
from partbench.encoders.synthetic import write_official_checkpoint
from partbench.errors import CacheError, DatasetError, PartbenchError
from partbench.probes.layer_cache import LAYERS_FILE, extract_layers, load_layers
from partbench.probes.layers import run_layers

pytestmark = pytest.mark.timeout(300)
ARCH = {"embed_dim": 64, "depth": 3, "num_heads": 4}
ARCH_TEXT = "embed_dim=64,depth=3,num_heads=4"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_part_sets(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_official_checkpoint("dino", tmp_path_factory.mktemp("ck") / "dino.pth", seed=0, **ARCH)


class ForwardCounter:
    """Counts calls of every PatchEmbed (= backbone passes) and of every transformer block."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __enter__(self) -> ForwardCounter:
        def hook(module: torch.nn.Module, args: object, out: object) -> None:
            name = type(module).__name__
            if name in ("PatchEmbed", "Block"):
                self.calls[name] += 1

        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def _extract(data: dict[str, Path], ckpt: Path, features: Path, **kw):
    args = dict(checkpoint=ckpt, arch=ARCH, data_root=data["cub-parts"], features_dir=features)
    args.update(device="cpu", num_workers=0, progress=False)
    args.update(kw)
    return extract_layers("dino", "cub-parts", "retrieval", **args)


def _reference_blocks(cub: Path, ckpt: Path) -> tuple[list, list[torch.Tensor], dict[str, torch.Tensor]]:
    """Naive pipeline: one PIL crop per patch, timm's token pipeline, blocks one by one."""
    items = part_patches("cub-parts", cub, split="retrieval", protocol="study")
    images = part_images_dir("cub-parts", cub, "retrieval")
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    xs = []
    for it in items:
        img = Image.open(images / it.image).convert("RGB").crop(it.box).resize((224, 224), Image.BICUBIC)
        xs.append((torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255 - mean) / std)
    enc = load_encoder("dino", checkpoint=ckpt, **ARCH)
    m = enc.backbone
    with torch.no_grad():
        x = m.norm_pre(m._pos_embed(m.patch_embed(torch.stack(xs))))
        outs = []
        for block in m.blocks:
            x = block(x)
            outs.append(x)
        final = enc.extract(torch.stack(xs))
    return items, outs, final


# --- the hand-worked example --------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(
    data: dict[str, Path], ckpt: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Counter]:
    """The per-block cache, every patch in one batch, with the forward calls it took."""
    with ForwardCounter() as count:
        cache = _extract(data, ckpt, tmp_path_factory.mktemp("built") / "f", batch_size=512)
    return cache, count.calls


def _copy_features(built: tuple[Path, Counter], tmp_path: Path) -> Path:
    import shutil

    features = built[0].parents[2]
    shutil.copytree(features, tmp_path / "f")
    return tmp_path / "f"


def test_one_backbone_pass_gives_every_block(data: dict[str, Path], ckpt: Path, built) -> None:
    cache, calls = built
    assert calls == {"PatchEmbed": 1, "Block": ARCH["depth"]}  # one pass, each block once
    lf = load_layers(cache)
    items, outs, final = _reference_blocks(data["cub-parts"], ckpt)
    assert (cache / LAYERS_FILE).is_file() and lf.num_blocks == 3 and len(lf) == len(items) == 68
    assert lf.mean.shape == lf.cls.shape == (3, 68, 64)
    for b, ref in enumerate(outs):
        torch.testing.assert_close(lf.mean[b], ref[:, 1:].mean(dim=1), atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(lf.cls[b], ref[:, 0], atol=2e-5, rtol=1e-4)
    for name in ("embedding", "cls_token", "projection"):  # the main cache's features, same pass
        torch.testing.assert_close(getattr(lf, name), final[name], atol=2e-5, rtol=1e-4)
    assert lf.labels.tolist() == [it.label for it in items]
    # bird class from the folder name, 1-based in the file, 0-based here
    assert lf.object_labels.tolist() == [int(it.image.split(".")[0]) - 1 for it in items]
    assert sorted(set(lf.object_labels.tolist())) == [0, 1, 2, 3]


def test_small_batches_still_one_pass_per_batch(
    data: dict[str, Path], ckpt: Path, built, tmp_path: Path
) -> None:
    with ForwardCounter() as count:
        cache = _extract(data, ckpt, tmp_path / "f", batch_size=24)
    passes = count.calls["PatchEmbed"]
    assert passes > 1 and count.calls["Block"] == ARCH["depth"] * passes
    torch.testing.assert_close(load_layers(cache).mean, load_layers(built[0]).mean, atol=2e-5, rtol=1e-4)


def test_cache_is_reused_and_rebuilt_when_the_key_changes(
    data: dict[str, Path], ckpt: Path, built, tmp_path: Path
) -> None:
    features = _copy_features(built, tmp_path)
    key = load_layers(built[0]).cache_key
    with ForwardCounter() as count:
        cache = _extract(data, ckpt, features, batch_size=512)
    assert count.calls["PatchEmbed"] == 0 and load_layers(cache).cache_key == key
    other = write_official_checkpoint("dino", tmp_path / "other.pth", seed=5, **ARCH)
    with ForwardCounter() as count:
        _extract(data, other, features, batch_size=512)
    assert count.calls["PatchEmbed"] == 1 and load_layers(cache).cache_key != key


# --- the probe ------------------------------------------------------------------------------------


def _sklearn_ap(x: torch.Tensor, labels: np.ndarray) -> float:
    unit = torch.nn.functional.normalize(x.double(), dim=1).numpy()
    sims = unit @ unit.T
    return 100.0 * float(
        np.mean([average_precision_score(labels == labels[i], sims[i]) for i in range(len(x))])
    )


def test_retrieval_per_block_matches_sklearn(
    data: dict[str, Path], ckpt: Path, built, tmp_path: Path
) -> None:
    features = built[0].parents[2]
    with ForwardCounter() as count:
        paths = run_layers(
            "dino",
            "cub-parts",
            checkpoint=ckpt,
            arch=ARCH,
            data_root=data["cub-parts"],
            features_dir=features,
            results_dir=tmp_path / "r",
            bootstrap=50,
            device="cpu",
            num_workers=0,
            batch_size=512,
            progress=False,
        )
    assert count.calls["PatchEmbed"] == 0  # served by the cached pass
    names = [p.name for p in paths]
    assert names == [
        f"dino__retrieval-mean-{n}.json" for n in ("block01", "block02", "block03", "norm", "projection")
    ]
    assert all(p.parent == tmp_path / "r" / "layers" / "cub-parts" for p in paths)
    lf = load_layers(built[0])
    parts, objects = lf.labels.numpy(), lf.object_labels.numpy()
    expected = {0: lf.mean[0], 1: lf.mean[1], 2: lf.mean[2], 3: lf.embedding, 4: lf.projection}
    for i, x in expected.items():
        res = json.loads(paths[i].read_text())
        m, cfg = res["metrics"], res["config"]
        assert m["part_AP"] == pytest.approx(_sklearn_ap(x, parts), abs=1e-6)
        assert m["object_AP"] == pytest.approx(_sklearn_ap(x, objects), abs=1e-6)
        lo, hi = m["ci95"]["part_AP"]
        assert lo <= m["part_AP"] <= hi
        assert cfg["task"] == "layers" and cfg["probe_task"] == "retrieval" and cfg["num_blocks"] == 3
        assert (
            cfg["block"] == min(i + 1, 3)
            and cfg["stage"] == ("block", "block", "block", "norm", "projection")[i]
        )
    assert res["provenance"]["cache_key"] == lf.cache_key


def test_classify_per_block_trains_a_linear_head(data: dict[str, Path], ckpt: Path, tmp_path: Path) -> None:
    paths = run_layers(
        "dino",
        "cub-parts",
        task="classify",
        feature="cls",
        epochs=5,
        bootstrap=20,
        checkpoint=ckpt,
        arch=ARCH,
        data_root=data["cub-parts"],
        features_dir=tmp_path / "f",
        results_dir=tmp_path / "r",
        device="cpu",
        num_workers=0,
        progress=False,
    )
    assert len(paths) == 5
    assert {p.name for p in (tmp_path / "f" / "dino" / "cub-parts").iterdir()} == {"train", "val"}
    norm = json.loads(paths[3].read_text())
    assert norm["config"]["n_train"] + norm["config"]["n_val"] == 68
    assert norm["metrics"]["part_top1"] > 60.0  # 4 classes, chance 25; random encoders separate them
    for p in paths:
        m = json.loads(p.read_text())["metrics"]
        assert 0.0 <= m["object_top1"] <= 100.0 and set(m["ci95"]) == {"part_top1", "object_top1"}


def test_cli_probe_layers(data: dict[str, Path], ckpt: Path, tmp_path: Path) -> None:
    args = ["probe", "layers", "--model", "dino", "--dataset", "coco-parts", "--checkpoint", str(ckpt)]
    args += ["--arch", ARCH_TEXT, "--data-root", str(data["coco-parts"]), "--device", "cpu"]
    args += ["--features-dir", str(tmp_path / "f"), "--results-dir", str(tmp_path / "r")]
    args += ["--num-workers", "0", "--bootstrap", "0"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "5 results in" in out.output
    res = json.loads(
        (tmp_path / "r" / "layers" / "coco-parts" / "dino__retrieval-mean-block02.json").read_text()
    )
    assert "object_AP" not in res["metrics"] and res["config"]["levels"] == ["part"]  # persons only
    assert "ci95" not in res["metrics"]


# --- bad inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"task": "segment"}, "unknown segmentation set 'cub-parts'"),
        ({"task": "detect"}, "--task must be one of"),
        ({"feature": "tokens"}, "--feature must be one of"),
        ({"dataset": "ade20k-part"}, "--dataset must be a part data set"),
    ],
)
def test_bad_options(tmp_path: Path, kw: dict, message: str) -> None:
    with pytest.raises(PartbenchError, match=message):
        run_layers("dino", kw.pop("dataset", "cub-parts"), results_dir=tmp_path, **kw)


def test_bad_data_and_caches(data: dict[str, Path], ckpt: Path, built, tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="no complete per-block cache"):
        load_layers(tmp_path)
    with pytest.raises(DatasetError):
        _extract({"cub-parts": tmp_path / "nowhere"}, ckpt, tmp_path / "g")
    cache = _copy_features(built, tmp_path) / "dino" / "cub-parts" / "retrieval"
    (cache / LAYERS_FILE).write_bytes(b"not safetensors")  # a damaged file is not a cache
    with pytest.raises(CacheError, match="no complete per-block cache"):
        load_layers(cache)
    with ForwardCounter() as count:
        _extract(data, ckpt, tmp_path / "f", batch_size=512)  # rebuilt
    assert count.calls["PatchEmbed"] == 1 and len(load_layers(cache)) == 68


def test_missing_bird_classes_named(data: dict[str, Path], ckpt: Path, tmp_path: Path) -> None:
    import shutil

    cub = tmp_path / "cub"
    shutil.copytree(data["cub-parts"], cub)
    (cub / "image_class_labels.txt").write_text("1 x\n")
    with pytest.raises(DatasetError, match=r"image_class_labels.txt:1: expected"):
        _extract({"cub-parts": cub}, ckpt, tmp_path / "f")


def test_unwritable_cache_folder_is_one_line(data: dict[str, Path], ckpt: Path, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("a file where the cache folder should go")
    with pytest.raises(CacheError, match="cannot write the per-block cache"):
        _extract(data, ckpt, tmp_path / "f", batch_size=512)
    assert [p.name for p in tmp_path.iterdir()] == ["f"]  # nothing half-written
