"""The report's "Beyond the paper" section: layer curves, retrieval grid, generated fact paragraphs.

Layer results are written by hand (as `probe layers` writes them) with numbers whose peaks and gaps
are worked out below; the retrieval grid reads feature caches whose features are built by hand
(one-hot part codes: every neighbour correct; random codes: checked against sklearn's neighbours).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.neighbors import NearestNeighbors
from typer.testing import CliRunner

from partbench import feature_cache as fc
from partbench.cli import app
from partbench.datasets import part_images_dir, part_patches
from partbench.datasets.synth import write_part_sets
from partbench.errors import PartbenchError
from partbench.probes.results import result_path, write_result
from partbench.report import build_report
from partbench.report.beyond import beyond_section, layer_facts, load_layer_curves
from partbench.report.retrieval_grid import GRID_CELL, GRID_DPI, GRID_LABEL_W, GRID_TITLE_H

pytestmark = pytest.mark.timeout(120)

# part AP / object AP per point: blocks 1-4, norm, projection (None: no projector)
CURVES = {
    "dino": {"part": [40.0, 55.0, 60.0, 52.0, 50.0, 30.0], "object": [10.0, 20.0, 30.0, 45.0, 46.0, 58.0]},
    "mae": {"part": [45.0, 50.0, 48.0, 47.0, 46.0, None], "object": [5.0, 6.0, 7.0, 8.0, 9.0, None]},
}
POINTS = [("block01", 1, "block"), ("block02", 2, "block"), ("block03", 3, "block"), ("block04", 4, "block")]
POINTS += [("norm", 4, "norm"), ("projection", 4, "projection")]


def put_layers(results: Path, task: str = "retrieval", metric: str = "AP") -> list[Path]:
    """Layer results exactly as `partbench.probes.layers.run_layers` writes them."""
    paths = []
    for model, levels in CURVES.items():
        for i, (name, block, stage) in enumerate(POINTS):
            if levels["part"][i] is None:
                continue
            metrics = {f"{lv}_{metric}": levels[lv][i] for lv in levels}
            metrics["ci95"] = {f"{lv}_{metric}": [levels[lv][i] - 2, levels[lv][i] + 2] for lv in levels}
            config = dict(task="layers", dataset="cub-parts", model=model, feature=f"mean@{name}", probe="-")
            config.update(protocol="study", suite="custom", probe_task=task, layer_feature="mean")
            config.update(point=name, block=block, stage=stage, num_blocks=4)
            path = result_path(results, "layers", "cub-parts", model, f"{task}-mean-{name}")
            paths.append(write_result(path, metrics, config, {"created": "2026-01-01T00:00:00+00:00"}))
    return paths


def _png(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


# --- layer curves ---------------------------------------------------------------------------------


def test_facts_hand_worked(tmp_path: Path) -> None:
    put_layers(tmp_path / "results")
    [curves] = load_layer_curves(tmp_path / "results")
    text = layer_facts(curves)
    # dino part: max of 40/55/60/52 is block 3; 60 - 50 = 10 above norm; projector 30 - 50 = -20
    assert (
        "part AP peaks at block 3 of 4 (60.00; block 1: 40.00), 10.00 points above the final-normed "
        "output (50.00); the projector output scores 30.00 (-20.00 vs norm)" in text
    )
    # dino object: block 4 (45) is 1 below norm (46); projector 58 = +12 vs norm
    assert "object AP peaks at block 4 of 4 (45.00; block 1: 10.00), 1.00 points below" in text
    assert "the projector output scores 58.00 (+12.00 vs norm)" in text
    # mae: no projector sentence
    assert "**MAE**: part AP peaks at block 2 of 4 (50.00; block 1: 45.00), 4.00 points above" in text
    assert text.count("projector") == 2


def test_paragraph_numbers_equal_the_result_jsons(tmp_path: Path) -> None:
    paths = put_layers(tmp_path / "results")
    md, files = beyond_section(tmp_path / "results", tmp_path / "out")
    for model in CURVES:
        mine = [json.loads(p.read_text()) for p in paths if p.name.startswith(model + "__")]
        blocks = [r for r in mine if r["config"]["stage"] == "block"]
        norm = next(r for r in mine if r["config"]["stage"] == "norm")
        for level in ("part", "object"):
            vals = [r["metrics"][f"{level}_AP"] for r in blocks]
            best = int(np.argmax(vals))
            gap = vals[best] - norm["metrics"][f"{level}_AP"]
            side = "above" if gap >= 0 else "below"
            expect = (
                f"{level} AP peaks at block {blocks[best]['config']['block']} of {len(blocks)} "
                f"({vals[best]:.2f}; block 1: {vals[0]:.2f}), {abs(gap):.2f} points {side} the final-normed "
                f"output ({norm['metrics'][f'{level}_AP']:.2f})"
            )
            assert expect in md
    assert md.startswith("## Beyond the paper")
    assert "![layers__cub-parts__retrieval-mean](figures/layers__cub-parts__retrieval-mean.png)" in md
    assert files == [tmp_path / "out" / "figures" / "layers__cub-parts__retrieval-mean.png"]
    assert _png(files[0]) == (1320, 528)  # 12 x 4.8 inches at 110 dpi


def test_one_figure_per_task_and_stale_figures_removed(tmp_path: Path) -> None:
    put_layers(tmp_path / "results")
    put_layers(tmp_path / "results", task="classify", metric="top1")
    stale = tmp_path / "out" / "figures" / "layers__old.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    md, files = beyond_section(tmp_path / "results", tmp_path / "out")
    assert sorted(f.name for f in files) == [
        "layers__cub-parts__classify-mean.png",
        "layers__cub-parts__retrieval-mean.png",
    ]
    assert not stale.exists()
    assert "part top1 peaks at block 3 of 4 (60.00" in md


def test_build_report_gets_the_section(tmp_path: Path) -> None:
    put_layers(tmp_path / "results")
    config = dict(task="retrieval", dataset="cub-parts", model="dino", feature="embedding", probe="-")
    config.update(protocol="study", suite="custom")
    write_result(result_path(tmp_path / "results", "retrieval", "cub-parts", "dino", "embedding"),
                 {"AP": 55.0, "mAP": 54.0}, config, {"created": "2026-01-01"})  # fmt: skip
    summary = build_report(tmp_path / "results", out=tmp_path / "reports")
    text = summary.report.read_text()
    assert "## Beyond the paper" in text and "figures/layers__cub-parts__retrieval-mean.png" in text
    assert "part AP peaks at block 3 of 4 (60.00" in text
    assert tmp_path / "reports" / "figures" / "layers__cub-parts__retrieval-mean.png" in summary.files


def test_nothing_to_show_gives_no_section(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    assert beyond_section(tmp_path / "results", tmp_path / "out") == ("", [])


# --- retrieval grid -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Caches of two 'encoders' on the synthetic CUB: `oracle` (one-hot part + tiny noise), `noise`."""
    root = tmp_path_factory.mktemp("grid")
    cub = write_part_sets(root / "data")["cub-parts"]
    items = part_patches("cub-parts", cub, split="retrieval", protocol="study")
    labels = torch.tensor([it.label for it in items])
    gen = torch.Generator().manual_seed(0)
    feats = {
        "oracle": torch.nn.functional.one_hot(labels, 4).float()
        + 0.01 * torch.randn(len(items), 4, generator=gen),
        "noise": torch.randn(len(items), 8, generator=gen),
    }
    for model, x in feats.items():
        cache = fc.cache_dir_for(root / "features", model, "cub-parts", "retrieval")
        cache.parent.mkdir(parents=True)
        fc.finalise(
            cache,
            key=model,
            manifest={"images_dir": str(part_images_dir("cub-parts", cub, "retrieval"))},
            stamps={},
            rows=fc.item_rows(items),
            features={"embedding": x, "cls_token": x.clone(), "labels": labels},
            token_shards=None,
            token_shape=None,
        )
    return root / "features"


