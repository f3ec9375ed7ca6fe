"""Synthetic twins of the six segmentation sets, written in their real on-disk layouts.

Scenes hold 1-2 large objects on a noisy, low-saturation background. Each object is one of 4 kinds and is
made of 3 parts (stacked vertically or side by side); each of the 12 part classes has its own
saturated colour and stripe texture, so a linear head on even random-weight ViT features separates
them well above chance. The part/object hierarchy of the paper is kept: ADE20K-Part and
ADE20K-Object share the same images (parts vs whole objects), as do Pascal-Part and Pascal-Object;
ADE20K-150 and LIP get their own scenes (object-level and part-level).

Label PNGs are mode "L": 0 = background, 1..C = classes (the set's real C). Only a handful of the C
classes occur: the 12 part classes (or 4 object kinds) are mapped onto raw ids spread evenly over
1..C, always including 1 and C. `synth_info.json` in each set lists the ids used.

Scales: "small" = 8 train + 4 val images of 96x128 (all the same size); "medium" = 48 train + 16
val images of 192-224 x 224-256 (sizes vary, as in the real sets). Output is byte-identical for a
seed; each set is written to a temp folder and renamed into place.
"""

from __future__ import annotations

import colorsys
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from partbench.datasets.segmentation import SEG_DATASETS, SPLITS, SegDatasetSpec
from partbench.datasets.synth import staged_dir
from partbench.errors import DatasetError
from partbench.fsutil import atomic_write_json

N_KINDS, PARTS_PER_KIND = 4, 3
N_PARTS = N_KINDS * PARTS_PER_KIND
_SCALES: dict[str, tuple[int, int, tuple[tuple[int, int], ...]]] = {
    "small": (8, 4, ((96, 128),)),
    "medium": (48, 16, ((192, 256), (224, 256), (192, 224))),
}
# family → (set written with part labels, set written with object labels); None where absent.
_FAMILIES: dict[str, tuple[str | None, str | None]] = {
    "ade": ("ade20k-part", "ade20k-object"),
    "pascal": ("pascal-part", "pascal-object"),
    "ade150": (None, "ade20k-150"),
    "lip": ("lip", None),
}


def _part_colours() -> np.ndarray:
    """12 saturated, well separated RGB colours: hues 30° apart, alternating brightness."""
    return np.array(
        [
            [255 * c for c in colorsys.hsv_to_rgb(i / N_PARTS, 0.85, 0.9 if i % 2 == 0 else 0.65)]
            for i in range(N_PARTS)
        ]
    )


_COLOURS = _part_colours()
_ANGLES = np.deg2rad([0, 45, 90, 135] * 3)
_PERIODS = np.array([4, 6, 8, 5, 7, 4, 6, 8, 5, 7, 9, 6], dtype=np.float64)


def used_raw_ids(num_classes: int, count: int) -> np.ndarray:
    """`count` raw label ids spread evenly over 1..num_classes (first 1, last num_classes)."""
    return np.unique(np.round(np.linspace(1, num_classes, count)).astype(np.int64))


@dataclass
class Scene:
    """One synthetic image with its part map and object map (0 = background, else class + 1)."""

    image: np.ndarray  # uint8 [H, W, 3]
    parts: np.ndarray  # int64 [H, W]: 0 background, 1..12 part class
    objects: np.ndarray  # int64 [H, W]: 0 background, 1..4 object kind


