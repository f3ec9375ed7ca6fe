"""Patch loader: one dataset element per *image*, all of its part patches cut from one decode.

``PatchImageDataset(items, images_dir)`` groups the ``PartItem``s by image (first-appearance
order; each group keeps its items' original indices). ``__getitem__(i)`` opens image ``i`` once
with PIL and converts it to RGB (as the study's ``pil_loader``), then for every box of that image:

* ``Image.crop(box)`` — pixels outside the image come out as zeros, exactly as in the study;
* resize with PIL bicubic, which is what the study's torchvision ``Resize(..., interpolation=3)``
  did on PIL images: ``eval`` = ``Resize(224)`` (shorter side → 224, so a square patch becomes
  224×224), ``train`` = ``Resize(256)`` then ``CenterCrop(224)`` (the study's classification
  train transform, no random augmentation). torch's bicubic antialias resize differs from PIL
  by up to 2 grey levels, so the resize stays in PIL (C code, small patches);
* the k uint8 patches are stacked and converted once: ``/255``, ``(x - mean) / std`` in float32,
  the same arithmetic as ``ToTensor`` + ``Normalize``.

It returns ``(patches [k,3,size,size] float32, item_indices [k] int64)``;
``collate_patch_groups`` concatenates a batch of these. Rows come back in item order per image,
so the caller scatters features to ``item_indices``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from partbench.config import IMAGENET_MEAN, IMAGENET_STD
from partbench.datasets.crops import PartItem
from partbench.errors import DatasetError

TRANSFORMS = ("eval", "train")


def _resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """torchvision ``Resize(size)`` on a PIL image: shorter side → ``size``, bicubic."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return img
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    return img.resize((new_w, new_h), Image.BICUBIC)


def _center_crop(img: Image.Image, size: int) -> Image.Image:
    """torchvision ``CenterCrop(size)`` on a PIL image at least ``size`` on both sides."""
    w, h = img.size
    top, left = round((h - size) / 2.0), round((w - size) / 2.0)
    return img.crop((left, top, left + size, top + size))


class PatchImageDataset(Dataset):
    """Part patches grouped by image; see the module docstring for the exact pixel pipeline."""

    def __init__(
        self,
        items: Sequence[PartItem],
        images_dir: str | Path,
        transform: str = "eval",
        size: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        self.images_dir = Path(images_dir)
        self.transform = transform
        self.size = size
        self.resize_to = size if transform == "eval" else int(size * 256 / 224)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        groups: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            x0, y0, x1, y1 = item.box
            if x1 - x0 != y1 - y0 or x1 <= x0:
                raise DatasetError(
                    f"{item.image}: part {item.part!r} box {item.box} is not a non-empty square"
                )
            groups.setdefault(item.image, []).append(i)
        self.images = list(groups)
        self.indices = [torch.tensor(groups[name], dtype=torch.int64) for name in self.images]
        self.boxes = [[items[i].box for i in groups[name]] for name in self.images]
        self.num_items = len(items)

    def __len__(self) -> int:
        return len(self.images)

    def _open(self, path: Path) -> Image.Image:
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except FileNotFoundError:
            raise DatasetError(f"{path}: image not found") from None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DatasetError(f"{path}: cannot decode image ({exc})") from None

    def _patch(self, img: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
        patch = _resize_shorter(img.crop(box), self.resize_to)
        if self.transform == "train":
            patch = _center_crop(patch, self.size)
        return np.asarray(patch)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self._open(self.images_dir / self.images[index])
        stack = np.stack([self._patch(img, box) for box in self.boxes[index]])
        patches = torch.from_numpy(stack).permute(0, 3, 1, 2).float().div(255)
        return (patches - self.mean) / self.std, self.indices[index]


def collate_patch_groups(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate per-image groups: ``(patches [K,3,H,W], item_indices [K])``."""
    patches, indices = zip(*batch, strict=True)
    return torch.cat(patches), torch.cat(indices)
