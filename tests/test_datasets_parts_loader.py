"""The patch loader against the study's per-patch pipeline: PIL crop → torchvision transforms on
the PIL patch (Resize bicubic [+ CenterCrop]) → ToTensor → Normalize, one patch at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from partbench.config import IMAGENET_MEAN, IMAGENET_STD
from partbench.datasets import PartItem, PatchImageDataset, collate_patch_groups
from partbench.errors import DatasetError

BOXES_A = [(-2, 8, 22, 32), (42, 72, 78, 108), (150, 100, 250, 200), (10, 10, 234, 234)]
BOXES_B = [(0, 0, 37, 37), (-40, -40, 0, 0)]  # the second lies wholly outside: all zeros


@pytest.fixture
def images(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for name, size in (("a.jpg", (200, 160)), ("sub/b.png", (90, 120))):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    Image.open(tmp_path / "sub/b.png").convert("L").save(tmp_path / "sub/b.png")  # grey: converted to RGB
    return tmp_path


def _items() -> list[PartItem]:
    """Interleaved images, so grouping must remember the original order."""
    a = [PartItem("a.jpg", "p", i % 3, box) for i, box in enumerate(BOXES_A)]
    b = [PartItem("sub/b.png", "q", 1, box) for box in BOXES_B]
    return [a[0], b[0], a[1], a[2], b[1], a[3]]


def _reference(images_dir: Path, item: PartItem, train: bool) -> torch.Tensor:
    resize = [
        transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224),
    ]
    if not train:
        resize = [transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC)]
    pipeline = transforms.Compose(
        [*resize, transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    with open(images_dir / item.image, "rb") as fh:
        img = Image.open(fh).convert("RGB")
    return pipeline(img.crop(item.box))


@pytest.mark.parametrize("transform", ["eval", "train"])
def test_matches_per_patch_reference(images: Path, transform: str) -> None:
    items = _items()
    ds = PatchImageDataset(items, images, transform=transform)
    assert len(ds) == 2
    got: dict[int, torch.Tensor] = {}
    for i in range(len(ds)):
        patches, idx = ds[i]
        assert patches.dtype == torch.float32 and idx.dtype == torch.int64
        assert patches.shape == (len(idx), 3, 224, 224)
        got.update(zip(idx.tolist(), patches, strict=True))
    assert sorted(got) == list(range(len(items)))
    for k, item in enumerate(items):
        ref = _reference(images, item, transform == "train")
        torch.testing.assert_close(got[k], ref, atol=0, rtol=0)  # bit-identical
    # group order: first appearance; within a group, the items' order
    assert ds[0][1].tolist() == [0, 2, 3, 5] and ds[1][1].tolist() == [1, 4]


def test_zero_padding_outside_the_image(images: Path) -> None:
    patches, idx = PatchImageDataset(_items(), images)[1]
    outside = patches[idx.tolist().index(4)]
    zero = (torch.zeros(3) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(outside, zero.view(3, 1, 1).expand(3, 224, 224))


def test_each_image_is_decoded_once(images: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real_open = Image.open

    def counting_open(fp, *args, **kwargs):
        opened.append(str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    ds = PatchImageDataset(_items(), images)
    loader = DataLoader(ds, batch_size=2, collate_fn=collate_patch_groups)
    (patches, idx), *rest = list(loader)
    assert not rest and patches.shape == (6, 3, 224, 224)
    assert sorted(idx.tolist()) == list(range(6))
    assert sorted(Path(p).name for p in opened) == ["a.jpg", "b.png"]


def test_smaller_size_and_custom_norm(images: Path) -> None:
    items = [PartItem("a.jpg", "p", 0, (0, 0, 50, 50))]
    patches, _ = PatchImageDataset(items, images, size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))[0]
    img = Image.open(images / "a.jpg").convert("RGB").crop((0, 0, 50, 50)).resize((32, 32), Image.BICUBIC)
    ref = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255 * 2 - 1
    torch.testing.assert_close(patches[0], ref, atol=1e-5, rtol=0)


def test_corrupt_image_names_the_file(images: Path) -> None:
    (images / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ds = PatchImageDataset(_items(), images)
    with pytest.raises(DatasetError) as exc:
        ds[0]
    assert str(images / "a.jpg") in str(exc.value) and "\n" not in str(exc.value)
    (images / "a.jpg").unlink()
    with pytest.raises(DatasetError, match="image not found"):
        ds[0]


def test_bad_arguments(images: Path) -> None:
    with pytest.raises(ValueError, match="transform"):
        PatchImageDataset(_items(), images, transform="random")
    with pytest.raises(DatasetError, match="not a non-empty square"):
        PatchImageDataset([PartItem("a.jpg", "p", 0, (0, 0, 10, 12))], images)
