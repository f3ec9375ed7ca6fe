"""`run_segment` end to end on CPU: tiny DINO checkpoint (official layout), synthetic LIP twin."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from partbench.datasets import SegmentationDataset, write_segmentation_sets
from partbench.encoders.synthetic import write_official_checkpoint
from partbench.errors import CacheError, DatasetError, PartbenchError
from partbench.metrics import mean_iou
from partbench.probes.seg_train import CHECKPOINT_NAME
from partbench.probes.segment import run_segment

ARCH = "embed_dim=64,depth=4,num_heads=4"


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread is many times faster than two on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _env_one_thread() -> dict[str, str]:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seg_assets")
    sets = write_segmentation_sets(root / "data", seed=0)
    ckpt = write_official_checkpoint("dino", root / "dino.pth", seed=0, embed_dim=64, depth=4, num_heads=4)
    return {"lip": sets["lip"], "ckpt": Path(ckpt)}


def _run(assets: dict[str, Path], tmp: Path, **kw: object) -> Path:
    args: dict[str, object] = dict(
        checkpoint=assets["ckpt"], arch=ARCH, data_root=assets["lip"], batch_size=4, crop=64,
        eval_every=0, ckpt_every=10, num_workers=0, runs_dir=tmp / "runs", results_dir=tmp / "results",
        progress=False, device="cpu",
    )  # fmt: skip
    args.update(kw)
    path = run_segment("dino", "lip", **args)  # type: ignore[arg-type]
    assert path is not None
    return path


def _head(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)["head"]


def test_fast_mode_learns_well_above_chance_and_writes_the_contract(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    path = _run(assets, tmp_path, iters=60, mode="fast", bootstrap=50)
    assert path == tmp_path / "results" / "segment" / "lip" / "dino__linear-fast.json"
    result = json.loads(path.read_text())
    metrics, config, prov = result["metrics"], result["config"], result["provenance"]

    # Chance reference, independent of the probe: always predicting the most frequent val class.
    val = SegmentationDataset("lip", assets["lip"], "val", train=False)
    labels = [val[i][1].numpy() for i in range(len(val))]
    flat = np.concatenate([lab.ravel() for lab in labels])
    majority = np.bincount(flat[flat != 255]).argmax()
    chance = mean_iou([np.full_like(lab, majority) for lab in labels], labels, 19)
    assert metrics["mIoU"] > 3 * 100 * chance.miou
    assert metrics["mIoU"] > 25 and metrics["aAcc"] > 100 * chance.aacc + 20

    # The result contract.
    for key in ("mIoU", "mAcc", "aAcc", "mIoU_best", "mAcc_best", "aAcc_best"):
        assert 0 <= metrics[key] <= 100
    assert len(metrics["per_class_iou"]) == 19
    lo, hi = metrics["ci95"]["mIoU"]
    assert lo <= metrics["mIoU"] <= hi
    assert config["task"] == "segment" and config["dataset"] == "lip" and config["model"] == "dino"
    assert config["variant"] == "linear-fast" and config["mode"] == "fast"
    assert config["feature"] == "layers_1_2_3_4"  # depth 4: blocks 1-4 stand for 4/6/8/12 of 12
    assert config["probe"] == "linear" and config["protocol"] == "study"
    assert config["iters"] == 60 and config["batch_size"] == 4 and config["lr"] == 4e-4
    assert config["crop"] == [64, 64] and config["seed"] == 0 and config["warmup_iters"] == 1
    assert config["precision"] == "fp32" and config["bias_weight_decay"] is True  # DINO: mmcv default
    assert prov["checkpoint_sha256"] and len(prov["checkpoint_sha256"]) == 64
    assert prov["wall_time_s"] > 0 and prov["peak_rss_mb"] > 0
    assert [h["iteration"] for h in prov["eval_history"]] == [60]


def test_full_mode_resume_after_interruption_equals_an_uninterrupted_run(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    kw = dict(iters=5, batch_size=2, crop=32, ckpt_every=2, eval_every=3, mode="full")
    whole = _run(assets, tmp_path / "a", **kw)

    class Killed(Exception):
        pass

    def kill_at_3(iteration: int) -> None:
        if iteration == 3:  # after the checkpoint at 2 and the evaluation at 3, before the checkpoint at 4
            raise Killed

    with pytest.raises(Killed):
        _run(assets, tmp_path / "b", on_iteration=kill_at_3, **kw)
    run_b = tmp_path / "b" / "runs" / "segment" / "lip" / "dino__linear"
    assert torch.load(run_b / CHECKPOINT_NAME, weights_only=True)["iteration"] == 2
    resumed = _run(assets, tmp_path / "b", **kw)

    run_a = tmp_path / "a" / "runs" / "segment" / "lip" / "dino__linear"
    for key, value in _head(run_a).items():
        assert torch.equal(value, _head(run_b)[key]), key
    a, b = json.loads(whole.read_text()), json.loads(resumed.read_text())
    assert a["metrics"] == b["metrics"]
    assert a["provenance"]["eval_history"] == b["provenance"]["eval_history"]  # evals at 3 and 5
    assert b["provenance"]["resumed_from_iteration"] == 2


def test_a_finished_run_is_reused_and_another_runs_checkpoint_refused(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    first = json.loads(_run(assets, tmp_path, iters=2, batch_size=2, crop=32, mode="fast").read_text())
    again = json.loads(_run(assets, tmp_path, iters=2, batch_size=2, crop=32, mode="fast").read_text())
    assert again["metrics"] == first["metrics"]
    assert again["provenance"]["resumed_from_iteration"] == 2  # nothing left to train
    with pytest.raises(CacheError, match=r"differs in .*lr"):
        _run(assets, tmp_path, iters=2, batch_size=2, crop=32, mode="fast", lr=1e-3)
    path = _run(assets, tmp_path, iters=2, batch_size=2, crop=32, mode="fast", lr=1e-3, resume=False)
    assert json.loads(path.read_text())["config"]["lr"] == 1e-3
    ckpt = tmp_path / "runs" / "segment" / "lip" / "dino__linear-fast" / CHECKPOINT_NAME
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # truncated
    with pytest.raises(CacheError, match=r"checkpoint.pt: unreadable segmentation checkpoint"):
        _run(assets, tmp_path, iters=2, batch_size=2, crop=32, mode="fast", lr=1e-3)


def test_cli_probe_segment(assets: dict[str, Path], tmp_path: Path) -> None:
    from partbench.cli import app

    args = ["probe", "segment", "--model", "dino", "--dataset", "lip", "--checkpoint", str(assets["ckpt"]),
            "--arch", ARCH, "--data-root", str(assets["lip"]), "--iters", "3", "--batch-size", "2",
            "--crop", "32", "--mode", "fast", "--eval-every", "0", "--num-workers", "0", "--device", "cpu",
            "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]  # fmt: skip
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "dino__linear-fast.json: mIoU" in out.output


def test_bad_inputs_name_the_problem(assets: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(PartbenchError, match="--mode"):
        _run(assets, tmp_path, iters=2, mode="medium")
    with pytest.raises(PartbenchError, match="multiple of the patch size 16"):
        _run(assets, tmp_path, iters=2, crop=40)
    with pytest.raises(DatasetError, match="unknown segmentation set"):
        run_segment("dino", "lip-parts", checkpoint=assets["ckpt"], arch=ARCH, data_root=assets["lip"])
    with pytest.raises(DatasetError, match="image folder missing"):
        _run(assets, tmp_path, iters=2, data_root=tmp_path / "nowhere")
    with pytest.raises(PartbenchError, match="iters and batch size must be positive"):
        _run(assets, tmp_path, iters=0)


DDP_SCRIPT = """
import sys
from pathlib import Path
from partbench.probes.segment import run_segment
ckpt, data, out, mode = sys.argv[1:5]
run_segment("dino", "lip", checkpoint=ckpt, arch="embed_dim=64,depth=4,num_heads=4", data_root=data,
            iters=4, batch_size=4, crop=32, mode=mode, eval_every=0, ckpt_every=2, num_workers=0,
            runs_dir=Path(out) / "runs", results_dir=Path(out) / "results", progress=False, device="cpu",
            bootstrap=20)
