"""The `Encoder` wrapper: one frozen timm ViT/BEiT backbone, an optional projection head, and the
study's three retrieval features, block outputs and segmentation feature maps.

The token pipeline is written out here (patch embed → [MAE study shuffle] → prefix tokens →
position embedding resized for the input size → blocks → final norm) so that every family resizes
its position embeddings the way the study did and the MAE shuffle sits where the study put it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.models.beit import Beit, gen_relative_position_index
from torch import nn

from partbench.config import IMAGENET_MEAN, IMAGENET_STD, Protocol
from partbench.encoders.posembed import dino_interpolate, resize_abs_bicubic, resize_rel_pos_table
from partbench.encoders.registry import EncoderSpec
from partbench.errors import PartbenchError

#: Seed of the study's MAE patch shuffle (`random_masking(x, 0)`); reseeded on every call.
MAE_STUDY_SHUFFLE_SEED = 0


def default_seg_layers(depth: int) -> tuple[int, ...]:
    """Blocks 4/6/8/12 of 12 (0-based 3, 5, 7, 11); proportional `round(depth*k/12)-1` otherwise."""
    return tuple(max(0, round(depth * k / 12) - 1) for k in (4, 6, 8, 12))


class Encoder(nn.Module):
    """A frozen encoder in eval mode. See `extract`, `layer_maps`, `block_tokens`."""

    def __init__(
        self,
        spec: EncoderSpec,
        backbone: nn.Module,
        projector: nn.Module | None,
        protocol: Protocol,
        checkpoint_sha256: str | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.projector = projector
        self.protocol = protocol
        self.checkpoint_sha256 = checkpoint_sha256
        self.embed_dim: int = int(backbone.embed_dim)
        self.num_blocks: int = len(backbone.blocks)
        self.patch_size: int = int(backbone.patch_embed.patch_size[0])
        self.num_prefix_tokens: int = int(getattr(backbone, "num_prefix_tokens", 1))
        self.native_grid: tuple[int, int] = tuple(backbone.patch_embed.grid_size)
        self.default_seg_layers = default_seg_layers(self.num_blocks)
        norm = protocol is Protocol.STUDY
        self.mean = IMAGENET_MEAN if norm else tuple(spec.mean)
        self.std = IMAGENET_STD if norm else tuple(spec.std)
        self.study_mae_shuffle = protocol is Protocol.STUDY and spec.family == "mae"
        self._is_beit = isinstance(backbone, Beit)
        backbone.patch_embed.strict_img_size = False
        self._pos_cache: dict[tuple, torch.Tensor | None] = {}
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Encoder:
        """Always eval: the encoder is frozen (BN heads use running statistics, no dropout)."""
        return super().train(False)

    # ---- position embeddings per input size (cached) -----------------------------------------
    def _pos_embed(self, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor | None:
        key = ("abs", grid, like.device, like.dtype)
        if key not in self._pos_cache:
            table = getattr(self.backbone, "pos_embed", None)
            if table is None:
                self._pos_cache[key] = None
            else:
                npfx = 0 if getattr(self.backbone, "no_embed_class", False) else self.num_prefix_tokens
                with torch.no_grad():
                    if self.spec.pos_resize == "dino":
                        table = dino_interpolate(table, grid)
                    else:
                        table = resize_abs_bicubic(table, grid, npfx)
                self._pos_cache[key] = table.to(device=like.device, dtype=like.dtype)
        return self._pos_cache[key]

    def _rel_pos_bias(self, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor | None:
        module = getattr(self.backbone, "rel_pos_bias", None)
        per_block = getattr(self.backbone.blocks[0].attn, "relative_position_bias_table", None)
        if per_block is not None and grid != self.native_grid:
            raise PartbenchError(
                f"{self.spec.name}: per-block relative-position tables only work at the native "
                f"{self.native_grid} grid, got {grid}"
            )
        if module is None:
            return None
        key = ("rel", grid, like.device, like.dtype)
        if key not in self._pos_cache:
            with torch.no_grad():
                table = resize_rel_pos_table(module.relative_position_bias_table, self.native_grid, grid)
                index = gen_relative_position_index(grid, device=table.device)
                n = grid[0] * grid[1] + 1
                bias = table[index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
            self._pos_cache[key] = bias.to(device=like.device, dtype=like.dtype)
        return self._pos_cache[key]

    # ---- the token pipeline --------------------------------------------------------------------
    def _study_shuffle(self, x: torch.Tensor) -> torch.Tensor:
        """The study's MAE `random_masking(x, 0)` before the position embedding: a per-sample random
        permutation of the patch tokens, from a fixed-seed CPU generator (repeatable per batch)."""
        gen = torch.Generator().manual_seed(MAE_STUDY_SHUFFLE_SEED)
        noise = torch.rand(x.shape[0], x.shape[1], generator=gen)
        order = noise.argsort(dim=1).to(x.device)
        return torch.gather(x, 1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

    def _run(
        self, images: torch.Tensor, keep: Sequence[int], *, final_norm: bool, shuffle: bool
    ) -> tuple[list[torch.Tensor], torch.Tensor | None, tuple[int, int]]:
        if images.ndim != 4:
            raise PartbenchError(f"{self.spec.name}: images must be [B,3,H,W], got {tuple(images.shape)}")
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise PartbenchError(
                f"{self.spec.name}: input {height}x{width} not divisible by the patch size {self.patch_size}"
            )
        for block in keep:
            if not 0 <= block < self.num_blocks:
                raise PartbenchError(f"{self.spec.name}: block {block} out of range 0..{self.num_blocks - 1}")
        grid = (height // self.patch_size, width // self.patch_size)
        m = self.backbone
        x = m.patch_embed(images)
        if x.ndim == 4:  # NHWC (dynamic-size timm models)
            x = x.flatten(1, 2)
        if shuffle:
            x = self._study_shuffle(x)
        prefix = [
            t
            for t in (getattr(m, n, None) for n in ("cls_token", "dist_token", "reg_token"))
            if t is not None
        ]
        prefix = [t.expand(x.shape[0], -1, -1) for t in prefix]
        pos = self._pos_embed(grid, x)
        if pos is not None and getattr(m, "no_embed_class", False):
            x = torch.cat([*prefix, x + pos], dim=1)
        else:
            x = torch.cat([*prefix, x], dim=1)
            x = x if pos is None else x + pos
        x = m.pos_drop(x)
        for name in ("patch_drop", "norm_pre"):
            if hasattr(m, name):
                x = getattr(m, name)(x)
        rel = self._rel_pos_bias(grid, x) if self._is_beit else None
        last = self.num_blocks - 1 if final_norm else max(keep, default=-1)
        wanted, outs = set(keep), {}
        for i, block in enumerate(m.blocks):
            if i > last:
                break
            x = block(x, shared_rel_pos_bias=rel) if self._is_beit else block(x)
            if i in wanted:
                outs[i] = x
        return [outs[i] for i in keep], (m.norm(x) if final_norm else None), grid

    # ---- public API ----------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, images: torch.Tensor, tokens: bool = False) -> dict[str, torch.Tensor]:
        """The study's features: `embedding` (mean of the final-normed patch tokens), `cls_token`,
        `projection` (when a head is loaded) and, with `tokens=True`, all final-normed tokens."""
        _, x, _ = self._run(images, (), final_norm=True, shuffle=self.study_mae_shuffle)
        assert x is not None
        out = {"embedding": x[:, self.num_prefix_tokens :].mean(dim=1), "cls_token": x[:, 0]}
        if self.projector is not None:
            out["projection"] = self.projector(x[:, 0])
        if tokens:
            out["tokens"] = x
        return out

    @torch.no_grad()
    def block_tokens(self, images: torch.Tensor, blocks: Sequence[int]) -> list[torch.Tensor]:
        """Raw outputs [B,N,D] (prefix tokens included, no final norm) of `blocks`, in one pass.

        Follows the retrieval/classification code path, so MAE tokens are shuffled under `study`."""
        outs, _, _ = self._run(images, list(blocks), final_norm=False, shuffle=self.study_mae_shuffle)
        return outs

    @torch.no_grad()
    def layer_maps(self, images: torch.Tensor, layers: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Raw block outputs as [B,D,h,w] maps of the patch tokens (the study's segmentation features).

        `layers` defaults to `default_seg_layers` ((3, 5, 7, 11) at depth 12). Any input size divisible
        by the patch size; never shuffled (the study's segmentation code did not shuffle)."""
        layers = self.default_seg_layers if layers is None else layers
        outs, _, (rows, cols) = self._run(images, list(layers), final_norm=False, shuffle=False)
        batch = images.shape[0]
        return [
            x[:, self.num_prefix_tokens :].transpose(1, 2).reshape(batch, self.embed_dim, rows, cols)
            for x in outs
        ]
