"""Classification heads and the classify probe, on caches written in the real cache format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_probe_retrieval import write_cache

from partbench.errors import CacheError
from partbench.probes.classify import run_classify
from partbench.probes.heads import AttentiveHead, LinearHead, default_num_heads

# --- heads -------------------------------------------------------------------------------------


def test_default_num_heads():
    assert default_num_heads(768) == 12  # ViT-B, as the study
    assert default_num_heads(64) == 1
    assert default_num_heads(192) == 3
    assert default_num_heads(200) == 2  # 200 // 64 = 3 does not divide 200


def test_linear_head_init():
    head = LinearHead(768, 4)
    assert torch.count_nonzero(head.fc.bias) == 0
    assert head.fc.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_attentive_pool_matches_explicit_attention():
    torch.manual_seed(0)
    head = AttentiveHead(16, 3, num_heads=4)
    tokens = torch.randn(5, 7, 16)
    # reference: LayerNorm each input, project, per-head softmax(q k^T / sqrt(4)) v, concat, project
    q = head.q(head.norm_q(head.query[0, 0]))  # [16]
    k = head.k(head.norm_k(tokens))  # [5, 7, 16]
    v = head.v(head.norm_v(tokens))
    out = []
    for h in range(4):
        sl = slice(4 * h, 4 * h + 4)
        w = torch.softmax((k[:, :, sl] @ q[sl]) / math.sqrt(4), dim=1)  # [5, 7]
        out.append((w[:, :, None] * v[:, :, sl]).sum(1))
    expected = head.proj(torch.cat(out, dim=1))
    torch.testing.assert_close(head.pool(tokens), expected, rtol=1e-5, atol=1e-6)
    assert head.k.bias is None and head.q.bias is not None and head.v.bias is not None


def test_attentive_bn_batch_stats_at_eval_in_study_only():
    torch.manual_seed(0)
    tokens = torch.randn(8, 5, 16)
    study = AttentiveHead(16, 3, num_heads=2, bn_batch_stats_at_eval=True).eval()
    clean = AttentiveHead(16, 3, num_heads=2, bn_batch_stats_at_eval=False).eval()
    clean.load_state_dict(study.state_dict())
    with torch.no_grad():
        # study: an item's logits depend on the rest of its evaluation batch
        assert not torch.allclose(study(tokens)[:4], study(tokens[:4]))
        # clean: running statistics, so each item is scored alone
        torch.testing.assert_close(clean(tokens)[:4], clean(tokens[:4]))


# --- the probe ---------------------------------------------------------------------------------


def _part_caches(root: Path, tokens: bool, n_train: int = 96, n_val: int = 48, dim: int = 16) -> None:
    """4 classes. cls token: class centre + noise. tokens [N, 5, D]: the class signal sits in one
    token at a random position among noise tokens, so a learned query can find it."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, dim)) * 1.5
    for split, n in (("train", n_train), ("val", n_val)):
        labels = rng.integers(0, 4, size=n)
        labels[:4] = np.arange(4)
        emb = centres[labels] + rng.normal(size=(n, dim))
        tok = None
        if tokens:
            tok = rng.normal(size=(n, 5, dim)) * 0.5
            pos = rng.integers(0, 5, size=n)
            tok[np.arange(n), pos] += 2 * centres[labels]
        write_cache(root, "mae", "cub-parts", split, labels, emb, cls_token=emb, tokens=tok)


def test_linear_probe_learns_separable_parts(tmp_path: Path):
    _part_caches(tmp_path / "f", tokens=False)
    path = run_classify(
        "mae",
        "cub-parts",
        head="linear",
        features_dir=tmp_path / "f",
        results_dir=tmp_path / "r",
        epochs=10,
        batch_size=32,
        device="cpu",
    )
    res = json.loads(path.read_text())
    assert path.name == "mae__linear.json"
    assert res["metrics"]["top1"] > 85  # chance is 25
    assert res["metrics"]["top1_best"] >= res["metrics"]["top1"]
    assert len(res["metrics"]["top1_per_epoch"]) == 10
    cfg = res["config"]
    assert (cfg["task"], cfg["probe"], cfg["feature"]) == ("classify", "linear", "cls_token")
    assert cfg["lr"] == pytest.approx(0.1 * 32 / 256) and 1 <= cfg["best_epoch"] <= 10
    again = json.loads(
        run_classify(
            "mae",
            "cub-parts",
            head="linear",
            features_dir=tmp_path / "f",
            results_dir=tmp_path / "r",
            epochs=10,
            batch_size=32,
            device="cpu",
        ).read_text()
    )
    assert again["metrics"]["top1_per_epoch"] == res["metrics"]["top1_per_epoch"]  # seeded


