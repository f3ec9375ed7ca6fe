"""`dvc repro` of the smoke suite in a temporary copy of the project, then a second `dvc repro`
that must do nothing, and a parameter change that must touch only the stages that read it.

Slow (about 120 DVC stages, each a fresh `partbench run` process): `pytest -m slow`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(not (BIN / "dvc").exists(), reason="dvc is not installed in .venv"),
]


def _copy_project(dest: Path) -> None:
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(
        REPO / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache", "config.local")
    )
    shutil.copytree(REPO / "partbench", dest / "partbench", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "reports" / "paper").mkdir(parents=True)
    shutil.copy(REPO / "reports" / "paper" / "paper_tables.csv", dest / "reports" / "paper")
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)


def _dvc(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, f"dvc {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def test_dvc_repro_of_the_smoke_suite_then_nothing_to_do(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    _copy_project(project)

    first = _dvc(project, "repro", "smoke_report")
    assert "Running stage 'smoke_segment@ibot-lip'" in first
    report = project / "smoke" / "reports" / "report.md"
    assert "synthetic data and randomly initialised tiny encoders" in report.read_text()
    assert (project / "dvc.lock").is_file()

    second = _dvc(project, "repro", "smoke_report")
    assert "Running stage" not in second
    assert "up to date" in _dvc(project, "status", "--with-deps", "smoke_report")

    metrics = _dvc(project, "metrics", "show")
    assert "smoke/results/retrieval/cub-parts/dino__embedding.json" in metrics and "mIoU" in metrics

    # a classification parameter changes: only the classification cells are out of date
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["smoke"]["classify"]["epochs"] += 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = [
        line.rstrip(":")
        for line in _dvc(project, "status", "--with-deps", "smoke_report").splitlines()
        if line.endswith(":")
    ]
    changed = [c for c in changed if not c.startswith(("\t", " "))]
    assert changed and all(c.startswith("smoke_classify@") for c in changed), changed
    assert len(changed) == 7 * 2 * 2
