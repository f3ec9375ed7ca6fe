"""The study's linear segmentation head: one 1×1 conv on the concatenated block 4/6/8/12 outputs.

Also the frozen-backbone side of the model (`FrozenBackbone`) and mmseg's `encode_decode`.

This is mmseg's `FCNHead(num_convs=0, input_transform="resize_concat", concat_input=False,
dropout_ratio=0)` as configured in the study's `*_lp_freeze12.py` files: every map is bilinearly
resized to the first map's size (they already share it for a ViT), the maps are concatenated along
channels (4 × D), and `conv_seg` (1×1, with bias, weights N(0, 0.01), bias 0) maps them to the
classes. Logits are then bilinearly upsampled (align_corners=False) to the label / crop size.

The study's auxiliary FCN head (3×3 conv, 256 ch, SyncBN on block 8, loss weight 0.4) trains
alongside but is never used at test time; the gradient it produces cannot reach the frozen
backbone nor the linear head, so it is left out here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from partbench.errors import PartbenchError


def resize_concat(maps: Sequence[Tensor]) -> Tensor:
    """mmseg's `resize_concat`: resize every `[B,C_i,h_i,w_i]` map to the first's size, concat channels."""
    if len(maps) == 0:
        raise PartbenchError("resize_concat: no feature maps given")
    size = maps[0].shape[-2:]
    resized = [
        m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        for m in maps
    ]
    return torch.cat(resized, dim=1)


def upsample_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of `[B,K,h,w]` logits to `size` (align_corners=False), as mmseg's `resize`."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


class LinearSegHead(nn.Module):
    """1×1 conv (with bias) from the concatenated maps (`in_channels` = 4·D) to `num_classes` logits."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if in_channels <= 0 or num_classes <= 0:
            raise PartbenchError(
                f"LinearSegHead: channels and classes must be positive, got {in_channels}, {num_classes}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.conv_seg = nn.Conv2d(in_channels, num_classes, kernel_size=1, bias=True)
        nn.init.normal_(self.conv_seg.weight, mean=0.0, std=0.01)  # mmseg BaseDecodeHead.init_weights
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, features: Tensor | Sequence[Tensor]) -> Tensor:
        """Logits `[B,K,h,w]` at feature resolution from a list of maps or an already concatenated tensor."""
        x = features if isinstance(features, Tensor) else resize_concat(features)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise PartbenchError(
                f"LinearSegHead: expected [B,{self.in_channels},h,w] features, got {list(x.shape)}"
            )
        return self.conv_seg(x)


class BlockSegHeads(nn.Module):
    """One `LinearSegHead(D, K)` per block, side by side: `[B, G·D, h, w]` maps -> `[B, G·K, h, w]` logits.

    Input channels `g·D..(g+1)·D` are block `blocks[g]`'s map (the layout of `FrozenBackbone` over
    those blocks); output channels `g·K..(g+1)·K` are that block's logits. The heads share nothing,
    so training them together on the summed loss (`loss`) gives each head the gradient it would get
    alone; AdamW is per parameter, so each head follows its solo trajectory.
    """

    def __init__(self, embed_dim: int, blocks: Sequence[int], num_classes: int) -> None:
        super().__init__()
        if not blocks:
            raise PartbenchError("BlockSegHeads: no blocks given")
        self.embed_dim, self.blocks, self.num_classes = embed_dim, tuple(blocks), num_classes
        self.heads = nn.ModuleList(LinearSegHead(embed_dim, num_classes) for _ in self.blocks)

    def forward(self, features: Tensor) -> Tensor:
        d = self.embed_dim
        if features.ndim != 4 or features.shape[1] != d * len(self.heads):
            raise PartbenchError(
                f"BlockSegHeads: expected [B,{d * len(self.heads)},h,w] features, got {list(features.shape)}"
            )
        return torch.cat([h(features[:, g * d : (g + 1) * d]) for g, h in enumerate(self.heads)], dim=1)

    def subset(self, blocks: Sequence[int]) -> BlockSegHeads:
        """The heads of `blocks` (shared modules, not copies), as their own `BlockSegHeads`."""
        sub = BlockSegHeads.__new__(BlockSegHeads)
        nn.Module.__init__(sub)
        sub.embed_dim, sub.blocks, sub.num_classes = self.embed_dim, tuple(blocks), self.num_classes
        sub.heads = nn.ModuleList(self.heads[self.blocks.index(b)] for b in sub.blocks)
        return sub

    def split(self, logits: Tensor) -> Tensor:
        """`[B, G·K, ...]` -> `[B, G, K, ...]`: each block's logits."""
        return logits.unflatten(1, (len(self.heads), self.num_classes))

    def loss(self, logits: Tensor, labels: Tensor, ignore_index: int = 255) -> Tensor:
        """Sum over blocks of each block's `segmentation_loss` (mean over all pixels), in one call."""
        from partbench.probes.seg_train import segmentation_loss

        g = len(self.heads)
        per_block = self.split(logits).flatten(0, 1)  # row i*G + g = item i, block g
        return g * segmentation_loss(per_block, labels.repeat_interleave(g, dim=0), ignore_index)


# --- the frozen backbone ------------------------------------------------------------------------


class FrozenBackbone:
    """`images -> [B, 4D, h, w]`: concatenated block maps, computed without autograd (bf16 on CUDA)."""

    def __init__(self, encoder: Any, layers: tuple[int, ...], device: torch.device) -> None:
        self.encoder, self.layers, self.device = encoder, tuple(layers), device
        self.amp = device.type == "cuda"

    def __call__(self, images: Tensor) -> Tensor:
        images = images.to(self.device, non_blocking=True)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            feats = resize_concat(self.encoder.layer_maps(images, layers=self.layers))
        return feats.clone()  # a normal tensor again, usable by the head's autograd


def encode_decode(backbone: FrozenBackbone, head: nn.Module) -> Callable[[Tensor], Tensor]:
    """mmseg's `encode_decode`: window logits upsampled to the window size (float32)."""

    def run(crops: Tensor) -> Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=backbone.amp):
            logits = head(backbone(crops))
        return upsample_logits(logits.float(), tuple(crops.shape[-2:]))

    return run
