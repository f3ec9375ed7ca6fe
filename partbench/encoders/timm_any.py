"""`timm:<model_name>`: any timm ViT-type model (`VisionTransformer` and subclasses, `Beit`).

`checkpoint=None` asks timm for its pretrained weights (timm's own download and cache); a path is read
with `weights_only=True`, unwrapped (`model`/`state_dict`, `module.` and `_orig_mod.` prefixes) and
passed through the model module's own `checkpoint_filter_fn` when it has one; "random" skips loading.
Position embeddings follow the input size bicubically without antialias (relative tables for Beit).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models.beit import Beit
from timm.models.vision_transformer import VisionTransformer

from partbench.config import IMAGENET_MEAN, IMAGENET_STD, Protocol
from partbench.encoders.encoder import Encoder
from partbench.encoders.loading import LayoutError, read_checkpoint, strict_load
from partbench.encoders.registry import EncoderSpec
from partbench.errors import CheckpointError, PartbenchError


def convert_timm(checkpoint: Any) -> dict[str, torch.Tensor]:
    """Unwrap `model` then `state_dict`; strip `module.` and `_orig_mod.` prefixes."""
    state = checkpoint
    for key in ("model", "state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise LayoutError(f"top level is a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def timm_spec(model_name: str) -> EncoderSpec:
    """A spec for any timm model name (normalisation from timm's pretrained config)."""
    if not timm.is_model(model_name):
        raise PartbenchError(f"unknown timm model {model_name!r} (see timm.list_models())")
    cfg = timm.models.get_pretrained_cfg(model_name)
    mean = tuple(getattr(cfg, "mean", None) or IMAGENET_MEAN)
    std = tuple(getattr(cfg, "std", None) or IMAGENET_STD)
    return EncoderSpec(
        name=f"timm:{model_name}",
        family="timm",
        files=(),
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        has_projection=False,
        description=f"timm model {model_name}",
        timm_arch=model_name,
        convert=convert_timm,
        pos_resize="relpos" if "beit" in model_name else "bicubic",
    )


def load_timm_encoder(
    spec: EncoderSpec, checkpoint: str | Path | None, protocol: Protocol, **overrides: Any
) -> Encoder:
    """Build `spec.timm_arch` headless and load `checkpoint` (see module docstring)."""
    pretrained = checkpoint is None
    try:
        model = timm.create_model(spec.timm_arch, pretrained=pretrained, num_classes=0, **overrides)
    except Exception as exc:  # timm raises many kinds (network, hub, config)
        what = "download/load timm's pretrained weights for" if pretrained else "build"
        raise CheckpointError(
            f"{spec.name}: cannot {what} {spec.timm_arch}: {str(exc).splitlines()[0]}"
        ) from None
    if not isinstance(model, VisionTransformer | Beit):
        raise PartbenchError(
            f"{spec.name}: only ViT/BEiT-type timm models are supported, got {type(model).__name__}"
        )
    sha = None
    if checkpoint is not None and not (isinstance(checkpoint, str) and checkpoint == "random"):
        path = Path(checkpoint)
        raw = read_checkpoint(path)
        try:
            state = convert_timm(raw)
            filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
            if filter_fn is not None:
                state = filter_fn(state, model)
            state = {k: v for k, v in state.items() if not k.startswith(("head.", "head_dist."))}
            strict_load(model, state, "model")
        except LayoutError as exc:
            raise CheckpointError(f"{path}: does not load into timm {spec.timm_arch} ({exc})") from None
        from partbench.fsutil import sha256_file

        sha = sha256_file(path)
    return Encoder(spec, model, None, protocol, sha)
