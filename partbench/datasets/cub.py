"""CUB-200-2011 part patches, read from the data set as distributed.

Files (under the layout root, the folder holding ``images.txt``): ``images.txt``
(``<image_id> <relative path>``), ``parts/parts.txt`` (``<part_id> <part name>``),
``parts/part_locs.txt`` (``<image_id> <part_id> <x> <y> <visible>``), ``train_test_split.txt``
(``<image_id> <is_training_image>``), images under ``images/``.

Parts (1-indexed ids, label = position in this list, as the study's ``keypoint_cls_list``):
right eye 11 → 0, right leg 12 → 1, left wing 9 → 2, tail 14 → 3. Only ``visible=1`` keypoints.
Splits: ``retrieval`` = every image, ``train`` = ``is_training_image == 1``, ``val`` = the rest.

Item order (the study's): images in the order their first kept keypoint line appears in
``part_locs.txt``; within an image, the ``part_locs.txt`` line order (part id order in the real
file: left wing, right eye, right leg, tail). See ``crops.py`` for the box rule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from partbench.config import Protocol
from partbench.datasets.crops import PartItem, boxes_for
from partbench.errors import DatasetError

CUB_PART_NAMES: tuple[str, ...] = (
    "back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing",
    "nape", "right eye", "right leg", "right wing", "tail", "throat",
)  # fmt: skip
CUB_KEYPOINTS: tuple[int, ...] = (11, 12, 9, 14)  # 1-indexed part ids, in label order
CUB_CLASSES: tuple[str, ...] = tuple(CUB_PART_NAMES[k - 1] for k in CUB_KEYPOINTS)


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, whitespace-split fields) of each non-empty line; one-line error if unreadable."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _int(path: Path, lineno: int, value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"{path}:{lineno}: {what} {value!r} is not an integer") from None


def read_images(root: Path) -> dict[int, tuple[str, int]]:
    """``images.txt`` as ``{image_id: (relative path, line number)}``."""
    path = root / "images.txt"
    out: dict[int, tuple[str, int]] = {}
    for n, fields in _lines(path):
        if len(fields) != 2:
            raise DatasetError(f"{path}:{n}: expected '<image_id> <path>', got {' '.join(fields)!r}")
        image_id = _int(path, n, fields[0], "image id")
        if image_id in out:
            raise DatasetError(f"{path}:{n}: image id {image_id} listed twice")
        out[image_id] = (fields[1], n)
    if not out:
        raise DatasetError(f"{path}: no images listed")
    return out


def read_parts(root: Path) -> dict[int, str]:
    """``parts/parts.txt`` as ``{part_id: name}``; the 4 used parts must carry their CUB names."""
    path = root / "parts" / "parts.txt"
    parts: dict[int, str] = {}
    for n, fields in _lines(path):
        if len(fields) < 2:
            raise DatasetError(f"{path}:{n}: expected '<part_id> <name>', got {' '.join(fields)!r}")
        parts[_int(path, n, fields[0], "part id")] = " ".join(fields[1:])
    for k in CUB_KEYPOINTS:
        if parts.get(k) != CUB_PART_NAMES[k - 1]:
            raise DatasetError(f"{path}: part {k} should be {CUB_PART_NAMES[k - 1]!r}, got {parts.get(k)!r}")
    return parts


def read_split(root: Path, image_ids: dict[int, tuple[str, int]]) -> dict[int, bool]:
    """``train_test_split.txt`` as ``{image_id: is_train}``; every listed image must appear."""
    path = root / "train_test_split.txt"
    out: dict[int, bool] = {}
    for n, fields in _lines(path):
        if len(fields) != 2 or fields[1] not in ("0", "1"):
            raise DatasetError(f"{path}:{n}: expected '<image_id> <0|1>', got {' '.join(fields)!r}")
        out[_int(path, n, fields[0], "image id")] = fields[1] == "1"
    missing = sorted(set(image_ids) - set(out))
    if missing:
        raise DatasetError(f"{path}: {len(missing)} images have no split (first: image id {missing[0]})")
    return out


def read_part_locs(
    root: Path, image_ids: dict[int, tuple[str, int]], parts: dict[int, str]
) -> dict[int, list[tuple[int, float, float]]]:
    """Visible keypoints per image, ``{image_id: [(part_id, x, y), ...]}`` in file order; the dict's
    order is the order of each image's first visible keypoint."""
    path = root / "parts" / "part_locs.txt"
    out: dict[int, list[tuple[int, float, float]]] = {}
    seen: set[tuple[int, int]] = set()
    for n, fields in _lines(path):
        if len(fields) != 5:
            raise DatasetError(
                f"{path}:{n}: expected '<image_id> <part_id> <x> <y> <visible>', got {' '.join(fields)!r}"
            )
        image_id = _int(path, n, fields[0], "image id")
        part_id = _int(path, n, fields[1], "part id")
        visible = _int(path, n, fields[4], "visible flag")
        try:
            x, y = float(fields[2]), float(fields[3])
        except ValueError:
            x = y = float("nan")
        if not (np.isfinite(x) and np.isfinite(y)):
            raise DatasetError(f"{path}:{n}: coordinates {fields[2]!r} {fields[3]!r} are not finite numbers")
        if image_id not in image_ids:
            raise DatasetError(f"{path}:{n}: image id {image_id} is not in images.txt")
        if part_id not in parts:
            raise DatasetError(f"{path}:{n}: part id {part_id} is not in parts/parts.txt")
        if visible not in (0, 1):
            raise DatasetError(f"{path}:{n}: visible flag must be 0 or 1, got {visible}")
        if (image_id, part_id) in seen:
            raise DatasetError(f"{path}:{n}: image {image_id} part {part_id} listed twice")
        seen.add((image_id, part_id))
        if visible:
            out.setdefault(image_id, []).append((part_id, x, y))
    return out


def cub_part_patches(
    root: Path, split: str, protocol: Protocol, neighbours: str = "selected", check_files: bool = True
) -> list[PartItem]:
    """Part items of one split of CUB (``retrieval`` | ``train`` | ``val``); see the module doc."""
    images = read_images(root)
    parts = read_parts(root)
    in_split: set[int] | None = None
    if split != "retrieval":
        is_train = read_split(root, images)
        in_split = {i for i, t in is_train.items() if t == (split == "train")}
    locs = read_part_locs(root, images, parts)
    label_of = {k: i for i, k in enumerate(CUB_KEYPOINTS)}
    images_dir = root / "images"
    items: list[PartItem] = []
    for image_id, points in locs.items():
        if in_split is not None and image_id not in in_split:
            continue
        selected = [p for p in points if p[0] in label_of]
        if not selected:
            continue
        xy = np.array([p[1:] for p in selected], dtype=np.float64)
        others = xy if neighbours == "selected" else np.array([p[1:] for p in points], dtype=np.float64)
        name, lineno = images[image_id]
        kept = False
        for (part_id, _, _), box in zip(selected, boxes_for(xy, others, protocol), strict=True):
            if box is not None:
                items.append(PartItem(name, parts[part_id], label_of[part_id], box, None))
                kept = True
        if kept and check_files and not (images_dir / name).is_file():
            raise DatasetError(f"{root / 'images.txt'}:{lineno}: image {name} not found in {images_dir}")
    if not items:
        raise DatasetError(f"{root / 'parts' / 'part_locs.txt'}: split {split!r} has no part patches")
    return items
