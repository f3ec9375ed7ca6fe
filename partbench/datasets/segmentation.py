"""Segmentation sets of the study: registry, readers, label loading and validation, torch Dataset.

Six sets (paper.md sections 2.3 and 5), all read mmseg-style: `.jpg` images and `.png` label maps
with the same stem, `reduce_zero_label=True` (0 = background → 255 ignored, class k → k-1).
Two layouts: "mmseg" (`img/{train,val}`, `ann/{train,val}`) and "ade"
(`images/{training,validation}`, `annotations/{training,validation}`). The test split is val.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from partbench.datasets import seg_transforms as T
from partbench.datasets.seg_classes import (
    ADE20K_150_CLASSES,
    LIP_CLASSES,
    PASCAL_OBJECT_CLASSES,
    generated_names,
)
from partbench.errors import DatasetError

SPLITS: tuple[str, ...] = ("train", "val")
_LAYOUT_DIRS: dict[str, dict[str, tuple[str, str]]] = {
    "mmseg": {"train": ("img/train", "ann/train"), "val": ("img/val", "ann/val")},
    "ade": {
        "train": ("images/training", "annotations/training"),
        "val": ("images/validation", "annotations/validation"),
    },
}


@dataclass(frozen=True)
class SegDatasetSpec:
    """One segmentation set: classes after reduce_zero_label, layout, and the study's scales.

    Scales are mmseg `img_scale` tuples (long, short) for keep-ratio resizing; `crop_size`,
    `slide_crop` are (h, w). `names_verified` is False where `class_names` are generated placeholders.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    names_verified: bool
    layout: str
    study_folder: str
    crop_size: tuple[int, int]
    train_scale: tuple[int, int]
    test_scale: tuple[int, int]
    slide_crop: tuple[int, int]
    slide_stride: tuple[int, int]
    img_suffix: str = ".jpg"
    seg_suffix: str = ".png"
    reduce_zero_label: bool = True
    ignore_index: int = 255
    level: str = "part"  # "part" or "object": the paper's part/object hierarchy

    def split_dirs(self, root: str | Path, split: str) -> tuple[Path, Path]:
        """(image folder, label folder) of `split` ("train" or "val") under `root`."""
        if split not in SPLITS:
            raise DatasetError(f"{self.name}: unknown split {split!r} (expected 'train' or 'val')")
        img, ann = _LAYOUT_DIRS[self.layout][split]
        return Path(root) / img, Path(root) / ann


def _spec(name: str, n: int, names: tuple[str, ...] | None, prefix: str, layout: str, folder: str,
          family: str, level: str) -> SegDatasetSpec:  # fmt: skip
    crop, train_scale, test_scale, stride = {
        "ade": (512, (2048, 512), (2048, 512), 341),
        "pascal": (480, (520, 520), (3840, 480), 161),
        "lip": (320, (1024, 320), (4096, 320), 161),
    }[family]
    return SegDatasetSpec(
        name=name,
        num_classes=n,
        class_names=names if names is not None else generated_names(prefix, n),
        names_verified=names is not None,
        layout=layout,
        study_folder=folder,
        crop_size=(crop, crop),
        train_scale=train_scale,
        test_scale=test_scale,
        slide_crop=(crop, crop),
        slide_stride=(stride, stride),
        level=level,
    )


SEG_DATASETS: dict[str, SegDatasetSpec] = {
    s.name: s
    for s in (
        _spec("ade20k-part", 209, None, "part", "mmseg", "ADE20K_Part", "ade", "part"),
        _spec(
            "ade20k-object", 59, None, "object", "ade", "ade_59object/ADEChallengeData2016", "ade", "object"
        ),
        _spec("ade20k-150", 150, ADE20K_150_CLASSES, "", "ade", "ADEChallengeData2016", "ade", "object"),
        _spec("pascal-part", 193, None, "part", "mmseg", "pascal_part", "pascal", "part"),
        _spec("pascal-object", 16, PASCAL_OBJECT_CLASSES, "", "mmseg", "pascal_semantic", "pascal", "object"),
        _spec("lip", 19, LIP_CLASSES, "", "mmseg", "LIP", "lip", "part"),
    )
}


