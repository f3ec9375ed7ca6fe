"""CAE ViT-B/16, 1600 epochs (`cae_base_1600ep.pth` from CAE's Drive; reference/checkpoints.md §6).

Layout: `{'model',...}`; the encoder is under `encoder.` with BEiT-style attention (`q_bias`,
`v_bias`, no k bias) and layer-scale `gamma_1`/`gamma_2`, plus an absolute sin-cos pos_embed. It is
loaded into a timm `VisionTransformer(init_values=0.1)` ("option B"): `qkv.bias = [q_bias, 0, v_bias]`
(exact, CAE's k bias is a constant zero), `gamma_N` -> `lsN.gamma`. Everything outside `encoder.`
(regressor, decoder, mask_token, teacher) is dropped. LayerNorm eps: 1e-5 under `study` (the study's
`VisionTransformerCAE` used `nn.LayerNorm`'s default), 1e-6 under `clean` (set in `build.py`).
"""

from __future__ import annotations

from typing import Any

import torch

from partbench.encoders.loading import LayoutError, require_mapping, split_prefix
from partbench.encoders.registry import EncoderSpec, imagenet_norm, register_encoder
from partbench.sources import RemoteFile, SourceKind


def convert_cae(checkpoint: Any) -> dict[str, torch.Tensor]:
    """Keep `encoder.*` (stripped); merge q/v biases into `qkv.bias`; rename layer-scale."""
    encoder, _ = split_prefix(require_mapping(checkpoint, "model"), "encoder.")
    if not encoder:
        raise LayoutError("no 'encoder.' keys in 'model'")
    out: dict[str, torch.Tensor] = {}
    for key, value in encoder.items():
        if key.endswith(".attn.q_bias"):
            v_bias = encoder.get(key[: -len("q_bias")] + "v_bias")
            if v_bias is None:
                raise LayoutError(f"encoder.{key} has no matching v_bias")
            out[key[: -len("q_bias")] + "qkv.bias"] = torch.cat([value, torch.zeros_like(value), v_bias])
        elif key.endswith(".attn.v_bias"):
            continue
        elif key.endswith((".gamma_1", ".gamma_2")):
            out[key[: -len("gamma_1")] + f"ls{key[-1]}.gamma"] = value
        else:
            out[key] = value
    return out


@register_encoder
def cae() -> EncoderSpec:
    return EncoderSpec(
        name="cae",
        family="cae",
        files=(
            RemoteFile(
                url="https://drive.google.com/drive/folders/1wwhg7nj2GQuU9uthVuQLkEEXEjx90G7g",
                filename="cae_base_1600ep.pth",
                kind=SourceKind.GDRIVE_FOLDER,
                note="CAE's 'Pretrained weights and logs' Drive folder",
            ),
        ),
        has_projection=False,
        description="CAE ViT-B/16, 1600 epochs (q/v biases, layer-scale, sin-cos pos_embed)",
        timm_arch="vit_base_patch16_224",
        timm_kwargs={"init_values": 0.1, "qkv_bias": True},
        convert=convert_cae,
        **imagenet_norm(),
    )
