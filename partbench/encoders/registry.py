"""The encoder registry, timm style: `@register_encoder` functions each return one `EncoderSpec`.

A spec is data: where the official files are, what normalisation the method trained with, which timm
architecture holds the weights, which converter maps the official layout onto it, which projection
head it carries and how its position embeddings are resized. `timm:<model_name>` names any timm model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from partbench.config import IMAGENET_MEAN, IMAGENET_STD, checkpoints_dir
from partbench.errors import PartbenchError
from partbench.sources import RemoteFile

Converter = Callable[[Any], dict[str, torch.Tensor]]

#: How position embeddings follow the input size (see `posembed.py`).
POS_RESIZE_METHODS = ("bicubic", "dino", "relpos")


@dataclass(frozen=True)
class EncoderSpec:
    """One registry entry.

    `mean`/`std` are what the method itself trained with (used under the `clean` protocol; the `study`
    protocol normalises every encoder with ImageNet statistics, as the study did). `timm_kwargs` are
    the architecture arguments beyond `timm_arch`'s defaults; `head_kind` names the projection head
    ("mlp_bn", "dino", "linear") when `has_projection`.
    """

    name: str
    family: str
    files: tuple[RemoteFile, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    has_projection: bool
    description: str
    timm_arch: str
    timm_kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    convert: Converter | None = field(default=None, repr=False, compare=False)
    head_kind: str | None = None
    pos_resize: str = "bicubic"


_REGISTRY: dict[str, Callable[[], EncoderSpec]] = {}

#: The paper's order (supervised baselines first); `list_encoders()` follows it.
PAPER_ORDER = ("deit", "deit-distilled", "vit-in21k", "mocov3", "dino", "beit", "mae", "cae", "ibot")


def register_encoder(fn: Callable[[], EncoderSpec]) -> Callable[[], EncoderSpec]:
    """Decorator: register a function returning an `EncoderSpec` under the spec's name."""
    spec = fn()
    if spec.name in _REGISTRY:
        raise ValueError(f"encoder {spec.name!r} registered twice")
    if spec.pos_resize not in POS_RESIZE_METHODS:
        raise ValueError(f"{spec.name}: unknown pos_resize {spec.pos_resize!r}")
    _REGISTRY[spec.name] = fn
    return fn


def list_encoders() -> list[EncoderSpec]:
    """Every registered encoder (not the open-ended `timm:` names), in the paper's order."""
    rank = {name: i for i, name in enumerate(PAPER_ORDER)}
    return [_REGISTRY[name]() for name in sorted(_REGISTRY, key=lambda n: (rank.get(n, len(rank)), n))]


def get_encoder_spec(name: str) -> EncoderSpec:
    """The spec for `name`, or for `timm:<model_name>`; unknown names raise a one-line error."""
    if name.startswith("timm:"):
        from partbench.encoders.timm_any import timm_spec

        return timm_spec(name[len("timm:") :])
    if name not in _REGISTRY:
        known = ", ".join(_REGISTRY)
        raise PartbenchError(f"unknown encoder {name!r}; known: {known}, or timm:<model_name>")
    return _REGISTRY[name]()


def imagenet_norm() -> dict[str, tuple[float, float, float]]:
    """`mean`/`std` keyword arguments for ImageNet statistics."""
    return {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def _parse_value(text: str) -> int | float | bool | str | None:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_arch(text: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """`"embed_dim=64,depth=2,num_heads=4,qkv_bias=true"` -> typed timm overrides (int/float/bool/str).

    A mapping (overrides already typed, e.g. from params.yaml) is returned as a plain dict."""
    if isinstance(text, Mapping):
        return dict(text)
    out: dict[str, Any] = {}
    if not text:
        return out
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip().isidentifier():
            raise PartbenchError(f"--arch: expected key=value pairs separated by commas, got {part!r}")
        out[key.strip()] = _parse_value(value)
    return out


def catalog_rows(folder: Path | None = None) -> list[dict[str, str]]:
    """One row per registered file (primary first): name, family, file, hash pinned, present in `folder`
    (default `checkpoints_dir()`). Used by `partbench models`."""
    folder = folder or checkpoints_dir()
    rows = []
    for spec in list_encoders():
        for i, remote in enumerate(spec.files):
            if remote.sha256:
                pinned = "sha256"
            elif remote.sha256_prefix:
                pinned = f"prefix {remote.sha256_prefix}"
            else:
                pinned = "no"
            rows.append(
                {
                    "name": spec.name if i == 0 else "",
                    "family": spec.family if i == 0 else "",
                    "file": remote.filename,
                    "pinned": pinned,
                    "present": "yes" if (folder / remote.filename).is_file() else "no",
                    "projection": ("yes" if spec.has_projection else "no") if i == 0 else "",
                }
            )
    return rows