def get_seg_spec(name: str) -> SegDatasetSpec:
    """The registry entry of `name`, or a one-line error listing the known sets."""
    try:
        return SEG_DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown segmentation set {name!r}; known: {', '.join(SEG_DATASETS)}") from None


@dataclass(frozen=True)
class SegSample:
    """One image and its label map."""

    image: Path
    label: Path


def _pair_files(spec: SegDatasetSpec, root: Path, split: str) -> tuple[list[SegSample], list[str]]:
    """Pair images with labels; returns the pairs and the problems (missing folder/label, empty split)."""
    img_dir, ann_dir = spec.split_dirs(root, split)
    if not img_dir.is_dir():
        return [], [f"{img_dir}: image folder missing ({spec.name} {split})"]
    problems: list[str] = []
    images = sorted(img_dir.rglob(f"*{spec.img_suffix}"), key=lambda p: (p.stem, str(p)))
    samples = []
    for image in images:
        label = ann_dir / image.relative_to(img_dir).with_suffix(spec.seg_suffix)
        if label.is_file():
            samples.append(SegSample(image, label))
        else:
            problems.append(f"{label}: label missing for image {image.name}")
    if not images:
        problems.append(f"{img_dir}: empty split, no {spec.img_suffix} images ({spec.name} {split})")
    return samples, problems


def seg_samples(name: str, root: str | Path, split: str) -> list[SegSample]:
    """All (image, label) pairs of `split`, sorted by stem; a missing label or empty split raises."""
    spec = get_seg_spec(name)
    samples, problems = _pair_files(spec, Path(root), split)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DatasetError(problems[0] + more)
    return samples


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB uint8 `[H, W, 3]`; an unreadable file raises naming it."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable image ({exc})") from None


