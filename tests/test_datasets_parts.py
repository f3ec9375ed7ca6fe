"""Part patches from keypoints: the crop rule worked by hand, then the readers, then bad inputs.

Every expected box below is computed by hand in the comment beside it, following the study's
code: dist = nearest/2, keep 20 < dist < 1000, r = round(dist/2) (ties to even), box =
(x-r, y-r, x+r, y+r), each coordinate rounded once more by PIL's crop (ties to even).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from partbench.config import Protocol
from partbench.datasets import PartItem, part_images_dir, part_patches, resolve_data_root
from partbench.datasets.crops import clean_box, nearest_distances, study_box
from partbench.errors import DatasetError

CUB_NAMES = [
    "back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing",
    "nape", "right eye", "right leg", "right wing", "tail", "throat",
]  # fmt: skip
EYE, LEG, WING, TAIL = "right eye", "right leg", "left wing", "tail"


# --- the crop rule -----------------------------------------------------------------------------


def test_study_box_by_hand() -> None:
    # nearest 50 → dist 25 → r = round(12.5) = 12 (ties to even)
    assert study_box(10.0, 20.0, 50.0) == (-2, 8, 22, 32)
    # nearest 70 → dist 35 → r = round(17.5) = 18
    assert study_box(60.0, 90.0, 70.0) == (42, 72, 78, 108)
    # nearest 52 → r = 13 (odd); x = 50.5: PIL rounds 37.5 → 38 and 63.5 → 64, so the box is
    # (38, 48, 64, 74), not round(x) - r = 37
    assert study_box(50.5, 60.5, 52.0) == (38, 48, 64, 74)


def test_study_box_filters() -> None:
    assert study_box(100, 100, 40.0) is None  # dist = 20, not > 20
    assert study_box(100, 100, 40.002) == (90, 90, 110, 110)  # dist 20.001, r = 10
    assert study_box(1000, 1000, 2000.0) is None  # dist = 1000, not < 1000
    assert study_box(1000, 1000, 1999.0) == (500, 500, 1500, 1500)  # r = round(499.75) = 500
    assert study_box(100, 100, np.inf) is None  # no neighbour


def test_clean_box_by_hand() -> None:
    # d = 50: side 50, x0 = round(10 - 25) = -15, y0 = round(20 - 25) = -5
    assert clean_box(10.0, 20.0, 50.0) == (-15, -5, 35, 45)
    # d = 45: x0 = round(27.5) = 28 (ties to even)
    assert clean_box(50.0, 50.0, 45.0) == (28, 28, 73, 73)
    assert clean_box(0, 0, 40.0) is None and clean_box(0, 0, 2000.0) is None


def test_nearest_distances_ignore_self_and_coincident_points() -> None:
    pts = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    # the two coincident points see each other at 0, which is ignored: both see (3, 4) at 5
    np.testing.assert_allclose(nearest_distances(pts, pts), [5.0, 5.0, 5.0])
    assert np.isinf(nearest_distances(pts[:1], pts[:1])).all()


# --- CUB -----------------------------------------------------------------------------------------


def _jpeg(path: Path, size: tuple[int, int] = (200, 160), seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)


def write_tiny_cub(root: Path, locs: dict[int, dict[int, tuple[float, float]]], train: set[int]) -> Path:
    """A CUB layout: image i (1-based) has visible parts ``locs[i]`` {part_id: (x, y)}."""
    n = len(locs)
    (root / "parts").mkdir(parents=True, exist_ok=True)
    (root / "images.txt").write_text("".join(f"{i} 001.Bird/b_{i}.jpg\n" for i in range(1, n + 1)))
    (root / "train_test_split.txt").write_text("".join(f"{i} {int(i in train)}\n" for i in range(1, n + 1)))
    (root / "parts" / "parts.txt").write_text("".join(f"{k} {s}\n" for k, s in enumerate(CUB_NAMES, 1)))
    lines = []
    for i in range(1, n + 1):
        for k in range(1, 16):
            x, y = locs[i].get(k, (0.0, 0.0))
            lines.append(f"{i} {k} {x:.1f} {y:.1f} {int(k in locs[i])}\n")
    (root / "parts" / "part_locs.txt").write_text("".join(lines))
    for i in range(1, n + 1):
        _jpeg(root / "images" / "001.Bird" / f"b_{i}.jpg", seed=i)
    return root


# part ids: left wing 9, right eye 11, right leg 12, tail 14, beak 2
CUB_LOCS = {
    1: {9: (60.0, 20.0), 11: (60.0, 90.0), 14: (10.0, 20.0)},  # border tail, r = 12 and 18
    2: {11: (100.0, 40.0), 9: (130.0, 40.0), 12: (100.0, 120.0)},  # eye–wing 30 px: both dropped
    3: {11: (50.5, 60.5), 14: (50.5, 112.5), 2: (50.5, 40.5)},  # half pixels, r = 13; beak 20 px off
    4: {11: (70.0, 70.0)},  # a lone keypoint: no neighbour, dropped
}


@pytest.fixture
def cub_root(tmp_path: Path) -> Path:
    return write_tiny_cub(tmp_path / "cub", CUB_LOCS, train={1, 3})


def test_cub_study_boxes_and_order(cub_root: Path) -> None:
    items = part_patches("cub-parts", cub_root, "retrieval")
    assert items == [
        # image 1, part_locs order (part id 9, 11, 14): wing nearest = tail 50 → r 12
        PartItem("001.Bird/b_1.jpg", WING, 2, (48, 8, 72, 32), None),
        # eye nearest = wing 70 → dist 35 → r = round(17.5) = 18
        PartItem("001.Bird/b_1.jpg", EYE, 0, (42, 72, 78, 108), None),
        # tail at the border: (10-12, 20-12, 10+12, 20+12)
        PartItem("001.Bird/b_1.jpg", TAIL, 3, (-2, 8, 22, 32), None),
        # image 2: eye and wing are 30 apart (dist 15 < 20, both dropped); the leg's nearest is
        # the eye at 80 → dist 40 → r 20 (dropped keypoints still count as neighbours)
        PartItem("001.Bird/b_2.jpg", LEG, 1, (80, 100, 120, 140), None),
        # image 3: eye–tail 52 → r 13; the visible beak is not a selected part, so it is ignored
        PartItem("001.Bird/b_3.jpg", EYE, 0, (38, 48, 64, 74), None),
        PartItem("001.Bird/b_3.jpg", TAIL, 3, (38, 100, 64, 126), None),
    ]


def test_cub_splits(cub_root: Path) -> None:
    train = part_patches("cub-parts", cub_root, "train")
    val = part_patches("cub-parts", cub_root, "val")
    assert [i.image for i in train] == ["001.Bird/b_1.jpg"] * 3 + ["001.Bird/b_3.jpg"] * 2
    assert [(i.part, i.box) for i in val] == [(LEG, (80, 100, 120, 140))]
    assert part_images_dir("cub-parts", cub_root, "val") == cub_root / "images"


def test_cub_clean_boxes(cub_root: Path) -> None:
    items = part_patches("cub-parts", cub_root, "retrieval", protocol="clean")
    assert [(i.image[-7:], i.part, i.box) for i in items] == [
        ("b_1.jpg", WING, (35, -5, 85, 45)),  # d 50: (60-25, 20-25, +50, +50)
        ("b_1.jpg", EYE, (25, 55, 95, 125)),  # d 70
        ("b_1.jpg", TAIL, (-15, -5, 35, 45)),
        ("b_2.jpg", LEG, (60, 80, 140, 160)),  # d 80
        ("b_3.jpg", EYE, (24, 34, 76, 86)),  # d 52: x0 = round(24.5) = 24, y0 = round(34.5) = 34
        ("b_3.jpg", TAIL, (24, 86, 76, 138)),  # y0 = round(86.5) = 86
    ]
    # the text's literal reading: every visible keypoint is a neighbour. The beak is 20 px from
    # the eye of image 3 (d 20 < 40: dropped); the tail still sees the eye at 52.
    every = part_patches("cub-parts", cub_root, "retrieval", protocol=Protocol.CLEAN, neighbours="all")
    assert [(i.image[-7:], i.part, i.box) for i in every if i.image.endswith("b_3.jpg")] == [
        ("b_3.jpg", TAIL, (24, 86, 76, 138))
    ]


def test_resolve_data_root_descends_one_level(tmp_path: Path, _isolated_home: Path) -> None:
    root = write_tiny_cub(tmp_path / "cub-parts" / "CUB_200_2011", CUB_LOCS, train={1})
    assert resolve_data_root("cub-parts", tmp_path / "cub-parts") == root
    assert resolve_data_root("cub-parts", root) == root
    assert len(part_patches("cub-parts", tmp_path / "cub-parts")) == 6
    # default: $PARTBENCH_HOME/data/<name>
    assert resolve_data_root("coco-parts") == _isolated_home / "data" / "coco-parts"


# --- COCO ----------------------------------------------------------------------------------------


def _kp(**points: tuple[float, float, int]) -> list[int | float]:
    names = [
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
        "right_knee", "left_ankle", "right_ankle",
    ]  # fmt: skip
    out: list[int | float] = [0] * 51
    for name, (x, y, v) in points.items():
        out[3 * names.index(name) : 3 * names.index(name) + 3] = [x, y, v]
    return out


def write_tiny_coco(root: Path, split: str, images: list[int], anns: list[tuple[int, int, list]]) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for image_id in images:
        _jpeg(root / split / f"{image_id:012d}.jpg", (220, 320), seed=image_id)
    data = {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 220, "height": 320} for i in images],
        "annotations": [
            {"id": a, "image_id": i, "keypoints": kp, "num_keypoints": 0, "iscrowd": 0, "category_id": 1}
            for a, i, kp in anns
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(data))
    return root


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    write_tiny_coco(
        root,
        "train2017",
        [10, 11],
        [
            (100, 11, _kp(nose=(50, 50, 2), right_wrist=(50, 110, 2))),
            (5, 10, _kp(nose=(50, 40, 2), right_wrist=(30, 100, 2), left_ankle=(60, 180, 2))),
            (6, 10, _kp(nose=(150, 40, 2), right_wrist=(130, 100, 2), left_ankle=(160, 180, 1))),
            (7, 10, _kp(nose=(100, 300, 2), left_wrist=(20, 20, 2))),  # one selected keypoint: skipped
            (140, 11, _kp(nose=(95, 50, 2), right_wrist=(95, 150, 2))),
        ],
    )
    write_tiny_coco(root, "val2017", [20], [(300, 20, _kp(nose=(100, 40, 2), left_ankle=(100, 200, 2)))])
    return root


def test_coco_study_boxes_order_and_ann_id_quirk(coco_root: Path) -> None:
    items = part_patches("coco-parts", coco_root, "retrieval")
    f10, f11 = "000000000010.jpg", "000000000011.jpg"
    assert items == [
        # image 11 comes first: its annotation 100 is first in the file.
        # nose 100 (50,50): 2-D it is 45 from nose 140 (95,50), but with the annotation id as a
        # third coordinate that is sqrt(45² + 40²) = 60.21 > 60 (its own wrist) → dist 30, r 15
        PartItem(f11, "nose", 0, (35, 35, 65, 65), 100),
        PartItem(f11, "right_wrist", 1, (35, 95, 65, 125), 100),  # nearest: own nose, 60 → r 15
        # items are grouped by image: annotation 140 (last in the file) is also in image 11.
        # nose 140: nearest = nose 100 at 60.21 → r = round(15.05) = 15
        PartItem(f11, "nose", 0, (80, 35, 110, 65), 140),
        # wrist (95,150): own nose at 100, wrist 100 at sqrt(45²+40²+40²) = 72.28 → r = round(18.07) = 18
        PartItem(f11, "right_wrist", 1, (77, 132, 113, 168), 140),
        # image 10, annotation order: person 5 — nose–wrist sqrt(20²+60²) = 63.25 → r = round(15.81) = 16
        PartItem(f10, "nose", 0, (34, 24, 66, 56), 5),
        PartItem(f10, "right_wrist", 1, (14, 84, 46, 116), 5),
        # ankle: nearest is its wrist, sqrt(30²+80²) = 85.44 → dist 42.72 → r = round(21.36) = 21
        PartItem(f10, "left_ankle", 2, (39, 159, 81, 201), 5),
        # person 6: ankle occluded (v=1) so only nose + wrist, 63.25 apart → r 16
        PartItem(f10, "nose", 0, (134, 24, 166, 56), 6),
        PartItem(f10, "right_wrist", 1, (114, 84, 146, 116), 6),
        # person 7 has only one selected visible keypoint → skipped
    ]


def test_coco_clean_drops_the_ann_id(coco_root: Path) -> None:
    items = part_patches("coco-parts", coco_root, "retrieval", protocol="clean")
    by_ann = {(i.ann_id, i.part): i.box for i in items}
    assert by_ann[(100, "nose")] == (28, 28, 73, 73)  # plain 2-D: nose 140 at 45 → x0 = round(27.5)
    assert by_ann[(100, "right_wrist")] == (20, 80, 80, 140)  # d 60
    assert by_ann[(140, "nose")] == (72, 28, 117, 73)  # d 45: x0 = round(72.5) = 72
    # d = sqrt(45² + 40²) = 60.208: side 60, x0 = round(95 - 30.104) = 65, y0 = round(119.896) = 120
    assert by_ann[(140, "right_wrist")] == (65, 120, 125, 180)
    assert by_ann[(5, "nose")] == (18, 8, 81, 71)  # d 63.25: side 63, x0 = round(18.38) = 18


def test_coco_splits_and_images_dir(coco_root: Path) -> None:
    assert part_patches("coco-parts", coco_root, "train") == part_patches(
        "coco-parts", coco_root, "retrieval"
    )
    val = part_patches("coco-parts", coco_root, "val")
    # nose–ankle 160 → dist 80 → r 40
    assert val == [
        PartItem("000000000020.jpg", "nose", 0, (60, 0, 140, 80), 300),
        PartItem("000000000020.jpg", "left_ankle", 2, (60, 160, 140, 240), 300),
    ]
    assert part_images_dir("coco-parts", coco_root, "val") == coco_root / "val2017"
    assert part_images_dir("coco-parts", coco_root, "retrieval") == coco_root / "train2017"


def test_coco_images_subfolder_layout(coco_root: Path) -> None:
    (coco_root / "images").mkdir()
    (coco_root / "val2017").rename(coco_root / "images" / "val2017")
    assert part_images_dir("coco-parts", coco_root, "val") == coco_root / "images" / "val2017"
    assert len(part_patches("coco-parts", coco_root, "val")) == 2


# --- bad inputs: one line naming the file (and line) ----------------------------------------------


def _one_line(exc: pytest.ExceptionInfo[DatasetError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_malformed_part_locs_line(cub_root: Path) -> None:
    path = cub_root / "parts" / "part_locs.txt"
    lines = path.read_text().splitlines()
    lines[6] = "1 7 12.0"  # line 7
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as exc:
        part_patches("cub-parts", cub_root, "retrieval")
    assert f"{path}:7:" in _one_line(exc)


def test_non_numeric_coordinate(cub_root: Path) -> None:
    path = cub_root / "parts" / "part_locs.txt"
    lines = path.read_text().splitlines()
    lines[20] = "2 6 abc 4.0 1"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as exc:
        part_patches("cub-parts", cub_root, "retrieval")
    assert f"{path}:21:" in _one_line(exc) and "abc" in str(exc.value)


def test_unknown_image_id_in_part_locs(cub_root: Path) -> None:
    path = cub_root / "parts" / "part_locs.txt"
    path.write_text(path.read_text() + "9 11 3.0 4.0 1\n")
    with pytest.raises(DatasetError) as exc:
        part_patches("cub-parts", cub_root, "retrieval")
    assert f"{path}:61:" in _one_line(exc) and "image id 9" in str(exc.value)


def test_image_listed_but_missing(cub_root: Path) -> None:
    (cub_root / "images" / "001.Bird" / "b_2.jpg").unlink()
    with pytest.raises(DatasetError) as exc:
        part_patches("cub-parts", cub_root, "val")
    assert f"{cub_root / 'images.txt'}:2:" in _one_line(exc) and "b_2.jpg" in str(exc.value)


def test_missing_cub_file(cub_root: Path) -> None:
    (cub_root / "train_test_split.txt").unlink()
    with pytest.raises(DatasetError) as exc:
        part_patches("cub-parts", cub_root, "train")
    assert "train_test_split.txt: file not found" in _one_line(exc)


def test_wrong_part_names(cub_root: Path) -> None:
    path = cub_root / "parts" / "parts.txt"
    path.write_text(path.read_text().replace("11 right eye", "11 eye"))
    with pytest.raises(DatasetError) as exc:
        part_patches("cub-parts", cub_root, "retrieval")
    assert str(path) in _one_line(exc) and "'right eye'" in str(exc.value)


def test_empty_split(tmp_path: Path) -> None:
    root = write_tiny_cub(tmp_path / "cub", {1: {11: (10.0, 10.0), 14: (90.0, 10.0)}, 2: {}}, train={1})
    assert len(part_patches("cub-parts", root, "train")) == 2
    with pytest.raises(DatasetError) as exc:
        part_patches("cub-parts", root, "val")
    assert "part_locs.txt: split 'val' has no part patches" in _one_line(exc)


def test_missing_annotation_file(coco_root: Path) -> None:
    path = coco_root / "annotations" / "person_keypoints_val2017.json"
    path.unlink()
    with pytest.raises(DatasetError) as exc:
        part_patches("coco-parts", coco_root, "val")
    assert f"{path}: annotation file not found" == _one_line(exc)


def test_invalid_json_names_the_line(coco_root: Path) -> None:
    path = coco_root / "annotations" / "person_keypoints_val2017.json"
    path.write_text('{\n"images": [],\n"annotations": [,]\n}')
    with pytest.raises(DatasetError) as exc:
        part_patches("coco-parts", coco_root, "val")
    assert f"{path}:3: invalid JSON" in _one_line(exc)


def test_bad_keypoints_and_unknown_image(coco_root: Path) -> None:
    path = coco_root / "annotations" / "person_keypoints_val2017.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["keypoints"] = [1, 2, 2]
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError) as exc:
        part_patches("coco-parts", coco_root, "val")
    assert "annotation id 300 has keypoints of length 3" in _one_line(exc)
    data["annotations"][0]["keypoints"] = _kp(nose=(1, 1, 2))
    data["annotations"][0]["image_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError) as exc:
        part_patches("coco-parts", coco_root, "val")
    assert "annotation id 300 refers to unknown image id 99" in _one_line(exc)


def test_coco_image_missing(coco_root: Path) -> None:
    (coco_root / "val2017" / "000000000020.jpg").unlink()
    with pytest.raises(DatasetError) as exc:
        part_patches("coco-parts", coco_root, "val")
    assert "000000000020.jpg not found" in _one_line(exc)


def test_bad_names(cub_root: Path) -> None:
    with pytest.raises(DatasetError, match="not a part data set"):
        part_patches("cub", cub_root, "val")
    with pytest.raises(DatasetError, match="unknown split 'test'"):
        part_patches("cub-parts", cub_root, "test")
    with pytest.raises(DatasetError, match="protocol"):
        part_patches("cub-parts", cub_root, "val", protocol="paper")
    with pytest.raises(DatasetError, match="neighbours"):
        part_patches("cub-parts", cub_root, "val", protocol="study", neighbours="all")
    with pytest.raises(DatasetError, match="data set folder not found"):
        part_patches("cub-parts", cub_root / "nope", "val")


def test_resolve_data_root_for_segmentation_layouts(tmp_path: Path) -> None:
    deep = tmp_path / "ade20k-object" / "ade_59object" / "ADEChallengeData2016"
    (deep / "images" / "training").mkdir(parents=True)
    assert resolve_data_root("ade20k-object", tmp_path / "ade20k-object") == deep
    (tmp_path / "lip" / "LIP" / "img" / "train").mkdir(parents=True)
    assert resolve_data_root("lip", tmp_path / "lip") == tmp_path / "lip" / "LIP"
    # two candidates: ambiguous, the folder comes back as given
    (tmp_path / "lip" / "LIP2" / "img" / "train").mkdir(parents=True)
    assert resolve_data_root("lip", tmp_path / "lip") == tmp_path / "lip"


def test_cub_order_follows_part_locs_lines(cub_root: Path) -> None:
    # the study keeps the order of part_locs.txt: move image 3's lines first, tail before eye
    path = cub_root / "parts" / "part_locs.txt"
    lines = path.read_text().splitlines()
    img3 = [line for line in lines if line.startswith("3 ")]
    img3 = [img3[13], *img3[:13], img3[14]]  # part 14 (tail) first
    path.write_text("\n".join(img3 + [line for line in lines if not line.startswith("3 ")]) + "\n")
    items = part_patches("cub-parts", cub_root, "retrieval")
    assert [(i.image[-7:], i.part) for i in items] == [
        ("b_3.jpg", TAIL), ("b_3.jpg", EYE), ("b_1.jpg", WING), ("b_1.jpg", EYE), ("b_1.jpg", TAIL),
        ("b_2.jpg", LEG),
    ]  # fmt: skip
