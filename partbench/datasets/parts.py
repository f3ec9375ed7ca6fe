"""Part-patch data sets (``cub-parts``, ``coco-parts``): specs, roots, and ``part_patches``.

``part_patches(name, root, split, protocol)`` returns the list of ``PartItem`` the study crops
(readers in ``cub.py`` / ``coco.py``, crop rule in ``crops.py``); ``part_images_dir`` is the
folder that ``PartItem.image`` is relative to; ``resolve_data_root`` finds the layout root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from partbench.config import Protocol, as_protocol, data_dir
from partbench.datasets.coco import COCO_CLASSES, COCO_KEYPOINTS, coco_images_dir, coco_part_patches
from partbench.datasets.crops import NEIGHBOURS, PartItem
from partbench.datasets.cub import CUB_CLASSES, CUB_KEYPOINTS, cub_part_patches
from partbench.errors import DatasetError

PART_SPLITS: tuple[str, ...] = ("retrieval", "train", "val")


@dataclass(frozen=True)
class PartDatasetSpec:
    """A keypoint data set cut into part patches.

    ``keypoints`` are the study's 1-indexed ids in label order; ``classes`` their names;
    ``marker`` is the path whose presence identifies the layout root; ``official_images`` the
    image count of each split of the official release (``partbench datasets --check`` flags a
    set that has more than half of them but not all: an incomplete or altered download).
    """

    name: str
    description: str
    keypoints: tuple[int, ...]
    classes: tuple[str, ...]
    marker: str
    official_images: tuple[tuple[str, int], ...] = ()
    splits: tuple[str, ...] = PART_SPLITS

    @property
    def num_classes(self) -> int:
        return len(self.classes)


PART_DATASETS: dict[str, PartDatasetSpec] = {
    "cub-parts": PartDatasetSpec(
        name="cub-parts",
        description="CUB-200-2011 part patches: right eye, right leg, left wing, tail (visible only)",
        keypoints=CUB_KEYPOINTS,
        classes=CUB_CLASSES,
        marker="images.txt",
        official_images=(("retrieval", 11788), ("train", 5994), ("val", 5794)),
    ),
    "coco-parts": PartDatasetSpec(
        name="coco-parts",
        description="COCO 2017 person-keypoint patches: nose, right wrist, left ankle (v=2 only)",
        keypoints=COCO_KEYPOINTS,
        classes=COCO_CLASSES,
        marker="annotations",
        official_images=(("train", 118287), ("val", 5000)),  # retrieval = train2017
    ),
}


def _spec(name: str) -> PartDatasetSpec:
    try:
        return PART_DATASETS[name]
    except KeyError:
        raise DatasetError(f"{name}: not a part data set (known: {', '.join(PART_DATASETS)})") from None


def _check_split(name: str, split: str) -> None:
    if split not in PART_SPLITS:
        raise DatasetError(f"{name}: unknown split {split!r} (known: {', '.join(PART_SPLITS)})")


def _find_layout(base: Path, marker: str, depth: int = 2) -> Path:
    """``base`` if ``base/marker`` exists, else the only folder up to ``depth`` levels below
    that holds it (shallowest level first); ``base`` when none or several do."""
    if (base / marker).exists() or not base.is_dir():
        return base
    level = [base]
    for _ in range(depth):
        level = [d for parent in level for d in sorted(parent.iterdir()) if d.is_dir()]
        found = [d for d in level if (d / marker).exists()]
        if found:
            return found[0] if len(found) == 1 else base
    return base


def resolve_data_root(name: str, root: str | Path | None = None) -> Path:
    """The layout root of data set ``name``: ``root`` (default ``data_dir()/<name>``), or the only
    folder up to two levels below it holding the layout (e.g. ``data/cub-parts/CUB_200_2011/``
    with ``images.txt``, ``data/ade20k-object/ade_59object/ADEChallengeData2016/`` with
    ``images/training``). Unknown names come back as given.
    """
    base = Path(root).expanduser() if root is not None else data_dir() / name
    spec = PART_DATASETS.get(name)
    if spec is not None:
        return _find_layout(base, spec.marker)
    from partbench.datasets.segmentation import SEG_DATASETS

    seg = SEG_DATASETS.get(name)
    if seg is None:
        return base
    marker = seg.split_dirs(Path(), "train")[0]
    return _find_layout(base, str(marker))


def part_images_dir(name: str, root: str | Path | None, split: str) -> Path:
    """The folder that ``PartItem.image`` of this split is relative to."""
    _spec(name)
    _check_split(name, split)
    base = resolve_data_root(name, root)
    return base / "images" if name == "cub-parts" else coco_images_dir(base, split)


def part_patches(
    name: str,
    root: str | Path | None,
    split: str = "retrieval",
    protocol: str | Protocol = "study",
    neighbours: str | None = None,
) -> list[PartItem]:
    """The part patches of ``split`` (``retrieval`` | ``train`` | ``val``) of ``cub-parts`` or
    ``coco-parts``, in the study's order, with boxes exactly as cropped (see ``crops.py``).

    ``neighbours`` (``clean`` only): ``"selected"`` (default) or ``"all"`` keypoints define d.
    """
    _spec(name)
    _check_split(name, split)
    try:
        proto = as_protocol(protocol)
    except ValueError as exc:
        raise DatasetError(f"{name}: {exc}") from None
    if neighbours not in (None, *NEIGHBOURS) or (proto == Protocol.STUDY and neighbours == "all"):
        raise DatasetError(f"{name}: neighbours must be one of {NEIGHBOURS} ('all' only with protocol clean)")
    base = resolve_data_root(name, root)
    if not base.is_dir():
        raise DatasetError(f"{base}: data set folder not found (fetch {name} or pass its root)")
    read = cub_part_patches if name == "cub-parts" else coco_part_patches
    return read(base, split, proto, neighbours or "selected")
