"""The crop rule: which keypoints become part patches, and the box each one is cropped with.

Two protocols (``partbench.config.Protocol``):

``study`` — what the study's loaders (``PatchLoaderCUB200`` / ``PatchLoaderCOCO``) do:
  * neighbours are the *selected* keypoints of the image only (the 4 CUB / 3 COCO parts); for
    COCO every kept person of the image contributes, and each point carries the annotation id
    as a third coordinate, so the distance between two persons' points includes
    ``(ann_id_a - ann_id_b)**2`` (in practice the nearest neighbour is on the same person);
  * ``nearest`` = the minimum non-zero L2 distance to a neighbour (zero distances — the point
    itself and coincident points — are ignored; no neighbour at all drops the keypoint);
  * ``dist = nearest / 2``; keep only ``20 < dist < 1000``;
  * ``r = round(dist / 2)`` (Python ``round``: ties to even), box ``(x-r, y-r, x+r, y+r)``,
    and PIL's ``Image.crop`` rounds each coordinate once more with ``round`` (ties to even),
    so the box stored here is ``tuple(round(v) for v in (x-r, y-r, x+r, y+r))`` — exactly the
    pixels PIL cropped. The side is ``2r`` ≈ ``nearest / 2``, not ``nearest``.
  * distances are float64. The study's COCO vector was an int64 array (JSON integers) whose
    squares would overflow for annotation-id gaps above ~3e9; COCO's keypoint annotations have
    none (crowd regions with ids ~9e11 carry no keypoints), so the two agree on COCO.

``clean`` — the paper's text ("the minimum L2 distance (d) ... then crop a d × d patch centered
at this keypoint"), without the code's quirks:
  * neighbours (``neighbours="selected"``, the default) are the selected keypoints of the image,
    plain 2-D distances — for COCO across all contributing persons, *without* the annotation id;
  * ``neighbours="all"`` is the text's literal reading, "all the other keypoints in the same
    image": CUB's 15 parts with ``visible=1``, COCO's 17 keypoints of every person with ``v >= 1``.
    It drops every keypoint within 40 px of *any* other keypoint (a nose next to an eye, an eye
    next to the forehead): on the synthetic twins only CUB tails survive, which is why it is
    not the default;
  * the keypoints cropped are the same as in ``study`` (CUB ``visible=1``; COCO ``v == 2`` on
    persons with ≥ 2 of the 3);
  * ``d`` = minimum non-zero distance; the study's size filter in the same units: ``40 < d < 2000``;
  * side ``s = round(d)``, ``x0 = round(x - d/2)``, ``y0 = round(y - d/2)``, box
    ``(x0, y0, x0 + s, y0 + s)``.

Boxes may reach outside the image; the patch loader zero-pads there, as PIL's crop does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from partbench.config import Protocol

Box = tuple[int, int, int, int]

STUDY_MIN_DIST, STUDY_MAX_DIST = 20.0, 1000.0  # on dist = nearest / 2 (the study's variable)
NEIGHBOURS = ("selected", "all")


@dataclass(frozen=True)
class PartItem:
    """One part patch: image path (relative to the images folder), part name, class, crop box."""

    image: str
    part: str
    label: int
    box: Box
    ann_id: int | None = None


def nearest_distances(points: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """For each row of ``points`` [n, c], the smallest non-zero L2 distance to a row of
    ``neighbours`` [m, c]; ``inf`` where there is none. float64, vectorised."""
    points = np.asarray(points, dtype=np.float64)
    neighbours = np.asarray(neighbours, dtype=np.float64)
    if len(points) == 0 or len(neighbours) == 0:
        return np.full(len(points), np.inf)
    dist = ((points[:, None, :] - neighbours[None, :, :]) ** 2).sum(axis=2) ** 0.5
    dist[dist == 0] = np.inf
    return dist.min(axis=1)


def study_box(x: float, y: float, nearest: float) -> Box | None:
    """The study's box for a keypoint at (x, y) whose nearest neighbour is ``nearest`` away,
    or None when the study drops it (``dist = nearest/2`` not in (20, 1000))."""
    dist = float(nearest) / 2
    if not (STUDY_MIN_DIST < dist < STUDY_MAX_DIST):
        return None
    r = round(dist / 2)
    x, y = float(x), float(y)
    x0, y0, x1, y1 = (round(v) for v in (x - r, y - r, x + r, y + r))
    return (x0, y0, x1, y1)


def clean_box(x: float, y: float, nearest: float) -> Box | None:
    """The paper text's d × d box centred at (x, y), ``d = nearest``; None outside 40 < d < 2000."""
    d = float(nearest)
    if not (2 * STUDY_MIN_DIST < d < 2 * STUDY_MAX_DIST):
        return None
    side = round(d)
    x0, y0 = round(float(x) - d / 2), round(float(y) - d / 2)
    return (x0, y0, x0 + side, y0 + side)


def boxes_for(points: np.ndarray, neighbours: np.ndarray, protocol: Protocol) -> list[Box | None]:
    """Boxes for keypoints ``points`` [n, 2+] (x, y first) against ``neighbours`` [m, 2+]
    (same columns as ``points`` — the caller picks them per protocol); None = dropped."""
    near = nearest_distances(points, neighbours)
    make = study_box if protocol == Protocol.STUDY else clean_box
    return [make(p[0], p[1], n) for p, n in zip(np.asarray(points, dtype=np.float64), near, strict=True)]
