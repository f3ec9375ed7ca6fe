"""`partbench fetch`: download and verify encoders and data sets, or register copies the user has.

Checkpoints go to `checkpoints_dir(root)/<filename>`; data sets to `data_dir(root)/<name>/`, their
archives extracted in place (a finished extraction is marked and never redone). `root` is
`PARTBENCH_HOME` unless `dest_root` is given (DVC uses the repository, so in-repo `checkpoints/`
and `data/`). Every file ends as one `FetchRecord`; a failure is recorded, never raised, so one
bad URL does not stop the rest, and `summary_table` shows what happened to each.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from rich.table import Table

from partbench.archives import MARKER_PREFIX, extract_archive, extraction_marker
from partbench.config import checkpoints_dir, data_dir
from partbench.errors import DownloadError, PartbenchError
from partbench.hub import download, lock_for, verify_file
from partbench.sources import RemoteFile, SourceKind

__all__ = [
    "FetchOptions",
    "FetchRecord",
    "Status",
    "fetch",
    "fetch_drive_file",
    "fetch_files",
    "place_file",
    "summary_table",
]

_ARCHIVE_SUFFIX = re.compile(r"(\.tar\.gz|\.tar\.bz2|\.tar\.xz|\.tgz|\.tar|\.zip)$", re.IGNORECASE)


class Status(StrEnum):
    FETCHED = "fetched"  # downloaded (and verified where pinned) now
    PRESENT = "present"  # already there: verified again, or its extraction marker exists
    REGISTERED = "registered"  # a copy the user has (--from PATH), linked or copied in
    SKIPPED = "skipped"  # nothing to fetch (e.g. timm downloads its own weights)
    FAILED = "failed"


@dataclass(frozen=True)
class FetchRecord:
    """What happened to one file: `check` says how it was verified, `detail` why it failed."""

    item: str
    filename: str
    status: Status
    check: str = ""
    path: Path | None = None
    detail: str = ""


@dataclass(frozen=True)
class FetchOptions:
    """Download and placement knobs (tests pass tiny timeouts and backoff)."""

    retries: int = 5
    backoff: float = 1.0
    timeout: float = 60.0
    quiet: bool = False
    keep_archives: bool = True
    link: bool = True  # --from: symlink (True) or copy (False)


def fetch(
    models: Sequence[str] = (),
    datasets: Sequence[str] = (),
    *,
    from_path: str | os.PathLike[str] | None = None,
    dest_root: str | os.PathLike[str] | None = None,
    options: FetchOptions | None = None,
) -> list[FetchRecord]:
    """Fetch the named encoders' files and data sets (`"all"` selects every one); return the records."""
    from partbench.data_sources import dataset_names, get_dataset_source
    from partbench.encoders import get_encoder_spec, list_encoders

    options = options or FetchOptions()
    root = Path(dest_root).expanduser() if dest_root is not None else None
    src = Path(from_path).expanduser() if from_path is not None else None
    if src is not None and not src.exists():
        raise PartbenchError(f"{src}: --from path does not exist")
    if not models and not datasets:
        raise PartbenchError("nothing to fetch: name --models and/or --datasets (or 'all')")
    model_names = [s.name for s in list_encoders()] if list(models) == ["all"] else list(models)
    data_names = list(dataset_names()) if list(datasets) == ["all"] else list(datasets)
    specs = [get_encoder_spec(name) for name in model_names]  # unknown names fail before any download
    sources = [get_dataset_source(name) for name in data_names]
    records: list[FetchRecord] = []
    for name, spec in zip(model_names, specs, strict=True):
        if not spec.files:
            records.append(FetchRecord(f"model {name}", "-", Status.SKIPPED, detail="no files to fetch"))
            continue
        records += fetch_files(
            spec.files,
            checkpoints_dir(root),
            item=f"model {name}",
            from_path=src,
            options=options,
            alternates=True,
        )
    for name, source in zip(data_names, sources, strict=True):
        target = data_dir(root) / name
        if src is not None and src.is_dir() and not _has_any(src, source.files, source.aliases):
            records.append(_register_folder(src, target, f"dataset {name}", len(data_names), options))
            continue
        records += fetch_files(
            source.files,
            target,
            item=f"dataset {name}",
            extract_to=target,
            from_path=src,
            options=options,
            aliases=source.aliases,
        )
    if src is not None and src.is_file() and all(r.status is Status.SKIPPED for r in records):
        raise PartbenchError(f"{src}: --from names none of the requested files ({_wanted(records)})")
    return records


