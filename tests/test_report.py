"""The report: paper CSV loader, result→cell mapping, cells with Δ and ✓/✗, files written, bad inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from partbench.cli import app
from partbench.errors import PartbenchError
from partbench.probes.results import result_path, write_result
from partbench.report import build_report, load_paper_cells
from partbench.report.mapping import ENCODED_CLS, Column, column_for
from partbench.report.reference import ReferenceError
from partbench.report.tables import parse_tolerance

REPO = Path(__file__).resolve().parents[1]
PROJECT_CSV = REPO / "reports" / "paper" / "paper_tables.csv"
SHARED_CSV = REPO.parent / "shared" / "reference" / "paper_tables.csv"


def put(
    results: Path,
    task,
    dataset,
    model,
    feature,
    probe,
    metrics,
    suite="paper",
    protocol="study",
    variant=None,
):
    """Write one result JSON exactly as the probes do (partbench.probes.results.write_result)."""
    config = dict(
        task=task, dataset=dataset, model=model, feature=feature, probe=probe, protocol=protocol, suite=suite
    )
    path = result_path(results, task, dataset, model, variant or f"{feature}-{probe}-{suite}-{protocol}")
    return write_result(path, metrics, config, {"created": "2026-01-01T00:00:00+00:00"})


# --- the paper's numbers ------------------------------------------------------------------------


def test_paper_csv_has_the_146_cells_of_tables_1_to_4():
    cells = load_paper_cells(PROJECT_CSV)
    assert len(cells) == 146
    by_table = {t: sum(c.table == t for c in cells) for t in ("table1", "table2", "table3", "table4")}
    assert by_table == {"table1": 14, "table2": 21, "table3": 48, "table4": 63}
    # spot checks read from paper.md's tables
    values = {c.cell_id: c.value for c in cells}
    assert values["table3/retrieval/cub-parts/encoded/-/AP/cae"] == 58.0
    assert values["table3/retrieval/coco-parts/projected/-/AP/ibot"] == 41.5
    assert values["table4/segmentation/lip-19/layers_4_6_8_12/linear/aAcc/ibot"] == 76.6
    assert values["table1/classification/imagenet-1k/tokens/attentive/top1/beit"] == 51.9


@pytest.mark.skipif(
    not SHARED_CSV.parent.parent.exists(), reason="../shared (the team's shared folder) is absent"
)
def test_project_copy_of_the_paper_csv_equals_the_shared_reference():
    assert PROJECT_CSV.read_bytes() == SHARED_CSV.read_bytes()


def test_bad_reference_files_name_file_and_line(tmp_path):
    bad = tmp_path / "p.csv"
    bad.write_text("table,method,value\n")
    with pytest.raises(ReferenceError, match=r"p\.csv: header"):
        load_paper_cells(bad)
    header = PROJECT_CSV.read_text().splitlines()[0]
    bad.write_text(header + "\ntable1,object,classification,imagenet-1k,DeiT,cls_token,linear,top1,abc,x\n")
    with pytest.raises(ReferenceError, match=r"p.csv:2: value 'abc'"):
        load_paper_cells(bad)
    bad.write_text(header + "\ntable1,object,classification,imagenet-1k,SimCLR,cls_token,linear,top1,1,x\n")
    with pytest.raises(ReferenceError, match=r"p.csv:2: unknown method 'SimCLR'"):
        load_paper_cells(bad)
    with pytest.raises(ReferenceError, match=r"missing\.csv: cannot read"):
        load_paper_cells(tmp_path / "missing.csv")


# --- mapping ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "metric", "column"),
    [
        (
            {"task": "retrieval", "dataset": "cub-parts", "feature": "embedding", "probe": "-"},
            "AP",
            Column("retrieval", "cub-parts", "encoded", "-", "AP"),
        ),
        (
            {"task": "retrieval", "dataset": "coco-parts", "feature": "projection"},
            "AP",
            Column("retrieval", "coco-parts", "projected", "-", "AP"),
        ),
        (
            {"task": "retrieval", "dataset": "coco-parts", "feature": "cls_token"},
            "AP",
            Column("retrieval", "coco-parts", ENCODED_CLS, "-", "AP"),
        ),
        (
            {"task": "classify", "dataset": "imagenet", "feature": "cls_token", "probe": "linear"},
            "top1",
            Column("classification", "imagenet-1k", "cls_token", "linear", "top1"),
        ),
        (
            {"task": "classify", "dataset": "cub-parts", "feature": "tokens", "probe": "attentive"},
            "top1",
            Column("classification", "cub-parts", "tokens", "attentive", "top1"),
        ),
        (
            {"task": "segment", "dataset": "ade20k-part", "feature": "layers_4_6_8_12", "probe": "linear"},
            "mIoU",
            Column("segmentation", "ade20k-part-209", "layers_4_6_8_12", "linear", "mIoU"),
        ),
        (
            {"task": "segment", "dataset": "lip", "feature": "layers_4_6_8_12", "probe": "-"},
            "aAcc",
            Column("segmentation", "lip-19", "layers_4_6_8_12", "linear", "aAcc"),
        ),
        # a depth-4 test encoder's default blocks stand in for ViT-B's 4/6/8/12
        (
            {"task": "segment", "dataset": "pascal-object", "feature": "layers_1_2_3_4", "probe": "linear"},
            "mIoU",
            Column("segmentation", "pascal-object-16", "layers_4_6_8_12", "linear", "mIoU"),
        ),
        # no paper column: linear probe on patch tokens, unknown data set, the layers sweep
        (
            {"task": "classify", "dataset": "cub-parts", "feature": "embedding", "probe": "linear"},
            "top1",
            None,
        ),
        ({"task": "retrieval", "dataset": "my-set", "feature": "embedding"}, "AP", None),
        ({"task": "layers", "dataset": "cub-parts", "feature": "block_3"}, "AP", None),
    ],
)
def test_result_config_maps_onto_the_paper_column(config, metric, column):
    assert column_for(config, metric) == column


def test_parse_tolerance():
    assert parse_tolerance(None) == {}
    assert parse_tolerance("2")["mIoU"] == 2.0 and parse_tolerance("2")["AP"] == 2.0
    assert parse_tolerance("AP=0.5, mIoU=1.5") == {"AP": 0.5, "mIoU": 1.5}
    with pytest.raises(ValueError, match="--tolerance"):
        parse_tolerance("AP:1")
    with pytest.raises(ValueError, match=">= 0"):
        parse_tolerance("-1")


# --- the report on hand-made results -------------------------------------------------------------


@pytest.fixture
def results(tmp_path) -> Path:
    r = tmp_path / "results"
    # DINO: within tolerance (48.5 vs 48.9), with a bootstrap interval
    put(
        r,
        "retrieval",
        "cub-parts",
        "dino",
        "embedding",
        "-",
        {"AP": 48.5, "mAP": 47.0, "ci95": {"AP": [47.9, 49.1]}},
    )
    put(r, "retrieval", "cub-parts", "dino", "projection", "-", {"AP": 31.0, "mAP": 30.0})
    put(r, "retrieval", "cub-parts", "dino", "cls_token", "-", {"AP": 45.0})
    # DeiT: out of tolerance (40.0 vs 35.0)
    put(r, "retrieval", "cub-parts", "deit", "embedding", "-", {"AP": 40.0})
    put(r, "retrieval", "coco-parts", "deit", "embedding", "-", {"AP": 44.1})
    # an encoder the paper does not have
    put(r, "retrieval", "cub-parts", "timm:vit_small_patch16_224", "embedding", "-", {"AP": 42.0})
    # segmentation, part and object level
    for model, part, obj in (("deit", 27.0, 35.0), ("dino", 29.5, 34.0)):
        put(
            r,
            "segment",
            "ade20k-part",
            model,
            "layers_4_6_8_12",
            "linear",
            {"mIoU": part, "mAcc": 36.0, "aAcc": 70.0},
        )
        put(
            r,
            "segment",
            "ade20k-object",
            model,
            "layers_4_6_8_12",
            "linear",
            {"mIoU": obj, "mAcc": 40.0, "aAcc": 70.0},
        )
    put(r, "segment", "ade20k-150", "deit", "layers_4_6_8_12", "linear", {"mIoU": 34.0})
    put(r, "segment", "ade20k-150", "dino", "layers_4_6_8_12", "linear", {"mIoU": 33.0})
    # a number with no paper column
    put(r, "classify", "cub-parts", "dino", "embedding", "linear", {"top1": 91.0})
    return r


def test_report_cells_show_ours_paper_delta_and_mark(results, tmp_path):
    out = tmp_path / "reports"
    s = build_report(results, PROJECT_CSV, out)
    table3 = (out / "table3.md").read_text()
    dino = next(line for line in table3.splitlines() if line.startswith("| DINO"))
    # 48.5 ± (49.1-47.9)/2, paper 48.9, Δ -0.4 -> within ±1.0
    assert "48.5 ±0.6 (paper 48.9, Δ −0.4) ✓" in dino
    assert "31.0 (paper 31.7, Δ −0.7) ✓" in dino  # projected
    assert "45.0 (paper 48.9, Δ −3.9) |" in dino  # encoded (cls): shown, never judged
    assert "| study | paper |" in dino
    deit = next(line for line in table3.splitlines() if line.startswith("| DeiT"))
    assert "40.0 (paper 35.0, Δ +5.0) ✗" in deit
    assert "44.1 (paper 44.1, Δ +0.0) ✓" in deit
    assert "— (paper 90.9)" in deit  # no result yet for CUB linear classification
    # rows: the paper's seven in its order, then extras
    labels = [
        line.split("|")[1].strip()
        for line in table3.splitlines()
        if line.startswith("| ") and "---" not in line
    ]
    assert labels[1:] == [
        "DeiT",
        "MoCo v3",
        "DINO",
        "BEiT",
        "MAE",
        "CAE",
        "iBOT",
        "timm:vit_small_patch16_224",
    ]
    assert "| timm:vit_small_patch16_224 | study | paper | 42.0 |" in table3
    # judged: DINO CUB enc ✓, proj ✓, DeiT CUB ✗, COCO ✓; ADE-Part DeiT 27.0/36.0/70.0 vs 27.3/34.7/69.2
    # (mAcc ✗), DINO 29.5/36.0/70.0 vs 28.9/36.8/70.3 ✓✓✓; ADE-150 DeiT 34.0 vs 34.9 ✓, DINO 33.0 vs 34.5 ✗.
    # Fig. 6 repeats the ADE-Part mIoU column: shown, not judged twice.
    assert (s.n_compared, s.n_within) == (12, 9)
    assert not s.smoke
    assert "SMOKE" not in (out / "report.md").read_text()
    with pytest.raises(StopIteration):
        next(line for line in table3.splitlines() if "tolerance 1" in line)


def test_report_writes_every_file_and_the_claims(results, tmp_path):
    out = tmp_path / "reports"
    s = build_report(results, PROJECT_CSV, out)
    for name in ("report.md", "table1.md", "table2.md", "table3.md", "table4.md", "fig6.md", "claims.md"):
        assert (out / name).is_file(), name
    for png in ("part_vs_object.png", "retrieval_encoded_vs_projected.png"):
        assert (out / "figures" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    claims = {r.claim_id: r for r in s.claims[("paper", "study")]}
    # C2 on these numbers: DeiT 34.0 > DINO 33.0 on ADE-150 and DINO 29.5 > DeiT 27.0 on ADE-Part;
    # CAE has no result -> 2 of 4 judged, both hold
    assert claims["C2"].status == "holds" and "2 of 4 lack results" in claims["C2"].detail
    # C4 on CUB: DINO 48.5 > DeiT 40.0 (others missing)
    assert claims["C4"].status == "holds"
    # C3: DINO encoded 48.5 > projected 31.0
    assert claims["C3"].status == "holds" and "1 of 6" not in claims["C3"].detail
    assert claims["C8"].status == "not enough results"
    report = (out / "report.md").read_text()
    assert "C11" in report and "figures/part_vs_object.png" in report
    assert (
        "Other results (no paper column)" in report
        and "| dino | classify | cub-parts | embedding |" in report
    )
    fig6 = (out / "fig6.md").read_text()
    # object-level columns have no paper value; the part column shows Table 4's value, unjudged
    assert "| DeiT | study | paper | 35.0 | 27.0 (paper 27.3, Δ −0.3) | — | — (paper 27.4) |" in fig6


def test_aggregate_has_every_number_with_the_paper_beside_it(results, tmp_path):
    out = tmp_path / "reports"
    build_report(results, PROJECT_CSV, out)
    rows = list(csv.DictReader((out / "aggregate.csv").open()))
    data = json.loads((out / "aggregate.json").read_text())["rows"]
    assert len(rows) == len(data) == 2 + 2 + 1 + 1 + 1 + 1 + 4 * 3 + 2 + 1  # every numeric metric
    dino = next(
        r for r in data if r["model"] == "dino" and r["feature"] == "embedding" and r["metric"] == "AP"
    )
    assert dino["paper_value"] == 48.9 and dino["within_tolerance"] is True and dino["ci95_lo"] == 47.9
    assert dino["delta"] == pytest.approx(-0.4)
    cls = next(r for r in data if r["feature"] == "cls_token" and r["task"] == "retrieval")
    assert cls["paper_value"] == 48.9 and cls["within_tolerance"] is None  # shown, not judged
    obj = next(
        r for r in data if r["dataset"] == "ade20k-object" and r["metric"] == "mIoU" and r["model"] == "deit"
    )
    assert obj["paper_value"] is None
    assert {r["suite"] for r in rows} == {"paper"}


def test_custom_tolerance_changes_the_marks(results, tmp_path):
    s = build_report(results, PROJECT_CSV, tmp_path / "r", tolerance={"AP": 6.0})
    assert "40.0 (paper 35.0, Δ +5.0) ✓" in (tmp_path / "r" / "table3.md").read_text()
    assert s.n_within == 10


def test_smoke_results_get_the_banner_and_their_own_rows(results, tmp_path):
    put(results, "retrieval", "cub-parts", "dino", "embedding", "-", {"AP": 12.0}, suite="smoke")
    out = tmp_path / "reports"
    s = build_report(results, PROJECT_CSV, out)
    assert s.smoke
    for name in ("report.md", "table3.md", "claims.md"):
        assert "synthetic data and randomly initialised tiny encoders" in (out / name).read_text()
    table3 = (out / "table3.md").read_text()
    assert "| DINO | study | smoke | 12.0 (paper 48.9, Δ −36.9) ✗" in table3
    assert "| DINO | study | paper | 48.5" in table3  # never mixed into the smoke row
    assert set(s.claims) == {("paper", "study"), ("smoke", "study")}
    assert (out / "figures" / "part_vs_object__paper-study.png").exists()
    only_paper = build_report(results, PROJECT_CSV, tmp_path / "p", suite="paper")
    assert not only_paper.smoke


def test_duplicate_results_keep_the_newest_and_say_so(tmp_path):
    r = tmp_path / "results"
    put(r, "retrieval", "cub-parts", "dino", "embedding", "-", {"AP": 40.0}, variant="a")
    path = result_path(r, "retrieval", "cub-parts", "dino", "b")
    cfg = dict(
        task="retrieval", dataset="cub-parts", model="dino", feature="embedding", probe="-", suite="paper"
    )
    write_result(path, {"AP": 49.0}, cfg, {"created": "2026-02-01T00:00:00+00:00"})
    build_report(r, PROJECT_CSV, tmp_path / "out")
    report = (tmp_path / "out" / "report.md").read_text()
    assert "49.0 (paper 48.9, Δ +0.1) ✓" in report
    assert "dino__b.json used" in report and "dino__a.json ignored" in report


def test_protocols_get_separate_rows(tmp_path):
    r = tmp_path / "results"
    put(r, "retrieval", "cub-parts", "mae", "embedding", "-", {"AP": 28.0}, protocol="study")
    put(r, "retrieval", "cub-parts", "mae", "embedding", "-", {"AP": 33.0}, protocol="clean")
    build_report(r, PROJECT_CSV, tmp_path / "out")
    t3 = (tmp_path / "out" / "table3.md").read_text()
    assert "| MAE | clean | paper | 33.0 (paper 28.5, Δ +4.5) ✗" in t3
    assert "| MAE | study | paper | 28.0 (paper 28.5, Δ −0.5) ✓" in t3


def test_each_result_file_is_read_once_per_report(results, tmp_path, monkeypatch):
    """The tables and the "Beyond the paper" section share one read of the result files."""
    import partbench.probes.results as probe_results

    reads: list[Path] = []
    real = probe_results.read_result
    monkeypatch.setattr(probe_results, "read_result", lambda path: reads.append(path) or real(path))
    build_report(results, PROJECT_CSV, tmp_path / "out")
    on_disk = sorted(results.rglob("*.json"))
    assert len(on_disk) == 13 and sorted(reads) == on_disk


# --- bad inputs ---------------------------------------------------------------------------------


def test_bad_results_are_one_line_errors_naming_the_file(tmp_path):
    r = tmp_path / "results"
    with pytest.raises(PartbenchError, match="results: no results folder"):
        build_report(r, PROJECT_CSV, tmp_path / "out")
    r.mkdir()
    with pytest.raises(PartbenchError, match="no result files"):
        build_report(r, PROJECT_CSV, tmp_path / "out")
    bad = r / "retrieval" / "cub-parts" / "x.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(PartbenchError, match=r"x\.json: not a readable result file"):
        build_report(r, PROJECT_CSV, tmp_path / "out")
    bad.write_text(
        json.dumps(
            {
                "metrics": {"AP": 150.0},
                "config": {"task": "retrieval", "dataset": "cub-parts", "model": "dino"},
                "provenance": {},
            }
        )
    )
    with pytest.raises(PartbenchError, match=r"x\.json: metric AP=150\.0 is not a percentage"):
        build_report(r, PROJECT_CSV, tmp_path / "out")
    bad.write_text(
        json.dumps(
            {
                "metrics": {"AP": 50.0, "ci95": {"AP": [1]}},
                "config": {"task": "retrieval", "dataset": "cub-parts", "model": "dino"},
                "provenance": {},
            }
        )
    )
    with pytest.raises(PartbenchError, match=r"x.json: metrics.ci95.AP must be \[lo, hi\]"):
        build_report(r, PROJECT_CSV, tmp_path / "out")
    bad.write_text(json.dumps({"metrics": {"AP": 50.0}, "config": {"task": "retrieval"}, "provenance": {}}))
    with pytest.raises(PartbenchError, match=r"x\.json: config lacks dataset, model"):
        build_report(r, PROJECT_CSV, tmp_path / "out")
    assert not (tmp_path / "out" / "report.md").exists()  # nothing half-written


def test_cli_report(results, tmp_path):
    out = tmp_path / "cli-out"
    res = CliRunner().invoke(
        app,
        [
            "report",
            "--results-dir",
            str(results),
            "--reference",
            str(PROJECT_CSV),
            "--out",
            str(out),
            "--tolerance",
            "AP=6",
        ],
    )
    assert res.exit_code == 0, res.output
    assert f"report: {out / 'report.md'}" in res.output
    assert "40.0 (paper 35.0, Δ +5.0) ✓" in (out / "table3.md").read_text()
    bad = CliRunner().invoke(app, ["report", "--results-dir", str(results), "--tolerance", "AP:6"])
    assert bad.exit_code != 0


def test_cli_reference_paper_names_the_papers_table(results, tmp_path, monkeypatch):
    """DESIGN: `partbench report --reference paper`; any other value is a path to a CSV."""
    monkeypatch.chdir(tmp_path)  # no reports/paper/ here: the CSV beside the source checkout is used
    res = CliRunner().invoke(app, ["report", "--results-dir", str(results), "--reference", "paper"])
    assert res.exit_code == 0, res.output
    assert f"`{PROJECT_CSV.as_posix()}`" in (tmp_path / "reports" / "report.md").read_text()
    assert "40.0 (paper 35.0, Δ +5.0) ✗" in (tmp_path / "reports" / "table3.md").read_text()
    with pytest.raises(ReferenceError, match=r"papers\.csv: cannot read"):
        build_report(results, tmp_path / "papers.csv", tmp_path / "out")


def test_paper_regression_asserts_when_a_real_result_is_present(tmp_path):
    """`-m paper` (test_paper_regression.py): passes within tolerance, fails outside, skips without."""
    from test_paper_regression import test_reproduced_cell_within_tolerance as check

    cell = next(
        c
        for c in load_paper_cells(PROJECT_CSV)
        if c.cell_id == "table3/retrieval/cub-parts/encoded/-/AP/dino"
    )
    r = tmp_path / "results"
    put(r, "retrieval", "cub-parts", "dino", "embedding", "-", {"AP": 49.8}, variant="near")
    put(r, "retrieval", "cub-parts", "mae", "embedding", "-", {"AP": 31.0}, variant="far")
    from partbench.report.results import load_measurements
    from partbench.report.tables import pick

    chosen, _ = pick(load_measurements(r))
    reproduced = {(model, col): m for (_, _, model, col), m in chosen.items()}
    check(cell, reproduced)  # 49.8 vs 48.9
    mae = next(
        c for c in load_paper_cells(PROJECT_CSV) if c.cell_id == "table3/retrieval/cub-parts/encoded/-/AP/mae"
    )
    with pytest.raises(AssertionError, match=r"AP 31.00 vs paper 28.5 \(Δ \+2.50, tolerance ±1.0\)"):
        check(mae, reproduced)
    with pytest.raises(pytest.skip.Exception, match="no real result for DINO"):
        check(cell, {})


def test_fast_mode_segmentation_gets_its_own_protocol_label(tmp_path):
    r = tmp_path / "results"
    put(r, "segment", "lip", "cae", "layers_4_6_8_12", "linear", {"mIoU": 43.5}, variant="linear")
    path = result_path(r, "segment", "lip", "cae", "linear-fast")
    cfg = dict(
        task="segment",
        dataset="lip",
        model="cae",
        feature="layers_4_6_8_12",
        probe="linear",
        protocol="study",
        suite="paper",
        mode="fast",
    )
    write_result(path, {"mIoU": 40.0}, cfg, {"created": "2026-01-02T00:00:00+00:00"})
    build_report(r, PROJECT_CSV, tmp_path / "out")
    t4 = (tmp_path / "out" / "table4.md").read_text()
    assert "| CAE | study | paper | — (paper 43.7) | — (paper 55.1) | — (paper 75.9) |" not in t4
    assert "| CAE | study | paper |" in t4 and "43.5 (paper 43.7, Δ −0.2) ✓" in t4
    assert "| CAE | study/fast | paper |" in t4 and "40.0 (paper 43.7, Δ −3.7) ✗" in t4
