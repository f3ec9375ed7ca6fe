"""Segmentation probe building blocks: the linear head, the lr schedule, sliding-window inference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from partbench.errors import PartbenchError
from partbench.probes.seg_head import BlockSegHeads, LinearSegHead, resize_concat, upsample_logits
from partbench.probes.seg_train import (
    ResumableBatchSampler,
    SegTrainConfig,
    poly_warmup_lr,
    scaled_warmup_iters,
    segmentation_loss,
)
from partbench.probes.slide import count_map, slide_inference, window_grid

# --- head ---------------------------------------------------------------------------------------


def test_head_is_one_1x1_conv_on_the_concatenated_maps() -> None:
    torch.manual_seed(1)
    dim, classes = 5, 3
    maps = [torch.randn(2, dim, 4, 6) for _ in range(4)]
    head = LinearSegHead(4 * dim, classes)
    assert [p.shape for p in head.parameters()] == [torch.Size([3, 20, 1, 1]), torch.Size([3])]
    out = head(maps)
    assert out.shape == (2, classes, 4, 6)
    # By hand: logit[b,k,y,x] = sum over layer l, channel d of W[k, l*D + d] * map_l[b,d,y,x] + bias[k]
    w = head.conv_seg.weight[:, :, 0, 0].detach()
    expected = (
        sum(torch.einsum("kd,bdyx->bkyx", w[:, i * dim : (i + 1) * dim], maps[i]) for i in range(4))
        + head.conv_seg.bias.detach()[None, :, None, None]
    )
    torch.testing.assert_close(out, expected)


def test_head_init_matches_mmseg_conv_seg() -> None:
    head = LinearSegHead(3072, 209)
    assert torch.count_nonzero(head.conv_seg.bias) == 0
    assert abs(head.conv_seg.weight.std().item() - 0.01) < 1e-3


def test_resize_concat_resizes_to_the_first_map() -> None:
    a, b = torch.randn(1, 2, 4, 4), torch.randn(1, 3, 2, 2)
    out = resize_concat([a, b])
    assert out.shape == (1, 5, 4, 4)
    torch.testing.assert_close(out[:, :2], a)
    torch.testing.assert_close(
        out[:, 2:], F.interpolate(b, size=(4, 4), mode="bilinear", align_corners=False)
    )


def test_upsample_is_bilinear_without_corner_alignment() -> None:
    # 1-D by hand: [0, 1] upsampled ×2 with align_corners=False is [0, 0.25, 0.75, 1].
    x = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).expand(1, 1, 2, 2)
    out = upsample_logits(x, (4, 4))
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))


def test_head_rejects_wrong_channel_count() -> None:
    head = LinearSegHead(8, 2)
    with pytest.raises(PartbenchError, match=r"expected \[B,8,h,w\]"):
        head(torch.randn(1, 6, 2, 2))
    with pytest.raises(PartbenchError):
        LinearSegHead(0, 2)


# --- loss ---------------------------------------------------------------------------------------


def test_loss_averages_over_all_pixels_including_ignored() -> None:
    # Two pixels: one labelled 0 with uniform logits over 2 classes (loss ln 2), one ignored (255).
    logits = torch.zeros(1, 2, 1, 2)
    labels = torch.tensor([[[0, 255]]])
    assert segmentation_loss(logits, labels).item() == pytest.approx(torch.log(torch.tensor(2.0)).item() / 2)


# --- schedule -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("iteration", "expected"),
    [
        (0, 4e-4 * 1e-6),  # warm-up starts at ratio · lr
        # i=750: regular = 4e-4·(1 − 750/160000) = 3.98125e-4; k = 0.5·(1 − 1e-6); lr = regular·(1 − k)
        (750, 3.98125e-4 * 0.5000005),
        (1500, 4e-4 * (1 - 1500 / 160000)),  # warm-up over: plain poly = 3.9625e-4
        (80_000, 2e-4),
        (159_999, 2.5e-9),
    ],
)
def test_poly_schedule_with_linear_warmup_matches_hand_values(iteration: int, expected: float) -> None:
    lr = poly_warmup_lr(iteration, 4e-4, 160_000, 1500, warmup_ratio=1e-6, power=1.0, min_lr=0.0)
    assert lr == pytest.approx(expected, rel=1e-9)


def test_poly_power_and_min_lr() -> None:
    # (base − min)·(1 − i/T)^p + min = (1 − 0.1)·0.5² + 0.1 = 0.325
    assert poly_warmup_lr(50, 1.0, 100, 0, power=2.0, min_lr=0.1) == pytest.approx(0.325)


def test_warmup_scales_down_with_short_runs() -> None:
    assert scaled_warmup_iters(160_000) == 1500
    assert scaled_warmup_iters(320_000) == 1500
    assert scaled_warmup_iters(16_000) == 150
    assert scaled_warmup_iters(40) == 1  # never zero
    assert SegTrainConfig(iters=1600).resolved_warmup_iters == 15
    assert SegTrainConfig(iters=1600, warmup_iters=0).resolved_warmup_iters == 0


def test_config_rejects_nonsense() -> None:
    with pytest.raises(PartbenchError):
        SegTrainConfig(iters=0)
    with pytest.raises(PartbenchError):
        SegTrainConfig(ckpt_every=-1)


# --- sampler ------------------------------------------------------------------------------------


def test_sampler_walks_epochs_and_resumes_mid_epoch() -> None:
    full = list(ResumableBatchSampler(5, 2, seed=3, total_iters=6))
    stream = [p for batch in full for p in batch]
    assert [d for _, d in stream] == list(range(12))
    for epoch in range(2):  # each epoch is a permutation of the 5 items
        assert sorted(i for i, _ in stream[epoch * 5 : epoch * 5 + 5]) == list(range(5))
    resumed = list(ResumableBatchSampler(5, 2, seed=3, total_iters=6, start_iter=4))
    assert resumed == full[4:]


def test_sampler_shards_the_global_batch_across_ranks() -> None:
    whole = ResumableBatchSampler(7, 4, seed=0, total_iters=3)
    parts = [ResumableBatchSampler(7, 4, seed=0, total_iters=3, rank=r, world_size=2) for r in range(2)]
    for it in range(3):
        merged = sorted(parts[0].batch(it) + parts[1].batch(it), key=lambda p: p[1])
        assert merged == whole.batch(it)
    with pytest.raises(PartbenchError, match="not divisible"):
        ResumableBatchSampler(7, 3, seed=0, total_iters=3, world_size=2)


# --- sliding window -----------------------------------------------------------------------------


def test_window_grid_matches_mmseg_on_an_ade_sized_image() -> None:
    # 512×683 with crop 512 / stride 341: one row, two columns, the second shifted back to end at 683.
    assert window_grid(512, 683, 512, 341) == [(0, 512, 0, 512), (0, 512, 171, 683)]


def test_slide_hand_made_overlapping_windows() -> None:
    # Width 11, crop 4, stride 3: x1 = 0, 3, 6, 9→7 (shifted back), windows [0,4) [3,7) [6,10) [7,11).
    windows = window_grid(4, 11, 4, 3)
    assert [(x1, x2) for _, _, x1, x2 in windows] == [(0, 4), (3, 7), (6, 10), (7, 11)]
    assert count_map(4, 11, windows)[0].tolist() == [1, 1, 1, 2, 1, 1, 2, 2, 2, 2, 1]
    values = iter([1.0, 2.0, 4.0, 8.0])  # window i returns the constant logit values[i]

    def constant_per_window(crops: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.full((1, 4, 4), next(values)) for _ in range(len(crops))])

    out = slide_inference(constant_per_window, torch.zeros(1, 3, 4, 11), 1, crop=4, stride=3, window_batch=1)
    # x0-2: 1; x3: (1+2)/2; x4-5: 2; x6: (2+4)/2; x7-9: (4+8)/2; x10: 8
    expected = [1, 1, 1, 1.5, 2, 2, 3, 6, 6, 6, 8]
    assert out.shape == (1, 1, 4, 11)
    assert out[0, 0, 2].tolist() == expected


def test_slide_equals_whole_image_forward_when_one_window_covers_it() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def model(x: torch.Tensor) -> torch.Tensor:
        return conv(x)

    image = torch.randn(2, 3, 16, 24)
    with torch.no_grad():
        out = slide_inference(model, image, 4, crop=(16, 24), stride=(8, 8), out_size=(32, 40))
        whole = F.interpolate(model(image), size=(32, 40), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, whole)


def test_slide_windows_batched_or_not_give_the_same_average() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 2, 3, padding=1)
    image = torch.randn(1, 3, 20, 37)
    with torch.no_grad():
        a = slide_inference(conv, image, 2, crop=16, stride=5, window_batch=1)
        b = slide_inference(conv, image, 2, crop=16, stride=5, window_batch=64)
    torch.testing.assert_close(a, b)


def test_slide_pads_images_smaller_than_the_crop() -> None:
    image = torch.randn(1, 3, 10, 40)  # height 10 < crop 16: padded to 16, padding cut off after

    def model(crops: torch.Tensor) -> torch.Tensor:
        assert crops.shape[-2:] == (16, 16)
        return crops  # "logits" = the pixels, so the average must give the image back

    out = slide_inference(model, image, 3, crop=16, stride=8)
    torch.testing.assert_close(out, image)


def test_slide_rejects_bad_inputs() -> None:
    with pytest.raises(PartbenchError, match="expected an image batch"):
        slide_inference(lambda x: x, torch.zeros(3, 8, 8), 3, 8, 4)
    with pytest.raises(PartbenchError, match="stride"):
        slide_inference(lambda x: x, torch.zeros(1, 3, 8, 8), 3, 8, 0)
    with pytest.raises(PartbenchError, match="logits_fn returned"):
        slide_inference(lambda x: x[:, :2], torch.zeros(1, 3, 8, 8), 3, 8, 4)


# --- geometry and names ---------------------------------------------------------------------------


def test_geometry_is_the_sets_or_scaled_with_the_crop() -> None:
    from partbench.datasets import SEG_DATASETS
    from partbench.probes.seg_data import SegGeometry

    lip = SEG_DATASETS["lip"]
    study = SegGeometry.for_spec(lip, None, 16)
    assert (study.crop, study.train_scale, study.test_scale) == ((320, 320), (1024, 320), (4096, 320))
    assert (study.slide_crop, study.slide_stride) == ((320, 320), (161, 161))
    # --crop 64 on LIP: ratio 0.2 → scales (204.8, 64) → (205, 64), (819.2, 64) → (819, 64), stride 32.2 → 32
    small = SegGeometry.for_spec(lip, 64, 16)
    assert (small.crop, small.train_scale, small.test_scale) == ((64, 64), (205, 64), (819, 64))
    assert (small.slide_crop, small.slide_stride) == ((64, 64), (32, 32))
    with pytest.raises(PartbenchError, match="multiple of the patch size 16"):
        SegGeometry.for_spec(lip, 72, 16)


def test_feature_name_counts_blocks_from_one() -> None:
    from partbench.probes.segment import feature_name

    assert feature_name((3, 5, 7, 11)) == "layers_4_6_8_12"


# --- optimiser ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias_decay", [True, False])
def test_adamw_decays_the_bias_only_where_the_study_config_does(bias_decay: bool) -> None:
    from partbench.probes.seg_train import make_optimizer

    head = LinearSegHead(4, 2)
    with torch.no_grad():
        head.conv_seg.bias.fill_(1.0)
    w0 = head.conv_seg.weight.detach().clone()
    opt = make_optimizer(head, SegTrainConfig(lr=0.1, weight_decay=0.5, bias_weight_decay=bias_decay))
    for p in head.parameters():
        p.grad = torch.zeros_like(p)  # zero gradient: AdamW's only move is the decoupled decay
    opt.step()
    # decoupled decay by hand: p ← p·(1 − lr·wd) = p·0.95
    torch.testing.assert_close(head.conv_seg.weight.detach(), w0 * 0.95)
    expected_bias = 0.95 if bias_decay else 1.0
    torch.testing.assert_close(head.conv_seg.bias.detach(), torch.full((2,), expected_bias))


# --- per-block heads (probe layers --task segment) ------------------------------------------------


def _block_heads() -> tuple[BlockSegHeads, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    heads = BlockSegHeads(3, blocks=(0, 1), num_classes=4)
    for p in heads.parameters():  # away from the near-zero init, so every term matters
        torch.nn.init.normal_(p)
    feats = torch.randn(2, 6, 3, 3)
    labels = torch.randint(0, 4, (2, 12, 12))
    labels[0, :2] = 255
    return heads, feats, labels


def test_block_heads_are_independent_1x1_convs_on_their_channels() -> None:
    heads, feats, _ = _block_heads()
    logits = heads(feats)
    assert logits.shape == (2, 8, 3, 3)
    for g, head in enumerate(heads.heads):
        w, b = head.conv_seg.weight[:, :, 0, 0], head.conv_seg.bias
        by_hand = torch.einsum("kc,bchw->bkhw", w, feats[:, 3 * g : 3 * g + 3]) + b[None, :, None, None]
        torch.testing.assert_close(heads.split(logits)[:, g], by_hand)
    with pytest.raises(PartbenchError, match=r"expected \[B,6,h,w\]"):
        heads(feats[:, :3])


def test_block_loss_is_the_sum_of_each_blocks_loss_and_gradient() -> None:
    heads, feats, labels = _block_heads()
    total = heads.loss(heads(feats), labels)
    total.backward()
    joint = [p.grad.clone() for p in heads.parameters()]
    solo_total = 0.0
    for g, head in enumerate(heads.heads):
        head.zero_grad()
        loss = segmentation_loss(head(feats[:, 3 * g : 3 * g + 3]), labels)
        loss.backward()
        solo_total += loss.item()
    solo = [p.grad for p in heads.parameters()]
    assert total.item() == pytest.approx(solo_total, rel=1e-6)
    for a, b in zip(joint, solo, strict=True):
        torch.testing.assert_close(a, b)


def test_block_subset_shares_the_heads() -> None:
    heads, feats, _ = _block_heads()
    sub = heads.subset((1,))
    assert sub.heads[0] is heads.heads[1] and sub.blocks == (1,)
    torch.testing.assert_close(sub(feats[:, 3:]), heads.split(heads(feats))[:, 1])
