"""Supervised baselines: DeiT-B (`deit`), distilled DeiT-B (`deit-distilled`) and Google's ViT-B/16
in21k→in1k (`vit-in21k`, the timm default the study's retrieval/classification code really loaded).

Official layouts (reference/checkpoints.md §1): DeiT files are `{'model': state_dict}` in timm names
plus the 1000-way `head.*` (distilled: `dist_token`, `head_dist.*`, pos_embed of 2 + 196 rows);
`jx_vit_base_p16_224-80ecf9dd.pth` is a flat timm state dict with its `head.*`. DeiT heads are dropped
(the study never used them); vit-in21k's classifier is kept as its `projection`, because the study's
`VisionTransformerPatchEmbed` returned those 1000-way logits in that slot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from partbench.encoders.loading import LayoutError, flat_tensors, require_mapping
from partbench.encoders.registry import EncoderSpec, imagenet_norm, register_encoder
from partbench.sources import RemoteFile

DEIT_URL = "https://dl.fbaipublicfiles.com/deit/"
VIT_JX_URL = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/jx_vit_base_p16_224-80ecf9dd.pth"


def convert_deit(checkpoint: Any) -> dict[str, torch.Tensor]:
    """DeiT / distilled DeiT: unwrap `model`, drop the classifier heads (`head.*`, `head_dist.*`)."""
    state = require_mapping(checkpoint, "model")
    if "head.weight" not in state:
        raise LayoutError("no classifier 'head.weight' (official DeiT files carry their 1000-way head)")
    return {k: v for k, v in state.items() if not k.startswith(("head.", "head_dist."))}


def convert_vit_in21k(checkpoint: Any) -> dict[str, torch.Tensor]:
    """Flat timm ViT state dict; the classifier `head.*` becomes `projection.*` (the logits)."""
    state: Mapping[str, Any] = flat_tensors(checkpoint)
    if "head.weight" not in state:
        raise LayoutError("no classifier 'head.weight' in the flat state dict")
    return {("projection." + k[5:] if k.startswith("head.") else k): v for k, v in state.items()}


@register_encoder
def deit() -> EncoderSpec:
    return EncoderSpec(
        name="deit",
        family="deit",
        files=(
            RemoteFile(
                url=DEIT_URL + "deit_base_patch16_224-b5f2ef4d.pth",
                filename="deit_base_patch16_224-b5f2ef4d.pth",
                sha256_prefix="b5f2ef4d",
            ),
        ),
        has_projection=False,
        description="DeiT-B/16, supervised ImageNet-1k (the paper's supervised baseline)",
        timm_arch="deit_base_patch16_224",
        convert=convert_deit,
        **imagenet_norm(),
    )


@register_encoder
def deit_distilled() -> EncoderSpec:
    return EncoderSpec(
        name="deit-distilled",
        family="deit",
        files=(
            RemoteFile(
                url=DEIT_URL + "deit_base_distilled_patch16_224-df68dfff.pth",
                filename="deit_base_distilled_patch16_224-df68dfff.pth",
                sha256_prefix="df68dfff",
            ),
        ),
        has_projection=False,
        description="distilled DeiT-B/16 (2 prefix tokens), the file of the study's LIP segmentation script",
        timm_arch="deit_base_distilled_patch16_224",
        convert=convert_deit,
        **imagenet_norm(),
    )


@register_encoder
def vit_in21k() -> EncoderSpec:
    return EncoderSpec(
        name="vit-in21k",
        family="vit",
        files=(
            RemoteFile(
                url=VIT_JX_URL,
                filename="jx_vit_base_p16_224-80ecf9dd.pth",
                note="timm 0.3/0.4 default vit_base_patch16_224 weights; name's hash prefix unverified",
            ),
        ),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        has_projection=True,
        head_kind="linear",
        description="Google ViT-B/16 in21k→in1k (what the study's retrieval code loaded); projection: logits",
        timm_arch="vit_base_patch16_224",
        convert=convert_vit_in21k,
    )
