"""COCO 2017 person-keypoint part patches, read from the data set as distributed.

Files (under the layout root, the folder holding ``annotations/``):
``annotations/person_keypoints_{train,val}2017.json``; images in ``train2017/`` and ``val2017/``
(or ``images/train2017/`` … as the study's own layout had them).

Parts: COCO's keypoint order is nose(1), left_eye(2), right_eye(3), left_ear(4), right_ear(5),
left_shoulder(6), right_shoulder(7), left_elbow(8), right_elbow(9), left_wrist(10),
right_wrist(11), left_hip(12), right_hip(13), left_knee(14), right_knee(15), left_ankle(16),
right_ankle(17); the study's 1-indexed ``[1, 11, 16]`` are therefore nose → 0, right_wrist → 1,
left_ankle → 2 (label = position in that list). Only ``v == 2`` (labelled and visible); a person
annotation contributes only when ≥ 2 of its 3 selected keypoints are visible.
Splits: ``retrieval`` and ``train`` = train2017, ``val`` = val2017.

Item order (the study's): images in the order of their first contributing annotation in the
file's ``annotations`` list; within an image, annotation order, then keypoint order (nose, right
wrist, left ankle). The study's distance is over all contributing persons of the image with the
annotation id as a third coordinate (``[x, y, ann_id]``); see ``crops.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from partbench.config import Protocol
from partbench.datasets.crops import PartItem, boxes_for
from partbench.errors import DatasetError

COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)  # fmt: skip
COCO_KEYPOINTS: tuple[int, ...] = (1, 11, 16)  # 1-indexed, in label order
COCO_CLASSES: tuple[str, ...] = tuple(COCO_KEYPOINT_NAMES[k - 1] for k in COCO_KEYPOINTS)
SPLIT_FOLDER = {"retrieval": "train2017", "train": "train2017", "val": "val2017"}


def annotation_file(root: Path, split: str) -> Path:
    return root / "annotations" / f"person_keypoints_{SPLIT_FOLDER[split]}.json"


def coco_images_dir(root: Path, split: str) -> Path:
    """``<root>/<split>2017``, or ``<root>/images/<split>2017`` when only that one exists."""
    plain = root / SPLIT_FOLDER[split]
    nested = root / "images" / SPLIT_FOLDER[split]
    return nested if not plain.is_dir() and nested.is_dir() else plain


def load_annotations(path: Path) -> dict[str, Any]:
    """Parse a keypoint annotation file; one-line errors for a missing file or bad JSON."""
    try:
        with open(path, "rb") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file not found") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise DatasetError(f"{path}: not a COCO annotation file (needs 'images' and 'annotations')")
    for cat in data.get("categories", []):
        names = cat.get("keypoints")
        if names is not None and tuple(names) != COCO_KEYPOINT_NAMES:
            raise DatasetError(f"{path}: category {cat.get('id')} keypoints differ from COCO's 17 in order")
    return data


def _keypoints(path: Path, ann: dict[str, Any]) -> np.ndarray:
    kp = ann.get("keypoints")
    if not isinstance(kp, list) or len(kp) != 3 * len(COCO_KEYPOINT_NAMES):
        got = len(kp) if isinstance(kp, list) else type(kp).__name__
        raise DatasetError(
            f"{path}: annotation id {ann.get('id')} has keypoints of length {got}, expected 51"
        )
    return np.asarray(kp, dtype=np.float64).reshape(-1, 3)


def coco_part_patches(
    root: Path, split: str, protocol: Protocol, neighbours: str = "selected", check_files: bool = True
) -> list[PartItem]:
    """Part items of one split of COCO keypoints (``retrieval`` | ``train`` | ``val``)."""
    path = annotation_file(root, split)
    data = load_annotations(path)
    try:
        file_names = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{path}: an entry of 'images' lacks an integer 'id' or a 'file_name'") from None
    label_of = {k - 1: i for i, k in enumerate(COCO_KEYPOINTS)}  # 0-indexed keypoint → label
    selected: dict[int, list[tuple[int, float, float, int]]] = {}  # image → (kp, x, y, ann_id)
    visible_all: dict[int, list[tuple[float, float]]] = {}
    for ann in data["annotations"]:
        try:
            image_id, ann_id = int(ann["image_id"]), int(ann["id"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{path}: an annotation lacks an integer 'id' or 'image_id'") from None
        if image_id not in file_names:
            raise DatasetError(f"{path}: annotation id {ann_id} refers to unknown image id {image_id}")
        kp = _keypoints(path, ann)
        visible = kp[:, 2] >= 2
        if neighbours == "all":  # every labelled keypoint (v ≥ 1) of every person
            visible_all.setdefault(image_id, []).extend(map(tuple, kp[kp[:, 2] >= 1, :2].tolist()))
        chosen = [k for k in label_of if visible[k]]
        if len(chosen) < 2:
            continue
        selected.setdefault(image_id, []).extend((k, kp[k, 0], kp[k, 1], ann_id) for k in chosen)
    items: list[PartItem] = []
    images_dir = coco_images_dir(root, split)
    for image_id, points in selected.items():
        pts = np.array([p[1:] for p in points], dtype=np.float64)  # x, y, ann_id
        if protocol == Protocol.STUDY:  # [x, y, ann_id]: the study's distance vector
            boxes = boxes_for(pts, pts, protocol)
        elif neighbours == "selected":
            boxes = boxes_for(pts[:, :2], pts[:, :2], protocol)
        else:
            boxes = boxes_for(pts[:, :2], np.array(visible_all[image_id], dtype=np.float64), protocol)
        name = file_names[image_id]
        kept = False
        for (k, _, _, ann_id), box in zip(points, boxes, strict=True):
            if box is not None:
                items.append(PartItem(name, COCO_KEYPOINT_NAMES[k], label_of[k], box, ann_id))
                kept = True
        if kept and check_files and not (images_dir / name).is_file():
            raise DatasetError(f"{path}: image id {image_id} file {name} not found in {images_dir}")
    if not items:
        raise DatasetError(f"{path}: split {split!r} has no part patches")
    return items