def make_scene(rng: np.random.Generator, height: int, width: int, first_kind: int = 0) -> Scene:
    """Draw one scene: textured background, then 1-2 objects of 3 parts each (later ones on top).

    The first object is of kind `first_kind` (the writer cycles it, so every kind occurs in every
    split); the others are drawn at random.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    base = rng.uniform(90, 160) + rng.uniform(-12, 12, size=3)
    smooth = np.sin(xx / rng.uniform(9, 20) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(9, 20))
    image = base + 18 * smooth[..., None] + rng.normal(0, 10, size=(height, width, 3))
    parts = np.zeros((height, width), dtype=np.int64)
    for k in range(int(rng.integers(1, 3))):
        kind = first_kind % N_KINDS if k == 0 else int(rng.integers(N_KINDS))
        oh = int(rng.integers(height * 6 // 10, height * 9 // 10 + 1))
        ow = int(rng.integers(width * 4 // 10, width * 6 // 10 + 1))
        y0 = int(rng.integers(0, height - oh + 1))
        x0 = int(rng.integers(0, width - ow + 1))
        cuts = np.cumsum([0.0, *rng.dirichlet([6.0] * PARTS_PER_KIND)])
        vertical = kind % 2 == 0
        span = oh if vertical else ow
        edges = np.round(cuts * span).astype(int)
        for j in range(PARTS_PER_KIND):
            p = kind * PARTS_PER_KIND + j
            if vertical:
                region = (slice(y0 + edges[j], y0 + edges[j + 1]), slice(x0, x0 + ow))
            else:
                region = (slice(y0, y0 + oh), slice(x0 + edges[j], x0 + edges[j + 1]))
            parts[region] = p + 1
    fg = parts > 0
    p = parts[fg] - 1
    phase = xx[fg] * np.cos(_ANGLES[p]) + yy[fg] * np.sin(_ANGLES[p])
    stripes = np.sign(np.sin(2 * np.pi * phase / _PERIODS[p]))
    image[fg] = _COLOURS[p] + 22 * stripes[:, None] + rng.normal(0, 8, size=(p.size, 3))
    objects = np.where(fg, (parts - 1) // PARTS_PER_KIND + 1, 0)
    return Scene(np.clip(np.round(image), 0, 255).astype(np.uint8), parts, objects)


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(array, "RGB").save(buf, format="JPEG", quality=92, subsampling=0)
    else:
        Image.fromarray(array.astype(np.uint8), "L").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _stem(spec: SegDatasetSpec, family: str, split: str, i: int) -> str:
    if spec.layout == "ade":
        return f"ADE_{'train' if split == 'train' else 'val'}_{i + 1:08d}"
    if family == "pascal":
        return f"2010_{i + (0 if split == 'train' else 5000):06d}"
    return f"{i + (0 if split == 'train' else 100000)}_{1000 + i:06d}"


def _mapping(spec: SegDatasetSpec, level: str) -> np.ndarray:
    """Lookup table from scene ids (0 background, 1..n) to the set's raw label ids."""
    n = N_PARTS if level == "part" else N_KINDS
    return np.concatenate([[0], used_raw_ids(spec.num_classes, n)])


def _write_set(
    out: Path,
    spec: SegDatasetSpec,
    family: str,
    level: str,
    scenes: dict[str, list[Scene]],
    seed: int,
    scale: str,
) -> Path:
    final = out / spec.name
    with staged_dir(final) as tmp:
        lut = _mapping(spec, level)
        for split in SPLITS:
            img_dir, ann_dir = spec.split_dirs(tmp, split)
            img_dir.mkdir(parents=True)
            ann_dir.mkdir(parents=True)
            for i, scene in enumerate(scenes[split]):
                stem = _stem(spec, family, split, i)
                (img_dir / f"{stem}{spec.img_suffix}").write_bytes(_encode(scene.image, "JPEG"))
                label = lut[scene.parts if level == "part" else scene.objects]
                (ann_dir / f"{stem}{spec.seg_suffix}").write_bytes(_encode(label, "PNG"))
        atomic_write_json(
            tmp / "synth_info.json",
            {"dataset": spec.name, "seed": seed, "scale": scale, "level": level,
             "raw_ids_used": [int(v) for v in lut[1:]],
             "classes_used": [spec.class_names[int(v) - 1] for v in lut[1:]]},
        )  # fmt: skip
    return final


def write_segmentation_sets(out: Path, seed: int = 0, scale: str = "small") -> dict[str, Path]:
    """Write all six synthetic segmentation sets to `out/<name>/`; returns name → set root."""
    if scale not in _SCALES:
        raise DatasetError(f"synthetic scale must be one of {', '.join(_SCALES)}, got {scale!r}")
    n_train, n_val, sizes = _SCALES[scale]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for f_index, (family, (part_set, object_set)) in enumerate(_FAMILIES.items()):
        scenes: dict[str, list[Scene]] = {}
        for s_index, (split, count) in enumerate((("train", n_train), ("val", n_val))):
            rng = np.random.default_rng([seed, f_index, s_index])
            scenes[split] = [make_scene(rng, *sizes[int(rng.integers(len(sizes)))], i) for i in range(count)]
        for name, level in ((part_set, "part"), (object_set, "object")):
            if name is not None:
                written[name] = _write_set(out, SEG_DATASETS[name], family, level, scenes, seed, scale)
    return dict(sorted(written.items()))
