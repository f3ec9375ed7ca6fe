"""iBOT ViT-B/16, random masking (reference/checkpoints.md §7): the **teacher** of the full
`checkpoint.pth` (backbone + head; projection = the cls branch `last_layer`), or the backbone-only
`checkpoint_teacher.pth` (`{'state_dict': flat}`, no head).

The patch branch `last_layer2` is dropped. Local file names carry an `ibot_vitb_16_rand_mask_` prefix
because the official names (`checkpoint.pth`) are generic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from partbench.encoders.dino import convert_teacher
from partbench.encoders.loading import LayoutError, require_mapping
from partbench.encoders.registry import EncoderSpec, imagenet_norm, register_encoder
from partbench.sources import RemoteFile

IBOT_URL = "https://lf3-nlp-opensource.bytetos.com/obj/nlp-opensource/archive/2022/ibot/vitb_16_rand_mask/"


def convert_ibot(checkpoint: Any) -> dict[str, torch.Tensor]:
    """Full checkpoint: teacher backbone + cls head; `checkpoint_teacher.pth`: its `state_dict`."""
    if isinstance(checkpoint, Mapping) and "teacher" in checkpoint:
        return convert_teacher(require_mapping(checkpoint, "teacher"), drop_head=("last_layer2.",))
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:
        return dict(require_mapping(checkpoint, "state_dict"))
    raise LayoutError("expected 'teacher' (full checkpoint.pth) or 'state_dict' (checkpoint_teacher.pth)")


@register_encoder
def ibot() -> EncoderSpec:
    return EncoderSpec(
        name="ibot",
        family="ibot",
        files=(
            RemoteFile(url=IBOT_URL + "checkpoint.pth", filename="ibot_vitb_16_rand_mask_checkpoint.pth"),
            RemoteFile(
                url=IBOT_URL + "checkpoint_teacher.pth",
                filename="ibot_vitb_16_rand_mask_checkpoint_teacher.pth",
                note="teacher backbone only: no projection",
            ),
        ),
        has_projection=True,
        head_kind="dino",
        description="iBOT ViT-B/16 (rand mask) teacher; projection = cls branch of the iBOT head (8192-d)",
        timm_arch="vit_base_patch16_224",
        convert=convert_ibot,
        pos_resize="dino",
        **imagenet_norm(),
    )
