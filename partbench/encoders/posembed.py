"""Position embeddings at other input sizes, the way the study's segmentation code resized them.

Three methods (reference/checkpoints.md §0.4):

- `resize_abs_bicubic`: MAE / mmseg `interpolate_pos_embed`: bicubic, `align_corners=False`, **no
  antialias**, prefix rows kept. Used for deit, deit-distilled, vit-in21k, mocov3, mae, cae.
- `dino_interpolate`: DINO/iBOT `interpolate_pos_encoding` at run time: bicubic with
  `scale_factor=((h+0.1)/g, (w+0.1)/g)`; the table is returned unchanged when the grid has as many
  patches as the native one *and* the input is square (the original's exact condition).
- `resize_rel_pos_table`: BEiT relative-position tables: per head, the offsets of the trained window
  are placed on a geometric-progression grid (BEiT's `run_class_finetuning.py`, the study's
  `mmcv_custom/checkpoint.py`) and a cubic spline through them (`RectBivariateSpline(kx=ky=3, s=0)`,
  which equals the removed `scipy.interpolate.interp2d(kind='cubic')`) is evaluated at the integer
  offsets of the new window. Generalised to rectangles by doing each axis on its own; an axis whose new
  window is not larger keeps the integer grid, so the spline returns the trained values there (a smaller
  window only needs offsets the model was trained with).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.interpolate import RectBivariateSpline


def resize_abs_bicubic(
    pos_embed: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 1
) -> torch.Tensor:
    """Resize a (1, prefix + g*g, D) table to `grid` = (rows, cols), bicubic without antialias."""
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old = math.isqrt(patches.shape[1])
    if old * old != patches.shape[1]:
        raise ValueError(f"position table has {patches.shape[1]} patch rows, not a square grid")
    if (old, old) == tuple(grid):
        return pos_embed
    dim = patches.shape[-1]
    table = patches.reshape(1, old, old, dim).permute(0, 3, 1, 2).float()
    table = F.interpolate(table, size=tuple(grid), mode="bicubic", align_corners=False)
    table = table.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim).to(pos_embed.dtype)
    return torch.cat([prefix, table], dim=1)


def dino_interpolate(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """DINO/iBOT's run-time `interpolate_pos_encoding` (cls row first) for a (rows, cols) patch grid."""
    num = pos_embed.shape[1] - 1
    rows, cols = grid
    if rows * cols == num and rows == cols:
        return pos_embed
    side = math.sqrt(num)
    dim = pos_embed.shape[-1]
    table = pos_embed[:, 1:].reshape(1, int(side), int(side), dim).permute(0, 3, 1, 2).float()
    table = F.interpolate(table, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side), mode="bicubic")
    if tuple(table.shape[-2:]) != (rows, cols):
        raise ValueError(f"DINO interpolation gave {tuple(table.shape[-2:])}, expected {grid}")
    table = table.permute(0, 2, 3, 1).reshape(1, rows * cols, dim).to(pos_embed.dtype)
    return torch.cat([pos_embed[:, :1], table], dim=1)


def _progression_offsets(src_size: int, dst_size: int) -> np.ndarray:
    """Where BEiT places the trained offsets -(s//2)..s//2 so that they span the new window."""
    half = src_size // 2
    if dst_size // 2 <= half:
        return np.arange(-half, half + 1, dtype=np.float64)
    left, right = 1.01, 1.5
    while right - left > 1e-6:
        q = (left + right) / 2.0
        if (1.0 - q**half) / (1.0 - q) > dst_size // 2:
            right = q
        else:
            left = q
    dis, cur = [], 1.0
    for i in range(half):
        dis.append(cur)
        cur += q ** (i + 1)
    return np.array([-d for d in reversed(dis)] + [0.0] + dis, dtype=np.float64)


def resize_rel_pos_table(
    table: torch.Tensor, src_window: tuple[int, int], dst_window: tuple[int, int], num_extra: int = 3
) -> torch.Tensor:
    """Resize a BEiT table ((2*Wh-1)*(2*Ww-1) + 3, heads) from `src_window` to `dst_window`."""
    if tuple(src_window) == tuple(dst_window):
        return table
    src_h, src_w = 2 * src_window[0] - 1, 2 * src_window[1] - 1
    dst_h, dst_w = 2 * dst_window[0] - 1, 2 * dst_window[1] - 1
    body, extra = table[:-num_extra], table[-num_extra:]
    if body.shape[0] != src_h * src_w:
        raise ValueError(f"relative-position table has {table.shape[0]} rows, expected {src_h * src_w + 3}")
    y, x = _progression_offsets(src_h, dst_h), _progression_offsets(src_w, dst_w)
    dy = np.arange(-(dst_h // 2), dst_h // 2 + 0.1, 1.0)
    dx = np.arange(-(dst_w // 2), dst_w // 2 + 0.1, 1.0)
    values = body.detach().double().cpu().numpy()
    heads = []
    for h in range(values.shape[1]):
        spline = RectBivariateSpline(y, x, values[:, h].reshape(src_h, src_w), kx=3, ky=3, s=0)
        heads.append(torch.from_numpy(spline(dy, dx)).reshape(-1, 1))
    resized = torch.cat(heads, dim=1).to(dtype=table.dtype, device=table.device)
    return torch.cat([resized, extra], dim=0)
