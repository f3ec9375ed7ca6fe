"""The smoke suite end to end (one run shared by every test here), its golden numbers, its report.

`partbench run --suite smoke` is seeded and runs on the CPU: every number it writes must reproduce
`tests/golden/smoke.json` to 1e-6. After a deliberate change of the smoke numbers, regenerate it with
`PARTBENCH_UPDATE_GOLDEN=1 pytest tests/test_pipeline_smoke.py` and say why in the commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from partbench.fsutil import atomic_write_json
from partbench.pipeline import RunSummary, run_suite
from partbench.suites import SMOKE

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "smoke.json"
TOLERANCE = 1e-6


@pytest.fixture(scope="session")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> RunSummary:
    workdir = tmp_path_factory.mktemp("smoke-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PARTBENCH_HOME", str(tmp_path_factory.mktemp("smoke-home")))
        return run_suite("smoke", workdir=workdir, params=REPO / "params.yaml", progress=False)


def _flatten(prefix: str, value: object, out: dict[str, float]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(f"{prefix}[{i}]", v, out)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out[prefix] = float(value)


def smoke_numbers(results: Path) -> dict[str, float]:
    """`{"retrieval/cub-parts/dino__embedding.json:AP": 76.9, ...}`: every metric of every result."""
    out: dict[str, float] = {}
    for path in sorted(results.rglob("*.json")):
        _flatten(path.relative_to(results).as_posix() + ":", json.loads(path.read_text())["metrics"], out)
    return {k.replace(":.", ":"): v for k, v in out.items()}


def test_smoke_numbers_reproduce_the_golden_file(smoke: RunSummary):
    got = smoke_numbers(smoke.paths.results)
    if os.environ.get("PARTBENCH_UPDATE_GOLDEN"):
        atomic_write_json(GOLDEN, got)
        pytest.skip(f"wrote {GOLDEN} ({len(got)} numbers)")
    golden = json.loads(GOLDEN.read_text())
    assert sorted(got) == sorted(golden), "the smoke suite wrote a different set of numbers"
    off = {k: (got[k], golden[k]) for k in golden if abs(got[k] - golden[k]) > TOLERANCE}
    assert not off, f"{len(off)} of {len(golden)} smoke numbers moved, e.g. {sorted(off.items())[:3]}"


def test_smoke_writes_every_result_of_the_suite(smoke: RunSummary):
    results = smoke.paths.results
    n_models = len(SMOKE.models)
    assert len(list((results / "retrieval").rglob("*.json"))) == len(SMOKE.part_datasets) * (2 * n_models + 3)
    assert len(list((results / "classify").rglob("*.json"))) == len(SMOKE.part_datasets) * 2 * n_models
    assert len(list((results / "segment").rglob("*.json"))) == len(SMOKE.seg_datasets) * n_models
    config = json.loads((results / "segment" / "lip" / "ibot__linear.json").read_text())["config"]
    assert (config["suite"], config["protocol"], config["mode"], config["iters"]) == (
        "smoke",
        "study",
        "full",
        SMOKE.segment.iters,
    )


def test_smoke_report_has_the_banner_and_every_smoke_cell(smoke: RunSummary):
    reports = smoke.paths.reports
    assert smoke.report == reports / "report.md"
    for name in ("report.md", "table2.md", "table3.md", "table4.md", "fig6.md", "claims.md"):
        assert "synthetic data and randomly initialised tiny encoders" in (reports / name).read_text()
    for name in ("table2.md", "table3.md", "table4.md", "fig6.md"):
        rows = [r for r in (reports / name).read_text().splitlines() if r.startswith("| ") and "---" not in r]
        body = rows[1:]
        assert len(body) == 7 and all("| study | smoke |" in r for r in body), name
        # every cell has our number; only the projected column is empty for encoders without a projector
        cells = [c.strip() for r in body for c in r.split("|")[4:-1]]
        assert sum(c == "—" or c.startswith("— ") for c in cells) == (8 if name == "table3.md" else 0), name
    claims = (reports / "claims.md").read_text()
    assert all(f"| C{i} |" in claims for i in range(1, 12))
    assert (reports / "figures" / "part_vs_object.png").is_file()
    assert (reports / "figures" / "retrieval_encoded_vs_projected.png").is_file()
    rows = (reports / "aggregate.csv").read_text().splitlines()
    top_level = [k for k in smoke_numbers(smoke.paths.results) if not set(".[") & set(k.split(":")[1])]
    assert len(rows) - 1 == len(top_level)  # one aggregate row per top-level metric of every result


def test_a_second_run_reuses_data_checkpoints_and_features(smoke: RunSummary, tmp_path):
    paths = smoke.paths
    watched = [
        *paths.checkpoints.glob("*.pth"),
        *paths.features.rglob("features.safetensors"),
        paths.data / "cub-parts" / "images.txt",
    ]
    before = {p: p.stat().st_mtime_ns for p in watched}
    assert len(before) == 7 + 7 * 2 * 3 + 1
    run_suite(
        "smoke",
        workdir=paths.root.parent,
        params=REPO / "params.yaml",
        stages=["prepare", "extract"],
        progress=False,
    )
    assert {p: p.stat().st_mtime_ns for p in watched} == before