def _wanted(records: Sequence[FetchRecord]) -> str:
    return ", ".join(sorted({r.filename for r in records}))


def fetch_files(
    files: Iterable[RemoteFile],
    dest_dir: str | os.PathLike[str],
    *,
    item: str = "",
    extract_to: str | os.PathLike[str] | None = None,
    from_path: Path | None = None,
    options: FetchOptions | None = None,
    aliases: Sequence[str] = (),
    alternates: bool = False,
) -> list[FetchRecord]:
    """Fetch (or register from `from_path`) each file into `dest_dir`, extracting archives into
    `extract_to` when given. Returns one record per file; errors become FAILED records.

    With `from_path` a file, only the file of that name is registered (the others are SKIPPED);
    with `alternates` (an encoder's files after the primary), alternates absent from a `from_path`
    folder are SKIPPED instead of FAILED.
    """
    options = options or FetchOptions()
    dest_dir = Path(dest_dir)
    records = []
    for index, rf in enumerate(files):
        if from_path is not None and from_path.is_file() and not _matches(from_path.name, rf, aliases):
            why = f"--from {from_path.name} is another file"
            records.append(FetchRecord(item, rf.filename, Status.SKIPPED, detail=why))
            continue
        absent = from_path is not None and from_path.is_dir() and not _candidates(from_path, rf, aliases)
        if absent and alternates and index > 0:
            why = f"alternate file, not in {from_path}"
            records.append(FetchRecord(item, rf.filename, Status.SKIPPED, detail=why))
            continue
        try:
            records.append(_fetch_one(rf, dest_dir, item, extract_to, from_path, options, aliases))
        except PartbenchError as exc:
            records.append(FetchRecord(item, rf.filename, Status.FAILED, detail=str(exc)))
    return records


def _fetch_one(
    rf: RemoteFile,
    dest_dir: Path,
    item: str,
    extract_to: str | os.PathLike[str] | None,
    from_path: Path | None,
    options: FetchOptions,
    aliases: Sequence[str],
) -> FetchRecord:
    if extract_to is not None and rf.extract and _extracted_earlier(rf, Path(extract_to), aliases):
        return FetchRecord(item, rf.filename, Status.PRESENT, "extracted earlier", Path(extract_to))
    dest = dest_dir / rf.filename
    if from_path is not None:
        given = _find_in(from_path, rf, aliases)
        # A Drive entry keeps the name it has (archives are matched by stem); a file saved under its
        # official URL name is registered under the registry's name.
        dest = dest_dir / (given.name if rf.kind is SourceKind.GDRIVE_FOLDER else rf.filename)
        digest = place_file(given, dest, rf, mode="link" if options.link else "copy")
        status = Status.REGISTERED
    elif rf.kind is SourceKind.HTTP:
        result = download(
            rf.url,
            dest,
            rf.sha256,
            rf.size,
            sha256_prefix=rf.sha256_prefix,
            retries=options.retries,
            backoff=options.backoff,
            timeout=options.timeout,
            quiet=options.quiet,
        )
        digest, status = result.sha256, Status.PRESENT if result.present else Status.FETCHED
    else:
        dest, digest, present = fetch_drive_file(rf, dest_dir, aliases, options.quiet)
        status = Status.PRESENT if present else Status.FETCHED
    detail = ""
    if extract_to is not None and rf.extract:
        extract_archive(dest, extract_to, sha256=digest, quiet=options.quiet)
        detail = f"extracted into {extract_to}"
        if not options.keep_archives and status is not Status.REGISTERED:
            dest.unlink()
    return FetchRecord(item, rf.filename, status, _check_text(rf, digest), dest, detail)


def _check_text(rf: RemoteFile, digest: str) -> str:
    if rf.sha256:
        return "sha256 ok"
    if rf.sha256_prefix:
        return f"sha256 prefix {rf.sha256_prefix} ok; sha256 {digest}"
    size = "size ok; " if rf.size is not None else ""
    return f"{size}unpinned sha256 {digest}"


