"""The object-level `imagenet` set (any ImageFolder layout): whole images, Resize(256)+CenterCrop(224)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_extract_helpers import ARCH, ARCH_KW, make_checkpoint
from torchvision import transforms as T

from partbench.config import IMAGENET_MEAN, IMAGENET_STD
from partbench.encoders import load_encoder
from partbench.errors import DatasetError
from partbench.features import load_features, run_extract
from partbench.image_folder import image_folder_items

SIZES = {"ant": [(100, 80), (64, 120)], "cat": [(90, 90), (300, 200), (48, 64)]}


def _write_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls, sizes in SIZES.items():
            for k, (w, h) in enumerate(sizes):
                path = root / split / cls / f"{cls}_{k}.{'png' if k % 2 else 'jpg'}"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    (root / "val" / "cat" / "notes.txt").write_text("not an image: ignored")
    return root


def test_items_are_whole_images_with_sorted_class_labels(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "imagenet")
    items = image_folder_items(root, "val")
    assert [(it.image, it.part, it.label, it.box) for it in items] == [
        ("ant/ant_0.jpg", "ant", 0, (0, 0, 100, 80)),
        ("ant/ant_1.png", "ant", 0, (0, 0, 64, 120)),
        ("cat/cat_0.jpg", "cat", 1, (0, 0, 90, 90)),
        ("cat/cat_1.png", "cat", 1, (0, 0, 300, 200)),
        ("cat/cat_2.jpg", "cat", 1, (0, 0, 48, 64)),
    ]


def test_features_match_torchvision_resize_centercrop_then_extract(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "imagenet")
    ckpt = make_checkpoint(tmp_path / "dino.pth")
    out = run_extract(
        "dino", "imagenet", "val", checkpoint=ckpt, arch=ARCH, data_root=root, features_dir=tmp_path / "f",
        device="cpu", batch_size=4, num_workers=0, progress=False,
    )  # fmt: skip
    fs = load_features(out.cache_dir)
    tf = T.Compose(
        [T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
         T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )  # fmt: skip
    images = torch.stack([tf(Image.open(root / "val" / rel).convert("RGB")) for rel in fs.items["image"]])
    ref = load_encoder("dino", checkpoint=ckpt, **ARCH_KW).extract(images)
    torch.testing.assert_close(fs.embedding, ref["embedding"], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(fs.cls_token, ref["cls_token"], atol=2e-5, rtol=1e-4)
    assert fs.labels.tolist() == [0, 0, 1, 1, 1]
    sizes = [list(wh) for cls in ("ant", "cat") for wh in SIZES[cls]]
    assert fs.items[["x1", "y1"]].to_numpy().tolist() == sizes
    assert fs.manifest["key_parts"]["transform"].startswith("image:resize256-bicubic+centercrop224")


def test_bad_image_folders(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "imagenet")
    (root / "val" / "dog").mkdir()
    with pytest.raises(DatasetError, match=r"val/dog: class folder not among the train classes"):
        image_folder_items(root, "val")
    (root / "val" / "dog").rmdir()
    bad = root / "val" / "ant" / "ant_0.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=str(bad)):
        image_folder_items(root, "val")
    with pytest.raises(DatasetError, match="no such split folder"):
        image_folder_items(root, "test")
