"""Typed settings: where things live, which protocol, and the run parameters.

This is the only module that reads the environment (`PARTBENCH_HOME`).
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class Protocol(StrEnum):
    """`study` reproduces the study's code (quirks included); `clean` follows each method's own code."""

    STUDY = "study"
    CLEAN = "clean"


def as_protocol(value: str | Protocol) -> Protocol:
    """Parse a protocol name, with a one-line error for anything else."""
    try:
        return Protocol(value)
    except ValueError:
        raise ValueError(f"protocol must be 'study' or 'clean', got {value!r}") from None


def partbench_home() -> Path:
    """Root of downloads and caches: `$PARTBENCH_HOME`, default `~/.cache/partbench`."""
    env = os.environ.get("PARTBENCH_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "partbench"


def checkpoints_dir(home: Path | None = None) -> Path:
    """Where official checkpoints are stored: `<home>/checkpoints`."""
    return (home or partbench_home()) / "checkpoints"


def data_dir(home: Path | None = None) -> Path:
    """Where data sets are stored: `<home>/data` (one folder per data set name)."""
    return (home or partbench_home()) / "data"
