"""MoCo v3 ViT-B/16 (`vit-b-300ep.pth.tar`, reference/checkpoints.md §2).

Layout: `{'epoch','arch','state_dict'[,'optimizer']}`; `state_dict` holds `module.base_encoder.*`
(timm ViT names + `head.*`, the 3-layer BN projector), `module.momentum_encoder.*` and
`module.predictor.*`. We keep the base encoder; its `head.*` becomes the projection (eval-mode BN).
"""

from __future__ import annotations

from typing import Any

import torch

from partbench.encoders.loading import LayoutError, require_mapping
from partbench.encoders.registry import EncoderSpec, imagenet_norm, register_encoder
from partbench.sources import RemoteFile

BASE, DROPPED = "module.base_encoder.", ("module.momentum_encoder.", "module.predictor.")


def convert_mocov3(checkpoint: Any) -> dict[str, torch.Tensor]:
    """Strip `module.base_encoder.`; `head.*` -> `projection.*`; drop the momentum encoder and predictor."""
    state = require_mapping(checkpoint, "state_dict")
    if not any(k.startswith(BASE) for k in state):
        raise LayoutError(f"no '{BASE}' keys in 'state_dict'")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(BASE + "head."):
            out["projection." + key[len(BASE) + 5 :]] = value
        elif key.startswith(BASE):
            out[key[len(BASE) :]] = value
        elif not key.startswith(DROPPED):
            out[key] = value  # left for the strict load to report
    return out


@register_encoder
def mocov3() -> EncoderSpec:
    return EncoderSpec(
        name="mocov3",
        family="mocov3",
        files=(
            RemoteFile(
                url="https://dl.fbaipublicfiles.com/moco-v3/vit-b-300ep/vit-b-300ep.pth.tar",
                filename="vit-b-300ep.pth.tar",
            ),
        ),
        has_projection=True,
        head_kind="mlp_bn",
        description="MoCo v3 ViT-B/16, 300 epochs; projection = 3-layer BN projector (256-d)",
        timm_arch="vit_base_patch16_224",
        convert=convert_mocov3,
        **imagenet_norm(),
    )
