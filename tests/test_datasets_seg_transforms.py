"""mmseg-style segmentation transforms: hand-worked examples, then edge cases.

The reference is mmseg v0.x `pipelines/transforms.py` and mmcv's `rescale_size` / OpenCV's
INTER_NEAREST and INTER_LINEAR conventions, worked out by hand below; HSV against matplotlib.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.colors import hsv_to_rgb as mpl_hsv_to_rgb
from matplotlib.colors import rgb_to_hsv as mpl_rgb_to_hsv

from partbench.datasets import seg_transforms as T


class ScriptedRng:
    """Stands in for numpy's Generator: returns scripted draws and checks they are in range."""

    def __init__(self, random=(), integers=(), uniform=()):
        self._random, self._integers, self._uniform = list(random), list(integers), list(uniform)

    def random(self):
        return self._random.pop(0)

    def integers(self, low, high=None):
        low, high = (0, low) if high is None else (low, high)
        value = self._integers.pop(0)
        assert low <= value < high, (value, low, high)
        return value

    def uniform(self, low, high):
        value = self._uniform.pop(0)
        assert low <= value <= high
        return value

    def exhausted(self) -> bool:
        return not (self._random or self._integers or self._uniform)


# --- resize ---------------------------------------------------------------------------------------


def test_random_scale_multiplies_base_by_ratio_in_range():
    # ratio = 0.25 * (2.0 - 0.5) + 0.5 = 0.875; (2048, 512) * 0.875 = (1792, 448)
    assert T.random_scale((2048, 512), (0.5, 2.0), ScriptedRng(random=[0.25])) == (1792, 448)
    # int() truncates: 520 * 0.5 = 260 exactly, 520 * (0.999 * 1.5 + 0.5) = 1039.22 → 1039
    assert T.random_scale((520, 520), (0.5, 2.0), ScriptedRng(random=[0.0])) == (260, 260)
    assert T.random_scale((520, 520), (0.5, 2.0), ScriptedRng(random=[0.999])) == (1039, 1039)


def test_rescale_size_fits_long_and_short_edge_like_mmcv():
    # ADE: 375x500 into (2048, 512): factor = min(2048/500, 512/375) = 1.36533 → 512 x int(682.67+.5)
    assert T.rescale_size(375, 500, (2048, 512)) == (512, 683)
    # LIP portrait 300x200 into (4096, 320): factor = min(4096/300, 320/200) = 1.6
    assert T.rescale_size(300, 200, (4096, 320)) == (480, 320)
    # a very wide image is limited by the long edge: 100x1000 into (2048, 512): factor 2.048
    assert T.rescale_size(100, 1000, (2048, 512)) == (205, 2048)


def test_resize_label_is_opencv_nearest():
    label = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    up = T.resize_label(label, (4, 4))
    assert up.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    # 3 → 2 columns: src = floor(dst * 3 / 2) = 0, 1
    row = np.array([[7, 8, 9]], dtype=np.uint8)
    assert T.resize_label(row, (1, 2)).tolist() == [[7, 8]]
    assert T.resize_label(up, (2, 2)).tolist() == [[1, 2], [3, 4]]


def test_resize_image_is_half_pixel_bilinear():
    # 1x2 → 1x4: source x = (x + .5) / 2 - .5 = -.25, .25, .75, 1.25 → clamp → 0, 25, 75, 100
    image = np.zeros((1, 2, 3), dtype=np.uint8)
    image[0, :, 0] = [0, 100]
    out = T.resize_image(image, (1, 4))
    assert out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [0, 25, 75, 100]
    assert out[..., 1:].max() == 0


@pytest.mark.parametrize("size", [(150, 200), (61, 81), (189, 253), (40, 40)])
def test_resize_image_agrees_with_torch_bilinear_and_ignores_thread_count(size):
    image = np.random.default_rng(0).integers(0, 256, size=(96, 128, 3)).astype(np.uint8)
    t = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    ref = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)[0]
    out = T.resize_image(image, size)
    assert out.shape == (*size, 3)
    # rounding to uint8 moves a value by at most 0.5 (plus float32 noise of either side)
    assert np.abs(out.astype(np.float32) - ref.permute(1, 2, 0).numpy()).max() <= 0.51
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert (T.resize_image(image, size) == out).all()
    finally:
        torch.set_num_threads(threads)


