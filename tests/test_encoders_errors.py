"""Bad checkpoints: each becomes ONE line of `CheckpointError` naming the file and the problem."""

from __future__ import annotations

import argparse
import datetime
import shutil
from pathlib import Path

import pytest
import torch

from partbench.config import checkpoints_dir
from partbench.encoders import get_encoder_spec, load_encoder
from partbench.encoders.synthetic import TINY_ARCH, official_checkpoint, write_official_checkpoint
from partbench.errors import CheckpointError


def expect_error(path: Path | None, name: str, match: str, **kw) -> str:
    with pytest.raises(CheckpointError, match=match) as info:
        load_encoder(name, checkpoint=path, **{**TINY_ARCH, **kw})
    message = str(info.value)
    assert "\n" not in message
    if path is not None:
        assert str(path) in message
    return message


def test_truncated_file(tmp_path: Path) -> None:
    path = write_official_checkpoint("mae", tmp_path / "mae.pth")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_error(path, "mae", "truncated or not a PyTorch checkpoint")
    path.write_bytes(b"")
    expect_error(path, "mae", "empty")
    expect_error(tmp_path / "absent.pth", "mae", "no such checkpoint file")


@pytest.mark.parametrize(
    ("written", "given"),
    [
        ("mae", "beit"),
        ("mae", "deit"),
        ("deit", "mae"),
        ("dino", "mocov3"),
        ("mocov3", "dino"),
        ("beit", "cae"),
    ],
)
def test_wrong_family_names_the_family_it_looks_like(tmp_path: Path, written: str, given: str) -> None:
    path = write_official_checkpoint(written, tmp_path / f"{written}.pth")
    expect_error(path, given, f"not a {given} checkpoint, it looks like a {written} checkpoint")


def test_unexpected_keys_are_listed_and_truncated(tmp_path: Path) -> None:
    ckpt = official_checkpoint("mae")
    for i in range(6):
        ckpt["model"][f"extra.{i}.weight"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "mae.pth")
    message = expect_error(tmp_path / "mae.pth", "mae", r"unexpected keys \(6\)")
    assert "extra.0.weight, extra.1.weight, extra.2.weight, extra.3.weight, … (+2 more)" in message


def test_missing_keys_are_listed(tmp_path: Path) -> None:
    ckpt = official_checkpoint("cae")
    for key in [k for k in ckpt["model"] if k.startswith("encoder.blocks.1.mlp.")]:
        del ckpt["model"][key]
    torch.save(ckpt, tmp_path / "cae.pth")
    expect_error(tmp_path / "cae.pth", "cae", r"missing keys \(4\): blocks\.1\.mlp\.fc1\.bias")


def test_wrong_architecture_is_a_shape_mismatch(tmp_path: Path) -> None:
    path = write_official_checkpoint("dino", tmp_path / "dino.pth")
    expect_error(path, "dino", r"shape mismatch", embed_dim=32)


def test_pickle_needing_more_than_weights_is_refused(tmp_path: Path) -> None:
    ckpt = official_checkpoint("mae")
    ckpt["saved_on"] = datetime.date(2022, 1, 1)
    torch.save(ckpt, tmp_path / "mae.pth")
    expect_error(tmp_path / "mae.pth", "mae", r"refused to unpickle datetime\.date .*weights_only=True")
    # argparse.Namespace (DINO/iBOT/BEiT/CAE 'args') is the one allowed class
    ckpt = official_checkpoint("mae")
    ckpt["args"] = argparse.Namespace(lr=1.5e-4)
    torch.save(ckpt, tmp_path / "mae_args.pth")
    load_encoder("mae", checkpoint=tmp_path / "mae_args.pth", **TINY_ARCH)


def test_missing_default_checkpoint_says_how_to_fetch() -> None:
    expect_error(None, "dino", r"partbench fetch --models dino")


def test_default_checkpoint_is_found_in_the_cache(tmp_path: Path) -> None:
    """checkpoint=None looks in checkpoints_dir(); the backbone-only DINO file is accepted too."""
    source = write_official_checkpoint("dino", tmp_path / "x.pth", backbone_only=True)
    target = checkpoints_dir() / get_encoder_spec("dino").files[1].filename
    target.parent.mkdir(parents=True)
    shutil.copy(source, target)
    enc = load_encoder("dino", **TINY_ARCH)
    assert enc.projector is None and enc.checkpoint_sha256 is not None
    # a bare file name is looked up in the cache too
    assert (
        load_encoder("dino", checkpoint=target.name, **TINY_ARCH).checkpoint_sha256 == enc.checkpoint_sha256
    )


def test_models_command_lists_registry_and_cache(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from partbench.cli import app

    write_official_checkpoint("mae", checkpoints_dir() / "mae_pretrain_vit_base.pth")
    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    names = [name for name in lines if name]
    assert names == ["deit", "deit-distilled", "vit-in21k", "mocov3", "dino", "beit", "mae", "cae", "ibot"]
    assert "prefix b5f2ef4d" in lines["deit"] and "yes" in lines["mae"] and "yes" not in lines["beit"]
