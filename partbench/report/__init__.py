"""The report stage: our numbers beside the paper's, claims C1–C11, figures, aggregate files."""

from partbench.report.build import ReportSummary, build_report
from partbench.report.claims import ClaimResult, check_claims
from partbench.report.reference import PaperCell, load_paper_cells
from partbench.report.tables import DEFAULT_TOLERANCE

__all__ = [
    "DEFAULT_TOLERANCE",
    "ClaimResult",
    "PaperCell",
    "ReportSummary",
    "build_report",
    "check_claims",
    "load_paper_cells",
]
