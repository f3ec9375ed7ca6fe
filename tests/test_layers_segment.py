"""`probe layers --task segment`: a linear segmentation head per block, fast mode, one backbone pass.

References, apart from the code under test: backbone passes counted with forward hooks on timm's
PatchEmbed and Block modules against the sliding-window grid (`slide.window_grid`); each block's
mIoU recomputed by `run_segment`'s own evaluation (`slide.evaluate_slide`, one head on one block)
from the head saved in the run checkpoint; chance = always the majority val class (`mean_iou`);
heads trained one at a time (`blocks_per_pass=1`) equal heads trained together; the report's
paragraph read back against the JSON files.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from partbench.cli import app
from partbench.datasets import SegmentationDataset, write_segmentation_sets
from partbench.datasets.segmentation import get_seg_spec
from partbench.distributed import DistContext
from partbench.encoders import load_encoder
from partbench.encoders.synthetic import write_official_checkpoint
from partbench.errors import PartbenchError
from partbench.metrics import mean_iou
from partbench.probes.layers import run_layers
from partbench.probes.seg_data import SegGeometry
from partbench.probes.seg_head import FrozenBackbone, LinearSegHead
from partbench.probes.seg_train import CHECKPOINT_NAME
from partbench.probes.slide import evaluate_slide, window_grid
from partbench.report.beyond import beyond_section

ARCH = "embed_dim=32,depth=4,num_heads=2"
ARCH_KW = {"embed_dim": 32, "depth": 4, "num_heads": 2}
DEPTH, DIM, CROP = 4, 32, 64


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("segl")
    sets = write_segmentation_sets(root / "data", seed=0)
    ckpt = write_official_checkpoint("dino", root / "dino.pth", seed=0, **ARCH_KW)
    return {**sets, "ckpt": Path(ckpt)}


def _run(assets: dict[str, Path], tmp: Path, dataset: str = "lip", **seg: object) -> list[Path]:
    options: dict[str, object] = dict(iters=60, batch_size=4, crop=CROP, runs_dir=tmp / "runs")
    options.update(seg)
    return run_layers(
        "dino", dataset, task="segment", checkpoint=assets["ckpt"], arch=ARCH, data_root=assets[dataset],
        results_dir=tmp / "results", device="cpu", num_workers=0, progress=False, bootstrap=50,
        segment=options,
    )  # fmt: skip


class ForwardCounter:
    """Counts forward calls of timm's PatchEmbed (= backbone passes) and Block modules."""

    def __enter__(self) -> ForwardCounter:
        self.calls: Counter[str] = Counter()

        def hook(module: torch.nn.Module, args: object, out: object) -> None:
            if type(module).__name__ in ("PatchEmbed", "Block"):
                self.calls[type(module).__name__] += 1

        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def _val_passes(root: Path, dataset: str, window_batch: int) -> int:
    """Backbone passes of a sliding-window evaluation: windows per val image, `window_batch` at a time."""
    geo = SegGeometry.for_spec(get_seg_spec(dataset), CROP, 16)
    val = SegmentationDataset(dataset, root, "val", train=False, scale=geo.test_scale)
    passes = 0
    for i in range(len(val)):
        h, w = val[i][0].shape[-2:]
        windows = window_grid(max(h, CROP), max(w, CROP), geo.slide_crop, geo.slide_stride)
        passes += math.ceil(len(windows) / window_batch)
    return passes


