"""`partbench fetch`: orchestration, `--from` registration, Drive placement and the summary table.

Downloads go to a real HTTP server on 127.0.0.1 (tests/http_server.py); gdown's network calls are
replaced by fakes that write local bytes, so what runs is our selection, verification and placement.
Reference digests: `hashlib.sha256` of the served bytes.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from http_server import LocalServer, Route
from typer.testing import CliRunner

import partbench.data_sources as data_sources
from partbench.cli import app
from partbench.config import checkpoints_dir, data_dir
from partbench.data_sources import (
    AUTHORS_DRIVE_FOLDER,
    DATASET_SOURCES,
    DatasetSource,
    dataset_names,
    expected_layout_root,
)
from partbench.errors import ChecksumError, PartbenchError
from partbench.fetch import (
    FetchOptions,
    Status,
    archive_stem,
    drive_id,
    fetch,
    fetch_files,
    place_file,
    place_verified_or_delete,
    summary_table,
)
from partbench.sources import RemoteFile, SourceKind

CKPT = b"\x80\x02fake checkpoint bytes" * 3000
CKPT_SHA = hashlib.sha256(CKPT).hexdigest()
FAST = FetchOptions(retries=1, backoff=0.01, timeout=2.0, quiet=True)


def _tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


CUB_TGZ = _tgz({"CUB_200_2011/images.txt": b"1 001.A/a.jpg\n", "CUB_200_2011/images/001.A/a.jpg": b"jpg"})


@pytest.fixture
def server():
    with LocalServer() as srv:
        yield srv


# --- fetch_files: the function the CLI uses ------------------------------------------------------


def test_fetch_files_downloads_verifies_then_finds_present(server: LocalServer, tmp_path: Path) -> None:
    files = (
        RemoteFile(server.add("a.pth", Route(CKPT)), "a.pth", sha256=CKPT_SHA, size=len(CKPT)),
        RemoteFile(server.add("b.pth", Route(b"unpinned")), "b.pth"),
    )
    first = fetch_files(files, tmp_path, item="model x", options=FAST)
    assert [r.status for r in first] == [Status.FETCHED, Status.FETCHED]
    assert first[0].check == "sha256 ok" and (tmp_path / "a.pth").read_bytes() == CKPT
    assert first[1].check == f"unpinned sha256 {hashlib.sha256(b'unpinned').hexdigest()}"
    again = fetch_files(files, tmp_path, item="model x", options=FAST)
    assert [r.status for r in again] == [Status.PRESENT, Status.PRESENT]
    assert len(server.requests("a.pth")) == 1


def test_fetch_files_records_failures_and_goes_on(server: LocalServer, tmp_path: Path) -> None:
    files = (
        RemoteFile(server.url("gone.pth"), "gone.pth"),
        RemoteFile(server.add("bad.pth", Route(CKPT)), "bad.pth", sha256="0" * 64),
        RemoteFile(server.add("ok.pth", Route(CKPT)), "ok.pth", sha256_prefix=CKPT_SHA[:8]),
    )
    records = fetch_files(files, tmp_path, item="model x", options=FAST)
    assert [r.status for r in records] == [Status.FAILED, Status.FAILED, Status.FETCHED]
    assert "HTTP 404" in records[0].detail
    assert "0" * 64 in records[1].detail and CKPT_SHA in records[1].detail
    assert records[2].check.startswith(f"sha256 prefix {CKPT_SHA[:8]} ok")
    assert not (tmp_path / "bad.pth").exists() and not (tmp_path / "gone.pth").exists()


def test_dataset_archive_is_extracted_once(server: LocalServer, tmp_path: Path) -> None:
    rf = RemoteFile(server.add("CUB_200_2011.tgz", Route(CUB_TGZ)), "CUB_200_2011.tgz", extract=True)
    target = tmp_path / "data" / "cub-parts"
    records = fetch_files([rf], target, item="dataset cub-parts", extract_to=target, options=FAST)
    assert records[0].status is Status.FETCHED and "extracted into" in records[0].detail
    assert (target / "CUB_200_2011/images.txt").read_bytes() == b"1 001.A/a.jpg\n"
    again = fetch_files([rf], target, item="dataset cub-parts", extract_to=target, options=FAST)
    assert again[0].status is Status.PRESENT and again[0].check == "extracted earlier"
    assert len(server.requests("CUB_200_2011.tgz")) == 1


def test_delete_archives_after_extraction(server: LocalServer, tmp_path: Path) -> None:
    rf = RemoteFile(server.add("v.zip", Route(_zip({"val2017/1.jpg": b"x"}))), "v.zip", extract=True)
    options = FetchOptions(retries=0, backoff=0.0, timeout=2.0, quiet=True, keep_archives=False)
    fetch_files([rf], tmp_path, extract_to=tmp_path, options=options)
    assert (tmp_path / "val2017/1.jpg").read_bytes() == b"x" and not (tmp_path / "v.zip").exists()


# --- place_file: what happens after gdown (or the user) hands us a file -------------------------


def test_place_file_move_copy_link(tmp_path: Path) -> None:
    rf = RemoteFile("u", "m.pth", sha256=CKPT_SHA)
    src = tmp_path / "src.pth"
    for mode in ("copy", "link", "move"):
        src.write_bytes(CKPT)
        dest = tmp_path / mode / "m.pth"
        assert place_file(src, dest, rf, mode=mode) == CKPT_SHA
        assert dest.read_bytes() == CKPT
        assert dest.is_symlink() == (mode == "link")
        assert src.exists() == (mode != "move")


def test_gdown_output_with_wrong_hash_is_deleted(tmp_path: Path) -> None:
    got = tmp_path / "staging" / "m.pth"
    got.parent.mkdir()
    got.write_bytes(b"an HTML quota page, not a checkpoint")
    with pytest.raises(ChecksumError, match=CKPT_SHA):
        place_verified_or_delete(got, tmp_path / "m.pth", RemoteFile("u", "m.pth", sha256=CKPT_SHA))
    assert not got.exists() and not (tmp_path / "m.pth").exists()


# --- Google Drive (gdown faked: its network side cannot run here) -------------------------------


@pytest.fixture
def fake_drive(monkeypatch: pytest.MonkeyPatch):
    """A Drive folder as {path: bytes}; gdown.download_folder lists it, gdown.download writes it."""
    import gdown

    folder: dict[str, bytes] = {}
    calls: list[str] = []

    def download_folder(url=None, skip_download=False, **kw):
        assert skip_download and url == AUTHORS_DRIVE_FOLDER
        return [SimpleNamespace(id=f"id-{p}", path=p, local_path=p) for p in folder]

    def download(id=None, output=None, **kw):
        calls.append(id)
        Path(output).write_bytes(folder[id.removeprefix("id-")])
        return output

    monkeypatch.setattr(gdown, "download_folder", download_folder)
    monkeypatch.setattr(gdown, "download", download)
    return SimpleNamespace(folder=folder, calls=calls)


def test_drive_dataset_entry_is_picked_verified_and_extracted(fake_drive, tmp_path: Path) -> None:
    part_zip = _zip({"ADE20K_Part/img/train/a.jpg": b"i", "ADE20K_Part/ann/train/a.png": b"a"})
    fake_drive.folder.update({"ADE20K_Part.zip": part_zip, "LIP.zip": b"other", "beit_base.pth": CKPT})
    source = DATASET_SOURCES["ade20k-part"]
    target = tmp_path / "ade20k-part"
    [record] = fetch_files(source.files, target, extract_to=target, options=FAST, aliases=source.aliases)
    assert record.status is Status.FETCHED, record.detail
    assert fake_drive.calls == ["id-ADE20K_Part.zip"]
    assert record.check == f"unpinned sha256 {hashlib.sha256(part_zip).hexdigest()}"
    assert (target / "ADE20K_Part/img/train/a.jpg").read_bytes() == b"i"
    again = fetch_files(source.files, target, extract_to=target, options=FAST, aliases=source.aliases)
    assert again[0].status is Status.PRESENT and fake_drive.calls == ["id-ADE20K_Part.zip"]


def test_drive_model_file_by_exact_name(fake_drive, tmp_path: Path) -> None:
    fake_drive.folder.update({"models/beit_base.pth": CKPT, "LIP.zip": b"x"})
    rf = RemoteFile(AUTHORS_DRIVE_FOLDER, "beit_base.pth", sha256=CKPT_SHA, kind=SourceKind.GDRIVE_FOLDER)
    [record] = fetch_files([rf], tmp_path, options=FAST)
    assert record.status is Status.FETCHED and (tmp_path / "beit_base.pth").read_bytes() == CKPT
    assert not any((tmp_path / ".gdown").iterdir())  # staging emptied by the move


def test_drive_entry_missing_names_folder_contents(fake_drive, tmp_path: Path) -> None:
    fake_drive.folder.update({"LIP.zip": b"x", "pascal_part.zip": b"y"})
    source = DATASET_SOURCES["ade20k-part"]
    [record] = fetch_files(source.files, tmp_path, extract_to=tmp_path, options=FAST, aliases=source.aliases)
    assert record.status is Status.FAILED
    assert "LIP.zip, pascal_part.zip" in record.detail and "--from" in record.detail


def test_drive_helpers() -> None:
    assert drive_id(AUTHORS_DRIVE_FOLDER) == "1JSNzbxc9MBpNIhMRP8Vd0FFk7K5hC65q"
    assert drive_id("https://drive.google.com/file/d/1AbCdEfGhIjK/view?usp=sharing") == "1AbCdEfGhIjK"
    assert drive_id("https://drive.google.com/uc?id=1AbCdEfGhIjK") == "1AbCdEfGhIjK"
    assert archive_stem("ADE20K_Part.tar.gz") == archive_stem("ade20k-part") == "ade20kpart"


# --- --from PATH -------------------------------------------------------------------------------


def _fake_model(monkeypatch: pytest.MonkeyPatch, files: tuple[RemoteFile, ...]) -> None:
    import partbench.encoders as encoders

    spec = SimpleNamespace(name="tiny", files=files)
    monkeypatch.setattr(encoders, "get_encoder_spec", lambda name: spec)
    monkeypatch.setattr(encoders, "list_encoders", lambda: [spec])


def test_from_file_is_verified_and_linked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    mine = tmp_path / "downloads" / "tiny.pth"
    mine.parent.mkdir()
    mine.write_bytes(CKPT)
    _fake_model(monkeypatch, (RemoteFile("http://127.0.0.1:9/x", "tiny.pth", sha256=CKPT_SHA),))
    [record] = fetch(["tiny"], from_path=mine, options=FAST)
    dest = checkpoints_dir() / "tiny.pth"
    assert record.status is Status.REGISTERED and record.check == "sha256 ok"
    assert dest.is_symlink() and dest.resolve() == mine.resolve()
    [copied] = fetch(
        ["tiny"], from_path=mine.parent, dest_root=tmp_path / "repo", options=FetchOptions(link=False)
    )
    assert copied.status is Status.REGISTERED and not (tmp_path / "repo/checkpoints/tiny.pth").is_symlink()


def test_from_file_with_wrong_hash_fails_and_leaves_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mine = tmp_path / "tiny.pth"
    mine.write_bytes(b"something else")
    _fake_model(monkeypatch, (RemoteFile("http://127.0.0.1:9/x", "tiny.pth", sha256=CKPT_SHA),))
    [record] = fetch(["tiny"], from_path=mine, options=FAST)
    assert record.status is Status.FAILED and CKPT_SHA in record.detail
    assert mine.read_bytes() == b"something else" and not (checkpoints_dir() / "tiny.pth").exists()


def test_from_folder_with_the_archive_extracts_it(tmp_path: Path) -> None:
    have = tmp_path / "have"
    have.mkdir()
    (have / "CUB_200_2011.tgz").write_bytes(CUB_TGZ)
    sources = {
        "cub-parts": DatasetSource("cub-parts", (RemoteFile("u", "CUB_200_2011.tgz", extract=True),), ".")
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data_sources, "DATASET_SOURCES", sources)
        [record] = fetch(datasets=["cub-parts"], from_path=have, options=FAST)
    assert record.status is Status.REGISTERED
    assert (data_dir() / "cub-parts/CUB_200_2011/images.txt").is_file()


def test_from_extracted_folder_is_linked_one_level_down(tmp_path: Path) -> None:
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    (coco / "annotations/person_keypoints_val2017.json").write_text("{}")
    [record] = fetch(datasets=["coco-parts"], from_path=coco, options=FAST)
    link = data_dir() / "coco-parts" / "coco"
    assert record.status is Status.REGISTERED and "no archive hash" in record.check
    assert link.is_symlink() and (link / "annotations/person_keypoints_val2017.json").is_file()
    [again] = fetch(datasets=["coco-parts"], from_path=coco, options=FAST)
    assert again.status is Status.PRESENT
    both = fetch(datasets=["coco-parts", "cub-parts"], from_path=coco, options=FAST)
    assert {r.status for r in both} == {Status.PRESENT, Status.FAILED}


def test_bad_requests() -> None:
    with pytest.raises(PartbenchError, match="nothing to fetch"):
        fetch()
    with pytest.raises(PartbenchError, match="does not exist"):
        fetch(datasets=["cub-parts"], from_path="/no/such/path")
    with pytest.raises(PartbenchError, match="unknown data set 'cubs'"):
        fetch(datasets=["cubs"])


# --- the CLI: summary table against the local server ---------------------------------------------


def test_cli_fetch_summary(server: LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tiny_set = DatasetSource(
        "tiny-set", (RemoteFile(server.add("t.tgz", Route(CUB_TGZ)), "t.tgz", extract=True),), "CUB_200_2011"
    )
    broken = DatasetSource(
        "broken-set", (RemoteFile(server.url("missing.zip"), "missing.zip", extract=True),), "."
    )
    monkeypatch.setitem(DATASET_SOURCES, "tiny-set", tiny_set)
    monkeypatch.setitem(DATASET_SOURCES, "broken-set", broken)
    _fake_model(monkeypatch, (RemoteFile(server.add("tiny.pth", Route(CKPT)), "tiny.pth", sha256=CKPT_SHA),))
    runner = CliRunner()
    args = ["fetch", "--models", "tiny", "--datasets", "tiny-set,broken-set", "--dest-root", str(tmp_path)]
    args += ["--retries", "1", "--backoff", "0.01", "--timeout", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    for text in ("model tiny", "fetched", "sha256 ok", "dataset broken-set", "failed", "HTTP 404"):
        assert text in result.output
    assert (tmp_path / "checkpoints/tiny.pth").read_bytes() == CKPT
    assert (tmp_path / "data/tiny-set/CUB_200_2011/images.txt").is_file()
    again = runner.invoke(app, [*args[:4], "tiny-set", *args[5:]])
    assert again.exit_code == 0, again.output
    assert "present" in again.output and "fetched" not in again.output


def test_summary_table_rows() -> None:
    from partbench.fetch import FetchRecord

    table = summary_table([FetchRecord("model a", "a.pth", Status.FAILED, detail="HTTP 404")])
    assert table.row_count == 1 and [c.header for c in table.columns][2] == "status"


# --- the real registry ---------------------------------------------------------------------------


def test_registry_names_match_the_design_and_segmentation_folders(tmp_path: Path) -> None:
    from partbench.datasets import SEG_DATASETS

    design = {"cub-parts", "coco-parts", "ade20k-part", "ade20k-object", "ade20k-150", "pascal-part"}
    assert set(dataset_names()) == design | {"pascal-object", "lip"}
    for name, spec in SEG_DATASETS.items():  # the segmentation readers' folder = where we extract
        assert DATASET_SOURCES[name].layout_root == spec.study_folder
    cub = DATASET_SOURCES["cub-parts"].files[0]
    assert cub.size == 1_150_585_339 and cub.url.endswith("/CUB_200_2011.tgz") and cub.extract
    coco = {f.filename: f.size for f in DATASET_SOURCES["coco-parts"].files}
    assert coco == {
        "annotations_trainval2017.zip": 252_907_541,
        "val2017.zip": 815_585_330,
        "train2017.zip": 19_336_861_798,
    }
    assert expected_layout_root("cub-parts") == (data_dir() / "cub-parts/CUB_200_2011").resolve()
    assert expected_layout_root("coco-parts", tmp_path) == (tmp_path / "data/coco-parts").resolve()
    drive = [f for s in DATASET_SOURCES.values() for f in s.files if f.kind is SourceKind.GDRIVE_FOLDER]
    assert len(drive) == 5 and all(f.url == AUTHORS_DRIVE_FOLDER and f.sha256 is None for f in drive)


def test_from_file_registers_only_the_file_of_that_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    full = tmp_path / "dino_full.pth"
    full.write_bytes(CKPT)
    files = (RemoteFile("u1", "dino_full.pth"), RemoteFile("u2", "dino_backbone.pth"))
    _fake_model(monkeypatch, files)
    records = fetch(["tiny"], from_path=full, options=FAST)
    assert [(r.filename, r.status) for r in records] == [
        ("dino_full.pth", Status.REGISTERED),
        ("dino_backbone.pth", Status.SKIPPED),
    ]
    assert not (checkpoints_dir() / "dino_backbone.pth").exists()  # never the same bytes under two names
    other = tmp_path / "renamed.pth"
    other.write_bytes(CKPT)
    with pytest.raises(PartbenchError, match="names none of the requested files"):
        fetch(["tiny"], from_path=other, options=FAST)


def test_from_folder_skips_absent_alternates_but_not_the_primary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "dino_full.pth").write_bytes(CKPT)
    _fake_model(monkeypatch, (RemoteFile("u1", "dino_full.pth"), RemoteFile("u2", "dino_backbone.pth")))
    records = fetch(["tiny"], from_path=tmp_path, options=FAST)
    assert [r.status for r in records] == [Status.REGISTERED, Status.SKIPPED]
    _fake_model(monkeypatch, (RemoteFile("u2", "dino_backbone.pth"), RemoteFile("u1", "dino_full.pth")))
    records = fetch(["tiny"], from_path=tmp_path, dest_root=tmp_path / "r", options=FAST)
    assert records[0].status is Status.FAILED and "no dino_backbone.pth" in records[0].detail


def test_from_folder_finds_a_file_saved_under_its_official_url_name(tmp_path: Path) -> None:
    # iBOT's URLs end in the generic vitb_16_rand_mask/checkpoint{,_teacher}.pth; the registry keeps
    # them as ibot_vitb_16_rand_mask_checkpoint{,_teacher}.pth, and a user's copy has the URL's name.
    official = tmp_path / "downloads" / "vitb_16_rand_mask"
    official.mkdir(parents=True)
    (official / "checkpoint.pth").write_bytes(CKPT)
    (official / "checkpoint_teacher.pth").write_bytes(CKPT + b"teacher")
    (official / "unrelated.pth").write_bytes(b"x")
    records = fetch(["ibot"], from_path=tmp_path / "downloads", options=FAST)
    assert [(r.filename, r.status) for r in records] == [
        ("ibot_vitb_16_rand_mask_checkpoint.pth", Status.REGISTERED),
        ("ibot_vitb_16_rand_mask_checkpoint_teacher.pth", Status.REGISTERED),
    ]
    assert (
        checkpoints_dir() / "ibot_vitb_16_rand_mask_checkpoint_teacher.pth"
    ).read_bytes() == CKPT + b"teacher"
