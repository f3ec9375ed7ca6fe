"""Synthetic twins of CUB-200-2011 (parts) and COCO person keypoints, in the real on-disk formats.

Objects are assembled from parts that differ in colour *and* texture, so a random-weight encoder
already separates the part classes well above chance:
right eye = red disk with a black pupil on the head, right leg = yellow/black vertical bars,
left wing = blue with white diagonal stripes, tail = green checkerboard (CUB);
nose = skin-coloured head with a red nose, right wrist = blue glove with dots,
left ankle = brown boot with horizontal stripes (COCO).

Each image follows a *case* chosen by its index, so every count is known by hand
(a whole-object shift plus at most ±1 px per keypoint, which never changes a case's outcome
under the study's crop rule):

CUB (``i % 6``): 0 all four parts (4 patches) · 1 right eye invisible (3) · 2 right leg 28 px
from the left wing: both dropped (2: eye, tail) · 3 tail at the left border, box zero-padded (4) ·
4 only the tail visible: no neighbour, dropped (0) · 5 bird scaled ×1.15 (4).
Per 6 images: 17 patches = eye 4, leg 4, wing 4, tail 5. ``is_training_image = (i // 6) % 2 == 0``.

COCO (``i % 4``): 0 one person (3) · 1 two persons with consecutive annotation ids plus a crowd
annotation without keypoints (6) · 2 a person whose left ankle is occluded (``v=1``) (2) and a
person with only the nose visible, skipped (0) · 3 a person at the left border (3) and a person
with the right wrist 16 px from the nose: both dropped, ankle kept (1).
Per 4 images: 15 patches = 5 per class. train2017 has ``n_images`` images, val2017 ``n_images // 2``.

Deterministic: the same seed writes the same bytes (numpy ``default_rng``, fixed JPEG quality).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from partbench.datasets.coco import COCO_KEYPOINT_NAMES, COCO_SKELETON
from partbench.datasets.cub import CUB_PART_NAMES
from partbench.fsutil import atomic_write, atomic_write_text

JPEG_QUALITY = 92
CUB_SIZE = (192, 160)  # W, H
COCO_SIZE = (224, 192)

# Bird facing right, canonical keypoints (x, y) for the 15 CUB parts, in parts.txt order.
BIRD = np.array(
    [
        (90, 52),
        (160, 60),
        (92, 108),
        (124, 96),
        (134, 44),
        (146, 48),
        (136, 58),
        (84, 140),
        (80, 76),
        (118, 50),
        (140, 56),
        (104, 140),
        (96, 70),
        (30, 84),
        (140, 78),
    ],
    dtype=np.float64,
)
BIRD_CENTRE = np.array([96.0, 90.0])
SPECIES = ("Synth_Red_Bird", "Synth_Grey_Bird", "Synth_Brown_Bird", "Synth_Violet_Bird")
SPECIES_RGB = ((150, 70, 60), (120, 120, 125), (125, 95, 60), (110, 80, 130))

# Person facing the viewer (their left = image right), offsets from the nose, COCO order.
PERSON = np.array(
    [
        (0, 0),
        (4, -4),
        (-4, -4),
        (8, -2),
        (-8, -2),
        (14, 22),
        (-14, 22),
        (20, 46),
        (-20, 46),
        (24, 70),
        (-24, 70),
        (9, 72),
        (-9, 72),
        (10, 100),
        (-10, 100),
        (11, 128),
        (-11, 128),
    ],
    dtype=np.float64,
)


class _Canvas:
    """A uint8 RGB image painted with masks and procedural textures (all numpy)."""

    def __init__(self, rng: np.random.Generator, size: tuple[int, int]) -> None:
        w, h = size
        self.yy, self.xx = np.mgrid[0:h, 0:w]
        base = rng.integers(90, 170) + rng.integers(-14, 15, size=3)  # greyish, slightly tinted
        noise = rng.integers(-18, 19, size=(h, w, 1))
        grad = (self.yy[..., None] * 30 // h).astype(np.int64)
        self.px = np.clip(base + noise + grad, 0, 255).astype(np.uint8)

    def disk(self, c: np.ndarray, r: float) -> np.ndarray:
        return (self.xx - c[0]) ** 2 + (self.yy - c[1]) ** 2 <= r * r

    def ellipse(self, c: np.ndarray, rx: float, ry: float) -> np.ndarray:
        return ((self.xx - c[0]) / rx) ** 2 + ((self.yy - c[1]) / ry) ** 2 <= 1

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return (self.xx >= x0) & (self.xx <= x1) & (self.yy >= y0) & (self.yy <= y1)

    def segment(self, a: np.ndarray, b: np.ndarray, width: float) -> np.ndarray:
        d = b - a
        t = np.clip(((self.xx - a[0]) * d[0] + (self.yy - a[1]) * d[1]) / max(float(d @ d), 1e-9), 0, 1)
        return (self.xx - a[0] - t * d[0]) ** 2 + (self.yy - a[1] - t * d[1]) ** 2 <= (width / 2) ** 2

    def paint(
        self,
        mask: np.ndarray,
        rgb: tuple[int, int, int],
        alt: tuple[int, int, int] | None = None,
        pattern: np.ndarray | None = None,
    ) -> None:
        self.px[mask] = rgb
        if alt is not None and pattern is not None:
            self.px[mask & pattern] = alt

    def jpeg(self) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(self.px).save(buf, format="JPEG", quality=JPEG_QUALITY)
        return buf.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


# --- CUB ---------------------------------------------------------------------------------------


def _bird(case: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints [15, 2] (integers) and visibility [15] of a bird drawn in case ``case``."""
    kp = BIRD.copy()
    if case == 5:
        kp = BIRD_CENTRE + (kp - BIRD_CENTRE) * 1.15
    if case == 3:
        kp[:, 0] -= 26  # tail (part 14) lands at x≈4: its box reaches past the left border
    else:
        kp += rng.integers(-4, 5, size=2)  # whole-bird shift
    if case == 2:
        kp[11] = kp[8] + (20, 20)  # right leg 28 px from the left wing
    kp = np.rint(kp + rng.integers(-1, 2, size=kp.shape)).astype(np.int64)
    vis = np.ones(15, dtype=np.int64)
    vis[6] = 0  # left eye: the far side of a bird facing right
    if case == 1:
        vis[10] = 0
    if case == 4:
        vis[[8, 10, 11]] = 0
    return kp, vis