def place_file(src: Path, dest: Path, rf: RemoteFile, mode: str = "move") -> str:
    """Verify `src` against `rf` and put it at `dest` atomically; return its SHA-256.

    `mode`: "move" (our own temp file, e.g. what gdown wrote: deleted on a mismatch), "copy" or
    "link" (a user's file: never touched; `dest` becomes a copy of it or a symlink to it).
    """
    digest = verify_file(src, rf.sha256, rf.size, rf.sha256_prefix, label=f"{src} ({rf.filename})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with lock_for(dest):
        tmp = dest.with_name(f".{dest.name}.placing")
        tmp.unlink(missing_ok=True)
        if mode == "move":
            shutil.move(src, tmp)
        elif mode == "copy":
            shutil.copyfile(src, tmp)
        elif mode == "link":
            tmp.symlink_to(src.resolve())
        else:
            raise ValueError(f"mode must be move, copy or link, got {mode!r}")
        os.replace(tmp, dest)
    return digest


def place_verified_or_delete(src: Path, dest: Path, rf: RemoteFile) -> str:
    """`place_file(mode="move")`, deleting `src` when it fails verification (a download of ours)."""
    try:
        return place_file(src, dest, rf, mode="move")
    except PartbenchError:
        src.unlink(missing_ok=True)
        raise


def _extracted_earlier(rf: RemoteFile, target: Path, aliases: Sequence[str]) -> bool:
    """Whether a finished-extraction marker for `rf` (or, for a Drive entry, any archive named
    like it) exists in `target`."""
    if extraction_marker(rf.filename, target).is_file():
        return True
    if rf.kind is not SourceKind.GDRIVE_FOLDER:
        return False
    wanted = {archive_stem(n) for n in (rf.filename, *aliases)}
    names = (p.name[len(MARKER_PREFIX) : -len(".json")] for p in target.glob(f"{MARKER_PREFIX}*.json"))
    return any(archive_stem(n) in wanted for n in names)


def _matches(name: str, rf: RemoteFile, aliases: Sequence[str]) -> bool:
    if name == rf.filename:
        return True
    return rf.kind is SourceKind.GDRIVE_FOLDER and archive_stem(name) in {
        archive_stem(n) for n in (rf.filename, *aliases)
    }


def _official_tail(rf: RemoteFile) -> tuple[str, ...] | None:
    """The URL's last two path parts when the registry stores the file under another name (iBOT's
    `vitb_16_rand_mask/checkpoint.pth` is kept as `ibot_vitb_16_rand_mask_checkpoint.pth`)."""
    parts = tuple(urllib.parse.urlsplit(rf.url).path.rstrip("/").split("/")[-2:])
    return parts if rf.kind is SourceKind.HTTP and len(parts) == 2 and parts[-1] != rf.filename else None


def _candidates(folder: Path, rf: RemoteFile, aliases: Sequence[str]) -> list[Path]:
    """Files in `folder` or one folder down that are `rf`: by name (Drive entries by archive stem), or
    saved under the official URL's own name (`<parent>/<file>` as in the URL)."""
    tail = _official_tail(rf)
    found = [
        p
        for p in (*folder.iterdir(), *folder.glob("*/*"))
        if p.is_file() and (_matches(p.name, rf, aliases) or (tail is not None and p.parts[-2:] == tail))
    ]
    return sorted(found, key=lambda p: (len(p.parts), p.name != rf.filename, str(p)))


def _find_in(from_path: Path, rf: RemoteFile, aliases: Sequence[str] = ()) -> Path:
    """The user's copy of `rf`: `from_path` itself if it is a file, else the match in that folder
    or one folder down."""
    if from_path.is_file():
        return from_path
    found = _candidates(from_path, rf, aliases)
    if not found:
        raise DownloadError(f"{from_path}: no {rf.filename} here or one folder down (--from)")
    return found[0]


def _has_any(folder: Path, files: Iterable[RemoteFile], aliases: Sequence[str]) -> bool:
    return any(_candidates(folder, f, aliases) for f in files)


def _register_folder(
    src: Path, target: Path, item: str, n_datasets: int, options: FetchOptions
) -> FetchRecord:
    """Register an already-extracted data set folder as `target/<src name>` (link or copy)."""
    name = src.name
    dest = target / name
    if dest.is_symlink() and dest.resolve() == src.resolve():
        return FetchRecord(item, name, Status.PRESENT, "folder linked earlier", dest)
    if dest.is_dir() and not dest.is_symlink():
        return FetchRecord(item, name, Status.PRESENT, "folder copied earlier", dest)
    if n_datasets != 1:
        why = f"{src}: an extracted folder can be registered for one data set at a time"
        return FetchRecord(item, name, Status.FAILED, detail=why)
    if dest.exists() or dest.is_symlink():
        why = f"{dest}: already exists; remove it to register {src}"
        return FetchRecord(item, name, Status.FAILED, detail=why)
    target.mkdir(parents=True, exist_ok=True)
    if options.link:
        dest.symlink_to(src.resolve(), target_is_directory=True)
    else:
        tmp = target / f".{name}.copying"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, symlinks=True)
        os.replace(tmp, dest)
    return FetchRecord(item, name, Status.REGISTERED, "extracted folder: no archive hash to check", dest)


