"""Sliding-window inference, as mmseg v0.x `EncoderDecoder.slide_inference`.

Windows of `crop` size are laid on a grid with `stride`; the last row/column is shifted back so it
ends at the image border (`y1 = max(min(y1 + h_crop, H) - h_crop, 0)`). Each window's logits
(already upsampled to the window size) are added into an accumulator, a count map records how many
windows cover each pixel, the sum is divided by the count, and the result is bilinearly resized
(align_corners=False) to the original label size.

One deviation, documented: where the image is smaller than the crop along a side, mmseg decodes
the smaller window as is; a ViT needs sides divisible by its patch size, so here the image is
zero-padded (bottom/right, i.e. the mean colour after normalisation) up to the crop, and the padded
part of the logits is cut off before the final resize. Test images at the study's test scales
(short side = crop) never hit this path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from partbench.datasets import SegmentationDataset
from partbench.distributed import DistContext
from partbench.errors import PartbenchError
from partbench.metrics import ConfusionMatrix, IoUResult, bootstrap_ci, iou_from_areas
from partbench.probes.seg_head import FrozenBackbone, encode_decode

Window = tuple[int, int, int, int]  # (y1, y2, x1, x2)


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or min(pair) <= 0:
        raise PartbenchError(f"slide inference: {name} must be a positive int or (h, w), got {value!r}")
    return int(pair[0]), int(pair[1])


def window_grid(
    height: int, width: int, crop: int | tuple[int, int], stride: int | tuple[int, int]
) -> list[Window]:
    """The windows mmseg visits on an image of `height × width` (row-major, as mmseg loops)."""
    h_crop, w_crop = _pair(crop, "crop")
    h_stride, w_stride = _pair(stride, "stride")
    h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
    windows = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * h_stride + h_crop, height)
            x2 = min(w_idx * w_stride + w_crop, width)
            windows.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return windows


def count_map(height: int, width: int, windows: list[Window]) -> Tensor:
    """How many windows cover each pixel: `[height, width]` float32."""
    count = torch.zeros(height, width)
    for y1, y2, x1, x2 in windows:
        count[y1:y2, x1:x2] += 1
    return count


def slide_inference(
    logits_fn: Callable[[Tensor], Tensor],
    image: Tensor,
    num_classes: int,
    crop: int | tuple[int, int],
    stride: int | tuple[int, int],
    out_size: tuple[int, int] | None = None,
    window_batch: int = 8,
) -> Tensor:
    """Averaged window logits of `image` `[B,3,H,W]`, resized to `out_size` (default `(H, W)`).

    `logits_fn(windows [N,3,h_crop,w_crop]) -> [N,num_classes,h_crop,w_crop]` is the model's
    `encode_decode` (backbone + head + upsampling to the window size). Windows are batched
    `window_batch` at a time. Returns float32 logits `[B,num_classes,*out_size]`.
    """
    if image.ndim != 4:
        raise PartbenchError(f"slide inference: expected an image batch [B,3,H,W], got {list(image.shape)}")
    h_crop, w_crop = _pair(crop, "crop")
    batch, _, height, width = image.shape
    pad_h, pad_w = max(h_crop - height, 0), max(w_crop - width, 0)
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
    hp, wp = image.shape[-2:]
    windows = window_grid(hp, wp, (h_crop, w_crop), stride)
    preds = torch.zeros(batch, num_classes, hp, wp, dtype=torch.float32, device=image.device)
    for start in range(0, len(windows), max(1, window_batch)):
        chunk = windows[start : start + max(1, window_batch)]
        crops = torch.cat([image[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in chunk], dim=0)
        logits = logits_fn(crops).float()
        if logits.shape != (len(chunk) * batch, num_classes, h_crop, w_crop):
            raise PartbenchError(
                f"slide inference: logits_fn returned {list(logits.shape)}, expected "
                f"[{len(chunk) * batch},{num_classes},{h_crop},{w_crop}]"
            )
        for i, (y1, y2, x1, x2) in enumerate(chunk):
            preds[:, :, y1:y2, x1:x2] += logits[i * batch : (i + 1) * batch]
    preds = preds / count_map(hp, wp, windows).to(preds.device)
    preds = preds[:, :, :height, :width]
    size = (height, width) if out_size is None else tuple(out_size)
    if tuple(preds.shape[-2:]) != size:
        preds = F.interpolate(preds, size=size, mode="bilinear", align_corners=False)
    return preds


# --- evaluation ---------------------------------------------------------------------------------


def percent_metrics(res: IoUResult) -> dict[str, Any]:
    """mIoU/mAcc/aAcc and per-class IoU in percent (None where a class is absent) for a result file."""
    pct = lambda v: None if not np.isfinite(v) else round(100.0 * float(v), 4)  # noqa: E731
    return {
        "mIoU": pct(res.miou),
        "mAcc": pct(res.macc),
        "aAcc": pct(res.aacc),
        "per_class_iou": [pct(v) for v in res.iou],
    }


def evaluate_slide(
    backbone: FrozenBackbone,
    head: nn.Module,
    val_set: SegmentationDataset,
    slide_crop: tuple[int, int],
    slide_stride: tuple[int, int],
    ctx: DistContext,
    num_workers: int,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Single-scale sliding-window evaluation over the val split; the same numbers on every rank."""
    num_classes = val_set.spec.num_classes
    mine = list(range(ctx.rank, len(val_set), ctx.world_size))
    loader = DataLoader(Subset(val_set, mine), batch_size=None, num_workers=num_workers)
    cm = ConfusionMatrix(
        num_classes, val_set.spec.ignore_index, device=backbone.device, per_image=bootstrap > 0
    )
    run = encode_decode(backbone, head)
    with torch.inference_mode():
        for image, label in loader:
            label = label.to(backbone.device)
            logits = slide_inference(
                run,
                image[None].to(backbone.device),
                num_classes,
                slide_crop,
                slide_stride,
                out_size=tuple(label.shape),
            )
            cm.update(logits.argmax(1)[0], label)
    mine_only = cm.matrix is None  # this rank had no images (more ranks than val images)
    if ctx.enabled:
        matrix = (
            cm.matrix if cm.matrix is not None else torch.zeros(num_classes, num_classes, dtype=torch.int64)
        )
        matrix = matrix.to(backbone.device)
        dist.all_reduce(matrix)
        cm.matrix = matrix
    out = percent_metrics(cm.result())
    if bootstrap > 0:
        per_image = np.zeros((0, 3, num_classes)) if mine_only else cm.per_image_areas()
        if ctx.enabled:
            gathered: list[Any] = [None] * ctx.world_size
            dist.all_gather_object(gathered, per_image)
            per_image = np.concatenate(gathered)
        ci = {}
        for key, attr in (("mIoU", "miou"), ("mAcc", "macc"), ("aAcc", "aacc")):
            lo, hi = bootstrap_ci(
                per_image, lambda a, k=attr: getattr(iou_from_areas(a.sum(0)), k), n=bootstrap, seed=seed
            )
            ci[key] = [round(100 * lo, 4), round(100 * hi, 4)]
        out["ci95"] = ci
    return out
