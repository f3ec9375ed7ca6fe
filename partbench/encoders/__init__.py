"""Encoder zoo: the study's seven ViT-B/16 encoders (+ two supervised variants and any timm model),
loaded from their official checkpoint layouts into timm, frozen, with the study's features.

```python
from partbench.encoders import load_encoder, list_encoders, get_encoder_spec, parse_arch
enc = load_encoder("dino", checkpoint=path, protocol="study", embed_dim=64, depth=2, num_heads=4)
enc.extract(images)            # {"embedding", "cls_token", "projection"?, "tokens"?}
enc.layer_maps(images)         # [B, D, h, w] raw block outputs, any size divisible by 16
enc.block_tokens(images, [0, 1])
```
"""

from __future__ import annotations

# Family modules register their entries on import (order = `list_encoders()` order).
from partbench.encoders import beit, cae, deit, dino, ibot, mae, mocov3  # noqa: F401
from partbench.encoders.build import load_encoder
from partbench.encoders.encoder import MAE_STUDY_SHUFFLE_SEED, Encoder, default_seg_layers
from partbench.encoders.registry import (
    EncoderSpec,
    get_encoder_spec,
    list_encoders,
    parse_arch,
    register_encoder,
)

__all__ = [
    "MAE_STUDY_SHUFFLE_SEED",
    "Encoder",
    "EncoderSpec",
    "default_seg_layers",
    "get_encoder_spec",
    "list_encoders",
    "load_encoder",
    "parse_arch",
    "register_encoder",
]
