"""`partbench.archives.extract_archive`: real tar/zip files built here, hostile members refused."""

from __future__ import annotations

import io
import json
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from partbench.archives import ArchiveError, extract_archive, extraction_marker, is_extracted


def _tar(path: Path, members: list[tuple[str, bytes | None, str | None]], mode: str = "w:gz") -> Path:
    """Write a tar; each member is (name, file bytes, None) or (name, None, symlink target)."""
    with tarfile.open(path, mode) as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return path


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.name.startswith(".partbench"))


def test_tgz_extracts_layout_and_writes_marker(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "CUB_200_2011.tgz",
        [
            ("CUB_200_2011/images.txt", b"1 001.Black/a.jpg\n", None),
            ("CUB_200_2011/images/001.Black/a.jpg", b"jpeg", None),
            ("CUB_200_2011/current", None, "images"),  # a link that stays inside is fine
        ],
    )
    target = tmp_path / "data" / "cub-parts"
    assert extract_archive(archive, target, sha256="ab" * 32, quiet=True) == target
    assert (target / "CUB_200_2011/images.txt").read_bytes() == b"1 001.Black/a.jpg\n"
    assert (target / "CUB_200_2011/current/001.Black/a.jpg").read_bytes() == b"jpeg"
    marker = json.loads(extraction_marker(archive.name, target).read_text())
    assert (
        marker["archive"] == "CUB_200_2011.tgz" and marker["members"] == 3 and marker["sha256"] == "ab" * 32
    )


def test_zip_extracts(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "val2017.zip", {"val2017/000000000139.jpg": b"x", "val2017/0002.jpg": b"y"})
    target = tmp_path / "coco"
    extract_archive(archive, target, quiet=True)
    assert _files(target) == ["val2017", "val2017/000000000139.jpg", "val2017/0002.jpg"]


def test_finished_extraction_is_not_redone(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"d/f.txt": b"one"})
    target = tmp_path / "out"
    extract_archive(archive, target, quiet=True)
    (target / "d/f.txt").write_bytes(b"edited")  # a redo would overwrite this
    archive.unlink()  # and would need the archive
    extract_archive(archive, target, quiet=True)
    assert (target / "d/f.txt").read_bytes() == b"edited" and is_extracted("a.zip", target)


def test_interrupted_extraction_without_marker_is_redone(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"d/f.txt": b"one", "d/g.txt": b"two"})
    target = tmp_path / "out"
    (target / "d").mkdir(parents=True)
    (target / "d/f.txt").write_bytes(b"half")  # left by a crash: no marker
    assert not is_extracted("a.zip", target)
    extract_archive(archive, target, quiet=True)
    assert (target / "d/f.txt").read_bytes() == b"one" and (target / "d/g.txt").read_bytes() == b"two"


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (("../evil.txt", b"x", None), "escapes the target"),
        (("ok/../../evil.txt", b"x", None), "escapes the target"),
        (("/tmp/partbench-evil.txt", b"x", None), "absolute path"),
        (("link", None, "../../outside"), "links outside the target"),
        (("abs-link", None, "/etc/passwd"), "links outside the target"),
    ],
)
def test_tar_hostile_members_are_refused_before_writing(tmp_path: Path, member, why: str) -> None:
    archive = _tar(tmp_path / "evil.tar.gz", [("good/first.txt", b"ok", None), member])
    target = tmp_path / "a" / "b" / "target"
    with pytest.raises(ArchiveError, match=why) as info:
        extract_archive(archive, target, quiet=True)
    assert str(archive) in str(info.value) and member[0] in str(info.value)
    assert _files(target) == []  # nothing written, not even the good member
    assert not (tmp_path / "a" / "evil.txt").exists() and not is_extracted(archive.name, target)


def test_tar_link_then_write_through_it_is_refused(tmp_path: Path) -> None:
    # classic two-step escape: an inside-looking link to "..", then a file written through it
    archive = _tar(tmp_path / "t.tar", [("up", None, ".."), ("up/escaped.txt", b"x", None)], mode="w")
    with pytest.raises(ArchiveError):
        extract_archive(archive, tmp_path / "target", quiet=True)
    assert not (tmp_path / "escaped.txt").exists()


def test_tar_device_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dev.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("fifo")
        info.type = tarfile.FIFOTYPE
        tar.addfile(info)
    with pytest.raises(ArchiveError, match="device or FIFO"):
        extract_archive(path, tmp_path / "target", quiet=True)


@pytest.mark.parametrize(
    ("name", "why"),
    [("../evil.txt", "escapes the target"), ("/abs.txt", "absolute path"), ("C:/win.txt", "absolute path")],
)
def test_zip_hostile_members_are_refused(tmp_path: Path, name: str, why: str) -> None:
    archive = _zip(tmp_path / "evil.zip", {"good.txt": b"ok", name: b"x"})
    target = tmp_path / "target"
    with pytest.raises(ArchiveError, match=why):
        extract_archive(archive, target, quiet=True)
    assert _files(target) == []


def test_zip_symlink_out_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("data/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../../etc")
    with pytest.raises(ArchiveError, match="links outside"):
        extract_archive(archive, tmp_path / "target", quiet=True)


def test_not_an_archive_and_truncated_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"hello, not an archive")
    with pytest.raises(ArchiveError, match="not a tar or zip archive"):
        extract_archive(junk, tmp_path / "t1", quiet=True)
    good = _tar(tmp_path / "cut.tgz", [("f.bin", bytes(50_000), None)])
    good.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ArchiveError, match=r"cut\.tgz"):
        extract_archive(good, tmp_path / "t2", quiet=True)
    with pytest.raises(ArchiveError, match="archive not found"):
        extract_archive(tmp_path / "absent.zip", tmp_path / "t3", quiet=True)