def test_one_pass_per_image_serves_every_block_and_each_block_scores(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    with ForwardCounter() as count:
        paths = _run(assets, tmp_path)
    # 8 training images: one cache pass (batch 16); evaluation: one pass per 2 windows (8 // 4 heads)
    val_passes = _val_passes(assets["lip"], "lip", window_batch=8 // DEPTH)
    assert count.calls["PatchEmbed"] == 1 + val_passes
    assert count.calls["Block"] == DEPTH * count.calls["PatchEmbed"]  # each pass runs every block once

    folder = tmp_path / "results" / "layers" / "lip"
    assert paths == [folder / f"dino__segment-block{b:02d}.json" for b in range(1, DEPTH + 1)]
    results = [json.loads(p.read_text()) for p in paths]
    for b, res in enumerate(results, start=1):
        m, c = res["metrics"], res["config"]
        assert (c["task"], c["probe_task"], c["point"], c["block"], c["stage"]) == (
            "layers", "segment", f"block{b:02d}", b, "block"
        )  # fmt: skip
        assert c["level"] == "part" and c["mode"] == "fast" and c["variant"] == "linear-fast"
        assert c["layers"] == [b] and c["dim"] == DIM and c["iters"] == 60
        assert set(m) == {"part_mIoU", "part_mAcc", "part_aAcc", "part_per_class_iou", "ci95"}
        lo, hi = m["ci95"]["part_mIoU"]
        assert lo <= hi and hi - lo < 50
        assert len(m["part_per_class_iou"]) == 19

    # chance: always the majority val class
    val = SegmentationDataset("lip", assets["lip"], "val", train=False)
    labels = [val[i][1].numpy() for i in range(len(val))]
    flat = np.concatenate([lab.ravel() for lab in labels])
    majority = np.bincount(flat[flat != 255]).argmax()
    chance = 100 * mean_iou([np.full_like(lab, majority) for lab in labels], labels, 19).miou
    assert results[-1]["metrics"]["part_mIoU"] > 5 * chance  # about 14 vs 1.5 here

    # each block's mIoU again, by run_segment's single-head evaluation of the saved head
    ckpt = tmp_path / "runs" / "layers" / "segment" / "lip" / "dino__linear-fast" / "blocks01-04"
    state = torch.load(ckpt / CHECKPOINT_NAME, weights_only=True)["head"]
    enc = load_encoder("dino", checkpoint=assets["ckpt"], **ARCH_KW)
    geo = SegGeometry.for_spec(get_seg_spec("lip"), CROP, 16)
    norm = {"mean": [255 * v for v in enc.mean], "std": [255 * v for v in enc.std]}
    val_set = SegmentationDataset("lip", assets["lip"], "val", train=False, scale=geo.test_scale, **norm)
    for b, res in enumerate(results):
        head = LinearSegHead(DIM, 19)
        head.load_state_dict({k.split(".", 2)[2]: v for k, v in state.items() if k.startswith(f"heads.{b}.")})
        backbone = FrozenBackbone(enc, (b,), torch.device("cpu"))
        ref = evaluate_slide(
            backbone, head.eval(), val_set, geo.slide_crop, geo.slide_stride, DistContext(), 0
        )
        assert res["metrics"]["part_mIoU"] == pytest.approx(ref["mIoU"], abs=1e-3)
        assert res["metrics"]["part_aAcc"] == pytest.approx(ref["aAcc"], abs=1e-3)

    # a second run resumes every finished head and reuses the cache: only the evaluation runs the backbone
    with ForwardCounter() as again:
        _run(assets, tmp_path)
    assert again.calls["PatchEmbed"] == val_passes


def test_heads_trained_one_at_a_time_equal_heads_trained_together(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    together = _run(assets, tmp_path / "a", iters=20)
    alone = _run(assets, tmp_path / "b", iters=20, blocks_per_pass=1)
    for p, q in zip(together, alone, strict=True):
        m, n = json.loads(p.read_text())["metrics"], json.loads(q.read_text())["metrics"]
        assert m["part_mIoU"] == pytest.approx(n["part_mIoU"], abs=1e-3)
        assert m["part_per_class_iou"] == pytest.approx(n["part_per_class_iou"], abs=1e-3, nan_ok=True)
    runs = tmp_path / "b" / "runs" / "layers" / "segment" / "lip" / "dino__linear-fast"
    assert sorted(p.name for p in runs.glob("blocks*")) == [f"blocks{b:02d}-{b:02d}" for b in range(1, 5)]


def test_report_pairs_part_set_with_object_twin(assets: dict[str, Path], tmp_path: Path) -> None:
    for dataset in ("pascal-part", "pascal-object"):
        _run(assets, tmp_path, dataset, iters=20, crop=32)
    md, files = beyond_section(tmp_path / "results", tmp_path / "report")
    assert "### Layer-wise segment: pascal (map feature)" in md
    [png] = [f for f in files if f.name == "layers__pascal__segment-map.png"]
    assert Image.open(png).size == (1320, 528)
    folder = tmp_path / "results" / "layers"
    assert f"`{(folder / 'pascal-object').as_posix()}/`, `{(folder / 'pascal-part').as_posix()}/`" in md
    for level, dataset in (("part", "pascal-part"), ("object", "pascal-object")):
        values = [
            json.loads((folder / dataset / f"dino__segment-block{b:02d}.json").read_text())["metrics"][
                f"{level}_mIoU"
            ]
            for b in range(1, DEPTH + 1)
        ]
        found = re.search(rf"{level} mIoU peaks at block (\d) of 4 \(([\d.]+); block 1: ([\d.]+)\)", md)
        assert found is not None, md
        best = int(np.argmax(values))
        assert int(found[1]) == best + 1
        assert found[2] == f"{values[best]:.2f}" and found[3] == f"{values[0]:.2f}"


def test_cli_runs_segment_per_block(assets: dict[str, Path], tmp_path: Path) -> None:
    args = [
        "probe", "layers", "--model", "dino", "--dataset", "lip", "--task", "segment",
        "--checkpoint", str(assets["ckpt"]), "--arch", ARCH, "--data-root", str(assets["lip"]),
        "--results-dir", str(tmp_path / "r"), "--runs-dir", str(tmp_path / "runs"), "--device", "cpu",
        "--num-workers", "0", "--iters", "4", "--seg-batch-size", "2", "--crop", "32", "--bootstrap", "0",
    ]  # fmt: skip
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert f"4 results in {tmp_path / 'r' / 'layers' / 'lip'}" in out.output
    res = json.loads((tmp_path / "r" / "layers" / "lip" / "dino__segment-block04.json").read_text())
    assert "ci95" not in res["metrics"] and res["config"]["batch_size"] == 2


@pytest.mark.parametrize(
    ("seg", "message"),
    [
        ({"blocks_per_pass": 0}, "--blocks-per-pass must be >= 1, got 0"),
        ({"iters": 0}, "iters and batch size must be positive"),
        ({"crop": 40}, "--crop 40 must be a positive multiple of the patch size 16"),
    ],
)
def test_bad_options(assets: dict[str, Path], tmp_path: Path, seg: dict, message: str) -> None:
    with pytest.raises(PartbenchError, match=message):
        _run(assets, tmp_path, **seg)


def test_missing_data_named(assets: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(PartbenchError, match=str(tmp_path / "nowhere")):
        _run({**assets, "lip": tmp_path / "nowhere"}, tmp_path)


def test_torchrun_refused(assets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(PartbenchError, match="runs in one process"):
        _run(assets, tmp_path)
