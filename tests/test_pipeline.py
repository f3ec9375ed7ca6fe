"""Suites (typed dataclasses <-> params.yaml), run selections, and the DVC files that use them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from partbench.errors import PartbenchError
from partbench.pipeline import STAGES, SuitePaths, checkpoint_for, run_suite, tiny_seed
from partbench.suites import (
    PAPER,
    SMOKE,
    SuiteError,
    dump_suites,
    load_suites,
    resolve_suite,
    suite_from_dict,
    suite_to_dict,
)

REPO = Path(__file__).resolve().parents[1]
DVC = REPO / ".venv" / "bin" / "dvc"


def test_params_yaml_holds_the_built_in_suites():
    assert load_suites(REPO / "params.yaml") == {"smoke": SMOKE, "paper": PAPER}


def test_suites_round_trip_through_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(dump_suites([SMOKE, PAPER]))
    assert load_suites(path) == {"smoke": SMOKE, "paper": PAPER}
    data = suite_to_dict(SMOKE)
    assert data["models"] == ["deit", "mocov3", "dino", "beit", "mae", "cae", "ibot"]
    assert data["segment"]["crop"] == 64 and data["arch"] == {"embed_dim": 32, "depth": 4, "num_heads": 2}
    assert suite_to_dict(PAPER)["segment"]["iters"] == 160_000  # the study's schedule


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 3}, r"params: smoke: unknown key 'epochs'"),
        ({"seed": "zero"}, r"params: smoke\.seed must be int, got 'zero'"),
        ({"seed": True}, r"params: smoke\.seed must be int"),
        ({"data": "s3"}, r"params: smoke\.data must be 'synthetic' or 'download'"),
        ({"part_datasets": ["cub-parts", "cars"]}, r"unknown data set 'cars'"),
        ({"models": "dino"}, r"smoke\.models must be a list of names"),
        ({"classify": {"heads": ["mlp"]}}, r"classify\.heads: unknown head 'mlp'"),
        ({"classify": {"lr": 1}}, r"params: smoke\.classify: unknown key 'lr'"),
        ({"segment": {"mode": "slow"}}, r"segment\.mode must be 'full' or 'fast'"),
        ({"protocol": "faithful"}, r"protocol must be 'study' or 'clean'"),
        ({"arch": {"depth": "four"}}, r"smoke\.arch must be a mapping of integers"),
    ],
)
def test_bad_suite_keys_are_one_line_errors(change, message):
    data = suite_to_dict(SMOKE)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key != "arch":
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    with pytest.raises(SuiteError, match=message):
        suite_from_dict("smoke", data)


def test_resolve_suite_prefers_the_workdir_params(tmp_path):
    assert resolve_suite("smoke", None, tmp_path) == (SMOKE, "built-in")
    data = {"smoke": {**suite_to_dict(SMOKE), "seed": 7}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    suite, source = resolve_suite("smoke", None, tmp_path)
    assert suite.seed == 7 and source.endswith("params.yaml")
    with pytest.raises(SuiteError, match="no suite 'paper'"):
        resolve_suite("paper", None, tmp_path)
    with pytest.raises(SuiteError, match="unknown suite 'tiny'"):
        resolve_suite("tiny", None, tmp_path / "elsewhere")
    bad = tmp_path / "bad.yaml"
    bad.write_text("smoke: [unclosed\n")
    with pytest.raises(SuiteError, match=r"bad\.yaml: cannot read the suites"):
        resolve_suite("smoke", bad, tmp_path)


def test_paths_and_checkpoints_of_each_suite(tmp_path, monkeypatch):
    monkeypatch.setenv("PARTBENCH_HOME", str(tmp_path / "home"))
    smoke = SuitePaths.of(SMOKE, tmp_path)
    assert smoke.data == tmp_path / "smoke" / "data" and smoke.results == tmp_path / "smoke" / "results"
    assert checkpoint_for(SMOKE, smoke, "dino") == tmp_path / "smoke" / "checkpoints" / "dino.pth"
    assert checkpoint_for(SMOKE, smoke, "timm:vit_tiny_patch16_224") == "random"
    paper = SuitePaths.of(PAPER, tmp_path)
    assert paper.data == tmp_path / "home" / "data" and paper.checkpoints == tmp_path / "home" / "checkpoints"
    assert paper.features == tmp_path / "features" and paper.reports == tmp_path / "reports"
    assert checkpoint_for(PAPER, paper, "dino") is None  # the registry's file in checkpoints_dir()
    seeds = {tiny_seed(SMOKE, m) for m in SMOKE.models}
    assert len(seeds) == len(SMOKE.models)  # seven different tiny encoders


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stages": ["train"]}, "unknown stage 'train'"),
        ({"datasets": ["cars"]}, "unknown data set 'cars'"),
        ({"models": ["resnet"]}, "resnet"),
        ({"heads": ["mlp"]}, "unknown head 'mlp'"),
        ({"features": ["patch"]}, "unknown retrieval feature 'patch'"),
    ],
)
def test_bad_selections_fail_before_any_work(tmp_path, kwargs, message):
    with pytest.raises(PartbenchError, match=message):
        run_suite("smoke", workdir=tmp_path, **kwargs)
    assert not (tmp_path / "smoke").exists()


def test_report_stage_alone_needs_results(tmp_path):
    with pytest.raises(PartbenchError, match="no results folder"):
        run_suite("smoke", workdir=tmp_path, stages=["report"])


def test_stages_are_in_pipeline_order():
    assert STAGES == ("prepare", "extract", "retrieval", "classify", "segment", "report")


@pytest.mark.skipif(not DVC.exists(), reason="dvc is not installed in .venv")
def test_dvc_reads_the_pipeline(tmp_path):
    """`dvc stage list` parses dvc.yaml + params.yaml: every matrix cell of both suites exists."""
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / ".dvc", tmp_path / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    out = subprocess.run(
        [str(DVC), "stage", "list", "--name-only"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    names = set(out.stdout.split())
    n_models, n_part, n_seg = len(SMOKE.models), len(SMOKE.part_datasets), len(SMOKE.seg_datasets)
    for suite in ("smoke", "paper"):
        cells = [n for n in names if n.startswith(f"{suite}_")]
        expected = 2 + n_models * n_part * (1 + 2 + 2) + 3 * n_part + n_models * n_seg
        assert len(cells) == expected, suite
    assert "smoke_retrieval@dino-cub-parts-embedding" in names
    assert "paper_segment@ibot-lip" in names and "smoke_classify@mae-coco-parts-attentive" in names
