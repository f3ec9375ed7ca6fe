"""`partbench probe segment`: the study's linear segmentation probe on a frozen backbone.

Protocol (paper.md 2.3, the study's `*_lp_freeze12.py` configs): blocks 4/6/8/12 of the frozen
encoder, concatenated, one 1×1 conv (`seg_head.LinearSegHead`), AdamW 4e-4 / wd 0.05, poly schedule
with 1500 warm-up iterations, 160k iterations at batch 16, mmseg augmentations, single-scale
sliding-window evaluation (`slide.slide_inference`), mIoU/mAcc/aAcc from a confusion matrix.

Two modes:
- `full` (default): the backbone runs inside the training loop on augmented crops (the study's way).
- `fast`: the backbone runs once per training image, resized to the crop size without
  augmentation; the concatenated maps are cached (fp16, memory-mapped under the run folder) and
  the head trains on them. Minutes instead of hours, *not* the study's protocol: the variant is
  `linear-fast` and the result config says `mode: "fast"`. Evaluation is the same in both modes.

Under torchrun (WORLD_SIZE > 1) the head is wrapped in DistributedDataParallel (NCCL on CUDA, gloo
on CPU), each rank takes a slice of every global batch and of the validation images, confusion
matrices are summed across ranks, and rank 0 writes checkpoints and the result. Every rank reads
the run folder on resume (and the fast-mode cache), so on several hosts it must be shared.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from partbench.config import Protocol, as_protocol, data_dir
from partbench.datasets import SegmentationDataset
from partbench.datasets.segmentation import get_seg_spec
from partbench.devices import resolve_device
from partbench.distributed import barrier, device_for, init_from_env, shutdown
from partbench.errors import PartbenchError
from partbench.probes.results import measure_run, provenance, result_path, safe_name, write_result
from partbench.probes.seg_data import (
    SegGeometry,
    StreamDataset,
    build_fast_cache,
    cached_batches,
    data_fingerprint,
)
from partbench.probes.seg_head import FrozenBackbone, LinearSegHead
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
    unwrap,
)
from partbench.probes.slide import evaluate_slide
from partbench.progress import ProgressBar

MODES = ("full", "fast")
VARIANTS = {"full": "linear", "fast": "linear-fast"}


def feature_name(layers: tuple[int, ...]) -> str:
    """`layers_4_6_8_12` for 0-based blocks (3, 5, 7, 11): the result's `feature` field."""
    return "layers_" + "_".join(str(b + 1) for b in layers)


#: What identifies a fast-mode feature cache (a subset of the run fingerprint).
FAST_CACHE_KEYS = (
    "model",
    "dataset",
    "checkpoint_sha256",
    "arch",
    "protocol",
    "layers",
    "crop",
    "train_items",
    "train_data",
)


