"""The paper's claims C1–C11 (paper.md section 4), each a small function of a score table.

A score table maps `(model, Column)` to a number (ours, or the paper's in the tests). A claim is a
list of ordered pairs "A beats B on column X (by more than m points)"; it *holds* when every pair
with both numbers present holds, *fails* when one of them fails, and has *not enough results* when
no pair can be judged. Partial evidence is said in the detail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from partbench.report.mapping import SEGMENT_FEATURE, SELF_SUPERVISED, Column, display_model
from partbench.report.tables import column_header

Scores = Mapping[tuple[str, Column], float]

HOLDS = "holds"
FAILS = "fails"
NOT_ENOUGH = "not enough results"

PART_DATASETS = ("cub-parts", "coco-parts")
PART_SEG = tuple(
    Column("segmentation", d, SEGMENT_FEATURE, "linear", "mIoU")
    for d in ("ade20k-part-209", "pascal-part-193", "lip-19")
)
ADE150 = Column("segmentation", "ade20k-150", SEGMENT_FEATURE, "linear", "mIoU")
ADE_PART, PASCAL_PART, LIP = PART_SEG
IMAGENET = (
    Column("classification", "imagenet-1k", "cls_token", "linear", "top1"),
    Column("classification", "imagenet-1k", "tokens", "attentive", "top1"),
)
OBJECT_LEVEL = (*IMAGENET, ADE150)


def encoded(dataset: str) -> Column:
    return Column("retrieval", dataset, "encoded", "-", "AP")


def projected(dataset: str) -> Column:
    return Column("retrieval", dataset, "projected", "-", "AP")


def classified(dataset: str, probe: str) -> Column:
    return Column("classification", dataset, "cls_token" if probe == "linear" else "tokens", probe, "top1")


PART_CLASSIFICATION = tuple(classified(d, p) for d in PART_DATASETS for p in ("linear", "attentive"))
PART_RETRIEVAL = tuple(encoded(d) for d in PART_DATASETS)
# Every primary-metric column of Tables 1-4 (projected retrieval has only three methods: left out).
ALL_COLUMNS = (*OBJECT_LEVEL, *PART_RETRIEVAL, *PART_CLASSIFICATION, *PART_SEG)


@dataclass(frozen=True)
class Pair:
    """`better` on `column` beats `worse` on `worse_column` (default: the same) by more than `margin`."""

    better: str
    worse: str
    column: Column
    margin: float = 0.0
    worse_column: Column | None = None

    def describe(self, a: float, b: float) -> str:
        need = f" + {self.margin:g}" if self.margin > 0 else (f" − {-self.margin:g}" if self.margin else "")
        if self.worse_column is None:
            where = column_header(self.column)
            return (
                f"{display_model(self.better)} {a:.1f} ≤ {display_model(self.worse)} {b:.1f}{need} ({where})"
            )
        return (
            f"{display_model(self.better)} {column_header(self.column)} {a:.1f} ≤ "
            f"{column_header(self.worse_column)} {b:.1f}{need}"
        )


@dataclass(frozen=True)
class ClaimResult:
    claim_id: str
    statement: str
    status: str
    detail: str


def judge(claim_id: str, statement: str, pairs: list[Pair], scores: Scores) -> ClaimResult:
    """Judge every pair that has both numbers; say how many could not be judged."""
    judged, failed = 0, []
    for p in pairs:
        a = scores.get((p.better, p.column))
        b = scores.get((p.worse, p.worse_column or p.column))
        if a is None or b is None:
            continue
        judged += 1
        if not a - b > p.margin:
            failed.append(p.describe(a, b))
    missing = len(pairs) - judged
    gap = f"; {missing} of {len(pairs)} lack results" if missing else ""
    if judged == 0:
        return ClaimResult(claim_id, statement, NOT_ENOUGH, f"none of {len(pairs)} comparisons has results")
    if failed:
        shown = "; ".join(failed[:4]) + (f"; …{len(failed) - 4} more" if len(failed) > 4 else "")
        return ClaimResult(claim_id, statement, FAILS, f"{len(failed)} of {judged} fail: {shown}{gap}")
    return ClaimResult(claim_id, statement, HOLDS, f"all {judged} comparisons hold{gap}")


def _beats(better: str, others: tuple[str, ...] | list[str], columns, margin: float = 0.0) -> list[Pair]:
    return [Pair(better, o, c, margin) for c in columns for o in others if o != better]


def c1(s: Scores) -> ClaimResult:
    others = ("mocov3", "dino", "beit", "mae", "cae")
    return judge(
        "C1",
        "DeiT beats all CL/MIM methods except iBOT at object level",
        _beats("deit", others, OBJECT_LEVEL),
        s,
    )


def c2(s: Scores) -> ClaimResult:
    pairs = [Pair("deit", "dino", ADE150), Pair("deit", "cae", ADE150)]
    pairs += [Pair("dino", "deit", ADE_PART), Pair("cae", "deit", ADE_PART)]
    return judge("C2", "DeiT > DINO, CAE on ADE20K objects, but DINO, CAE > DeiT on ADE20K-Part", pairs, s)


def c3(s: Scores) -> ClaimResult:
    pairs = [
        Pair(m, m, encoded(d), worse_column=projected(d))
        for m in ("mocov3", "dino", "ibot")
        for d in PART_DATASETS
    ]
    return judge("C3", "projected features are worse than encoded ones for part retrieval", pairs, s)


def c4(s: Scores) -> ClaimResult:
    pairs = _beats("deit", ("beit", "mae"), PART_RETRIEVAL)
    pairs += [Pair(m, "deit", c) for c in PART_RETRIEVAL for m in ("mocov3", "dino", "cae", "ibot")]
    return judge("C4", "in part retrieval every SSL method except BEiT and MAE beats DeiT", pairs, s)


def c5(s: Scores) -> ClaimResult:
    others = ("deit", *[m for m in SELF_SUPERVISED if m != "ibot"])
    return judge("C5", "iBOT performs best in part retrieval", _beats("ibot", others, PART_RETRIEVAL), s)


def c6(s: Scores) -> ClaimResult:
    pairs = [Pair(m, "deit", c, 2.0) for c in PART_CLASSIFICATION for m in ("mocov3", "dino", "ibot")]
    return judge("C6", "MoCo v3, DINO, iBOT beat DeiT by >2 points in part classification", pairs, s)


COMPETITIVE = 2.0  # "competitive" = at most this many points below DeiT


def c7(s: Scores) -> ClaimResult:
    linear = [classified(d, "linear") for d in PART_DATASETS]
    attentive = [classified(d, "attentive") for d in PART_DATASETS]
    pairs = [Pair(m, "deit", c, -COMPETITIVE) for c in linear for m in ("cae", "mae")]
    pairs += [Pair(m, "deit", c) for c in attentive for m in ("cae", "mae")]
    statement = (
        f"CAE, MAE competitive with DeiT in linear (> DeiT − {COMPETITIVE:g}) "
        "and higher in attentive part classification"
    )
    return judge("C7", statement, pairs, s)


def c8(s: Scores) -> ClaimResult:
    return judge(
        "C8",
        "CAE beats DeiT on all three part segmentation sets",
        [Pair("cae", "deit", c) for c in PART_SEG],
        s,
    )


def c9(s: Scores) -> ClaimResult:
    everyone = ("deit", *SELF_SUPERVISED)
    pairs = _beats("ibot", everyone, PART_SEG) + _beats("ibot", SELF_SUPERVISED, OBJECT_LEVEL)
    return judge(
        "C9", "iBOT best on all part segmentation sets and best SSL method at object level", pairs, s
    )


def c10(s: Scores) -> ClaimResult:
    everyone = ("deit", *SELF_SUPERVISED)
    pairs = [Pair(o, "beit", c) for c in ALL_COLUMNS for o in everyone if o != "beit"]
    pairs += [Pair(o, "mae", c) for c in ALL_COLUMNS for o in everyone if o not in ("beit", "mae")]
    return judge("C10", "BEiT lowest and MAE second-lowest in every column, both levels", pairs, s)


def c11(s: Scores) -> ClaimResult:
    pairs = [Pair("dino", "deit", ADE_PART), Pair("dino", "deit", PASCAL_PART), Pair("mocov3", "deit", LIP)]
    return judge("C11", "DINO > DeiT on ADE20K-Part and Pascal-Part; MoCo v3 > DeiT on LIP", pairs, s)


CLAIMS: tuple[Callable[[Scores], ClaimResult], ...] = (c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11)


def check_claims(scores: Scores) -> list[ClaimResult]:
    """C1–C11 judged on `scores`."""
    return [claim(scores) for claim in CLAIMS]
