"""Safe extraction of downloaded .tar/.tgz/.zip archives, marked when finished so it is never redone.

Every member is checked before anything is written: absolute paths, paths that climb out of the
target (`..`), links that point outside it, and device/FIFO members are refused with one line
naming the archive and the member. Tar extraction also runs Python's `data` filter as a second
guard. A JSON marker `.partbench-extracted-<archive name>.json` in the target is written last; a
target with that marker is taken as complete (an interrupted extraction has none and is redone).
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath

from filelock import FileLock

from partbench.errors import PartbenchError
from partbench.fsutil import atomic_write_json
from partbench.progress import ProgressBar

__all__ = ["ArchiveError", "extract_archive", "extraction_marker", "is_extracted"]

MARKER_PREFIX = ".partbench-extracted-"


class ArchiveError(PartbenchError):
    """An archive is unreadable, or a member would land outside the extraction target."""


def extraction_marker(archive_name: str, target: str | os.PathLike[str]) -> Path:
    """The file that says `archive_name` was fully extracted into `target`."""
    return Path(target) / f"{MARKER_PREFIX}{archive_name}.json"


def is_extracted(archive_name: str, target: str | os.PathLike[str]) -> bool:
    """True when a finished extraction of `archive_name` into `target` is recorded."""
    return extraction_marker(archive_name, target).is_file()


def extract_archive(
    archive: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    quiet: bool = False,
) -> Path:
    """Extract `archive` (tar, tar.gz/bz2/xz, zip) into `target` safely; return `target`.

    Skips the work when the marker of a finished extraction exists. `sha256` (the archive's digest,
    if known) is recorded in the marker. Raises `ArchiveError` before writing anything when a member
    is unsafe.
    """
    archive, target = Path(archive), Path(target)
    marker = extraction_marker(archive.name, target)
    target.mkdir(parents=True, exist_ok=True)
    with FileLock(str(marker) + ".lock"):
        if marker.is_file():
            return target
        if not archive.is_file():
            raise ArchiveError(f"{archive}: archive not found")
        if zipfile.is_zipfile(archive):
            count = _extract_zip(archive, target, quiet)
        elif _is_tar(archive):
            count = _extract_tar(archive, target, quiet)
        else:
            raise ArchiveError(f"{archive}: not a tar or zip archive")
        record = {
            "archive": archive.name,
            "sha256": sha256,
            "members": count,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        atomic_write_json(marker, record)
    return target


def _is_tar(archive: Path) -> bool:
    try:
        return tarfile.is_tarfile(archive)
    except (tarfile.TarError, EOFError, OSError) as exc:  # a truncated .tgz fails while probing
        raise ArchiveError(f"{archive}: cannot read ({exc})") from None


def _inside(root: Path, relative: str) -> bool:
    """Whether `root/relative`, normalised, stays within `root` (no symlinks followed)."""
    joined = os.path.normpath(os.path.join(root, relative))
    return joined == str(root) or joined.startswith(str(root) + os.sep)


def _check_name(archive: Path, root: Path, name: str) -> None:
    """Refuse absolute member names and names that climb out of `root`."""
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).drive or name.startswith("\\"):
        raise ArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if not _inside(root, name):
        raise ArchiveError(f"{archive}: member {name!r} escapes the target folder; refusing to extract")


def _check_link(archive: Path, root: Path, name: str, link: str, hard: bool) -> None:
    """Refuse links whose destination is absolute or outside `root`."""
    base = "" if hard else os.path.dirname(name)  # hard links are relative to the archive root
    if PurePosixPath(link).is_absolute() or not _inside(root, os.path.join(base, link)):
        raise ArchiveError(
            f"{archive}: member {name!r} links outside the target ({link!r}); refusing to extract"
        )


def _extract_tar(archive: Path, target: Path, quiet: bool) -> int:
    root = target.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                _check_name(archive, root, m.name)
                if m.issym() or m.islnk():
                    _check_link(archive, root, m.name, m.linkname, hard=m.islnk())
                elif not (m.isfile() or m.isdir()):
                    raise ArchiveError(
                        f"{archive}: member {m.name!r} is a device or FIFO; refusing to extract"
                    )
            with ProgressBar(f"extracting {archive.name}", len(members), enabled=not quiet) as bar:

                def tracked() -> Iterator[tarfile.TarInfo]:
                    for m in members:
                        yield m
                        bar.advance()

                tar.extractall(root, members=tracked(), filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError(f"{archive}: cannot extract ({exc})") from None
    return len(members)


def _extract_zip(archive: Path, target: Path, quiet: bool) -> int:
    root = target.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _check_name(archive, root, info.filename)
                if stat.S_ISLNK(info.external_attr >> 16):  # written as a plain file, still checked
                    _check_link(archive, root, info.filename, zf.read(info).decode(errors="replace"), False)
            with ProgressBar(f"extracting {archive.name}", len(infos), enabled=not quiet) as bar:
                for info in infos:
                    zf.extract(info, root)
                    bar.advance()
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ArchiveError(f"{archive}: cannot extract ({exc})") from None
    return len(infos)