def seg_sets(
    dataset: str, root: Path, geo: SegGeometry, enc: Any, seed: int
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """(augmented train split, val split at the test scale), normalised with the encoder's mean/std."""
    # mmseg normalises on the 0-255 scale; the encoder's mean/std (ImageNet under `study`).
    norm = {"mean": [255 * m for m in enc.mean], "std": [255 * s for s in enc.std]}
    train_set = SegmentationDataset(
        dataset, root, "train", train=True, crop_size=geo.crop, scale=geo.train_scale, seed=seed, **norm
    )
    val_set = SegmentationDataset(dataset, root, "val", train=False, scale=geo.test_scale, **norm)
    return train_set, val_set


def run_fingerprint(
    model: str,
    dataset: str,
    enc: Any,
    arch_kw: dict[str, Any],
    protocol: Protocol,
    mode: str,
    layers: tuple[int, ...],
    geo: SegGeometry,
    train_set: SegmentationDataset,
    cfg: SegTrainConfig,
) -> dict[str, Any]:
    """What a run checkpoint must match to be resumed: model, data, blocks, geometry, optimisation."""
    return {
        "model": model,
        "dataset": dataset,
        "checkpoint_sha256": enc.checkpoint_sha256,
        "arch": ",".join(f"{k}={arch_kw[k]}" for k in sorted(arch_kw)),
        "protocol": str(protocol),
        "mode": mode,
        "layers": list(layers),
        "crop": list(geo.crop),
        "train_scale": list(geo.train_scale),
        "train_items": len(train_set),
        "train_data": data_fingerprint(train_set),
        **{k: v for k, v in cfg.as_dict().items() if k not in ("ckpt_every", "eval_every")},
    }


def run_segment(
    model: str,
    dataset: str,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    arch: str | dict[str, Any] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    iters: int = 160_000,
    batch_size: int = 16,
    crop: int | None = None,
    mode: str = "full",
    eval_every: int = 16_000,
    ckpt_every: int = 2000,
    runs_dir: str | os.PathLike[str] = "runs",
    results_dir: str | os.PathLike[str] = "results",
    protocol: str | Protocol = "study",
    device: str = "auto",
    num_workers: int = 4,
    resume: bool = True,
    seed: int = 0,
    lr: float = 4e-4,
    warmup_iters: int | None = None,
    bootstrap: int = 0,
    suite: str = "custom",
    progress: bool = True,
    on_iteration: Callable[[int], None] | None = None,
) -> Path | None:
    """Train and evaluate the linear probe of `model` on `dataset`; returns the result JSON path.

    Under torchrun only rank 0 writes the result and gets its path; other ranks get None.
    """
    from partbench.encoders import load_encoder
    from partbench.encoders.registry import parse_arch

    if mode not in MODES:
        raise PartbenchError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    protocol = as_protocol(protocol)
    spec = get_seg_spec(dataset)
    cfg = SegTrainConfig(
        iters=iters,
        batch_size=batch_size,
        lr=lr,
        warmup_iters=warmup_iters,
        seed=seed,
        ckpt_every=ckpt_every,
        eval_every=eval_every,
        ignore_index=spec.ignore_index,
    )
    root = Path(data_root) if data_root is not None else data_dir() / dataset
    dev_name = resolve_device(device)
    ctx = init_from_env(dev_name.type)
    dev = torch.device(device_for(ctx, str(dev_name)))
    arch_kw = parse_arch(arch)
    variant = VARIANTS[mode]
    run_dir = Path(runs_dir) / "segment" / dataset / f"{safe_name(model)}__{variant}"
    out_path = result_path(Path(results_dir), "segment", dataset, model, variant)

    with measure_run() as stats:
        enc = load_encoder(model, checkpoint=checkpoint, protocol=str(protocol), **arch_kw).to(dev).eval()
        layers = tuple(enc.default_seg_layers)
        cfg = replace(cfg, bias_weight_decay=enc.spec.family not in NO_BIAS_DECAY_FAMILIES)
        geo = SegGeometry.for_spec(spec, crop, enc.patch_size)
        backbone = FrozenBackbone(enc, layers, dev)
        train_set, val_set = seg_sets(dataset, root, geo, enc, seed)
        fingerprint = run_fingerprint(
            model, dataset, enc, arch_kw, protocol, mode, layers, geo, train_set, cfg
        )
        data_key = fingerprint["train_data"]

        torch.manual_seed(seed)
        head: nn.Module = LinearSegHead(len(layers) * enc.embed_dim, spec.num_classes).to(dev)
        optimizer = make_optimizer(head, cfg)
        state = TrainState()
        ckpt = run_dir / CHECKPOINT_NAME
        if resume and ckpt.is_file():
            state = restore(load_checkpoint(ckpt, fingerprint), head, optimizer)
        start_iter = state.iteration
        if ctx.enabled:
            head = nn.parallel.DistributedDataParallel(
                head, device_ids=[dev.index] if dev.type == "cuda" else None
            )

        sampler = ResumableBatchSampler(
            len(train_set), cfg.batch_size, seed, cfg.iters, start_iter, ctx.rank, ctx.world_size
        )
        if mode == "fast":
            key = {k: fingerprint[k] for k in FAST_CACHE_KEYS}
            feats, labels = build_fast_cache(
                backbone, train_set, geo.crop, run_dir / "fast_cache", key, ctx, num_workers
            )
            batches: Any = cached_batches(feats, labels, sampler)
            features_fn: Callable[[Tensor], Tensor] = lambda x: x.to(dev, non_blocking=True).float()  # noqa: E731
        else:
            batches = DataLoader(
                StreamDataset(train_set),
                batch_sampler=sampler,
                num_workers=num_workers,
                pin_memory=dev.type == "cuda",
            )
            features_fn = backbone

        def evaluate(h: nn.Module, iteration: int) -> dict[str, Any]:
            final = iteration == cfg.iters
            return evaluate_slide(
                backbone,
                unwrap(h),
                val_set,
                geo.slide_crop,
                geo.slide_stride,
                ctx,
                num_workers,
                bootstrap=bootstrap if final else 0,
                seed=seed,
            )

        label = f"segment {model} {dataset}"
        with ProgressBar(label, cfg.iters, enabled=progress and ctx.is_main, completed=start_iter) as bar:
            state = train_head(
                head,
                optimizer,
                batches,
                features_fn,
                cfg,
                state,
                run_dir,
                fingerprint,
                evaluate=evaluate,
                device=dev,
                on_iteration=on_iteration,
                progress=bar.update,
            )

    if ctx.is_main:
        config = result_config(
            model=model,
            dataset=dataset,
            mode=mode,
            protocol=protocol,
            suite=suite,
            geo=geo,
            layers=layers,
            cfg=cfg,
            arch=arch_kw,
            world_size=ctx.world_size,
            device_type=dev.type,
        )
        _write(
            out_path,
            state,
            config,
            stats,
            checkpoint_sha256=enc.checkpoint_sha256,
            resumed_from_iteration=start_iter,
            run_dir=str(run_dir),
            data_fingerprint=data_key,
        )
    barrier(ctx)
    shutdown(ctx)
    return out_path if ctx.is_main else None


def result_config(
    *,
    model: str,
    dataset: str,
    mode: str,
    protocol: Protocol,
    suite: str,
    geo: SegGeometry,
    layers: tuple[int, ...],
    cfg: SegTrainConfig,
    arch: dict[str, Any],
    world_size: int,
    device_type: str,
) -> dict[str, Any]:
    """The result's `config`: what was trained, on what, how (everything needed to rerun it)."""
    augmentation = (
        "none (resized to the crop, cached features)"
        if mode == "fast"
        else "rescale 0.5-2.0, random crop (cat_max_ratio 0.75), flip 0.5, photometric distortion"
    )
    return {
        "task": "segment",
        "dataset": dataset,
        "model": model,
        "variant": VARIANTS[mode],
        "feature": feature_name(layers),
        "probe": "linear",
        "protocol": str(protocol),
        "suite": suite,
        "mode": mode,
        "layers": [b + 1 for b in layers],
        "arch": arch,
        "crop": list(geo.crop),
        "train_scale": list(geo.train_scale),
        "test_scale": list(geo.test_scale),
        "slide_crop": list(geo.slide_crop),
        "slide_stride": list(geo.slide_stride),
        "augmentation": augmentation,
        "loss": "cross_entropy, ignore 255, mean over all pixels",
        "aux_head": False,
        "inference": "slide, single scale, no flip",
        "world_size": world_size,
        # the study trained in fp16 (apex); here bf16 autocast on CUDA, fp32 on CPU
        "precision": "bf16-autocast" if device_type == "cuda" else "fp32",
        **cfg.as_dict(),
    }


def _write(out_path: Path, state: TrainState, config: dict[str, Any], stats: Any, **prov_extra: Any) -> None:
    """Result JSON: metrics of the last evaluation (and of the best by mIoU), config, provenance."""
    if not state.history:
        raise PartbenchError(f"{prov_extra.get('run_dir')}: the run finished without an evaluation")
    last = state.history[-1]
    best = max(state.history, key=lambda h: -1.0 if h["mIoU"] is None else h["mIoU"])
    metrics: dict[str, Any] = {k: last[k] for k in ("mIoU", "mAcc", "aAcc", "per_class_iou")}
    metrics.update({f"{k}_best": best[k] for k in ("mIoU", "mAcc", "aAcc")})
    if "ci95" in last:
        metrics["ci95"] = last["ci95"]
    prov = provenance(
        stats,
        best_iteration=best["iteration"],
        eval_history=[{k: h[k] for k in ("iteration", "mIoU", "mAcc", "aAcc")} for h in state.history],
        train_loss=state.losses,
        **prov_extra,
    )
    write_result(out_path, metrics, config, prov)