"""


@pytest.mark.slow  # three fresh interpreters (one + two torchrun ranks on gloo)
@pytest.mark.parametrize("mode", ["fast", "full"])
def test_torchrun_two_processes_match_one_process(assets: dict[str, Path], tmp_path: Path, mode: str) -> None:
    import subprocess
    import sys

    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    common = [str(assets["ckpt"]), str(assets["lip"])]
    one_cmd = [sys.executable, str(script), *common, str(tmp_path / "one"), mode]
    two_cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(script), *common, str(tmp_path / "two"), mode]  # fmt: skip
    one = subprocess.run(one_cmd, capture_output=True, text=True, timeout=300, env=_env_one_thread())
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(two_cmd, capture_output=True, text=True, timeout=300, env=_env_one_thread())
    assert two.returncode == 0, two.stderr[-2000:]
    variant = "linear-fast" if mode == "fast" else "linear"
    heads = [_head(tmp_path / n / "runs" / "segment" / "lip" / f"dino__{variant}") for n in ("one", "two")]
    for key in heads[0]:
        # Same global batch, gradients averaged over the ranks: the same head up to float rounding.
        torch.testing.assert_close(heads[0][key], heads[1][key], rtol=1e-4, atol=1e-6)
    paths = [tmp_path / n / "results" / "segment" / "lip" / f"dino__{variant}.json" for n in ("one", "two")]
    results = [json.loads(p.read_text()) for p in paths]
    assert results[1]["config"]["world_size"] == 2
    for key in ("mIoU", "mAcc", "aAcc"):
        assert results[0]["metrics"][key] == pytest.approx(results[1]["metrics"][key], abs=0.5)


def test_encode_decode_through_slide_equals_a_whole_image_forward(assets: dict[str, Path]) -> None:
    from partbench.encoders import load_encoder
    from partbench.probes.seg_head import FrozenBackbone, LinearSegHead, encode_decode, upsample_logits
    from partbench.probes.slide import slide_inference

    enc = load_encoder("dino", checkpoint=assets["ckpt"], embed_dim=64, depth=4, num_heads=4)
    backbone = FrozenBackbone(enc, enc.default_seg_layers, torch.device("cpu"))
    head = LinearSegHead(4 * 64, 5)
    image = torch.randn(1, 3, 48, 64)
    feats = backbone(image)
    assert feats.shape == (1, 256, 3, 4) and not feats.is_inference()  # usable by autograd
    with torch.no_grad():
        # mmseg whole_inference: encode_decode (logits to the image size), then resize to the label size
        whole = upsample_logits(upsample_logits(head(feats), (48, 64)), (96, 128))
        slid = slide_inference(
            encode_decode(backbone, head), image, 5, (48, 64), (16, 16), out_size=(96, 128)
        )
    torch.testing.assert_close(slid, whole)


KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
from partbench.probes.segment import run_segment
ckpt, data, out, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def hook(iteration):
    if iteration == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception handlers

run_segment("dino", "lip", checkpoint=ckpt, arch="embed_dim=64,depth=4,num_heads=4", data_root=data,
            iters=6, batch_size=2, crop=32, mode="full", eval_every=0, ckpt_every=2, num_workers=0,
            runs_dir=Path(out) / "runs", results_dir=Path(out) / "results", progress=False, device="cpu",
            on_iteration=hook)
"""


@pytest.mark.slow  # three fresh interpreters
def test_sigkilled_run_resumes_to_the_uninterrupted_head(assets: dict[str, Path], tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    script = tmp_path / "kill_run.py"
    script.write_text(KILL_SCRIPT)

    def run(out: str, kill_at: int) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, str(script), str(assets["ckpt"]), str(assets["lip"]), str(tmp_path / out)]
        return subprocess.run(
            [*cmd, str(kill_at)], capture_output=True, text=True, timeout=300, env=_env_one_thread()
        )

    assert run("whole", -1).returncode == 0
    killed = run("killed", 3)
    assert killed.returncode == -signal.SIGKILL
    run_dir = tmp_path / "killed" / "runs" / "segment" / "lip" / "dino__linear"
    assert torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)["iteration"] == 2
    assert not list(run_dir.glob(".*.tmp"))  # no half-written checkpoint left behind
    assert run("killed", -1).returncode == 0
    whole = _head(tmp_path / "whole" / "runs" / "segment" / "lip" / "dino__linear")
    for key, value in _head(run_dir).items():
        assert torch.equal(value, whole[key]), key
