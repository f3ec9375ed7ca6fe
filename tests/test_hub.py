"""`partbench.hub.download` against a real HTTP server on 127.0.0.1 (tests/http_server.py).

Reference for every digest: `hashlib.sha256` of the bytes the server holds.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from http_server import LocalServer, Route

from partbench.errors import ChecksumError, DownloadError
from partbench.hub import download, verify_file

BODY = bytes(range(256)) * 400  # 102,400 bytes: several 4 KiB chunks, many read blocks
DIGEST = hashlib.sha256(BODY).hexdigest()
FAST = {"retries": 2, "backoff": 0.01, "timeout": 2.0, "quiet": True}


@pytest.fixture
def server():
    with LocalServer() as srv:
        yield srv


def test_clean_download_verifies_and_renames(server: LocalServer, tmp_path: Path) -> None:
    url = server.add("model.pth", Route(BODY))
    dest = tmp_path / "ckpt" / "model.pth"
    result = download(url, dest, sha256=DIGEST, size=len(BODY), **FAST)
    assert dest.read_bytes() == BODY
    assert result.sha256 == DIGEST and result.pinned and not result.present
    assert not dest.with_name("model.pth.part").exists()
    assert [r.range for r in server.requests("model.pth")] == [None]


def test_present_file_is_verified_not_downloaded_again(server: LocalServer, tmp_path: Path) -> None:
    url = server.add("model.pth", Route(BODY))
    dest = tmp_path / "model.pth"
    download(url, dest, sha256=DIGEST, **FAST)
    again = download(url, dest, sha256=DIGEST, **FAST)
    assert again.present and again.sha256 == DIGEST
    assert len(server.requests("model.pth")) == 1


def test_unpinned_download_reports_the_hash_it_saw(server: LocalServer, tmp_path: Path, capsys) -> None:
    url = server.add("x.bin", Route(BODY))
    result = download(url, tmp_path / "x.bin", retries=0, backoff=0.0, timeout=2.0)
    assert result.sha256 == DIGEST and not result.pinned
    assert DIGEST in capsys.readouterr().err


def test_sha256_prefix_is_checked(server: LocalServer, tmp_path: Path) -> None:
    url = server.add("deit-b5f2.pth", Route(BODY))
    assert download(url, tmp_path / "ok.pth", sha256_prefix=DIGEST[:8], **FAST).pinned
    with pytest.raises(ChecksumError, match=f"starting 00000000, got {DIGEST}"):
        download(url, tmp_path / "bad.pth", sha256_prefix="00000000", **FAST)
    assert not (tmp_path / "bad.pth").exists()


def test_dropped_connection_then_resume_with_range(server: LocalServer, tmp_path: Path) -> None:
    url = server.add("big.bin", Route(BODY, drops=1, drop_after=40_000))
    dest = tmp_path / "big.bin"
    part = tmp_path / "big.bin.part"
    with pytest.raises(DownloadError, match="partial download kept"):
        download(url, dest, sha256=DIGEST, retries=0, backoff=0.0, timeout=2.0, quiet=True)
    assert not dest.exists()
    assert part.read_bytes() == BODY[:40_000]
    result = download(url, dest, sha256=DIGEST, **FAST)  # a second run resumes the .part
    assert result.sha256 == DIGEST and dest.read_bytes() == BODY and not part.exists()
    assert [r.range for r in server.requests("big.bin")] == [None, "bytes=40000-"]
    assert [r.status for r in server.requests("big.bin")] == [200, 206]


def test_drop_is_retried_within_one_call(server: LocalServer, tmp_path: Path) -> None:
    url = server.add("big.bin", Route(BODY, drops=2, drop_after=30_000))
    result = download(url, tmp_path / "big.bin", sha256=DIGEST, **FAST)
    assert result.sha256 == DIGEST
    ranges = [r.range for r in server.requests("big.bin")]
    assert ranges == [None, "bytes=30000-", "bytes=60000-"]


def test_server_that_ignores_range_restarts_from_zero(server: LocalServer, tmp_path: Path) -> None:
    url = server.add("norange.bin", Route(BODY, ignore_range=True, drops=1, drop_after=50_000))
    dest = tmp_path / "norange.bin"
    result = download(url, dest, sha256=DIGEST, **FAST)
    assert result.sha256 == DIGEST and dest.read_bytes() == BODY  # not 50,000 bytes + the whole body
    log = server.requests("norange.bin")
    assert [r.range for r in log] == [None, "bytes=50000-"] and [r.status for r in log] == [200, 200]


def test_wrong_hash_deletes_partial_and_names_both(server: LocalServer, tmp_path: Path) -> None:
    url = server.add("model.pth", Route(BODY))
    dest = tmp_path / "model.pth"
    wrong = "ab" * 32
    with pytest.raises(ChecksumError) as info:
        download(url, dest, sha256=wrong, **FAST)
    message = str(info.value)
    assert wrong in message and DIGEST in message and str(dest) in message and "\n" not in message
    assert not dest.exists() and not (tmp_path / "model.pth.part").exists()


def test_wrong_size_is_an_error(server: LocalServer, tmp_path: Path) -> None:
    url = server.add("model.pth", Route(BODY))
    with pytest.raises(ChecksumError, match=f"expected {len(BODY) + 1} bytes, got {len(BODY)}"):
        download(url, tmp_path / "model.pth", size=len(BODY) + 1, **FAST)
    assert not (tmp_path / "model.pth").exists()


def test_404_fails_at_once_without_retry(server: LocalServer, tmp_path: Path) -> None:
    url = server.url("missing.pth")
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(url, tmp_path / "missing.pth", **FAST)
    assert len(server.requests("missing.pth")) == 1
    assert not (tmp_path / "missing.pth").exists()


def test_500_is_retried_then_succeeds(server: LocalServer, tmp_path: Path) -> None:
    url = server.add("flaky.bin", Route(BODY, fail_statuses=[500, 503]))
    assert download(url, tmp_path / "flaky.bin", sha256=DIGEST, **FAST).sha256 == DIGEST
    assert [r.status for r in server.requests("flaky.bin")] == [500, 503, 200]


def test_500_forever_gives_up_after_bounded_retries(server: LocalServer, tmp_path: Path) -> None:
    url = server.add("down.bin", Route(BODY, fail_statuses=[500] * 10))
    with pytest.raises(DownloadError, match=r"HTTP 500 .*gave up after 3 attempts"):
        download(url, tmp_path / "down.bin", **FAST)
    assert len(server.requests("down.bin")) == 3  # retries=2: one try and two retries


def test_stalled_server_times_out(server: LocalServer, tmp_path: Path) -> None:
    url = server.add("slow.bin", Route(BODY, delay=1.0))
    with pytest.raises(DownloadError, match="timed out"):
        download(url, tmp_path / "slow.bin", retries=1, backoff=0.01, timeout=0.2, quiet=True)
    assert not (tmp_path / "slow.bin").exists()


def test_two_downloads_of_one_file_at_once(server: LocalServer, tmp_path: Path) -> None:
    url = server.add("shared.bin", Route(BODY, chunk_delay=0.01))  # ~0.25 s transfer
    dest = tmp_path / "shared.bin"
    results, errors = [], []

    def worker() -> None:
        try:
            results.append(download(url, dest, sha256=DIGEST, **FAST))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert sorted(r.present for r in results) == [False, True]  # one downloaded, one waited and verified
    assert dest.read_bytes() == BODY
    assert len(server.requests("shared.bin")) == 1


def test_existing_file_with_wrong_hash_is_reported(server: LocalServer, tmp_path: Path) -> None:
    dest = tmp_path / "model.pth"
    dest.write_bytes(b"not the model")
    url = server.add("model.pth", Route(BODY))
    with pytest.raises(ChecksumError, match="delete it to download again"):
        download(url, dest, sha256=DIGEST, **FAST)
    assert server.requests("model.pth") == []


def test_verify_file_hand_worked(tmp_path: Path) -> None:
    path = tmp_path / "abc.txt"
    path.write_bytes(b"abc")
    # FIPS 180-2 example: SHA-256("abc")
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert verify_file(path, sha256=abc, size=3, sha256_prefix="ba7816bf") == abc
    with pytest.raises(ChecksumError, match=f"{path}: sha256 mismatch"):
        verify_file(path, sha256="0" * 64)


def test_complete_part_left_by_a_crash_is_finished_via_416(server: LocalServer, tmp_path: Path) -> None:
    url = server.add("done.bin", Route(BODY))
    (tmp_path / "done.bin.part").write_bytes(BODY)  # crashed between the last byte and the rename
    result = download(url, tmp_path / "done.bin", sha256=DIGEST, **FAST)
    assert result.sha256 == DIGEST and (tmp_path / "done.bin").read_bytes() == BODY
    assert [r.status for r in server.requests("done.bin")] == [416]


def test_oversized_part_is_discarded(server: LocalServer, tmp_path: Path) -> None:
    url = server.add("f.bin", Route(BODY))
    (tmp_path / "f.bin.part").write_bytes(BODY + b"junk")
    assert download(url, tmp_path / "f.bin", sha256=DIGEST, size=len(BODY), **FAST).sha256 == DIGEST
    assert [r.range for r in server.requests("f.bin")] == [None]


def test_progress_bar_on_a_terminal(server: LocalServer, tmp_path: Path) -> None:
    import io

    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    url = server.add("bar.bin", Route(BODY))
    download(url, tmp_path / "bar.bin", retries=0, backoff=0.0, timeout=2.0, console=console)
    text = out.getvalue()
    assert "bar.bin" in text and DIGEST in text  # the bar's label, then the hash to pin


def test_two_processes_download_one_file_at_once(server: LocalServer, tmp_path: Path) -> None:
    import subprocess
    import sys

    url = server.add("proc.bin", Route(BODY, chunk_delay=0.02))  # ~0.5 s transfer
    dest = tmp_path / "proc.bin"
    code = (
        "import sys; from partbench.hub import download; "
        "r = download(sys.argv[1], sys.argv[2], sha256=sys.argv[3], retries=2, backoff=0.01, "
        "timeout=5, quiet=True); "
        "print('present' if r.present else 'fetched')"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url, str(dest), DIGEST], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == ["fetched", "present"]
    assert dest.read_bytes() == BODY and len(server.requests("proc.bin")) == 1


def test_server_that_drops_and_ignores_range_cannot_loop_forever(server: LocalServer, tmp_path: Path) -> None:
    url = server.add("never.bin", Route(BODY, ignore_range=True, drops=100, drop_after=10_000))
    with pytest.raises(DownloadError, match="connection"):
        download(url, tmp_path / "never.bin", **FAST)
    assert len(server.requests("never.bin")) == 4  # one that grew the .part, then 1 + 2 retries


def test_part_longer_than_the_file_restarts_after_416(server: LocalServer, tmp_path: Path) -> None:
    url = server.add("f.bin", Route(BODY))
    (tmp_path / "f.bin.part").write_bytes(BODY + b"stale tail")  # no size pinned to catch it early
    assert download(url, tmp_path / "f.bin", sha256=DIGEST, **FAST).sha256 == DIGEST
    assert [r.status for r in server.requests("f.bin")] == [416, 200]
