"""``partbench synth``: write every synthetic data set, each in its real on-disk format.

``write_synthetic(out, seed, scale)`` writes ``out/<dataset-name>/`` (the layout root of each):
the part sets from ``synth_parts`` and the six segmentation sets from ``synth_seg``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from partbench.datasets.synth_parts import write_coco, write_cub
from partbench.errors import DatasetError

PART_SCALES: dict[str, dict[str, int]] = {
    "small": {"cub-parts": 24, "coco-parts": 24},  # seconds
    "medium": {"cub-parts": 240, "coco-parts": 240},
}


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """A temp folder beside ``final`` to write a whole set into; renamed into place when the block
    ends (an existing ``final`` is moved aside first, then removed), removed if the block raises,
    so a crash never leaves a half-written set."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_part_sets(out: str | Path, seed: int = 0, scale: str = "small") -> dict[str, Path]:
    """Write ``cub-parts`` and ``coco-parts`` to ``out/<name>/``, each through ``staged_dir``."""
    if scale not in PART_SCALES:
        raise DatasetError(f"synthetic scale must be one of {', '.join(PART_SCALES)}, got {scale!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, writer in (("cub-parts", write_cub), ("coco-parts", write_coco)):
        with staged_dir(out / name) as tmp:
            writer(tmp, seed, PART_SCALES[scale][name])
        written[name] = out / name
    return written


def write_synthetic(out: str | Path, seed: int = 0, scale: str = "small") -> dict[str, Path]:
    """Write all eight synthetic data sets under ``out``; returns name → layout root."""
    written = write_part_sets(out, seed, scale)
    from partbench.datasets.synth_seg import write_segmentation_sets

    written.update(write_segmentation_sets(Path(out), seed, scale))
    return written
