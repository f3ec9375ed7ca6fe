"""Segmentation augmentations with mmseg v0.x semantics, one function per transform.

Images are RGB `uint8` arrays `[H, W, 3]` and labels `uint8` arrays `[H, W]` until `normalize`, which
returns a float32 tensor `[3, H, W]`. Randomness comes from an explicit `numpy.random.Generator`,
drawn in the same order as mmseg's pipeline (so one seed gives one augmentation), never from global
state. Behaviour matched (read, not copied) against mmseg `datasets/pipelines/transforms.py`:

- `Resize(img_scale, ratio_range)`: ratio ~ U[lo, hi), scale = (int(L*r), int(S*r)), then mmcv
  `imrescale` keep-ratio: factor = min(long/max(h,w), short/min(h,w)), size = int(x*f + 0.5);
  image bilinear (cv2 INTER_LINEAR: half-pixel centres, no antialias, edges clamped), label
  nearest (cv2 INTER_NEAREST = floor index mapping).
- `RandomCrop(crop, cat_max_ratio)`: offsets ~ randint(0, margin+1) (h then w); a crop is kept when
  it holds >1 non-ignored class and the largest has < cat_max_ratio of them; 10 checks, after
  which the last drawn box is used unchecked.
- `RandomFlip(0.5)`: horizontal, image and label together.
- `PhotoMetricDistortion`: brightness, contrast first or last (mode), saturation, hue; each with
  probability 0.5; uint8 truncation after each step as mmcv does; HSV in OpenCV's 8-bit convention
  (H in [0, 180), S and V in [0, 255]).
- `Normalize` with mean/std on 0-255 (mmseg img_norm_cfg), then `Pad` to the crop size at the
  bottom/right with 0 for the (normalised) image and 255 for the label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# mmseg img_norm_cfg: ImageNet mean/std on the 0-255 scale, RGB order.
MMSEG_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
MMSEG_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)


# --- resize ---------------------------------------------------------------------------------------


def random_scale(
    base: tuple[int, int], ratio_range: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int]:
    """mmseg `Resize.random_sample_ratio`: `base` times a ratio drawn uniformly in `ratio_range`."""
    lo, hi = ratio_range
    ratio = rng.random() * (hi - lo) + lo
    return int(base[0] * ratio), int(base[1] * ratio)


def rescale_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv `rescale_size` keep-ratio: fit (h, w) inside (long, short) = (max(scale), min(scale)).

    Returns the new (height, width).
    """
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-pixel bilinear taps along one axis: (index0, index1, weight of index1), edges clamped."""
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 `[H, W, 3]` image to `size` = (h, w), rounded back to uint8.

    Separable numpy arithmetic rather than `torch.nn.functional.interpolate`, whose rounding
    depends on the thread count; the same sample must come out identical in every worker.
    """
    if image.shape[:2] == tuple(size):
        return image
    y0, y1, wy = _linear_taps(image.shape[0], size[0])
    x0, x1, wx = _linear_taps(image.shape[1], size[1])
    img = image.astype(np.float32)
    rows = img[y0] * (1 - wy)[:, None, None] + img[y1] * wy[:, None, None]
    out = rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map (OpenCV INTER_NEAREST: src = floor(dst * in/out))."""
    h, w = label.shape
    new_h, new_w = size
    if (h, w) == (new_h, new_w):
        return label
    rows = np.minimum((np.arange(new_h) * h) // new_h, h - 1)
    cols = np.minimum((np.arange(new_w) * w) // new_w, w - 1)
    return label[rows[:, None], cols[None, :]]


def rescale(
    image: np.ndarray, label: np.ndarray | None, scale: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Keep-ratio resize of image (bilinear) and, when given, label (nearest) to fit `scale`."""
    size = rescale_size(image.shape[0], image.shape[1], scale)
    out_label = None if label is None else resize_label(label, size)
    return resize_image(image, size), out_label


# --- crop -----------------------------------------------------------------------------------------


