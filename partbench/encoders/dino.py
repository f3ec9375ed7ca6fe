"""DINO ViT-B/16 (reference/checkpoints.md §3): the **teacher** of the full checkpoint (backbone +
DINOHead, so `projection` exists), or the backbone-only file (flat, no head).

Full layout: `{'student','teacher','optimizer','epoch','args','dino_loss'}`; the teacher's keys are
`backbone.*` and `head.*` (the student's are `module.`-prefixed and ignored). The head's weight-normed
last layer (`weight_g`, `weight_v`) is folded into one weight.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from partbench.encoders.heads import fold_weight_norm
from partbench.encoders.loading import flat_tensors, require_mapping
from partbench.encoders.registry import EncoderSpec, imagenet_norm, register_encoder
from partbench.sources import RemoteFile

DINO_URL = "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/"


def convert_teacher(teacher: Mapping[str, Any], drop_head: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """`backbone.*` -> backbone keys, `head.*` -> `projection.*` (weight norm folded), `drop_head` dropped."""
    out: dict[str, torch.Tensor] = {}
    for key, value in teacher.items():
        key = key.removeprefix("module.")
        if key.startswith("backbone."):
            out[key[9:]] = value
        elif key.startswith("head."):
            if not key[5:].startswith(drop_head):
                out["projection." + key[5:]] = value
        else:
            out[key] = value  # left for the strict load to report
    g, v = out.pop("projection.last_layer.weight_g", None), out.pop("projection.last_layer.weight_v", None)
    if g is not None and v is not None:
        out["projection.last_layer.weight"] = fold_weight_norm(g.float(), v.float()).to(v.dtype)
    elif g is not None or v is not None:
        out["projection.last_layer.weight_" + ("g" if g is not None else "v")] = g if g is not None else v
    return out


def convert_dino(checkpoint: Any) -> dict[str, torch.Tensor]:
    """Full checkpoint: the teacher (backbone + head); backbone file: the flat state dict as is."""
    if isinstance(checkpoint, Mapping) and "teacher" in checkpoint:
        return convert_teacher(require_mapping(checkpoint, "teacher"))
    return dict(flat_tensors(checkpoint))


@register_encoder
def dino() -> EncoderSpec:
    return EncoderSpec(
        name="dino",
        family="dino",
        files=(
            RemoteFile(
                url=DINO_URL + "dino_vitbase16_pretrain_full_checkpoint.pth",
                filename="dino_vitbase16_pretrain_full_checkpoint.pth",
            ),
            RemoteFile(
                url=DINO_URL + "dino_vitbase16_pretrain.pth",
                filename="dino_vitbase16_pretrain.pth",
                note="teacher backbone only: no projection",
            ),
        ),
        has_projection=True,
        head_kind="dino",
        description="DINO ViT-B/16 teacher; projection = DINO head (65536-d)",
        timm_arch="vit_base_patch16_224",
        convert=convert_dino,
        pos_resize="dino",
        **imagenet_norm(),
    )