def _draw_bird(cv: _Canvas, kp: np.ndarray, vis: np.ndarray, species: int, rng: np.random.Generator) -> None:
    body = tuple(int(v) for v in np.clip(np.array(SPECIES_RGB[species]) + rng.integers(-15, 16, 3), 0, 255))
    tail, wing, eye = kp[13], kp[8], kp[10]
    cv.paint(
        cv.ellipse(np.array([tail[0] + 12, tail[1]]), 18, 12),
        (40, 150, 60),
        (10, 90, 30),
        ((cv.xx // 4 + cv.yy // 4) % 2 == 0),
    )
    for k in (7, 11):  # both legs: yellow/black bars
        if vis[k]:
            cv.paint(
                cv.rect(kp[k][0] - 8, kp[k][1] - 22, kp[k][0] + 8, kp[k][1] + 8),
                (235, 200, 30),
                (20, 20, 20),
                ((cv.xx // 3) % 2 == 0),
            )
    cv.paint(cv.ellipse((kp[0] + kp[2]) / 2, 50, 32), body)
    cv.paint(cv.disk(eye if vis[10] else kp[4] + (6, 12), 20), body)  # head
    if vis[8]:
        cv.paint(cv.ellipse(wing, 22, 15), (40, 80, 220), (235, 235, 250), ((cv.xx + cv.yy) // 3 % 2 == 0))
    if vis[10]:
        cv.paint(cv.disk(eye, 9), (230, 60, 30))
        cv.paint(cv.disk(eye, 4), (10, 10, 10))
    beak = kp[1]
    cv.paint(cv.segment(beak - (14, 0), beak, 7), (90, 90, 90))


def write_cub(out_root: str | Path, seed: int = 0, n_images: int = 24) -> Path:
    """Write a CUB-200-2011-layout data set with ``n_images`` birds under ``out_root``."""
    root = Path(out_root)
    rng = np.random.default_rng([seed, 200])
    images, labels, split, bboxes, locs = [], [], [], [], []
    for i in range(n_images):
        image_id, case, species = i + 1, i % 6, i % len(SPECIES)
        kp, vis = _bird(case, rng)
        cv = _Canvas(rng, CUB_SIZE)
        _draw_bird(cv, kp, vis, species, rng)
        name = f"{species + 1:03d}.{SPECIES[species]}/{SPECIES[species]}_{image_id:04d}.jpg"
        _write_bytes(root / "images" / name, cv.jpeg())
        images.append(f"{image_id} {name}")
        labels.append(f"{image_id} {species + 1}")
        split.append(f"{image_id} {int((i // 6) % 2 == 0)}")
        lo, hi = kp.min(axis=0) - 6, kp.max(axis=0) + 6
        lo, hi = np.maximum(lo, 0), np.minimum(hi, np.array(CUB_SIZE) - 1)
        bboxes.append(f"{image_id} {lo[0]:.1f} {lo[1]:.1f} {hi[0] - lo[0]:.1f} {hi[1] - lo[1]:.1f}")
        for k in range(15):
            x, y = kp[k] if vis[k] else (0, 0)
            locs.append(f"{image_id} {k + 1} {float(x):.1f} {float(y):.1f} {vis[k]}")
    texts = {
        "images.txt": images,
        "image_class_labels.txt": labels,
        "train_test_split.txt": split,
        "bounding_boxes.txt": bboxes,
        "classes.txt": [f"{c + 1} {c + 1:03d}.{s}" for c, s in enumerate(SPECIES)],
        "parts/parts.txt": [f"{k + 1} {n}" for k, n in enumerate(CUB_PART_NAMES)],
        "parts/part_locs.txt": locs,
    }
    for rel, lines in texts.items():
        atomic_write_text(root / rel, "\n".join(lines) + "\n")
    return root


# --- COCO --------------------------------------------------------------------------------------


def _person(nose: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Integer keypoints [17, 2] of a person whose nose is at ``nose``."""
    return np.rint(PERSON + np.array(nose) + rng.integers(-1, 2, size=PERSON.shape)).astype(np.int64)


def _draw_person(cv: _Canvas, kp: np.ndarray, rng: np.random.Generator) -> None:
    cloth = tuple(int(v) for v in rng.integers(60, 200, 3))
    skin = ((230, 190, 160), (190, 140, 100), (140, 95, 65))[int(rng.integers(0, 3))]
    for a, b in COCO_SKELETON:
        if a > 5 and b > 5:
            cv.paint(cv.segment(kp[a - 1].astype(float), kp[b - 1].astype(float), 9), cloth)
    cv.paint(cv.rect(kp[6][0], kp[6][1], kp[5][0], kp[11][1]), cloth)  # torso
    cv.paint(cv.disk(kp[0], 13), skin)
    cv.paint(cv.disk(kp[0] + (0, -9), 10) & ~cv.disk(kp[0] + (0, 2), 11), (40, 25, 15))  # hair
    for k in (1, 2):
        cv.paint(cv.disk(kp[k], 2), (20, 20, 20))
    cv.paint(cv.disk(kp[0], 3.5), (210, 40, 40))
    for k in (9, 10):  # gloves
        cv.paint(cv.disk(kp[k], 11), (30, 70, 210), (240, 240, 90), ((cv.xx % 4 < 2) & (cv.yy % 4 < 2)))
    for k in (15, 16):  # boots
        cv.paint(
            cv.rect(kp[k][0] - 10, kp[k][1] - 13, kp[k][0] + 10, kp[k][1] + 9),
            (100, 60, 25),
            (50, 30, 10),
            (cv.yy % 4 < 2),
        )


def _coco_case(case: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Persons (keypoints [17,2], visibility [17]) of an image of case ``case``."""

    def v2() -> np.ndarray:
        return np.full(17, 2, dtype=np.int64)

    x = int(rng.integers(-3, 4))
    if case == 0:
        return [(_person((100 + x, 30), rng), v2())]
    if case == 1:
        return [(_person((55 + x, 30), rng), v2()), (_person((160 + x, 34), rng), v2())]
    if case == 2:
        a, va = _person((60 + x, 30), rng), v2()
        va[15] = 1  # left ankle occluded
        b, vb = _person((165 + x, 36), rng), v2()
        vb[[10, 15]] = 0
        vb[[9, 16]] = 1
        return [(a, va), (b, vb)]
    a = _person((27, 30), rng)  # right wrist at x≈3
    b = _person((150 + x, 30), rng)
    b[10] = b[0] + (12, 10)  # hand on the face: 15.6 px from the nose
    return [(a, v2()), (b, v2())]


def _coco_split(
    root: Path, split: str, n: int, first_id: int, first_ann: int, rng: np.random.Generator
) -> None:
    images, annotations, ann_id = [], [], first_ann
    w, h = COCO_SIZE
    for i in range(n):
        image_id = first_id + i
        file_name = f"{image_id:012d}.jpg"
        cv = _Canvas(rng, COCO_SIZE)
        persons = _coco_case(i % 4, rng)
        for kp, _ in persons:
            _draw_person(cv, kp, rng)
        _write_bytes(root / split / file_name, cv.jpeg())
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": w,
                "height": h,
                "license": 1,
                "coco_url": "",
                "flickr_url": "",
                "date_captured": "2013-11-14 00:00:00",
            }
        )
        for kp, vis in persons:
            flat = np.concatenate([np.where(vis[:, None] > 0, kp, 0), vis[:, None]], axis=1).reshape(-1)
            lo, hi = np.maximum(kp.min(axis=0) - 12, 0), np.minimum(kp.max(axis=0) + 12, (w - 1, h - 1))
            bw, bh = int(hi[0] - lo[0]), int(hi[1] - lo[1])
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "keypoints": [int(v) for v in flat],
                    "num_keypoints": int((vis > 0).sum()),
                    "bbox": [float(lo[0]), float(lo[1]), float(bw), float(bh)],
                    "area": float(bw * bh) * 0.55,
                    "segmentation": [
                        [
                            float(lo[0]),
                            float(lo[1]),
                            float(hi[0]),
                            float(lo[1]),
                            float(hi[0]),
                            float(hi[1]),
                            float(lo[0]),
                            float(hi[1]),
                        ]
                    ],
                }
            )
            ann_id += 1
        if i % 4 == 1:  # a crowd region: no keypoints, RLE mask, never a patch
            annotations.append(
                {
                    "id": 900100000000 + ann_id,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 1,
                    "keypoints": [0] * 51,
                    "num_keypoints": 0,
                    "bbox": [0.0, 150.0, 40.0, 40.0],
                    "area": 900.0,
                    "segmentation": {"counts": [h * 2, 30, h - 30], "size": [h, w]},
                }
            )
    data = {
        "info": {"description": "partbench synthetic COCO person keypoints", "version": "1.0", "year": 2017},
        "licenses": [{"id": 1, "name": "synthetic", "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": [
            {
                "supercategory": "person",
                "id": 1,
                "name": "person",
                "keypoints": list(COCO_KEYPOINT_NAMES),
                "skeleton": [list(s) for s in COCO_SKELETON],
            }
        ],
    }
    atomic_write_text(root / "annotations" / f"person_keypoints_{split}.json", json.dumps(data))


def write_coco(out_root: str | Path, seed: int = 0, n_images: int = 24) -> Path:
    """Write a COCO-2017-keypoints-layout data set: ``n_images`` in train2017, ``n_images // 2`` in
    val2017, annotations in ``annotations/person_keypoints_{train,val}2017.json``."""
    root = Path(out_root)
    rng = np.random.default_rng([seed, 2017])
    _coco_split(root, "train2017", n_images, 1000, 100000, rng)
    _coco_split(root, "val2017", n_images // 2, 500000, 700000, rng)
    return root
