"""The command line as a user meets it: every command has --help, and bad input is one line, exit 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from partbench.cli import app

COMMANDS = [
    ["models"],
    ["datasets"],
    ["synth"],
    ["fetch"],
    ["extract"],
    ["probe", "retrieval"],
    ["probe", "classify"],
    ["probe", "segment"],
    ["probe", "layers"],
    ["report"],
    ["run"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_command_has_help(command: list[str]):
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "--help" in result.output


def _partbench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "partbench", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_a_bad_checkpoint_is_one_line_naming_the_file_and_exit_1(tmp_path: Path):
    truncated = tmp_path / "mae_pretrain_vit_base.pth"
    truncated.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    (tmp_path / "data").mkdir()
    proc = _partbench(
        "extract", "--model", "mae", "--dataset", "cub-parts", "--checkpoint", str(truncated),
        "--data-root", str(tmp_path / "data"), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    assert str(truncated) in lines[0] and "truncated or not a PyTorch checkpoint" in lines[0]


def test_a_missing_data_set_is_one_line_naming_the_folder(tmp_path: Path):
    proc = _partbench("datasets", "--check", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(tmp_path / "nowhere") in lines[0], proc.stderr
