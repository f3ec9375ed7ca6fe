"""`partbench synth` and `partbench datasets [--check]`: every set written, the registry listed,
the validation pass counting what it should and reporting every problem it finds."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from partbench.cli import app
from partbench.datasets import check_parts, list_datasets, write_synthetic
from partbench.datasets.registry import dataset_info, dataset_present
from partbench.errors import DatasetError

EIGHT = [
    "cub-parts", "coco-parts", "ade20k-part", "ade20k-object", "ade20k-150", "pascal-part",
    "pascal-object", "lip",
]  # fmt: skip


def test_registry_lists_the_eight_sets() -> None:
    assert list_datasets() == EIGHT
    assert dataset_info("cub-parts").num_classes == 4 and dataset_info("coco-parts").num_classes == 3
    assert dataset_info("lip").num_classes == 19 and dataset_info("lip").kind == "segmentation"
    with pytest.raises(DatasetError, match="unknown data set 'cub'"):
        dataset_info("cub")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    result = CliRunner().invoke(app, ["synth", "--out", str(out), "--seed", "0"])
    assert result.exit_code == 0, result.output
    for name in EIGHT:
        assert f"{name}: {out / name}" in result.output
    return out


def test_write_synthetic_writes_every_set(synth_root: Path) -> None:
    assert sorted(p.name for p in synth_root.iterdir() if not p.name.startswith(".")) == sorted(EIGHT)
    assert all(dataset_present(name, synth_root / name) for name in EIGHT)


def test_datasets_table_shows_presence(synth_root: Path, _isolated_home: Path) -> None:
    result = CliRunner().invoke(app, ["datasets"])
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in EIGHT) and "yes" not in result.output
    write_synthetic(_isolated_home / "data", seed=0)  # now present under data_dir()
    result = CliRunner().invoke(app, ["datasets"])
    assert result.output.count("yes") == 8


def test_check_counts(synth_root: Path) -> None:
    result = CliRunner().invoke(app, ["datasets", "--check", str(synth_root)])
    assert result.exit_code == 0, result.output
    assert "retrieval: right eye=16, right leg=16, left wing=16, tail=20" in result.output
    assert "val: nose=15, right_wrist=15, left_ankle=15" in result.output
    assert "8 data set(s) checked, no problems" in result.output


def test_check_reports_every_problem(tmp_path: Path) -> None:
    roots = write_synthetic(tmp_path, seed=1)
    cub = roots["cub-parts"]
    (cub / "images" / "001.Synth_Red_Bird" / "Synth_Red_Bird_0001.jpg").unlink()  # image 1: case 0
    (cub / "images" / "002.Synth_Grey_Bird" / "Synth_Grey_Bird_0002.jpg").write_bytes(b"garbage")
    counts, problems = check_parts("cub-parts", cub)
    assert any(f"{cub / 'images.txt'}:1: image 1: " in p and "not found" in p for p in problems)
    assert any("Synth_Grey_Bird_0002.jpg: cannot decode image" in p for p in problems)
    assert all("\n" not in p for p in problems)
    assert counts["val"] == {"right eye": 8, "right leg": 8, "left wing": 8, "tail": 10}  # val intact
    result = CliRunner().invoke(app, ["datasets", "--check", str(tmp_path)])
    assert result.exit_code == 1 and isinstance(result.exception, DatasetError)
    assert "problem:" in result.output


def test_synth_bad_scale(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="scale must be one of small, medium"):
        write_synthetic(tmp_path, scale="huge")
    assert not any(tmp_path.iterdir())


def test_check_flags_an_incomplete_official_set(synth_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from partbench.datasets.parts import PART_DATASETS

    # pretend the official release had 30 images: the 24 found are more than half, not all
    spec = replace(PART_DATASETS["cub-parts"], official_images=(("retrieval", 30), ("train", 12)))
    monkeypatch.setitem(PART_DATASETS, "cub-parts", spec)
    counts, problems = check_parts("cub-parts", synth_root / "cub-parts")
    assert counts["listed_images"] == {"retrieval": 24, "train": 12, "val": 12}
    assert problems == [
        f"{synth_root / 'cub-parts' / 'images.txt'}: split 'retrieval' has 24 images, the official set 30"
    ]


def test_a_failed_write_keeps_the_previous_set(tmp_path: Path) -> None:
    from partbench.datasets.synth import staged_dir

    final = tmp_path / "cub-parts"
    final.mkdir()
    (final / "images.txt").write_text("old\n")
    with pytest.raises(RuntimeError), staged_dir(final) as tmp:
        (tmp / "images.txt").write_text("half\n")
        raise RuntimeError("crash mid-write")
    assert (final / "images.txt").read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cub-parts"]  # no temp folder left
    with staged_dir(final) as tmp:
        (tmp / "images.txt").write_text("new\n")
    assert (final / "images.txt").read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cub-parts"]  # the old set removed
