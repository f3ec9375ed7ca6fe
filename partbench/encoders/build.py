"""`load_encoder`: build the timm architecture, convert the official file, load it strictly."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import timm
from torch import nn

from partbench.config import Protocol, as_protocol, checkpoints_dir
from partbench.encoders.encoder import Encoder
from partbench.encoders.heads import build_projector
from partbench.encoders.loading import LayoutError, guess_layout, read_checkpoint, split_prefix, strict_load
from partbench.encoders.registry import EncoderSpec, get_encoder_spec
from partbench.errors import CheckpointError, PartbenchError
from partbench.fsutil import sha256_file

#: LayerNorm eps of the study's CAE retrieval model (`nn.LayerNorm` default) vs official CAE.
CAE_STUDY_EPS, CAE_CLEAN_EPS = 1e-5, 1e-6


def build_backbone(spec: EncoderSpec, protocol: Protocol, **overrides: Any) -> nn.Module:
    """A randomly initialised timm model for `spec` (no head, no pooling), with `overrides` applied."""
    kwargs: dict[str, Any] = {"num_classes": 0, **spec.timm_kwargs, **overrides}
    if spec.family == "cae":
        eps = CAE_STUDY_EPS if protocol is Protocol.STUDY else CAE_CLEAN_EPS
        kwargs.setdefault("norm_layer", partial(nn.LayerNorm, eps=eps))
    try:
        return timm.create_model(spec.timm_arch, pretrained=False, **kwargs)
    except (RuntimeError, TypeError, ValueError, AssertionError) as exc:
        raise PartbenchError(
            f"{spec.name}: cannot build timm {spec.timm_arch} with {overrides}: {exc}"
        ) from None


def _resolve_checkpoint(spec: EncoderSpec, checkpoint: str | Path | None) -> Path | None:
    if checkpoint is not None:
        path = Path(checkpoint)
        cached = checkpoints_dir() / path
        # a bare file name (as in DESIGN.md's examples) also means "this file in the checkpoint cache"
        return cached if not path.exists() and not path.is_absolute() and cached.is_file() else path
    if not spec.files:
        return None
    for remote in spec.files:
        candidate = checkpoints_dir() / remote.filename
        if candidate.is_file():
            return candidate
    primary = checkpoints_dir() / spec.files[0].filename
    raise CheckpointError(
        f"{primary}: checkpoint for {spec.name!r} not found; run `partbench fetch --models {spec.name}`"
    )


def _layout_error(path: Path, spec: EncoderSpec, raw: Any, exc: Exception) -> CheckpointError:
    looks = guess_layout(raw)
    if looks is not None and looks != spec.name:
        return CheckpointError(
            f"{path}: not a {spec.name} checkpoint, it looks like a {looks} checkpoint ({exc})"
        )
    return CheckpointError(f"{path}: not a {spec.name} checkpoint in the official layout ({exc})")


def load_encoder(
    name: str, checkpoint: str | Path | None = None, protocol: str | Protocol = "study", **timm_overrides: Any
) -> Encoder:
    """Load encoder `name` from its official checkpoint, frozen and in eval mode.

    `checkpoint`: a path; None looks for the registry's files in `checkpoints_dir()` (for `timm:`
    names: timm's own pretrained weights); "random" gives a randomly initialised model (tests).
    `timm_overrides` change the architecture (e.g. `embed_dim=64, depth=2, num_heads=4`).
    """
    spec = get_encoder_spec(name)
    try:
        proto = as_protocol(protocol)
    except ValueError as exc:
        raise PartbenchError(f"{name}: {exc}") from None
    if spec.family == "timm":
        from partbench.encoders.timm_any import load_timm_encoder

        return load_timm_encoder(spec, checkpoint, proto, **timm_overrides)
    backbone = build_backbone(spec, proto, **timm_overrides)
    if isinstance(checkpoint, str) and checkpoint == "random":
        return Encoder(spec, backbone, None, proto, None)
    path = _resolve_checkpoint(spec, checkpoint)
    assert path is not None and spec.convert is not None
    raw = read_checkpoint(path)
    try:
        converted = spec.convert(raw)
        head_state, body = split_prefix(converted, "projection.")
        strict_load(backbone, body, "backbone")
        projector = None
        if head_state:
            if not spec.has_projection or spec.head_kind is None:
                raise LayoutError(f"unexpected projection keys: {', '.join(sorted(head_state)[:4])}")
            projector = build_projector(spec.head_kind, head_state)
            strict_load(projector, head_state, "projection head")
            width = _in_features(projector)
            if width is not None and width != backbone.embed_dim:
                raise LayoutError(f"projection head expects width {width}, backbone has {backbone.embed_dim}")
    except LayoutError as exc:
        raise _layout_error(path, spec, raw, exc) from None
    return Encoder(spec, backbone, projector, proto, sha256_file(path))


def _in_features(module: nn.Module) -> int | None:
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            return sub.in_features
    return None