def test_rescale_keeps_image_and_label_the_same_size():
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    label = np.zeros((30, 40), dtype=np.uint8)
    out_img, out_lab = T.rescale(image, label, (80, 45))
    assert out_img.shape == (45, 60, 3) and out_lab.shape == (45, 60)
    out_img, none = T.rescale(image, None, (80, 45))
    assert none is None and out_img.shape == (45, 60, 3)


# --- crop -----------------------------------------------------------------------------------------


def test_crop_is_balanced_hand_worked():
    assert not T.crop_is_balanced(np.array([[1, 1, 1, 1]]), 0.75)  # one class only
    assert not T.crop_is_balanced(np.array([[1, 1, 1, 2]]), 0.75)  # 3/4 is not < 0.75
    assert T.crop_is_balanced(np.array([[1, 1, 2, 2, 1]]), 0.75)  # 3/5
    # ignored pixels do not count: 2 of class 1, 1 of class 2 → 2/3 < 0.75
    assert T.crop_is_balanced(np.array([[255, 255, 255, 1, 1, 2]], dtype=np.uint8), 0.75)
    assert not T.crop_is_balanced(np.array([[255, 255, 1]], dtype=np.uint8), 0.75)


def _left_uniform_label() -> np.ndarray:
    """4x8 label: columns 0-3 all class 0, columns 4-7 alternate classes 1 and 2."""
    label = np.zeros((4, 8), dtype=np.uint8)
    label[:, 4:] = np.array([1, 2, 1, 2])[None, :]
    return label


def test_random_crop_rejects_a_crop_dominated_by_one_class():
    label = _left_uniform_label()
    image = np.repeat(label[..., None], 3, axis=2) * 10
    # first box at x0=0 (all class 0: rejected), second at x0=4 (classes 1, 2: kept)
    rng = ScriptedRng(integers=[0, 0, 0, 4])
    out_img, out_lab = T.random_crop(image, label, (4, 4), rng, cat_max_ratio=0.75)
    assert rng.exhausted()
    assert out_lab.tolist() == label[:, 4:].tolist()
    assert (out_img[..., 0] == out_lab * 10).all()


def test_random_crop_uses_the_last_box_after_ten_rejections():
    label = _left_uniform_label()
    # 11 boxes drawn (1 + 10 retries), all at x0=0; the 11th is used unchecked
    rng = ScriptedRng(integers=[0, 0] * 11)
    _, out = T.random_crop(label[..., None], label, (4, 4), rng, cat_max_ratio=0.75)
    assert rng.exhausted() and (out == 0).all()


def test_random_crop_without_cat_max_ratio_draws_once():
    label = _left_uniform_label()
    rng = ScriptedRng(integers=[0, 1])
    _, out = T.random_crop(label[..., None], label, (4, 4), rng, cat_max_ratio=1.0)
    assert rng.exhausted() and out.tolist() == label[:, 1:5].tolist()


def test_random_crop_of_a_small_image_keeps_all_of_it():
    label = np.arange(6, dtype=np.uint8).reshape(2, 3)
    img, out = T.random_crop(label[..., None], label, (5, 5), np.random.default_rng(0))
    assert out.tolist() == label.tolist() and img.shape == (2, 3, 1)


# --- flip -----------------------------------------------------------------------------------------


def test_hflip_flips_image_and_label_together():
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    label = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    img, lab = T.hflip(image, label)
    assert lab.tolist() == [[2, 1], [4, 3]]
    assert img[0, 0].tolist() == [3, 4, 5] and img[1, 1].tolist() == [6, 7, 8]
    assert img.flags.c_contiguous and lab.flags.c_contiguous


def test_random_flip_with_probability_half():
    label = np.array([[1, 2]], dtype=np.uint8)
    _, flipped = T.random_flip(label[..., None], label, ScriptedRng(random=[0.49]))
    _, kept = T.random_flip(label[..., None], label, ScriptedRng(random=[0.5]))
    assert flipped.tolist() == [[2, 1]] and kept.tolist() == [[1, 2]]


# --- photometric distortion -----------------------------------------------------------------------


def test_rgb_to_hsv_matches_matplotlib_in_opencv_units():
    rgb = np.random.default_rng(0).integers(0, 256, size=(40, 40, 3)).astype(np.uint8)
    ours = T.rgb_to_hsv(rgb).astype(np.float64)
    ref = mpl_rgb_to_hsv(rgb / 255.0) * [180.0, 255.0, 255.0]
    hue_diff = np.abs(ours[..., 0] - ref[..., 0])
    assert np.minimum(hue_diff, 180 - hue_diff).max() <= 1.0
    assert np.abs(ours[..., 1:] - ref[..., 1:]).max() <= 1.0


