"""Synthetic CUB / COCO twins: real formats, counts known by hand, same seed → same bytes,
and part classes that a random-weight encoder already separates."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from partbench.datasets import PatchImageDataset, collate_patch_groups, part_images_dir, part_patches
from partbench.datasets.synth import write_part_sets
from partbench.datasets.synth_parts import write_coco, write_cub


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_part_sets(tmp_path_factory.mktemp("synth"), seed=0, scale="small")


def _classes(items: list) -> dict[str, int]:
    return dict(sorted(Counter(i.part for i in items).items()))


def test_cub_split_sizes_and_class_counts(synth: dict[str, Path]) -> None:
    # 24 images = 4 cycles of 6 cases; per cycle eye 4, leg 4, wing 4, tail 5 (see synth_parts)
    root = synth["cub-parts"]
    retrieval = part_patches("cub-parts", root, "retrieval")
    assert _classes(retrieval) == {"left wing": 16, "right eye": 16, "right leg": 16, "tail": 20}
    # is_training_image = (i // 6) even: cycles 0 and 2 train, 1 and 3 test
    for split in ("train", "val"):
        items = part_patches("cub-parts", root, split)
        assert _classes(items) == {"left wing": 8, "right eye": 8, "right leg": 8, "tail": 10}
    assert len({i.image for i in retrieval}) == 20  # case 4 (a lone tail) gives no patch
    assert sorted({i.label for i in retrieval}) == [0, 1, 2, 3]


def test_cub_files(synth: dict[str, Path]) -> None:
    root = synth["cub-parts"]
    lines = {f: (root / f).read_text().splitlines() for f in (
        "images.txt", "classes.txt", "image_class_labels.txt", "bounding_boxes.txt",
        "train_test_split.txt", "parts/parts.txt", "parts/part_locs.txt",
    )}  # fmt: skip
    assert len(lines["images.txt"]) == 24 and len(lines["parts/part_locs.txt"]) == 24 * 15
    assert lines["parts/parts.txt"][10] == "11 right eye" and len(lines["parts/parts.txt"]) == 15
    assert lines["classes.txt"][0] == "1 001.Synth_Red_Bird"
    assert lines["parts/part_locs.txt"][6] == "1 7 0.0 0.0 0"  # left eye: never visible
    assert sum(line.endswith(" 1") for line in lines["train_test_split.txt"]) == 12
    for rel in (line.split()[1] for line in lines["images.txt"]):
        assert (root / "images" / rel).read_bytes()[:2] == b"\xff\xd8"  # JPEG


def test_cub_border_case(synth: dict[str, Path]) -> None:
    items = part_patches("cub-parts", synth["cub-parts"], "retrieval")
    tails = [i for i in items if i.image.endswith("_0004.jpg") and i.part == "tail"]  # case 3
    assert len(tails) == 1 and tails[0].box[0] < 0  # reaches past the left border


def test_coco_split_sizes_and_class_counts(synth: dict[str, Path]) -> None:
    # train2017: 24 images = 6 cycles of 4 cases, 15 patches (5 per class) per cycle; val 12 → 3
    root = synth["coco-parts"]
    for split, n in (("retrieval", 30), ("train", 30), ("val", 15)):
        items = part_patches("coco-parts", root, split)
        assert _classes(items) == {"left_ankle": n, "nose": n, "right_wrist": n}
    train = part_patches("coco-parts", root, "train")
    per_image = Counter(i.image for i in train)
    assert [per_image[f"{1000 + k:012d}.jpg"] for k in range(4)] == [3, 6, 2, 4]
    border = [i for i in train if i.image == f"{1003:012d}.jpg" and i.part == "right_wrist"]
    assert len(border) == 1 and border[0].box[0] < 0


def test_coco_json(synth: dict[str, Path]) -> None:
    data = json.loads((synth["coco-parts"] / "annotations" / "person_keypoints_val2017.json").read_text())
    assert len(data["images"]) == 12
    (cat,) = data["categories"]
    assert (
        cat["keypoints"][0] == "nose" and cat["keypoints"][10] == "right_wrist" and len(cat["skeleton"]) == 19
    )
    for ann in data["annotations"]:
        kp = np.array(ann["keypoints"]).reshape(17, 3)
        assert ann["num_keypoints"] == int((kp[:, 2] > 0).sum())
        assert {"bbox", "area", "iscrowd", "segmentation", "category_id"} <= set(ann)
    assert sum(a["iscrowd"] for a in data["annotations"]) == 3  # one crowd region per case-1 image


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    a, b, c = (tmp_path / "a", tmp_path / "b", tmp_path / "c")
    for out, seed in ((a, 3), (b, 3), (c, 4)):
        write_cub(out / "cub", seed, 6)
        write_coco(out / "coco", seed, 4)
    assert files(a) == files(b)
    assert files(a).keys() == files(c).keys() and files(a) != files(c)


def test_part_classes_are_separable_by_a_random_encoder(synth: dict[str, Path]) -> None:
    """Leave-one-out nearest neighbour on mean patch tokens of a random-weight tiny ViT."""
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=64, patch_size=8, embed_dim=64, depth=2,
        num_heads=4, num_classes=0, global_pool="avg",
    ).eval()  # fmt: skip
    for name, chance in (("cub-parts", 20 / 68), ("coco-parts", 1 / 3)):
        items = part_patches(name, synth[name], "retrieval")
        ds = PatchImageDataset(items, part_images_dir(name, synth[name], "retrieval"), size=64)
        patches, idx = collate_patch_groups([ds[i] for i in range(len(ds))])
        with torch.no_grad():
            feats = torch.nn.functional.normalize(vit(patches), dim=1)
        labels = torch.tensor([items[i].label for i in idx.tolist()])
        sim = feats @ feats.T
        sim.fill_diagonal_(-2)
        accuracy = (labels[sim.argmax(1)] == labels).float().mean().item()
        assert accuracy > max(0.75, chance + 0.4), (name, accuracy)
