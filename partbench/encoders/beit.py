"""BEiT ViT-B/16, ImageNet-1k self-supervised, 800 epochs (the study authors' Drive file;
reference/checkpoints.md §4).

Layout: `{'model','optimizer','epoch','scaler','args'}`; `model` keys are already timm `Beit` names
(shared `rel_pos_bias`, `q_bias`/`v_bias`, `gamma_1`/`gamma_2`). We drop the pretraining-only
`mask_token`, `lm_head.*`, `cls_pt_layers.*` and the `relative_position_index` buffers (timm rebuilds
them). timm's `beit.checkpoint_filter_fn` does the same index drop but needs a model and leaves the
pretraining keys, so this converter stays a 3-line pure function; the tables are resized at run time
(`posembed.resize_rel_pos_table`).
"""

from __future__ import annotations

from typing import Any

import torch

from partbench.encoders.loading import require_mapping
from partbench.encoders.registry import EncoderSpec, imagenet_norm, register_encoder
from partbench.sources import RemoteFile, SourceKind

PRETRAIN_ONLY = ("mask_token", "lm_head.", "cls_pt_layers.")


def convert_beit(checkpoint: Any) -> dict[str, torch.Tensor]:
    """Unwrap `model`; drop pretraining-only keys and `relative_position_index` buffers."""
    state = require_mapping(checkpoint, "model")
    return {
        k: v
        for k, v in state.items()
        if not k.startswith(PRETRAIN_ONLY) and not k.endswith("relative_position_index")
    }


@register_encoder
def beit() -> EncoderSpec:
    return EncoderSpec(
        name="beit",
        family="beit",
        files=(
            RemoteFile(
                url="https://drive.google.com/drive/folders/1JSNzbxc9MBpNIhMRP8Vd0FFk7K5hC65q",
                filename="beit_base_standard_epoch800_checkpoint-799.pth",
                kind=SourceKind.GDRIVE_FOLDER,
                note="study authors' Drive folder; no ImageNet-1k-only BEiT is published officially",
            ),
        ),
        has_projection=False,
        description="BEiT ViT-B/16, ImageNet-1k, 800 epochs (shared relative-position bias, layer-scale)",
        timm_arch="beit_base_patch16_224",
        timm_kwargs={
            "use_abs_pos_emb": False,
            "use_rel_pos_bias": False,
            "use_shared_rel_pos_bias": True,
            "init_values": 0.1,
            "global_pool": "",
        },
        convert=convert_beit,
        pos_resize="relpos",
        **imagenet_norm(),
    )
