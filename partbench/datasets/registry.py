"""The registry of every data set name: the two part-patch sets and the six segmentation sets.

``list_datasets()`` gives the names in the paper's order; ``dataset_info(name)`` a row of the
``partbench datasets`` table; ``dataset_present(name)`` whether its layout root sits under
``data_dir()`` (or the given root).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from partbench.config import data_dir
from partbench.datasets.parts import PART_DATASETS, resolve_data_root
from partbench.errors import DatasetError

ORDER: tuple[str, ...] = (
    "cub-parts", "coco-parts", "ade20k-part", "ade20k-object", "ade20k-150", "pascal-part",
    "pascal-object", "lip",
)  # fmt: skip


@dataclass(frozen=True)
class DatasetInfo:
    """One row of the registry: kind (``parts`` | ``segmentation``), splits, classes, description."""

    name: str
    kind: str
    splits: tuple[str, ...]
    num_classes: int
    description: str


def _seg_datasets() -> dict:
    from partbench.datasets.segmentation import SEG_DATASETS

    return SEG_DATASETS


def list_datasets() -> list[str]:
    """All data set names: the paper's eight first, then any other registered segmentation set."""
    names = [*PART_DATASETS, *_seg_datasets()]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def dataset_info(name: str) -> DatasetInfo:
    """The registry row of ``name``; a one-line error for unknown names."""
    if name in PART_DATASETS:
        spec = PART_DATASETS[name]
        return DatasetInfo(name, "parts", spec.splits, spec.num_classes, spec.description)
    seg = _seg_datasets().get(name)
    if seg is None:
        raise DatasetError(f"unknown data set {name!r}; known: {', '.join(list_datasets())}")
    from partbench.datasets.segmentation import SPLITS

    desc = f"{seg.level}-level segmentation ({seg.layout} layout, study folder {seg.study_folder})"
    return DatasetInfo(name, "segmentation", SPLITS, seg.num_classes, desc)


def dataset_present(name: str, root: str | Path | None = None) -> bool:
    """Whether the layout of ``name`` is found at ``root`` (default ``data_dir()/<name>``)."""
    base = resolve_data_root(name, Path(root) if root is not None else data_dir() / name)
    if name in PART_DATASETS:
        return (base / PART_DATASETS[name].marker).exists()
    seg = _seg_datasets()[name]
    return all(d.is_dir() for split in ("train", "val") for d in seg.split_dirs(base, split))


def dataset_rows(data_root: str | Path | None = None) -> list[tuple[DatasetInfo, bool]]:
    """Every registered data set with whether it is present under ``data_root`` (default
    ``data_dir()``): the rows of ``partbench datasets``."""
    base = Path(data_root) if data_root is not None else data_dir()
    return [(dataset_info(n), dataset_present(n, base / n)) for n in list_datasets()]