def test_hsv_to_rgb_matches_matplotlib():
    rng = np.random.default_rng(3)
    hsv = np.stack(
        [rng.integers(0, 180, (40, 40)), rng.integers(0, 256, (40, 40)), rng.integers(0, 256, (40, 40))], -1
    )
    ours = T.hsv_to_rgb(hsv.astype(np.uint8)).astype(np.float64)
    ref = mpl_hsv_to_rgb(hsv / [180.0, 255.0, 255.0]) * 255.0
    assert np.abs(ours - ref).max() <= 1.0


def test_hsv_round_trip_is_close():
    rgb = np.random.default_rng(1).integers(0, 256, size=(50, 50, 3)).astype(np.uint8)
    back = T.hsv_to_rgb(T.rgb_to_hsv(rgb)).astype(int)
    assert np.abs(back - rgb).max() <= 4  # 8-bit hue/saturation quantisation, as in OpenCV


def test_photometric_distortion_steps_in_mmseg_order():
    red = np.full((1, 1, 3), [200, 0, 0], dtype=np.uint8)
    # brightness on (+40 → (240, 40, 40): V 240, S round(200*255/240) = 212, H 0), mode 0,
    # saturation off, hue on (+60 units = +120° → (p, V, p) with p = 240*(1-212/255) = 40),
    # then contrast last: on, alpha 0.5 → (20, 120, 20)
    rng = ScriptedRng(integers=[1, 0, 0, 1, 60, 1], uniform=[40.0, 0.5])
    out = T.photometric_distortion(red, rng, brightness_delta=40, hue_delta=61)
    assert rng.exhausted()
    assert out[0, 0].tolist() == [20, 120, 20]


def test_photometric_distortion_mode_one_applies_contrast_first_and_truncates():
    pixel = np.full((1, 1, 3), [101, 101, 101], dtype=np.uint8)
    # brightness off, mode 1, contrast on (alpha 0.5: 50.5 → 50), saturation on (grey has S = 0 and
    # stays grey), hue off
    rng = ScriptedRng(integers=[0, 1, 1, 1, 0], uniform=[0.5, 0.5])
    out = T.photometric_distortion(pixel, rng)
    assert rng.exhausted() and out[0, 0].tolist() == [50, 50, 50]
    # brightness clips at 255
    rng = ScriptedRng(integers=[1, 1, 0, 0, 0], uniform=[32.0])
    assert T.photometric_distortion(np.full((1, 1, 3), 250, np.uint8), rng)[0, 0].tolist() == [255] * 3


def test_photometric_distortion_is_repeatable_for_a_seed():
    img = np.random.default_rng(2).integers(0, 256, size=(16, 16, 3)).astype(np.uint8)
    a = T.photometric_distortion(img, np.random.default_rng(5))
    b = T.photometric_distortion(img, np.random.default_rng(5))
    assert a.dtype == np.uint8 and a.shape == img.shape and (a == b).all()


# --- normalise and pad ----------------------------------------------------------------------------


def test_normalize_uses_mmseg_mean_and_std_on_0_255():
    img = np.zeros((1, 2, 3), dtype=np.uint8)
    img[0, 0] = [124, 116, 104]
    img[0, 1] = 255
    out = T.normalize(img)
    assert out.shape == (3, 1, 2) and out.dtype == torch.float32
    expected = (np.array([124, 116, 104]) - np.array(T.MMSEG_MEAN)) / np.array(T.MMSEG_STD)
    assert torch.allclose(out[:, 0, 0], torch.tensor(expected, dtype=torch.float32), atol=1e-6)
    assert out[0, 0, 1].item() == pytest.approx((255 - 123.675) / 58.395, abs=1e-6)


def test_pad_uses_zero_for_image_and_255_for_labels_at_bottom_right():
    image = torch.ones(3, 2, 3)
    label = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
    img, lab = T.pad_to(image, label, (4, 4))
    assert lab.tolist() == [[1, 2, 3, 255], [4, 5, 6, 255], [255] * 4, [255] * 4]
    assert img.shape == (3, 4, 4)
    assert (img[:, :2, :3] == 1).all() and img[:, 2:].abs().sum() == 0 and img[:, :, 3].abs().sum() == 0


def test_pad_leaves_a_full_crop_alone():
    image, label = torch.zeros(3, 4, 4), np.zeros((4, 4), np.uint8)
    img, lab = T.pad_to(image, label, (4, 4))
    assert img is image and lab is label