def summary_table(records: Sequence[FetchRecord]) -> Table:
    """A rich table: one row per file with its status, verification and path or failure reason."""
    table = Table(title="partbench fetch", show_lines=False)
    for column in ("item", "file", "status", "verified", "where / why"):
        table.add_column(column, overflow="fold")
    colour = {Status.FAILED: "red", Status.FETCHED: "green", Status.REGISTERED: "cyan"}
    for r in records:
        where = r.detail if r.status is Status.FAILED else f"{r.path or ''} {r.detail}".strip()
        style = colour.get(r.status, "")
        table.add_row(
            r.item, r.filename, f"[{style}]{r.status}[/]" if style else str(r.status), r.check, where
        )
    return table


def archive_stem(name: str) -> str:
    """`name` without an archive suffix, lower-cased, separators removed (Drive entry matching)."""
    return re.sub(r"[^a-z0-9]", "", _ARCHIVE_SUFFIX.sub("", name).lower())


# --- Google Drive (through gdown; not reachable in tests, so gdown calls are kept to two functions) ---


def drive_id(url_or_id: str) -> str:
    """The file or folder id in a Drive URL (`/d/<id>`, `folders/<id>`, `id=<id>`), or the input."""
    match = re.search(r"(?:/d/|/folders/|[?&]id=)([\w-]{10,})", url_or_id)
    return match.group(1) if match else url_or_id


def drive_listing(folder_url: str, quiet: bool = False) -> list[tuple[str, str]]:
    """(file id, path inside the folder) of every file in a public Drive folder, via gdown."""
    import gdown

    try:
        entries = gdown.download_folder(url=folder_url, skip_download=True, quiet=quiet)
    except Exception as exc:  # gdown raises its own types (and requests' ones)
        raise DownloadError(f"{folder_url}: cannot list the Google Drive folder ({exc})") from None
    if not entries:
        raise DownloadError(f"{folder_url}: the Google Drive folder lists no files")
    return [(e.id, e.path) for e in entries]


def drive_download(file_id: str, output: Path, quiet: bool = False) -> Path:
    """Download one Drive file to `output` via gdown (resuming a partial one)."""
    import gdown

    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        got = gdown.download(id=file_id, output=str(output), quiet=quiet, resume=True)
    except Exception as exc:
        raise DownloadError(f"Google Drive file {file_id}: download failed ({exc})") from None
    if got is None or not output.is_file():
        raise DownloadError(f"Google Drive file {file_id}: gdown returned no file (quota or permission?)")
    return output


def fetch_drive_file(
    rf: RemoteFile, dest_dir: Path, aliases: Sequence[str] = (), quiet: bool = False
) -> tuple[Path, str, bool]:
    """Fetch a GDRIVE_FILE, or the entry of a GDRIVE_FOLDER named like `rf.filename`, into
    `dest_dir`; verify and place it. Returns (path, sha256, was_present)."""
    dest = dest_dir / rf.filename
    if dest.is_file():
        return dest, verify_file(dest, rf.sha256, rf.size, rf.sha256_prefix), True
    if rf.kind is SourceKind.GDRIVE_FILE:
        file_id = drive_id(rf.url)
    else:
        entries = drive_listing(rf.url, quiet)
        chosen = [e for e in entries if _matches(PurePosixPath(e[1]).name, rf, aliases)]
        chosen = chosen or [e for e in entries if _matches(PurePosixPath(e[1]).parts[0], rf, aliases)]
        if len(chosen) != 1:
            listed = ", ".join(sorted({PurePosixPath(p).parts[0] for _, p in entries}))
            what = "no entry" if not chosen else f"{len(chosen)} files"
            raise DownloadError(
                f"{rf.url}: {what} named like {rf.filename!r} in the Google Drive folder "
                f"(it holds: {listed}); download it by hand and register it with --from"
            )
        file_id, path = chosen[0]
        dest = dest_dir / PurePosixPath(path).name
        if dest.is_file():
            return dest, verify_file(dest, rf.sha256, rf.size, rf.sha256_prefix), True
    got = drive_download(file_id, dest_dir / ".gdown" / dest.name, quiet)  # kept there to resume
    return dest, place_verified_or_delete(got, dest, rf), False
