"""``partbench synth``: write every synthetic data set, each in its real on-disk format.

``write_synthetic(out, seed, scale)`` writes ``out/<dataset-name>/`` (the layout root of each):
the part sets from ``synth_parts`` and the six segmentation sets from ``synth_seg``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from partbench.datasets.synth_parts import write_coco, write_cub
from partbench.errors import DatasetError

PART_SCALES: dict[str, dict[str, int]] = {
    "small": {"cub-parts": 24, "coco-parts": 24},  # seconds
    "medium": {"cub-parts": 240, "coco-parts": 240},
}


def write_part_sets(out: str | Path, seed: int = 0, scale: str = "small") -> dict[str, Path]:
    """Write ``cub-parts`` and ``coco-parts`` to ``out/<name>/``; each set is written to a temp
    folder beside it and renamed into place, so a crash never leaves a half-written set."""
    if scale not in PART_SCALES:
        raise DatasetError(f"synthetic scale must be one of {', '.join(PART_SCALES)}, got {scale!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, writer in (("cub-parts", write_cub), ("coco-parts", write_coco)):
        final = out / name
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))
        try:
            writer(tmp, seed, PART_SCALES[scale][name])
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        written[name] = final
    return written


def write_synthetic(out: str | Path, seed: int = 0, scale: str = "small") -> dict[str, Path]:
    """Write all eight synthetic data sets under ``out``; returns name → layout root."""
    written = write_part_sets(out, seed, scale)
    from partbench.datasets.synth_seg import write_segmentation_sets

    written.update(write_segmentation_sets(Path(out), seed, scale))
    return written
