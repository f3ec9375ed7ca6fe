"""Where a file comes from: the record that the encoder and data set registries share with fetch."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SourceKind(StrEnum):
    """How `partbench fetch` obtains a file."""

    HTTP = "http"  # plain HTTP(S) URL, streamed with Range resume
    GDRIVE_FILE = "gdrive-file"  # Google Drive file id, via gdown
    GDRIVE_FOLDER = "gdrive-folder"  # Google Drive folder id/url, via gdown


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file (or Drive folder) with what is known to verify it.

    `sha256`/`size` are None until a maintainer pins them (fetch then prints what it saw).
    `extract` marks archives (.tar, .tgz, .zip) that fetch unpacks after verification.
    """

    url: str
    filename: str
    sha256: str | None = None
    size: int | None = None
    sha256_prefix: str | None = None  # published prefix only (e.g. DeiT's "b5f2ef4d" in the file name)
    kind: SourceKind = SourceKind.HTTP
    extract: bool = False
    note: str = ""
