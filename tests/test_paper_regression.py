"""`pytest -m paper`: every cell of the paper's Tables 1-4 against our reproduced number.

One test per row of `reports/paper/paper_tables.csv` (146). A cell is skipped, with the reason, until
a real result exists: a result JSON under `results/` (repo root) with `config.suite == "paper"` and
`config.protocol == "study"` (the protocol that produced the paper's numbers). When present it must
agree within the report's tolerance (`partbench.report.DEFAULT_TOLERANCE`, ±1.0 point).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from partbench.report import DEFAULT_TOLERANCE, load_paper_cells
from partbench.report.reference import PaperCell
from partbench.report.results import PAPER_SUITE, load_measurements
from partbench.report.tables import pick

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
CELLS = load_paper_cells(REPO / "reports" / "paper" / "paper_tables.csv")

pytestmark = pytest.mark.paper


@pytest.fixture(scope="module")
def reproduced() -> dict:
    """`{(model, column): Measurement}` of the paper suite, study protocol (empty without results)."""
    if not RESULTS.is_dir():
        return {}
    chosen, _ = pick(load_measurements(RESULTS, suite=PAPER_SUITE))
    return {(model, col): m for (_, protocol, model, col), m in chosen.items() if protocol == "study"}


def test_every_cell_has_a_test():
    assert len(CELLS) == 146


@pytest.mark.parametrize("cell", CELLS, ids=[c.cell_id for c in CELLS])
def test_reproduced_cell_within_tolerance(cell: PaperCell, reproduced: dict):
    ours = reproduced.get((cell.model, cell.column))
    if ours is None:
        c = cell.column
        pytest.skip(
            f"no real result for {cell.method} {c.task}/{c.dataset}/{c.feature}/{c.probe} {c.metric} "
            f"(needs a suite 'paper', protocol 'study' result under {RESULTS}; run `make reproduce`)"
        )
    tol = DEFAULT_TOLERANCE[cell.column.metric]
    assert abs(ours.value - cell.value) <= tol + 1e-9, (
        f"{ours.path}: {cell.column.metric} {ours.value:.2f} vs paper {cell.value} "
        f"(Δ {ours.value - cell.value:+.2f}, tolerance ±{tol})"
    )
