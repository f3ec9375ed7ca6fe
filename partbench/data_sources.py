"""Where each data set comes from: the official archives (or the authors' Drive folder) per name.

`partbench fetch --datasets NAME` downloads `get_dataset_source(NAME).files` into `data_dir()/NAME/` and
extracts the archives there; `DatasetSource.layout_root` is the folder (relative to that) where the
data set's layout then sits, which the readers find there or one folder down.
SHA-256 values are None until a maintainer pins them (fetch prints what it saw); sizes are the
published byte counts of the official files where known.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from partbench.config import data_dir
from partbench.errors import DatasetError
from partbench.sources import RemoteFile, SourceKind

__all__ = [
    "AUTHORS_DRIVE_FOLDER",
    "DATASET_SOURCES",
    "DatasetSource",
    "dataset_names",
    "expected_layout_root",
    "get_dataset_source",
]

#: The study authors' Google Drive folder: processed part/object segmentation sets (and BEiT).
AUTHORS_DRIVE_FOLDER = "https://drive.google.com/drive/folders/1JSNzbxc9MBpNIhMRP8Vd0FFk7K5hC65q"


@dataclass(frozen=True)
class DatasetSource:
    """The files of one data set and the folder its layout lands in after extraction.

    For Drive-folder sources the `RemoteFile.filename` is the name of the entry (archive or folder)
    in the authors' folder, matched ignoring case, separators and archive suffixes; `aliases` are
    other spellings accepted for it.
    """

    name: str
    files: tuple[RemoteFile, ...]
    layout_root: str
    aliases: tuple[str, ...] = ()
    note: str = ""


def _coco(path: str, size: int) -> RemoteFile:
    return RemoteFile(
        url=f"http://images.cocodataset.org/{path}",
        filename=path.rsplit("/", 1)[1],
        size=size,
        extract=True,
        note="official COCO 2017 file (the site serves plain HTTP; the size is checked)",
    )


def _drive(entry: str, what: str) -> RemoteFile:
    return RemoteFile(
        url=AUTHORS_DRIVE_FOLDER,
        filename=entry,
        kind=SourceKind.GDRIVE_FOLDER,
        extract=True,
        note=f"{what}, from the study authors' Google Drive folder (entry {entry!r})",
    )


DATASET_SOURCES: dict[str, DatasetSource] = {
    s.name: s
    for s in (
        DatasetSource(
            "cub-parts",
            (
                RemoteFile(
                    url="https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
                    filename="CUB_200_2011.tgz",
                    size=1_150_585_339,
                    extract=True,
                    note="official Caltech archive (published md5 97eceeb196236b17998738112f37df78)",
                ),
            ),
            layout_root="CUB_200_2011",
        ),
        DatasetSource(
            "coco-parts",
            (
                _coco("annotations/annotations_trainval2017.zip", 252_907_541),
                _coco("zips/val2017.zip", 815_585_330),
                _coco("zips/train2017.zip", 19_336_861_798),
            ),
            layout_root=".",
            note="unpacks to annotations/, train2017/, val2017/",
        ),
        DatasetSource(
            "ade20k-150",
            (
                RemoteFile(
                    url="http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
                    filename="ADEChallengeData2016.zip",
                    extract=True,
                    note="MIT scene parsing benchmark (SceneParsing150)",
                ),
            ),
            layout_root="ADEChallengeData2016",
        ),
        DatasetSource(
            "ade20k-part",
            (_drive("ADE20K_Part", "ADE20K-Part (209 parts)"),),
            layout_root="ADE20K_Part",
            aliases=("ade_part", "ade20k-part"),
        ),
        DatasetSource(
            "ade20k-object",
            (_drive("ade_59object", "ADE20K-Object (59 objects)"),),
            layout_root="ade_59object/ADEChallengeData2016",
            aliases=("ade20k_59object", "ade20k-object", "ade_object"),
        ),
        DatasetSource(
            "pascal-part",
            (_drive("pascal_part", "Pascal-Part (193 parts)"),),
            layout_root="pascal_part",
            aliases=("pascal-part", "pascal_193part"),
        ),
        DatasetSource(
            "pascal-object",
            (_drive("pascal_semantic", "Pascal-Object (16 objects)"),),
            layout_root="pascal_semantic",
            aliases=("pascal-object", "pascal_16semantic", "pascal_object"),
        ),
        DatasetSource(
            "lip",
            (_drive("LIP", "LIP (19 human parts)"),),
            layout_root="LIP",
            aliases=("lip_part",),
        ),
    )
}


def dataset_names() -> tuple[str, ...]:
    """Every data set name `fetch` knows, in registry order."""
    return tuple(DATASET_SOURCES)


def get_dataset_source(name: str) -> DatasetSource:
    """The source record of `name`, or a one-line error listing the known names."""
    try:
        return DATASET_SOURCES[name]
    except KeyError:
        raise DatasetError(f"unknown data set {name!r}; known: {', '.join(DATASET_SOURCES)}") from None


def expected_layout_root(name: str, home: Path | None = None) -> Path:
    """Where `fetch` leaves the layout of `name` when it downloads it:
    `data_dir(home)/<name>/<layout_root>` (a `--from` folder lands at `data_dir/<name>/<its name>`)."""
    return (data_dir(home) / name / get_dataset_source(name).layout_root).resolve()
