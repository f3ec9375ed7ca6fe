"""Segmentation sets: registry (paper.md 2.3 / 5), readers, labels, synthetic twins, torch Dataset.

Order: the protocol's table, hand-worked reduce_zero_label, the readers on the synthetic twins (split
sizes and class counts), the training/evaluation samples, then bad inputs (one line naming the file).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from partbench.datasets import (
    SEG_DATASETS,
    SegmentationDataset,
    SegSample,
    check_segmentation,
    load_label,
    seg_samples,
    write_segmentation_sets,
)
from partbench.datasets import seg_transforms as T
from partbench.datasets.segmentation import reduce_zero_label
from partbench.errors import DatasetError

# name → (classes after reduce, layout, crop, train scale, test scale, slide stride): paper.md 2.3 / 5
PAPER_TABLE = {
    "ade20k-150": (150, "ade", 512, (2048, 512), (2048, 512), 341),
    "ade20k-object": (59, "ade", 512, (2048, 512), (2048, 512), 341),
    "ade20k-part": (209, "mmseg", 512, (2048, 512), (2048, 512), 341),
    "pascal-object": (16, "mmseg", 480, (520, 520), (3840, 480), 161),
    "pascal-part": (193, "mmseg", 480, (520, 520), (3840, 480), 161),
    "lip": (19, "mmseg", 320, (1024, 320), (4096, 320), 161),
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_segmentation_sets(tmp_path_factory.mktemp("synth_seg"), seed=0)


def _raw(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# --- registry -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PAPER_TABLE))
def test_registry_matches_the_paper_table(name):
    classes, layout, crop, train_scale, test_scale, stride = PAPER_TABLE[name]
    spec = SEG_DATASETS[name]
    assert spec.num_classes == classes == len(spec.class_names) == len(set(spec.class_names))
    assert spec.layout == layout
    assert spec.crop_size == spec.slide_crop == (crop, crop)
    assert (spec.train_scale, spec.test_scale, spec.slide_stride) == (
        train_scale,
        test_scale,
        (stride, stride),
    )
    assert (spec.img_suffix, spec.seg_suffix, spec.reduce_zero_label, spec.ignore_index) == (
        ".jpg",
        ".png",
        True,
        255,
    )


def test_registry_has_exactly_the_six_sets_and_real_names_where_known():
    assert set(SEG_DATASETS) == set(PAPER_TABLE)
    ade = SEG_DATASETS["ade20k-150"].class_names
    assert (ade[0], ade[12], ade[149]) == ("wall", "person", "flag")
    lip = SEG_DATASETS["lip"].class_names
    assert (lip[0], lip[12], lip[18]) == ("Hat", "Face", "Right-shoe")
    pascal = SEG_DATASETS["pascal-object"].class_names
    assert (pascal[0], pascal[11], pascal[15]) == ("aeroplane", "person", "tvmonitor")
    assert "boat" not in pascal and "chair" not in pascal
    for name in ("ade20k-part", "pascal-part", "ade20k-object"):
        spec = SEG_DATASETS[name]
        assert not spec.names_verified and spec.class_names[0].endswith("_000")
    assert SEG_DATASETS["lip"].names_verified


# --- reduce_zero_label ----------------------------------------------------------------------------


def test_reduce_zero_label_hand_worked():
    raw = np.array([[0, 1, 2], [19, 255, 5]], dtype=np.uint8)
    assert reduce_zero_label(raw).tolist() == [[255, 0, 1], [18, 255, 4]]


def test_load_label_reduces_and_accepts_the_last_class(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.array([[0, 1, 19], [255, 7, 0]], dtype=np.uint8), "L").save(path)
    label = load_label(path, SEG_DATASETS["lip"], image_size=(2, 3))
    assert label.dtype == np.uint8
    assert label.tolist() == [[255, 0, 18], [255, 6, 255]]


def test_load_label_reads_palette_pngs_as_indices(tmp_path):
    path = tmp_path / "p.png"
    im = Image.fromarray(np.array([[0, 3], [16, 1]], dtype=np.uint8), "P")
    im.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    im.save(path)
    assert load_label(path, SEG_DATASETS["pascal-object"]).tolist() == [[255, 2], [15, 0]]


# --- readers on the synthetic twins ---------------------------------------------------------------


def test_synthetic_sets_have_the_documented_split_sizes(synth):
    assert sorted(synth) == sorted(PAPER_TABLE)
    for name, root in synth.items():
        train, val = seg_samples(name, root, "train"), seg_samples(name, root, "val")
        assert (len(train), len(val)) == (8, 4), name
        stems = [s.image.stem for s in train]
        assert stems == sorted(stems)
        assert all(isinstance(s, SegSample) and s.label.stem == s.image.stem for s in train + val)
        assert all(s.label.suffix == ".png" and s.image.suffix == ".jpg" for s in train)


def test_synthetic_sets_use_the_real_layouts(synth):
    assert (synth["ade20k-150"] / "images" / "training").is_dir()
    assert (synth["ade20k-object"] / "annotations" / "validation").is_dir()
    for name in ("ade20k-part", "pascal-part", "pascal-object", "lip"):
        assert (synth[name] / "img" / "train").is_dir() and (synth[name] / "ann" / "val").is_dir()


def test_check_segmentation_counts_images_and_class_pixels(synth):
    for name, root in synth.items():
        spec = SEG_DATASETS[name]
        counts, problems = check_segmentation(name, root)
        assert problems == []
        assert counts["images"] == {"train": 8, "val": 4}
        # independent count straight from the PNG files: raw id k ≥ 1 is class k-1, 0 is ignored
        raw = np.concatenate([_raw(p).ravel() for p in sorted(root.rglob("*.png"))])
        ids, n = np.unique(raw[raw != 0], return_counts=True)
        expected = {spec.class_names[i - 1]: int(c) for i, c in zip(ids, n, strict=True)}
        assert counts["class_pixels"] == expected
        assert sum(counts["ignored_pixels"].values()) == int((raw == 0).sum())
        assert all(1 <= v <= 12 for v in counts["class_images"].values())
        info = json.loads((root / "synth_info.json").read_text())
        assert sorted(info["classes_used"]) == sorted(expected)
        # a handful of classes is used, always including the first and the last
        assert spec.class_names[0] in expected and spec.class_names[-1] in expected


def test_synthetic_label_pngs_are_mode_l_and_match_image_sizes(synth):
    for sample in seg_samples("lip", synth["lip"], "train"):
        with Image.open(sample.label) as lab, Image.open(sample.image) as img:
            assert lab.mode == "L" and img.format == "JPEG" and lab.size == img.size == (128, 96)


def test_part_and_object_sets_share_images_and_nest(synth):
    parts = seg_samples("pascal-part", synth["pascal-part"], "train")
    objects = seg_samples("pascal-object", synth["pascal-object"], "train")
    for p, o in zip(parts, objects, strict=True):
        assert p.image.read_bytes() == o.image.read_bytes()
        part_map, object_map = _raw(p.label), _raw(o.label)
        assert ((part_map == 0) == (object_map == 0)).all()
        # every part class lies inside exactly one object class (the paper's hierarchy)
        for part_id in np.unique(part_map[part_map > 0]):
            assert np.unique(object_map[part_map == part_id]).size == 1


def test_synthetic_writer_is_byte_identical_for_a_seed(tmp_path, synth):
    again = write_segmentation_sets(tmp_path / "a", seed=0)
    other = write_segmentation_sets(tmp_path / "b", seed=1)
    for name in ("lip", "ade20k-150"):
        files = sorted(p.relative_to(synth[name]) for p in synth[name].rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(again[name]) for p in again[name].rglob("*") if p.is_file())
        assert all((synth[name] / f).read_bytes() == (again[name] / f).read_bytes() for f in files)
        first = files[0] if files[0].suffix == ".jpg" else next(f for f in files if f.suffix == ".jpg")
        assert (synth[name] / first).read_bytes() != (other[name] / first).read_bytes()


def test_rewriting_replaces_a_set_and_leaves_no_temp_folders(tmp_path):
    out = tmp_path / "s"
    write_segmentation_sets(out, seed=0)
    stale = out / "lip" / "img" / "train" / "stale.jpg"
    stale.write_bytes(b"x")
    write_segmentation_sets(out, seed=0)
    assert not stale.exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(PAPER_TABLE)


def test_synthetic_parts_are_linearly_separable_on_random_vit_features(synth):
    """A linear probe on a random-weight tiny ViT's patch tokens beats the majority class by far."""
    timm = pytest.importorskip("timm")
    from sklearn.linear_model import LogisticRegression

    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=(96, 128), embed_dim=64, depth=2, num_heads=4
    ).eval()

    def patches(split):
        feats, labels = [], []
        for s in seg_samples("ade20k-part", synth["ade20k-part"], split):
            img = T.normalize(np.array(Image.open(s.image).convert("RGB")))
            with torch.no_grad():
                tokens = vit.forward_features(img[None])[0, 1:]
            lab = _raw(s.label).reshape(6, 16, 8, 16).transpose(0, 2, 1, 3).reshape(48, 256)
            majority = np.array([np.bincount(row, minlength=256).argmax() for row in lab])
            feats.append(tokens.numpy())
            labels.append(majority)
        return np.concatenate(feats), np.concatenate(labels)

    x_train, y_train = patches("train")
    x_val, y_val = patches("val")
    probe = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    accuracy = (probe.predict(x_val) == y_val).mean()
    chance = np.bincount(y_val).max() / y_val.size
    fg = y_val > 0
    fg_accuracy = (probe.predict(x_val[fg]) == y_val[fg]).mean()
    assert accuracy > chance + 0.2 and fg_accuracy > 0.6, (accuracy, chance, fg_accuracy)


