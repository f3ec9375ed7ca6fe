"""Downloads that survive the real world: `.part` files, HTTP Range resume, retries, SHA-256, rename.

`download(url, dest, sha256=...)` streams to `dest.part`, resumes it with a Range request when it
exists, retries transient failures (5xx, 408/429, timeouts, dropped connections) with exponential
backoff, verifies size and SHA-256, and renames onto `dest` atomically. A mismatch deletes the
partial file and raises `ChecksumError` naming both hashes, so `dest` never holds a bad file. A lock
file beside `dest` makes concurrent downloads of the same file wait for each other.
Archive extraction lives in `partbench.archives` (`extract_archive` is re-exported here).
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from partbench.archives import extract_archive
from partbench.errors import ChecksumError, DownloadError
from partbench.fsutil import sha256_file

__all__ = ["DownloadResult", "download", "extract_archive", "lock_for", "verify_file"]

_CHUNK = 1 << 20
_USER_AGENT = "partbench/0.1 (+https://github.com/; research benchmark downloader)"
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class DownloadResult:
    """What `download` did: the final path, the SHA-256 it saw, and whether it used a present file."""

    path: Path
    sha256: str
    size: int
    pinned: bool  # True when the digest was checked against a pinned sha256 (or its prefix)
    present: bool  # True when `dest` already existed and was only verified


class _Transient(Exception):
    """A failure worth retrying (5xx, timeout, dropped connection); `args[0]` says what happened."""


def lock_for(dest: Path, timeout: float = -1) -> FileLock:
    """The lock that serialises work on `dest` across threads and processes (`<dest>.lock`)."""
    return FileLock(str(dest.with_name(dest.name + ".lock")), timeout=timeout)


def verify_file(
    path: str | os.PathLike[str],
    sha256: str | None = None,
    size: int | None = None,
    sha256_prefix: str | None = None,
    digest: str | None = None,
    label: str | None = None,
) -> str:
    """Check `path` against a pinned size / SHA-256 / SHA-256 prefix; return its hex digest.

    Raises `ChecksumError` (one line, both values) on any mismatch. `digest` skips re-hashing when
    the caller already computed it while streaming; `label` replaces the path in messages.
    """
    path = Path(path)
    name = label or str(path)
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ChecksumError(f"{name}: size mismatch: expected {size} bytes, got {actual_size}")
    digest = digest or sha256_file(path)
    if sha256 is not None and digest != sha256.lower():
        raise ChecksumError(f"{name}: sha256 mismatch: expected {sha256.lower()}, got {digest}")
    if sha256_prefix is not None and not digest.startswith(sha256_prefix.lower()):
        raise ChecksumError(
            f"{name}: sha256 mismatch: expected a digest starting {sha256_prefix.lower()}, got {digest}"
        )
    return digest


def download(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    size: int | None = None,
    *,
    sha256_prefix: str | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    lock_timeout: float = -1,
    quiet: bool = False,
    console: Console | None = None,
) -> DownloadResult:
    """Download `url` to `dest`, resuming `dest.part`, and verify it; return a `DownloadResult`.

    `retries` bounds consecutive failed attempts (an attempt that made `.part` longer than ever
    before resets the count; `retries=0` means a single attempt); the wait before retry k is
    `backoff * 2**(k-1)` seconds. `timeout` applies to connect and to each
    read. 4xx errors (except 408/429) fail at once. When no hash is pinned the digest seen is
    printed so it can be pinned. The progress bar shows only on a terminal.
    """
    dest = Path(dest)
    console = console or Console(stderr=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    pinned = sha256 is not None or sha256_prefix is not None
    try:
        with lock_for(dest, lock_timeout):
            if dest.exists():
                try:
                    digest = verify_file(dest, sha256, size, sha256_prefix)
                except ChecksumError as exc:
                    raise ChecksumError(
                        f"{exc} (a file already there; delete it to download again)"
                    ) from None
                return DownloadResult(dest, digest, dest.stat().st_size, pinned, present=True)
            part = dest.with_name(dest.name + ".part")
            digest = _fetch_to_part(url, part, size, retries, backoff, timeout, quiet, console)
            try:
                verify_file(part, sha256, size, sha256_prefix, digest=digest, label=f"{dest} (from {url})")
            except ChecksumError:
                part.unlink(missing_ok=True)
                raise
            os.replace(part, dest)
    except Timeout:
        raise DownloadError(f"{dest}: another download holds {dest.name}.lock") from None
    if not pinned and not quiet:
        console.print(
            f"sha256 of {dest.name}: {digest} (not pinned; pin it in the registry)", highlight=False
        )
    return DownloadResult(dest, digest, dest.stat().st_size, pinned, present=False)


def _fetch_to_part(
    url: str,
    part: Path,
    size: int | None,
    retries: int,
    backoff: float,
    timeout: float,
    quiet: bool,
    console: Console,
) -> str:
    """Fill `part` with the whole of `url`; return its SHA-256. Retries transient failures."""
    failures = 0
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
        transient=True,
    )
    high_water = part.stat().st_size if part.exists() else 0
    with progress:
        task = progress.add_task(part.name.removesuffix(".part"), total=size)
        while True:
            try:
                return _attempt(url, part, size, timeout, progress, task)
            except _Transient as exc:
                reason = exc.args[0]
                now = part.stat().st_size if part.exists() else 0
                failures = 0 if now > high_water else failures + 1  # progress = a longer .part
                high_water = max(high_water, now)
                if retries == 0 or failures > retries:
                    raise DownloadError(
                        f"{url}: {reason}; gave up after {max(failures, 1)} attempts in a row "
                        f"(partial download kept at {part})"
                    ) from None
                time.sleep(backoff * 2 ** max(failures - 1, 0))


def _attempt(url: str, part: Path, size: int | None, timeout: float, progress: Progress, task) -> str:
    """One HTTP request that appends to `part`; raises `_Transient(reason)` for retryable failures."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    received = 0
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            start = _resume_offset(resp, offset, part)
            length = resp.headers.get("Content-Length")
            expected = start + int(length) if length is not None else None
            progress.update(task, total=expected or size, completed=start)
            digest = _hash_prefix(part, start)
            with open(part, "r+b" if start else "wb") as fh:
                fh.seek(start)
                fh.truncate()
                while block := resp.read(_CHUNK):
                    fh.write(block)
                    digest.update(block)
                    received += len(block)
                    progress.advance(task, len(block))
                fh.flush()
                os.fsync(fh.fileno())
            done = start + received
            if expected is not None and done < expected:
                raise _Transient(f"connection closed at byte {done} of {expected}")
            return digest.hexdigest()
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            if (exc.headers.get("Content-Range") or "") == f"bytes */{offset}":
                return sha256_file(part)  # the part already holds the whole file
            part.unlink()
            raise _Transient(f"HTTP 416 for a .part of {offset} bytes; starting again") from None
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise _Transient(f"cannot connect ({exc.reason})") from None
    except (OSError, http.client.HTTPException) as exc:
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRORS:
            raise DownloadError(f"{part}: cannot write ({exc.strerror or exc})") from None
        reason = "timed out" if isinstance(exc, TimeoutError) else f"connection dropped ({exc!r})"
        raise _Transient(reason) from None


def _resume_offset(resp: http.client.HTTPResponse, offset: int, part: Path) -> int:
    """Where this response's body starts: `offset` for a matching 206, 0 when Range was ignored."""
    if resp.status == 206:
        match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
        if match and int(match.group(1)) == offset:
            return offset
        part.unlink()  # a body that starts elsewhere cannot be appended: start again from zero
        raise _Transient(f"Content-Range {resp.headers.get('Content-Range')!r} does not start at {offset}")
    return 0  # 200: the server ignored Range (or there was none): start again from zero


def _hash_prefix(part: Path, upto: int) -> hashlib._Hash:  # type: ignore[name-defined]
    """SHA-256 state over the first `upto` bytes of `part` (the bytes kept when resuming)."""
    digest = hashlib.sha256()
    if upto:
        with open(part, "rb") as fh:
            left = upto
            while left and (block := fh.read(min(_CHUNK, left))):
                digest.update(block)
                left -= len(block)
    return digest