def crop_bbox(
    shape: tuple[int, int], crop: tuple[int, int], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """A random crop box (y0, y1, x0, x1) of size `crop` = (h, w); smaller images give the whole side."""
    margin_h = max(shape[0] - crop[0], 0)
    margin_w = max(shape[1] - crop[1], 0)
    y0 = int(rng.integers(0, margin_h + 1))
    x0 = int(rng.integers(0, margin_w + 1))
    return y0, y0 + crop[0], x0, x0 + crop[1]


def crop_is_balanced(label: np.ndarray, cat_max_ratio: float, ignore_index: int = 255) -> bool:
    """mmseg's acceptance test: more than one class, and none above `cat_max_ratio` of labelled pixels."""
    counts = np.bincount(label.ravel(), minlength=256)
    counts[ignore_index] = 0
    counts = counts[counts > 0]
    return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


def random_crop(
    image: np.ndarray,
    label: np.ndarray,
    crop: tuple[int, int],
    rng: np.random.Generator,
    cat_max_ratio: float = 0.75,
    ignore_index: int = 255,
    tries: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """mmseg `RandomCrop`: redraw up to `tries` times while one class dominates the crop."""
    y0, y1, x0, x1 = crop_bbox(label.shape, crop, rng)
    if cat_max_ratio < 1.0:
        for _ in range(tries):
            if crop_is_balanced(label[y0:y1, x0:x1], cat_max_ratio, ignore_index):
                break
            y0, y1, x0, x1 = crop_bbox(label.shape, crop, rng)
    return image[y0:y1, x0:x1], label[y0:y1, x0:x1]


# --- flip -----------------------------------------------------------------------------------------


def hflip(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror image and label left-right together (contiguous copies)."""
    return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(label[:, ::-1])


def random_flip(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator, prob: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """mmseg `RandomFlip(prob)`, horizontal."""
    if rng.random() < prob:
        return hflip(image, label)
    return image, label


# --- photometric distortion -----------------------------------------------------------------------


def _convert(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmseg `convert`: `x * alpha + beta`, clipped to [0, 255], truncated to uint8."""
    return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def rgb_to_hsv(image: np.ndarray) -> np.ndarray:
    """RGB uint8 → HSV uint8 in OpenCV's 8-bit convention: H in [0, 180), S and V in [0, 255]."""
    rgb = image.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(axis=-1)
    delta = v - rgb.min(axis=-1)
    s = np.where(v > 0, delta * 255.0 / np.maximum(v, 1e-6), 0.0)
    safe = np.maximum(delta, 1e-6)
    h = np.where(
        v == r,
        60.0 * (g - b) / safe,
        np.where(v == g, 120.0 + 60.0 * (b - r) / safe, 240.0 + 60.0 * (r - g) / safe),
    )
    h = np.where(delta > 0, h, 0.0)
    h = np.where(h < 0, h + 360.0, h)
    hsv = np.stack([np.round(h / 2.0) % 180, np.round(s), v], axis=-1)
    return hsv.astype(np.uint8)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """HSV uint8 (OpenCV 8-bit convention) → RGB uint8.

    Closed form per channel: c_n = V - V*S*clip(min(k, 4 - k), 0, 1), k = (n + H/60) mod 6, with
    n = 5, 3, 1 for R, G, B.
    """
    h = hsv[..., 0].astype(np.float32) * (2.0 / 60.0)
    s = hsv[..., 1].astype(np.float32) / 255.0
    v = hsv[..., 2].astype(np.float32)
    k = (np.array([5.0, 3.0, 1.0], dtype=np.float32) + h[..., None]) % 6.0
    weight = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    rgb = v[..., None] * (1.0 - s[..., None] * weight)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def photometric_distortion(
    image: np.ndarray,
    rng: np.random.Generator,
    brightness_delta: int = 32,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: int = 18,
) -> np.ndarray:
    """mmseg `PhotoMetricDistortion` on an RGB uint8 image, draws in mmseg's order.

    1 brightness (p 0.5, beta ~ U[-δ, δ]); mode ~ {0, 1}; if mode 1: contrast (p 0.5, alpha ~
    U[lo, hi]); saturation (p 0.5, S scaled); hue (p 0.5, H += randint(-δ, δ) mod 180 — numpy's
    randint excludes the upper bound, as in mmseg); if mode 0: contrast.
    """
    img = image
    if rng.integers(2):
        img = _convert(img, beta=rng.uniform(-brightness_delta, brightness_delta))
    mode = rng.integers(2)

    def contrast(x: np.ndarray) -> np.ndarray:
        if rng.integers(2):
            return _convert(x, alpha=rng.uniform(*contrast_range))
        return x

    if mode == 1:
        img = contrast(img)
    if rng.integers(2):
        hsv = rgb_to_hsv(img)
        hsv[..., 1] = _convert(hsv[..., 1], alpha=rng.uniform(*saturation_range))
        img = hsv_to_rgb(hsv)
    if rng.integers(2):
        hsv = rgb_to_hsv(img)
        shift = int(rng.integers(-hue_delta, hue_delta))
        hsv[..., 0] = ((hsv[..., 0].astype(np.int64) + shift) % 180).astype(np.uint8)
        img = hsv_to_rgb(hsv)
    if mode == 0:
        img = contrast(img)
    return img


# --- normalise and pad ----------------------------------------------------------------------------


def normalize(
    image: np.ndarray, mean: Sequence[float] = MMSEG_MEAN, std: Sequence[float] = MMSEG_STD
) -> torch.Tensor:
    """uint8 RGB `[H, W, 3]` → float32 `[3, H, W]` as `(x - mean) / std` with mean/std on 0-255."""
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (t - m) / s


def pad_to(
    image: torch.Tensor,
    label: np.ndarray,
    size: tuple[int, int],
    pad_val: float = 0.0,
    seg_pad_val: int = 255,
) -> tuple[torch.Tensor, np.ndarray]:
    """mmseg `Pad(size)`: pad image `[3, H, W]` and label `[H, W]` at the bottom/right up to `size`."""
    h, w = label.shape
    ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
    if ph == 0 and pw == 0:
        return image, label
    image = F.pad(image, (0, pw, 0, ph), value=pad_val)
    label = np.pad(label, ((0, ph), (0, pw)), constant_values=seg_pad_val)
    return image, label
