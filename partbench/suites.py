"""Suites as typed dataclasses: what `partbench run --suite NAME` and the DVC stages run.

`params.yaml` (read by DVC too) holds one mapping per suite; `load_suites` turns it into `Suite`
objects with every key and type checked (errors name the file and the key), `dump_suites` writes
them back. Without a params.yaml the built-in `SMOKE` and `PAPER` suites are used.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from partbench.config import as_protocol
from partbench.errors import PartbenchError

PAPER_MODELS = ("deit", "mocov3", "dino", "beit", "mae", "cae", "ibot")
PART_DATASETS = ("cub-parts", "coco-parts")
SEG_DATASETS = ("ade20k-part", "ade20k-object", "ade20k-150", "pascal-part", "pascal-object", "lip")
PARAMS_FILE = "params.yaml"


class SuiteError(PartbenchError):
    """A suite definition (params.yaml) or a run selection is invalid."""


@dataclass(frozen=True)
class ExtractParams:
    batch_size: int = 64
    dtype: str = "auto"
    num_workers: int = 0


@dataclass(frozen=True)
class RetrievalParams:
    bootstrap: int = 0  # resamples for 95% intervals (0: none)


@dataclass(frozen=True)
class ClassifyParams:
    heads: tuple[str, ...] = ("linear", "attentive")
    epochs: int = 90
    batch_size: int = 1024


@dataclass(frozen=True)
class SegmentParams:
    iters: int = 160_000
    batch_size: int = 16
    crop: int | None = None  # None: each set's own crop (512/480/320)
    mode: str = "full"  # full: the study's protocol; fast: cached features, no augmentation
    eval_every: int = 16_000
    ckpt_every: int = 2000
    num_workers: int = 4
    bootstrap: int = 0


@dataclass(frozen=True)
class Suite:
    """One suite: what runs, on what, with which schedules, and where its outputs go."""

    name: str
    data: str  # "synthetic" (written by `partbench synth`) or "download" (`partbench fetch`)
    root: str  # outputs (features/, results/, runs/, reports/) under <workdir>/<root>
    models: tuple[str, ...] = PAPER_MODELS
    part_datasets: tuple[str, ...] = PART_DATASETS  # retrieval and classification
    seg_datasets: tuple[str, ...] = SEG_DATASETS
    protocol: str = "study"
    seed: int = 0
    device: str = "auto"
    arch: dict[str, int] = field(default_factory=dict)  # encoder overrides (tiny smoke encoders)
    synthetic_scale: str = "small"
    extract: ExtractParams = ExtractParams()
    retrieval: RetrievalParams = RetrievalParams()
    classify: ClassifyParams = ClassifyParams()
    segment: SegmentParams = SegmentParams()


SMOKE = Suite(
    name="smoke",
    data="synthetic",
    root="smoke",
    device="cpu",
    arch={"embed_dim": 32, "depth": 4, "num_heads": 2},
    extract=ExtractParams(batch_size=32),
    classify=ClassifyParams(epochs=3, batch_size=16),
    segment=SegmentParams(
        iters=60, batch_size=2, crop=64, mode="full", eval_every=30, ckpt_every=30, num_workers=0
    ),
)
PAPER = Suite(name="paper", data="download", root=".", retrieval=RetrievalParams(bootstrap=1000))
BUILTIN_SUITES = {"smoke": SMOKE, "paper": PAPER}


# --- params.yaml <-> Suite ------------------------------------------------------------------------


def suite_to_dict(suite: Suite) -> dict[str, Any]:
    """Plain YAML-able data (tuples become lists); `name` is the key in params.yaml, not a field."""
    data = asdict(suite)
    data.pop("name")
    return json.loads(json.dumps(data))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        return _build(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
        return _coerce(value, inner, where)
    if origin is tuple:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise SuiteError(f"{where} must be a list of names, got {value!r}")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, int) for v in value.values()):
            raise SuiteError(f"{where} must be a mapping of integers, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise SuiteError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


def _build(cls: type, data: Any, where: str, **extra: Any) -> Any:
    if not isinstance(data, dict):
        raise SuiteError(f"{where} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SuiteError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known - set(extra)))})"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs, **extra)


def suite_from_dict(name: str, data: dict[str, Any], where: str = "params") -> Suite:
    """A validated `Suite` from params data; errors name the file and the key."""
    suite = _build(Suite, data, f"{where}: {name}", name=name)
    return validate_suite(suite, f"{where}: {name}")


def validate_suite(suite: Suite, where: str) -> Suite:
    if suite.data not in ("synthetic", "download"):
        raise SuiteError(f"{where}.data must be 'synthetic' or 'download', got {suite.data!r}")
    try:
        as_protocol(suite.protocol)
    except ValueError as exc:
        raise SuiteError(f"{where}.{exc}") from None
    bad = [d for d in suite.part_datasets if d not in PART_DATASETS]
    bad += [d for d in suite.seg_datasets if d not in SEG_DATASETS]
    if bad:
        raise SuiteError(f"{where}: unknown data set {bad[0]!r}")
    if suite.segment.mode not in ("full", "fast"):
        raise SuiteError(f"{where}.segment.mode must be 'full' or 'fast', got {suite.segment.mode!r}")
    unknown_heads = set(suite.classify.heads) - {"linear", "attentive"}
    if unknown_heads:
        raise SuiteError(f"{where}.classify.heads: unknown head {sorted(unknown_heads)[0]!r}")
    return suite


def load_suites(path: Path) -> dict[str, Suite]:
    """Every suite of a params.yaml (top-level keys that are not suites are left to DVC)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SuiteError(f"{path}: cannot read the suites ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: must be a mapping of suite name -> suite")
    return {
        k: suite_from_dict(k, v, str(path)) for k, v in data.items() if isinstance(v, dict) and "data" in v
    }


def dump_suites(suites: Iterable[Suite]) -> str:
    """params.yaml text for these suites."""
    return yaml.safe_dump({s.name: suite_to_dict(s) for s in suites}, sort_keys=False, width=110)


def resolve_suite(name: str, params: Path | None, workdir: Path) -> tuple[Suite, str]:
    """The suite `name` from `params` (default `<workdir>/params.yaml` when it exists) or built in."""
    path = params if params is not None else workdir / PARAMS_FILE
    if params is not None or path.is_file():
        suites = load_suites(path)
        if name not in suites:
            raise SuiteError(f"{path}: no suite {name!r} (have: {', '.join(suites) or 'none'})")
        return suites[name], str(path)
    if name not in BUILTIN_SUITES:
        raise SuiteError(f"unknown suite {name!r} (built in: {', '.join(BUILTIN_SUITES)})")
    return BUILTIN_SUITES[name], "built-in"