# --- SegmentationDataset --------------------------------------------------------------------------


def test_train_samples_have_the_crop_shape_and_valid_labels(synth):
    ds = SegmentationDataset("lip", synth["lip"], "train", train=True, crop_size=64, scale=(128, 96))
    assert len(ds) == 8
    image, label = ds[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert label.shape == (64, 64) and label.dtype == torch.int64
    values = set(label.unique().tolist())
    assert values <= set(range(19)) | {255}


def test_train_sampling_is_repeatable_per_seed_index_and_epoch(synth):
    make = lambda seed: SegmentationDataset(  # noqa: E731
        "ade20k-part", synth["ade20k-part"], "train", train=True, crop_size=64, scale=(128, 96), seed=seed
    )
    a, b, c = make(0), make(0), make(1)
    x0, y0 = a[3]
    x1, y1 = b[3]
    assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert not torch.equal(c[3][0], x0)
    a.set_epoch(1)
    assert not torch.equal(a[3][0], x0)
    a.set_epoch(0)
    assert torch.equal(a[3][0], x0)


def test_train_pipeline_keeps_image_and_label_aligned(synth, monkeypatch):
    """With the colour jitter off, each labelled pixel shows its part colour (crop, flip, resize aligned)."""
    monkeypatch.setattr(T, "photometric_distortion", lambda image, rng: image)
    ds = SegmentationDataset(
        "pascal-part", synth["pascal-part"], "train", train=True, crop_size=64, scale=(128, 96)
    )
    # reference colour of each class: mean of its pixels in the original images
    sums, counts = {}, {}
    for s in ds.samples:
        img, lab = np.array(Image.open(s.image).convert("RGB")), load_label(s.label, ds.spec)
        for k in np.unique(lab[lab != 255]):
            sums[k] = sums.get(k, 0) + img[lab == k].astype(float).sum(0)
            counts[k] = counts.get(k, 0) + (lab == k).sum()
    mean = torch.tensor(T.MMSEG_MEAN)[:, None, None]
    std = torch.tensor(T.MMSEG_STD)[:, None, None]
    for epoch in range(2):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            x, y = ds[i]
            pixels = (x * std + mean).permute(1, 2, 0).numpy()
            for k in y.unique().tolist():
                if k == 255:
                    continue
                got = np.median(pixels[y.numpy() == k], axis=0)
                assert np.abs(got - sums[k] / counts[k]).max() < 40, (i, k)


def test_small_images_are_padded_with_ignore_and_zero(synth):
    ds = SegmentationDataset("lip", synth["lip"], "train", train=True, crop_size=(80, 200), scale=(64, 48))
    image, label = ds[1]
    # rescaled to at most (48·2) x (64·2) = 96 x 128 < 200 wide: the right side is padding
    assert image.shape == (3, 80, 200)
    assert (label[:, 128:] == 255).all() and (image[:, :, 128:] == 0).all()


def test_val_resizes_the_image_but_keeps_the_original_label(synth):
    ds = SegmentationDataset("ade20k-150", synth["ade20k-150"], "val", train=False, scale=(256, 192))
    image, label = ds[0]
    assert image.shape == (3, 192, 256)  # 96x128 fitted into (long 256, short 192)
    raw = _raw(ds.samples[0].label)
    assert label.shape == raw.shape == (96, 128)
    assert torch.equal(label, torch.from_numpy(reduce_zero_label(raw).astype(np.int64)))
    default = SegmentationDataset("ade20k-150", synth["ade20k-150"], "val", train=False)
    assert default.scale == (2048, 512) and default[0][0].shape == (3, 512, 683)


def test_each_sample_decodes_its_image_once(synth, monkeypatch):
    import partbench.datasets.segmentation as seg

    opened = []
    real_open = seg.Image.open
    monkeypatch.setattr(seg.Image, "open", lambda p, *a, **k: opened.append(Path(p)) or real_open(p, *a, **k))
    ds = SegmentationDataset("lip", synth["lip"], "train", train=True, crop_size=64, scale=(128, 96))
    ds[2]
    assert sorted(p.suffix for p in opened) == [".jpg", ".png"]


# --- bad inputs: one line naming the file ---------------------------------------------------------


def _copy_set(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_label_of_the_wrong_size_names_the_file(synth, tmp_path):
    root = _copy_set(synth["lip"], tmp_path / "lip")
    bad = root / "ann" / "train" / seg_samples("lip", root, "train")[0].label.name
    Image.fromarray(np.zeros((50, 60), np.uint8), "L").save(bad)
    ds = SegmentationDataset("lip", root, "train", train=True, crop_size=32)
    with pytest.raises(DatasetError) as exc:
        ds[0]
    assert str(bad) in _one_line(exc) and "60x50" in str(exc.value) and "128x96" in str(exc.value)


def test_label_value_outside_the_class_range_names_file_and_values(tmp_path):
    path = tmp_path / "bad.png"
    Image.fromarray(np.array([[0, 19, 20], [254, 255, 40]], dtype=np.uint8), "L").save(path)
    with pytest.raises(DatasetError) as exc:
        load_label(path, SEG_DATASETS["lip"])
    message = _one_line(exc)
    assert str(path) in message and "20, 40, 254" in message and "0..19" in message


def test_rgb_label_map_is_refused(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8), "RGB").save(path)
    with pytest.raises(DatasetError) as exc:
        load_label(path, SEG_DATASETS["lip"])
    assert str(path) in _one_line(exc) and "one channel" in str(exc.value)


def test_missing_label_names_the_missing_file(synth, tmp_path):
    root = _copy_set(synth["pascal-part"], tmp_path / "pp")
    missing = sorted((root / "ann" / "val").glob("*.png"))[1]
    missing.unlink()
    with pytest.raises(DatasetError) as exc:
        seg_samples("pascal-part", root, "val")
    assert str(missing) in _one_line(exc)


def test_unreadable_jpeg_names_the_file(synth, tmp_path):
    root = _copy_set(synth["ade20k-part"], tmp_path / "ap")
    broken = seg_samples("ade20k-part", root, "val")[0].image
    broken.write_bytes(broken.read_bytes()[:200])  # truncated JPEG
    ds = SegmentationDataset("ade20k-part", root, "val", train=False)
    with pytest.raises(DatasetError) as exc:
        ds[0]
    assert str(broken) in _one_line(exc) and "unreadable image" in str(exc.value)


def test_empty_split_and_unknown_names(tmp_path, synth):
    root = _copy_set(synth["lip"], tmp_path / "lip")
    for f in (root / "img" / "val").iterdir():
        f.unlink()
    with pytest.raises(DatasetError) as exc:
        seg_samples("lip", root, "val")
    assert "empty split" in _one_line(exc) and str(root / "img" / "val") in str(exc.value)
    with pytest.raises(DatasetError, match="image folder missing"):
        seg_samples("lip", tmp_path / "nowhere", "train")
    with pytest.raises(DatasetError, match="unknown split 'test'"):
        seg_samples("lip", root, "test")
    with pytest.raises(DatasetError, match="unknown segmentation set 'ade'"):
        seg_samples("ade", root, "train")


def test_check_segmentation_reports_every_problem(synth, tmp_path):
    root = _copy_set(synth["ade20k-object"], tmp_path / "ao")
    train = seg_samples("ade20k-object", root, "train")
    train[0].label.unlink()  # missing label
    Image.fromarray(np.full((96, 128), 60, np.uint8), "L").save(train[1].label)  # 60 > 59
    Image.fromarray(np.zeros((10, 10), np.uint8), "L").save(train[2].label)  # wrong size
    train[3].image.write_bytes(b"not a jpeg")  # unreadable
    orphan = root / "annotations" / "validation" / "ADE_val_99999999.png"
    Image.fromarray(np.zeros((4, 4), np.uint8), "L").save(orphan)
    counts, problems = check_segmentation("ade20k-object", root)
    assert len(problems) == 5 and all("\n" not in p for p in problems)
    for needle in (train[0].label, train[1].label, train[2].label, train[3].image, orphan):
        assert sum(str(needle) in p for p in problems) == 1, needle
    assert counts["images"] == {"train": 7, "val": 4}
    _, problems = check_segmentation("ade20k-object", tmp_path / "absent")
    assert len(problems) == 1 and "folder missing" in problems[0]


def test_unknown_synthetic_scale_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="'huge'"):
        write_segmentation_sets(tmp_path, scale="huge")


def test_unreadable_label_png_names_the_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DatasetError) as exc:
        load_label(path, SEG_DATASETS["lip"])
    assert str(path) in _one_line(exc) and "unreadable label map" in str(exc.value)


def test_dataloader_workers_give_the_same_samples_as_direct_indexing(synth):
    ds = SegmentationDataset("lip", synth["lip"], "train", train=True, crop_size=48, scale=(128, 96), seed=3)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    images = torch.cat([x for x, _ in loader])
    direct = torch.stack([ds[i][0] for i in range(len(ds))])
    assert torch.equal(images, direct)
    # different items draw different crops/jitter (no repeated stream across workers)
    assert len({tuple(x.flatten()[:64].tolist()) for x in images}) == len(ds)
