"""`partbench probe layers --task segment`: the linear segmentation probe on every block, fast mode.

One backbone pass per training image (resized to the crop, no augmentation, as `run_segment`'s
fast mode) caches the maps of *all* blocks (`FrozenBackbone` over blocks 0..L-1, fp16, memory-mapped:
L·D channels per image, L/4 times the study's cache). Then one 1×1-conv head per block
(`seg_head.BlockSegHeads`) trains on its block's channels with `run_segment`'s loop, schedule and
loss (`seg_train.train_head`, AdamW, poly + warm-up, cross-entropy over all pixels). The heads
share nothing, so training them together on the summed loss is the same as training each alone;
`blocks_per_pass` trains them in groups instead (bounded memory: the upsampled logits of G heads),
each group reading only its channels of the cache. Evaluation is `run_segment`'s sliding window,
with every head on one backbone pass per window, and one confusion matrix per block.

The level is the data set's (`SegDatasetSpec.level`): part sets (ade20k-part, pascal-part, lip) give
`part_mIoU`/`part_mAcc`/`part_aAcc`, object sets (ade20k-object, pascal-object, ade20k-150)
`object_*`; bootstrap 95% intervals over val images in `ci95`. One result JSON per block:
`results/layers/<dataset>/<model>__segment-blockNN.json`. Single process only (no torchrun).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from partbench.config import as_protocol, data_dir
from partbench.datasets import SegmentationDataset
from partbench.datasets.segmentation import get_seg_spec
from partbench.devices import resolve_device
from partbench.distributed import DistContext, env_world_size
from partbench.errors import PartbenchError
from partbench.metrics import ConfusionMatrix
from partbench.probes.results import measure_run, provenance, result_path, safe_name, write_result
from partbench.probes.seg_data import SegGeometry, build_fast_cache, cached_batches
from partbench.probes.seg_head import BlockSegHeads, FrozenBackbone, encode_decode
from partbench.probes.seg_train import (
    CHECKPOINT_NAME,
    NO_BIAS_DECAY_FAMILIES,
    ResumableBatchSampler,
    SegTrainConfig,
    TrainState,
    load_checkpoint,
    make_optimizer,
    restore,
    train_head,
)
from partbench.probes.segment import (
    FAST_CACHE_KEYS,
    VARIANTS,
    result_config,
    run_fingerprint,
    seg_sets,
)
from partbench.probes.slide import percent_metrics, slide_inference
from partbench.progress import ProgressBar

LAYER_FEATURE = "map"  # the block's patch-token map, as the study's segmentation probe reads it
SLIDE_WINDOWS = 8  # windows per backbone pass in `run_segment`'s evaluation (for one head)


def block_groups(num_blocks: int, blocks_per_pass: int | None) -> list[tuple[int, ...]]:
    """0-based blocks split into consecutive groups of `blocks_per_pass` (None: one group of all)."""
    size = num_blocks if blocks_per_pass is None else blocks_per_pass
    if size < 1:
        raise PartbenchError(f"--blocks-per-pass must be >= 1, got {blocks_per_pass}")
    return [tuple(range(s, min(s + size, num_blocks))) for s in range(0, num_blocks, size)]


def evaluate_blocks(
    backbone: FrozenBackbone,
    head: BlockSegHeads,
    val_set: SegmentationDataset,
    geo: SegGeometry,
    *,
    bootstrap: int = 0,
    seed: int = 0,
    num_workers: int = 0,
) -> list[dict[str, Any]]:
    """`evaluate_slide` for all heads at once: one backbone pass per window batch serves every block.

    Returns per block (in `head.blocks` order) mIoU/mAcc/aAcc/per_class_iou in percent, with
    `ci95` (bootstrap over val images, `ConfusionMatrix.bootstrap`) when `bootstrap > 0`.
    """
    spec = val_set.spec
    groups, k = len(head.blocks), spec.num_classes
    dev = backbone.device
    cms = [ConfusionMatrix(k, spec.ignore_index, device=dev, per_image=bootstrap > 0) for _ in range(groups)]
    run = encode_decode(backbone, head)
    loader = DataLoader(val_set, batch_size=None, num_workers=num_workers)
    with torch.inference_mode():
        for image, label in loader:
            label = label.to(dev)
            logits = slide_inference(
                run,
                image[None].to(dev),
                groups * k,
                geo.slide_crop,
                geo.slide_stride,
                out_size=tuple(label.shape),
                window_batch=max(1, SLIDE_WINDOWS // groups),  # about one head's memory per pass
            )
            pred = head.split(logits)[0].argmax(1)  # [G, H, W]
            for g, cm in enumerate(cms):
                cm.update(pred[g], label)
    out = []
    for cm in cms:
        metrics = percent_metrics(cm.result())
        if bootstrap > 0:
            ci = cm.bootstrap(n=bootstrap, seed=seed)
            metrics["ci95"] = {key: [round(100 * lo, 4), round(100 * hi, 4)] for key, (lo, hi) in ci.items()}
        out.append(metrics)
    return out


def run_segment_layers(
    model: str,
    dataset: str,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    arch: str | dict[str, Any] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    iters: int = 160_000,
    batch_size: int = 16,
    crop: int | None = None,
    blocks_per_pass: int | None = None,
    ckpt_every: int = 2000,
    runs_dir: str | os.PathLike[str] = "runs",
    results_dir: str | os.PathLike[str] = "results",
    protocol: str = "study",
    device: str = "auto",
    num_workers: int = 4,
    resume: bool = True,
    seed: int = 0,
    lr: float = 4e-4,
    warmup_iters: int | None = None,
    bootstrap: int = 200,
    suite: str = "custom",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Fast-mode linear segmentation probe of `model` on every block; one result JSON per block."""
    from partbench.encoders import load_encoder
    from partbench.encoders.registry import parse_arch

    if env_world_size() > 1:
        raise PartbenchError("probe layers --task segment runs in one process; start it without torchrun")
    proto = as_protocol(protocol)
    spec = get_seg_spec(dataset)
    cfg = SegTrainConfig(
        iters=iters,
        batch_size=batch_size,
        lr=lr,
        warmup_iters=warmup_iters,
        seed=seed,
        ckpt_every=ckpt_every,
        eval_every=0,
        ignore_index=spec.ignore_index,
    )
    root = Path(data_root) if data_root is not None else data_dir() / dataset
    dev = resolve_device(device)
    arch_kw = parse_arch(arch)
    run_dir = Path(runs_dir) / "layers" / "segment" / dataset / f"{safe_name(model)}__{VARIANTS['fast']}"
    ctx = DistContext()

    with measure_run() as stats:
        enc = load_encoder(model, checkpoint=checkpoint, protocol=str(proto), **arch_kw).to(dev).eval()
        all_blocks = tuple(range(enc.num_blocks))
        groups = block_groups(enc.num_blocks, blocks_per_pass)
        cfg = replace(cfg, bias_weight_decay=enc.spec.family not in NO_BIAS_DECAY_FAMILIES)
        geo = SegGeometry.for_spec(spec, crop, enc.patch_size)
        train_set, val_set = seg_sets(dataset, root, geo, enc, seed)
        args = (model, dataset, enc, arch_kw, proto, "fast")
        cache_fp = run_fingerprint(*args, all_blocks, geo, train_set, cfg)
        backbone = FrozenBackbone(enc, all_blocks, dev)
        feats, labels = build_fast_cache(
            backbone,
            train_set,
            geo.crop,
            run_dir / "fast_cache",
            {k: cache_fp[k] for k in FAST_CACHE_KEYS},
            ctx,
            num_workers,
        )
        d = enc.embed_dim
        torch.manual_seed(seed)  # every block's head drawn once, whatever the grouping
        full = BlockSegHeads(d, all_blocks, spec.num_classes).to(dev)
        losses: dict[int, list[float]] = {}
        for group in groups:
            fingerprint = {**run_fingerprint(*args, group, geo, train_set, cfg), "heads": "one per block"}
            head = full.subset(group)
            optimizer = make_optimizer(head, cfg)
            group_dir = run_dir / f"blocks{group[0] + 1:02d}-{group[-1] + 1:02d}"
            state = TrainState()
            if resume and (group_dir / CHECKPOINT_NAME).is_file():
                state = restore(load_checkpoint(group_dir / CHECKPOINT_NAME, fingerprint), head, optimizer)
            sampler = ResumableBatchSampler(len(train_set), cfg.batch_size, seed, cfg.iters, state.iteration)
            view = feats[:, group[0] * d : (group[-1] + 1) * d]  # only this group's channels are read
            label = f"segment {model} {dataset} blocks {group[0] + 1}-{group[-1] + 1}"
            with ProgressBar(label, cfg.iters, enabled=progress, completed=state.iteration) as bar:
                state = train_head(
                    head,
                    optimizer,
                    cached_batches(view, labels, sampler),
                    lambda x: x.to(dev, non_blocking=True).float(),
                    cfg,
                    state,
                    group_dir,
                    fingerprint,
                    device=dev,
                    progress=bar.update,
                    loss_fn=partial(BlockSegHeads.loss, head),
                )
            losses.update(dict.fromkeys(group, state.losses))
        full.eval()
        per_block = evaluate_blocks(
            backbone, full, val_set, geo, bootstrap=bootstrap, seed=seed, num_workers=num_workers
        )

    level = spec.level
    paths = []
    for block, metrics in zip(all_blocks, per_block, strict=True):
        point = f"block{block + 1:02d}"
        base = result_config(
            model=model,
            dataset=dataset,
            mode="fast",
            protocol=proto,
            suite=suite,
            geo=geo,
            layers=(block,),
            cfg=cfg,
            arch=arch_kw,
            world_size=1,
            device_type=dev.type,
        )
        config = {
            **base,
            "task": "layers",
            "probe_task": "segment",
            "layer_feature": LAYER_FEATURE,
            "feature": f"{LAYER_FEATURE}@{point}",
            "num_blocks": len(all_blocks),
            "levels": [level],
            "level": level,
            "object_level": "object classes of the pixels" if level == "object" else None,
            "point": point,
            "block": block + 1,
            "stage": "block",
            "dim": d,
            "blocks_per_pass": len(next(g for g in groups if block in g)),
            "bootstrap": bootstrap,
        }
        out: dict[str, Any] = {f"{level}_{k}": metrics[k] for k in ("mIoU", "mAcc", "aAcc", "per_class_iou")}
        if "ci95" in metrics:
            out["ci95"] = {f"{level}_{k}": v for k, v in metrics["ci95"].items()}
        prov = provenance(
            stats,
            checkpoint_sha256=enc.checkpoint_sha256,
            run_dir=str(run_dir),
            fast_cache=str(run_dir / "fast_cache"),
            data_fingerprint=cache_fp["train_data"],
            train_loss_of_group=losses[block],
            note="run statistics cover the whole run (all blocks: one cache, one evaluation pass)",
        )
        path = result_path(Path(results_dir), "layers", dataset, model, f"segment-{point}")
        paths.append(write_result(path, out, config, prov))
        if log:
            log(f"{model} {point}: {level} mIoU {_fmt(metrics['mIoU'])}")
    return paths


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"