def test_attentive_probe_learns_and_streams_identically(tmp_path: Path):
    _part_caches(tmp_path / "f", tokens=True)
    kw = {
        "head": "attentive",
        "features_dir": tmp_path / "f",
        "epochs": 8,
        "batch_size": 32,
        "lr": 0.1,
        "device": "cpu",
        "protocol": "clean",
    }
    resident = json.loads(run_classify("mae", "cub-parts", results_dir=tmp_path / "a", **kw).read_text())
    streamed = json.loads(
        run_classify("mae", "cub-parts", results_dir=tmp_path / "b", resident_bytes=0, **kw).read_text()
    )
    assert resident["metrics"]["top1_best"] > 85
    assert resident["config"]["tokens_resident"] and not streamed["config"]["tokens_resident"]
    np.testing.assert_allclose(streamed["metrics"]["top1_per_epoch"], resident["metrics"]["top1_per_epoch"])
    assert resident["config"]["bn_at_eval"] == "running" and resident["config"]["num_heads"] == 1


def test_attentive_probe_study_protocol(tmp_path: Path):
    _part_caches(tmp_path / "f", tokens=True)
    res = json.loads(
        run_classify(
            "mae",
            "cub-parts",
            head="attentive",
            features_dir=tmp_path / "f",
            results_dir=tmp_path / "r",
            epochs=8,
            batch_size=32,
            lr=0.1,
            device="cpu",
            num_heads=2,
        ).read_text()
    )
    assert res["config"]["bn_at_eval"] == "batch" and res["config"]["protocol"] == "study"
    assert res["config"]["eval_batch_size"] == 256 and res["config"]["lr"] == 0.1
    assert res["metrics"]["top1_best"] > 85


# --- bad inputs --------------------------------------------------------------------------------


def test_attentive_needs_tokens(tmp_path: Path):
    _part_caches(tmp_path / "f", tokens=False, n_train=20, n_val=8)
    with pytest.raises(CacheError, match="extract --tokens"):
        run_classify(
            "mae",
            "cub-parts",
            head="attentive",
            features_dir=tmp_path / "f",
            results_dir=tmp_path / "r",
            epochs=1,
        )


def test_classify_bad_head_and_missing_split(tmp_path: Path):
    with pytest.raises(CacheError, match="--head must be one of"):
        run_classify("mae", "cub-parts", head="mlp", features_dir=tmp_path, results_dir=tmp_path)
    with pytest.raises(CacheError, match="no complete feature cache"):
        run_classify("mae", "cub-parts", features_dir=tmp_path / "none", results_dir=tmp_path)


def test_cli_probe_classify(tmp_path: Path):
    from typer.testing import CliRunner

    from partbench.cli import app

    _part_caches(tmp_path / "f", tokens=False, n_train=40, n_val=16)
    args = [
        "probe",
        "classify",
        "--model",
        "mae",
        "--dataset",
        "cub-parts",
        "--head",
        "linear",
        "--features-dir",
        str(tmp_path / "f"),
        "--results-dir",
        str(tmp_path / "r"),
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--bootstrap",
        "100",
    ]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "mae__linear.json: top1" in out.output
    m = json.loads((tmp_path / "r/classify/cub-parts/mae__linear.json").read_text())["metrics"]
    assert m["ci95"]["top1"][0] <= m["top1"] <= m["ci95"]["top1"][1]
    assert (
        json.loads((tmp_path / "r/classify/cub-parts/mae__linear.json").read_text())["config"]["epochs"] == 3
    )


def test_study_eval_joins_a_trailing_single_item(tmp_path: Path):
    # 257 val items: the study's val batches of 256 would leave one item alone, and batch-statistic
    # normalisation of a single item is undefined; it is evaluated together with the batch before.
    _part_caches(tmp_path / "f", tokens=True, n_train=16, n_val=257)
    path = run_classify(
        "mae",
        "cub-parts",
        head="attentive",
        features_dir=tmp_path / "f",
        results_dir=tmp_path / "r",
        epochs=1,
        batch_size=16,
        device="cpu",
    )
    assert json.loads(path.read_text())["config"]["n_val"] == 257
