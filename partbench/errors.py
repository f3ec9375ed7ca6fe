"""Errors that reach the user as one line: what went wrong and in which file."""

from __future__ import annotations


class PartbenchError(Exception):
    """Base class. The message is a single line naming the file (or input) and the problem.

    The CLI catches these and prints the message alone, without a traceback.
    """


class CheckpointError(PartbenchError):
    """A checkpoint file is truncated, of the wrong family, or has missing/unexpected keys."""


class DatasetError(PartbenchError):
    """A data set file is missing, malformed (names file and line), or a split is empty."""


class DownloadError(PartbenchError):
    """A download failed (HTTP status, timeout, dropped connection after retries)."""


class ChecksumError(DownloadError):
    """A downloaded or registered file does not match its pinned SHA-256 or size."""


class CacheError(PartbenchError):
    """A feature cache or result directory cannot be read or written."""


class MetricInputError(PartbenchError):
    """Metric inputs are invalid: NaN features, mismatched lengths, labels out of range."""
