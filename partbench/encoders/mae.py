"""MAE ViT-B/16 encoder (`mae_pretrain_vit_base.pth`, reference/checkpoints.md §5).

Layout: `{'model': state_dict}`, encoder only, timm ViT names (stored fixed sin-cos pos_embed). Under
the `study` protocol `Encoder.extract` shuffles the patch tokens before the position embedding, as the
study's `random_masking(x, 0)` did (seeded, repeatable); `clean` keeps them in order.
"""

from __future__ import annotations

from typing import Any

import torch

from partbench.encoders.loading import require_mapping
from partbench.encoders.registry import EncoderSpec, imagenet_norm, register_encoder
from partbench.sources import RemoteFile


def convert_mae(checkpoint: Any) -> dict[str, torch.Tensor]:
    """Unwrap `model`; the keys are already timm names."""
    return dict(require_mapping(checkpoint, "model"))


@register_encoder
def mae() -> EncoderSpec:
    return EncoderSpec(
        name="mae",
        family="mae",
        files=(
            RemoteFile(
                url="https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth",
                filename="mae_pretrain_vit_base.pth",
                note="README publishes an MD5 prefix 8cad7c (not SHA-256)",
            ),
        ),
        has_projection=False,
        description="MAE ViT-B/16 encoder, 1600 epochs",
        timm_arch="vit_base_patch16_224",
        convert=convert_mae,
        **imagenet_norm(),
    )