def load_label(
    path: str | Path, spec: SegDatasetSpec, image_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Read a label PNG, validate it, apply reduce_zero_label; returns uint8 `[H, W]`.

    `image_size` = (h, w) of the matching image, checked when given. Raw values must lie in
    0..C (0 = background) or be 255; after reduction classes are 0..C-1 and 255 is ignored.
    """
    try:
        with Image.open(path) as im:
            mode = im.mode
            raw = np.asarray(im)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable label map ({exc})") from None
    if raw.ndim != 2:
        raise DatasetError(f"{path}: label map must have one channel, got mode {mode} with shape {raw.shape}")
    if image_size is not None and raw.shape != tuple(image_size):
        raise DatasetError(
            f"{path}: label size {raw.shape[1]}x{raw.shape[0]} differs from its image "
            f"{image_size[1]}x{image_size[0]} (w x h)"
        )
    max_raw = spec.num_classes if spec.reduce_zero_label else spec.num_classes - 1
    values = np.unique(raw)
    bad = values[(values > max_raw) & (values != spec.ignore_index)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:8]) + (", ..." if bad.size > 8 else "")
        raise DatasetError(
            f"{path}: label values {shown} outside the class range 0..{max_raw} (or {spec.ignore_index}) "
            f"of {spec.name}"
        )
    label = raw.astype(np.uint8)
    if spec.reduce_zero_label:
        label = reduce_zero_label(label, spec.ignore_index)
    return label


def reduce_zero_label(label: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """mmseg's reduction: 0 → ignore, k → k-1, ignore stays ignore."""
    out = label.astype(np.int64) - 1
    out[(label == 0) | (label == ignore_index)] = ignore_index
    return out.astype(np.uint8)


def check_segmentation(name: str, root: str | Path) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Validate every file of both splits; collect all problems instead of stopping at the first.

    Returns `(counts, problems)`. `counts["images"][split]` = number of images with a label;
    `counts["ignored_pixels"][split]` = pixels ignored after reduce_zero_label; `counts["class_pixels"]
    [class]` = labelled **pixels** of that class over both splits; `counts["class_images"][class]` =
    number of **images** containing it (only classes that occur are listed).
    """
    spec = get_seg_spec(name)
    root = Path(root)
    counts: dict[str, dict[str, int]] = {
        "images": {},
        "ignored_pixels": {},
        "class_pixels": {},
        "class_images": {},
    }
    pixels = np.zeros(spec.num_classes, dtype=np.int64)
    images_with = np.zeros(spec.num_classes, dtype=np.int64)
    problems: list[str] = []
    if not root.is_dir():
        return counts, [f"{root}: data set folder missing ({name})"]
    for split in SPLITS:
        samples, split_problems = _pair_files(spec, root, split)
        problems += split_problems
        counts["images"][split] = len(samples)
        ignored = 0
        for sample in samples:
            try:
                size = load_image(sample.image).shape[:2]  # a full decode finds truncated files
                label = load_label(sample.label, spec, size)
            except DatasetError as exc:
                problems.append(str(exc))
                continue
            per_class = np.bincount(label.ravel(), minlength=256)
            ignored += int(per_class[spec.ignore_index])
            pixels += per_class[: spec.num_classes]
            images_with += per_class[: spec.num_classes] > 0
        counts["ignored_pixels"][split] = ignored
        ann_dir = spec.split_dirs(root, split)[1]
        img_dir = spec.split_dirs(root, split)[0]
        if ann_dir.is_dir():
            for label_path in sorted(ann_dir.rglob(f"*{spec.seg_suffix}")):
                image = img_dir / label_path.relative_to(ann_dir).with_suffix(spec.img_suffix)
                if not image.exists():
                    problems.append(f"{label_path}: label without an image ({image.name} missing)")
    for k in np.flatnonzero(pixels):
        counts["class_pixels"][spec.class_names[k]] = int(pixels[k])
        counts["class_images"][spec.class_names[k]] = int(images_with[k])
    return counts, problems


class SegmentationDataset(Dataset):
    """mmseg-style training or evaluation samples of one set: `(image [3,H,W] f32, label [H,W] i64)`.

    train=True: random rescale of `scale` (default the set's train_scale) by a ratio in (0.5, 2.0),
    random crop `crop_size` with cat_max_ratio 0.75, flip 0.5, photometric distortion, normalise,
    pad to the crop (image 0, label 255). train=False: keep-ratio resize of the image to `scale`
    (default test_scale), normalise; the label keeps its original size, as mmseg evaluates.
    Randomness is drawn from `numpy.random.default_rng((seed, index, epoch))`; call `set_epoch`
    before each epoch (DataLoader workers pick it up when they are re-created each epoch, i.e. with
    `persistent_workers=False`).
    """

    def __init__(
        self,
        name: str,
        root: str | Path,
        split: str,
        *,
        train: bool,
        crop_size: int | tuple[int, int] | None = None,
        scale: tuple[int, int] | None = None,
        seed: int = 0,
        mean: Sequence[float] = T.MMSEG_MEAN,
        std: Sequence[float] = T.MMSEG_STD,
        ratio_range: tuple[float, float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
    ) -> None:
        self.spec = get_seg_spec(name)
        self.samples = seg_samples(name, root, split)
        self.train = train
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        self.crop_size: tuple[int, int] = tuple(crop_size or self.spec.crop_size)  # type: ignore[assignment]
        self.scale: tuple[int, int] = tuple(
            scale or (self.spec.train_scale if train else self.spec.test_scale)
        )  # type: ignore[assignment]
        self.seed = seed
        self.epoch = 0
        self.mean, self.std = tuple(mean), tuple(std)
        self.ratio_range = ratio_range
        self.cat_max_ratio = cat_max_ratio

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of `epoch` (same seed, index and epoch → same sample)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of one sample: independent streams per (seed, index, epoch)."""
        return np.random.default_rng([self.seed, index, self.epoch])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        image = load_image(sample.image)  # decoded once
        label = load_label(sample.label, self.spec, image.shape[:2])
        if not self.train:
            image, _ = T.rescale(image, None, self.scale)
            return T.normalize(image, self.mean, self.std), torch.from_numpy(label.astype(np.int64))
        rng = self.rng(index)
        image, label = T.rescale(image, label, T.random_scale(self.scale, self.ratio_range, rng))
        image, label = T.random_crop(
            image, label, self.crop_size, rng, self.cat_max_ratio, self.spec.ignore_index
        )
        image, label = T.random_flip(image, label, rng)
        image = T.photometric_distortion(image, rng)
        tensor, label = T.pad_to(T.normalize(image, self.mean, self.std), label, self.crop_size, 0.0,
                                 self.spec.ignore_index)  # fmt: skip
        return tensor, torch.from_numpy(label.astype(np.int64))
