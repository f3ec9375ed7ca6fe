"""The one place where our result vocabulary meets the paper's table vocabulary.

A result file says `{task, dataset, model, feature, probe, protocol}` in partbench's words
(`classify`, `ade20k-part`, `dino`, `embedding`); `paper_tables.csv` says
`{task, dataset, method, feature, probe}` in the paper's words (`classification`,
`ade20k-part-209`, `DINO`, `encoded`). Everything that translates between the two lives here.
"""

from __future__ import annotations

from dataclasses import dataclass

# partbench encoder name -> the paper's method name, in the paper's row order.
PAPER_METHODS: dict[str, str] = {
    "deit": "DeiT",
    "mocov3": "MoCo v3",
    "dino": "DINO",
    "beit": "BEiT",
    "mae": "MAE",
    "cae": "CAE",
    "ibot": "iBOT",
}
METHOD_TO_MODEL: dict[str, str] = {v: k for k, v in PAPER_METHODS.items()}

# The paper's row groups (used by the claims).
SUPERVISED = ("deit",)
CONTRASTIVE = ("mocov3", "dino")
MIM = ("beit", "mae", "cae")
CONTRASTIVE_MIM = ("ibot",)
SELF_SUPERVISED = CONTRASTIVE + MIM + CONTRASTIVE_MIM

# result task -> CSV task
TASKS: dict[str, str] = {"retrieval": "retrieval", "classify": "classification", "segment": "segmentation"}

# result dataset -> CSV dataset (sets the paper has no table for keep a descriptive name)
DATASETS: dict[str, str] = {
    "cub-parts": "cub-parts",
    "coco-parts": "coco-parts",
    "ade20k-part": "ade20k-part-209",
    "ade20k-object": "ade20k-object-59",
    "ade20k-150": "ade20k-150",
    "pascal-part": "pascal-part-193",
    "pascal-object": "pascal-object-16",
    "lip": "lip-19",
    "imagenet": "imagenet-1k",
}

SEGMENT_FEATURE = "layers_4_6_8_12"

# Extra feature column of the retrieval tables: the study printed AP for both the patch-token mean
# (`embedding`, our reading of "Encoded") and the cls token; the cls token is shown beside it.
ENCODED_CLS = "encoded (cls)"

# Main metric of each task (what the claims and figures compare).
PRIMARY_METRIC: dict[str, str] = {"retrieval": "AP", "classification": "top1", "segmentation": "mIoU"}


@dataclass(frozen=True, order=True)
class Column:
    """One column of a paper table, in the paper's vocabulary (`feature` may be `ENCODED_CLS`)."""

    task: str
    dataset: str
    feature: str
    probe: str
    metric: str

    @property
    def reference(self) -> Column:
        """The paper column whose value this column is compared with (`encoded (cls)` -> `encoded`)."""
        if self.feature == ENCODED_CLS:
            return Column(self.task, self.dataset, "encoded", self.probe, self.metric)
        return self


def paper_feature(task: str, feature: str, probe: str) -> tuple[str, str] | None:
    """(feature, probe) in the paper's words for a result's (task, feature, probe), or None."""
    if task == "retrieval":
        names = {"embedding": "encoded", "cls_token": ENCODED_CLS, "projection": "projected"}
        return (names[feature], "-") if feature in names else None
    if task == "classify":
        pairs = {("cls_token", "linear"): "cls_token", ("tokens", "attentive"): "tokens"}
        return (pairs[(feature, probe)], probe) if (feature, probe) in pairs else None
    if task == "segment" and feature.startswith("layers_"):
        # the encoder's default segmentation blocks: 4/6/8/12 on ViT-B, all four on a depth-4 test encoder
        return SEGMENT_FEATURE, "linear"
    return None


def column_for(config: dict, metric: str) -> Column | None:
    """The paper-vocabulary column a result's metric belongs to, or None if it has no such column.

    `config` is a result file's `config` block (task, dataset, feature, probe).
    """
    task = TASKS.get(str(config.get("task")))
    dataset = DATASETS.get(str(config.get("dataset")))
    if task is None or dataset is None:
        return None
    fp = paper_feature(str(config["task"]), str(config.get("feature", "")), str(config.get("probe", "-")))
    if fp is None:
        return None
    return Column(task, dataset, fp[0], fp[1], metric)


def display_model(model: str) -> str:
    """Row label: the paper's name for the seven, our name for everything else."""
    return PAPER_METHODS.get(model, model)


def model_sort_key(model: str) -> tuple[int, str]:
    """The paper's row order first, then extra encoders alphabetically."""
    order = list(PAPER_METHODS)
    return (order.index(model), "") if model in PAPER_METHODS else (len(order), model)
