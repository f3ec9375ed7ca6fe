"""``partbench datasets --check ROOT``: validate every data set present under ``ROOT/<name>/``.

``check_parts(name, root)`` has the shape of the segmentation helper's ``check_segmentation``:
``(counts, problems)``: ``counts[split][class]`` = part patches (study protocol),
``counts["images"][split]`` = images contributing patches, ``counts["listed_images"][split]`` =
images the split lists (CUB's ``images.txt`` / ``train_test_split.txt``, COCO's ``*.jpg``
files); ``problems`` = every problem found, one line each, collected rather than raised.
Images are opened (header only) to catch missing or unreadable files without decoding every pixel.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from partbench.config import Protocol
from partbench.datasets.coco import coco_part_patches
from partbench.datasets.crops import PartItem
from partbench.datasets.cub import cub_part_patches, read_images, read_split
from partbench.datasets.parts import PART_DATASETS, part_images_dir, resolve_data_root
from partbench.errors import DatasetError

Report = tuple[dict[str, dict[str, int]], list[str]]


def _image_problem(path: Path) -> str | None:
    try:
        with Image.open(path) as im:
            im.verify()
    except FileNotFoundError:
        return f"{path}: image not found"
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        return f"{path}: cannot decode image ({exc})"
    return None


def check_parts(name: str, root: str | Path) -> Report:
    """Counts per split and class, and every problem found, for ``cub-parts`` / ``coco-parts``.

    CUB: every image listed in ``images.txt`` must exist and open; COCO: every image that gives
    a patch. Annotation problems (malformed lines, bad JSON, empty splits) are one problem each.
    """
    spec = PART_DATASETS[name]
    base = resolve_data_root(name, root)
    counts: dict[str, dict[str, int]] = {"images": {}}
    problems: list[str] = []
    if not base.is_dir():
        return counts, [f"{base}: data set folder missing ({name})"]
    listed: dict[str, int] = {}
    if name == "cub-parts":
        try:  # every listed image, not only those with patches
            images = read_images(base)
            listed["retrieval"] = len(images)
            for image_id, (rel, lineno) in images.items():
                problem = _image_problem(base / "images" / rel)
                if problem:
                    problems.append(f"{base / 'images.txt'}:{lineno}: image {image_id}: {problem}")
            is_train = read_split(base, images)
            listed["train"] = sum(is_train.values())
            listed["val"] = len(is_train) - listed["train"]
        except DatasetError as exc:
            problems.append(str(exc))
    else:
        for split in ("train", "val"):
            folder = part_images_dir(name, base, split)
            listed[split] = sum(1 for _ in folder.glob("*.jpg")) if folder.is_dir() else 0
    counts["listed_images"] = listed
    for split, official in spec.official_images:
        n = listed.get(split, 0)
        if official // 2 < n != official:
            where = base / "images.txt" if name == "cub-parts" else part_images_dir(name, base, split)
            problems.append(f"{where}: split {split!r} has {n} images, the official set {official}")
    read = cub_part_patches if name == "cub-parts" else coco_part_patches
    results: dict[str, list[PartItem] | DatasetError] = {}
    for split in spec.splits:
        # COCO's retrieval split is train2017: its annotation file is parsed once for both
        source = "train" if name == "coco-parts" and split == "retrieval" else split
        if source not in results:
            try:
                results[source] = read(base, source, Protocol.STUDY, check_files=False)
            except DatasetError as exc:
                results[source] = exc
        items = results[source]
        if isinstance(items, DatasetError):
            if split != "retrieval" or name == "cub-parts":
                problems.append(str(items))
            continue
        per_class = Counter(item.part for item in items)
        counts[split] = {c: per_class.get(c, 0) for c in spec.classes}
        images = dict.fromkeys(item.image for item in items)
        counts["images"][split] = len(images)
        if name == "coco-parts" and split != "retrieval":  # retrieval = the train files
            images_dir = part_images_dir(name, base, split)
            problems += [p for p in (_image_problem(images_dir / rel) for rel in images) if p]
    return counts, list(dict.fromkeys(problems))  # a bad annotation line is reported once


def check_dataset(name: str, root: str | Path) -> Report:
    """``check_parts`` or the segmentation helper's ``check_segmentation``, by kind."""
    if name in PART_DATASETS:
        return check_parts(name, root)
    from partbench.datasets.segmentation import check_segmentation

    return check_segmentation(name, resolve_data_root(name, root))


def check_all(root: str | Path) -> dict[str, Report]:
    """``check_dataset`` for every registered name whose folder exists under ``root``."""
    from partbench.datasets.registry import list_datasets

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: folder not found")
    return {name: check_dataset(name, root / name) for name in list_datasets() if (root / name).is_dir()}