def test_retrieval_grid(caches: Path, tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    md, files = beyond_section(
        tmp_path / "results", tmp_path / "out", figures=["retrieval-grid"], features_dir=caches
    )
    png, facts_path = files
    assert png.name == "retrieval_grid__cub-parts.png" and facts_path.name == "retrieval_grid__cub-parts.json"
    # 4 queries (one per part) x 2 encoders = 8 rows; query + top-6 = 7 columns
    width = round((GRID_LABEL_W + 7 * GRID_CELL) * GRID_DPI)
    height = round((GRID_TITLE_H + 8 * GRID_CELL) * GRID_DPI)
    assert _png(png) == (width, height) == (1000, 1050)
    facts = json.loads(facts_path.read_text())
    assert facts["query_parts"] == ["right eye", "right leg", "left wing", "tail"]
    assert facts["shown_correct"]["oracle"] == facts["shown_total"] == 24
    assert facts["precision_at_k"]["oracle"] == 100.0
    # the noise encoder's precision@6 from sklearn's cosine neighbours (the query itself dropped)
    fs = fc.load_features(caches / "noise" / "cub-parts" / "retrieval")
    x, y = fs.embedding.numpy(), fs.labels.numpy()
    _, idx = NearestNeighbors(n_neighbors=7, metric="cosine").fit(x).kneighbors(x)
    assert (idx[:, 0] == np.arange(len(x))).all()
    expected = 100.0 * float((y[idx[:, 1:]] == y[:, None]).mean())
    assert facts["precision_at_k"]["noise"] == pytest.approx(expected, abs=1e-9)
    shown = int(sum((y[idx[q, 1:]] == y[q]).sum() for q in facts["queries"]))
    assert facts["shown_correct"]["noise"] == shown
    # the paragraph says exactly these numbers
    assert f"noise {shown}/24 shown correct, precision@6 {expected:.2f}%" in md
    assert "oracle 24/24 shown correct, precision@6 100.00%" in md


def test_cli_report_with_the_grid(caches: Path, tmp_path: Path) -> None:
    put_layers(tmp_path / "results")
    args = ["report", "--results-dir", str(tmp_path / "results"), "--out", str(tmp_path / "rep")]
    args += ["--figures", "retrieval-grid", "--features-dir", str(caches)]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "### Retrieval grid: cub-parts" in text and "### Layer-wise retrieval" in text
    assert (tmp_path / "rep" / "figures" / "retrieval_grid__cub-parts.png").is_file()


# --- bad inputs -----------------------------------------------------------------------------------


def test_unknown_figure_named(tmp_path: Path) -> None:
    with pytest.raises(PartbenchError, match="unknown figure 'tsne'"):
        beyond_section(tmp_path, tmp_path / "out", figures=["tsne"])


def test_grid_without_caches_says_so(tmp_path: Path) -> None:
    put_layers(tmp_path / "results")
    md, files = beyond_section(
        tmp_path / "results", tmp_path / "out", figures=["retrieval-grid"], features_dir=tmp_path / "none"
    )
    assert "No part-set feature cache under" in md and all(f.name.startswith("layers__") for f in files)


def test_grid_refuses_caches_of_different_items(caches: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(caches, tmp_path / "f")
    items = tmp_path / "f" / "noise" / "cub-parts" / "retrieval" / "items.csv"
    lines = items.read_text().splitlines()
    items.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    (tmp_path / "results").mkdir()
    with pytest.raises(PartbenchError, match="items differ"):
        beyond_section(
            tmp_path / "results", tmp_path / "out", figures=["retrieval-grid"], features_dir=tmp_path / "f"
        )


def test_layer_result_with_unknown_task_named(tmp_path: Path) -> None:
    config = dict(task="layers", dataset="cub-parts", model="dino", probe_task="detect", point="norm")
    path = write_result(tmp_path / "layers" / "x.json", {"part_mIoU": 1.0}, config, {})
    with pytest.raises(PartbenchError, match=f"{path}: layers result with unknown probe_task 'detect'"):
        load_layer_curves(tmp_path)
