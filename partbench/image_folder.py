"""The object-level data set `imagenet`: any ImageFolder layout `root/{train,val}/<class>/<image>`.

Items are whole images (box = the full image, `(0, 0, width, height)`), `part` is the class folder
name and `label` its index in sorted class order (the `train` split's classes when that folder
exists, so `val` labels agree with `train`). Both splits use the standard linear-evaluation
transform `Resize(256, bicubic)` (shorter side, as DINO/MAE linear eval) + `CenterCrop(224)`, no
augmentation, since features are extracted once and cached.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from partbench.config import IMAGENET_MEAN, IMAGENET_STD
from partbench.errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
IMAGE_FOLDER_DATASETS = ("imagenet",)
RESIZE, CROP = 256, 224


def image_folder_classes(root: str | os.PathLike[str], split: str) -> list[str]:
    """Sorted class folder names (of `train` when it exists, else of `split`)."""
    root = Path(root)
    base = root / "train" if (root / "train").is_dir() else root / split
    if not base.is_dir():
        raise DatasetError(f"{root / split}: no such split folder (expected root/{{train,val}}/<class>/*)")
    classes = sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DatasetError(f"{base}: no class folders")
    return classes


def image_folder_items(root: str | os.PathLike[str], split: str) -> list:
    """One `PartItem` per image of `root/split/<class>/`, sorted by class then file name."""
    from partbench.datasets import PartItem

    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise DatasetError(f"{split_dir}: no such split folder (expected root/{{train,val}}/<class>/*)")
    classes = image_folder_classes(root, split)
    index = {name: i for i, name in enumerate(classes)}
    rel_paths: list[tuple[str, str]] = []
    for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if entry.name not in index:
            raise DatasetError(f"{entry.path}: class folder not among the train classes")
        names = sorted(f.name for f in os.scandir(entry.path) if f.name.lower().endswith(IMAGE_EXTENSIONS))
        rel_paths.extend((f"{entry.name}/{n}", entry.name) for n in names)
    if not rel_paths:
        raise DatasetError(f"{split_dir}: no images")
    with ThreadPoolExecutor(max_workers=8) as pool:
        sizes = list(pool.map(lambda rp: _image_size(split_dir / rp[0]), rel_paths))
    return [
        PartItem(image=rel, part=cls, label=index[cls], box=(0, 0, w, h), ann_id=None)
        for (rel, cls), (w, h) in zip(rel_paths, sizes, strict=True)
    ]


def image_folder_stamp_paths(root: str | os.PathLike[str], split: str) -> list[Path]:
    """The folders whose listing defines the items (a file added or removed changes their mtime)."""
    split_dir = Path(root) / split
    return [split_dir, *sorted(Path(e.path) for e in os.scandir(split_dir) if e.is_dir())]


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"{path}: not a readable image ({exc})") from exc


def load_rgb(path: Path) -> Image.Image:
    """Decode an image to RGB; a corrupt file raises `DatasetError` naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc})") from exc


def resize_center_crop(img: Image.Image, resize: int = RESIZE, crop: int = CROP) -> Image.Image:
    """`Resize(resize)` on the shorter side (bicubic) then `CenterCrop(crop)`, as torchvision does."""
    w, h = img.size
    if w <= h:
        new_w, new_h = resize, int(resize * h / w)
    else:
        new_w, new_h = int(resize * w / h), resize
    img = img.resize((new_w, new_h), Image.BICUBIC)
    top = round((new_h - crop) / 2.0)
    left = round((new_w - crop) / 2.0)
    return img.crop((left, top, left + crop, top + crop))


class ImageFolderDataset(Dataset):
    """One element per image: (`[1,3,224,224]` float32 normalised, `[1]` item index)."""

    def __init__(
        self,
        items: list,
        images_dir: str | os.PathLike[str],
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        self.paths = [str(Path(images_dir) / it.image) for it in items]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = resize_center_crop(load_rgb(Path(self.paths[i])))
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
        x = (x - self.mean) / self.std
        return x.unsqueeze(0), torch.tensor([i], dtype=torch.int64)
