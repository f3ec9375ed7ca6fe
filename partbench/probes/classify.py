"""Part (or object) classification on cached features: linear or attentive head, the study's recipe.

Train on the cache of split `train`, evaluate on split `val` after every epoch (the study's
`patch_lincls.py`): SGD momentum 0.9, weight decay 0, cross-entropy, batch 1024, lr = base × bs/256
(base 0.1 linear, 0.01 attentive), cosine decay per epoch without warmup, 90 epochs. The result
reports the last epoch's accuracy as `top1` and the best epoch's as `top1_best` (the study tracked
the best; the paper does not say which it printed).

Memory: the linear head reads `cls_token` [N, D] f32, moved to the device once. The attentive head
reads `tokens` [N, T, D] fp16 (extract with `--tokens`): when the train and val token arrays fit in
`resident_bytes` (default: half the free device memory on CUDA, a quarter of the physical RAM on
CPU) they are copied to the device once, in fp16, in chunks; otherwise each batch is gathered from
the memory map (ImageNet-scale token caches, ~300 kB per ViT-B item, are read this way).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from partbench.config import Protocol, as_protocol
from partbench.devices import resolve_device
from partbench.errors import CacheError
from partbench.feature_cache import FeatureSet, cache_dir_for, load_features
from partbench.metrics import bootstrap_ci, top1_accuracy
from partbench.probes.heads import AttentiveHead, LinearHead, default_num_heads
from partbench.probes.results import measure_run, provenance, result_path, write_result
from partbench.probes.retrieval import cache_protocol, manifest_value

HEADS = ("linear", "attentive")
BASE_LR = {"linear": 0.1, "attentive": 0.01}
STUDY_EVAL_BATCH = 256  # the study's val loader; matters only when batch norm uses batch statistics


class TokenSource:
    """Rows of a [N, T, D] token array as float32 batches on `device`: resident or streamed."""

    def __init__(self, tokens: np.ndarray, device: torch.device, resident: bool, chunk_rows: int = 1024):
        self.tokens, self.device, self.resident = tokens, device, resident
        self.data: torch.Tensor | None = None
        if resident:
            self.data = torch.empty(tokens.shape, dtype=torch.float16, device=device)
            for s in range(0, tokens.shape[0], chunk_rows):
                block = np.array(tokens[s : s + chunk_rows], dtype=np.float16)  # a writable copy
                self.data[s : s + len(block)] = torch.from_numpy(block).to(device)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        if self.data is not None:
            return self.data[idx.to(self.device)].float()
        rows = np.sort(idx.cpu().numpy())  # sorted reads from the memory map, then restore the order
        block = torch.from_numpy(np.ascontiguousarray(self.tokens[rows], dtype=np.float16))
        order = torch.from_numpy(np.searchsorted(rows, idx.cpu().numpy()))
        return block[order].to(self.device).float()


class TensorSource:
    """Rows of a [N, D] tensor, moved to the device once."""

    def __init__(self, values: torch.Tensor, device: torch.device) -> None:
        self.data = values.to(device=device, dtype=torch.float32)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        return self.data[idx.to(self.data.device)]


def _resident_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError):
        return 4 << 30


def _source(fs: FeatureSet, head: str, device: torch.device, resident: bool) -> TensorSource | TokenSource:
    if head == "linear":
        return TensorSource(fs.cls_token, device)
    if fs.tokens is None:
        raise CacheError(
            f"{fs.cache_dir}: no tokens.npy in the cache; the attentive head needs "
            "`partbench extract --tokens`"
        )
    return TokenSource(fs.tokens, device, resident)


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    yield from order.split(batch_size)


@torch.no_grad()
def evaluate(head: nn.Module, source: Any, labels: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Predicted class of `head` for every row of `source`, in order, in batches of `batch_size`."""
    head.eval()
    batches = list(_batches(len(source), batch_size, None))
    if len(batches) > 1 and len(batches[-1]) == 1:  # batch statistics need two items: join the last two
        batches[-2:] = [torch.cat(batches[-2:])]
    return torch.cat([head(source.batch(idx)).argmax(1) for idx in batches])


@dataclass
class ProbeFit:
    """A trained probe: val top-1 after each evaluated epoch and the last epoch's val predictions."""

    curve: list[float]
    pred: torch.Tensor


def fit_probe(
    net: nn.Module,
    train_src: Any,
    y_train: torch.Tensor,
    val_src: Any,
    y_val: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    eval_batch_size: int,
    min_batch: int = 1,
    eval_each_epoch: bool = True,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> ProbeFit:
    """The study's probe recipe (`patch_lincls.py`) on cached features, for any head.

    SGD momentum 0.9, weight decay 0, cross-entropy, lr `lr` with cosine decay per epoch and no
    warm-up; batch order from `torch.randperm` seeded with `seed`. Training batches smaller than
    `min_batch` are skipped (2 for batch norm). Val top-1 after every epoch (or only the last with
    `eval_each_epoch=False`); `on_epoch(epoch, last_loss, val_top1)` after each evaluation.
    """
    dev = y_train.device
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    curve: list[float] = []
    pred = torch.empty(0, dtype=torch.long)
    loss = torch.zeros(())
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
        net.train()
        for idx in _batches(len(train_src), batch_size, gen):
            if len(idx) < min_batch:
                continue  # batch norm cannot train on one item (the study would have crashed)
            loss = loss_fn(net(train_src.batch(idx)), y_train[idx.to(dev)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if eval_each_epoch or epoch == epochs - 1:
            pred = evaluate(net, val_src, y_val, eval_batch_size)
            curve.append(top1_accuracy(pred, y_val))
            if on_epoch:
                on_epoch(epoch + 1, float(loss.detach()), curve[-1])
    return ProbeFit(curve, pred)


def train_linear_probe(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
) -> np.ndarray:
    """A `LinearHead` on features [N, D] trained with `fit_probe`; per-val-item correctness [M] (0/1)."""
    if epochs < 1 or batch_size < 1:
        raise CacheError(f"epochs and batch size must be >= 1, got {epochs} and {batch_size}")
    num_classes = int(max(y_train.max(), y_val.max())) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = LinearHead(int(x_train.shape[1]), num_classes).to(device)
    fit = fit_probe(
        net,
        TensorSource(x_train, device),
        y_train.to(device),
        TensorSource(x_val, device),
        y_val.to(device),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        eval_batch_size=max(1, len(x_val)),
        eval_each_epoch=False,
    )
    return (fit.pred.cpu() == y_val.cpu()).numpy().astype(np.float64)


def run_classify(
    model: str,
    dataset: str,
    *,
    head: str = "linear",
    features_dir: str | os.PathLike[str] = Path("features"),
    results_dir: str | os.PathLike[str] = Path("results"),
    epochs: int = 90,
    batch_size: int = 1024,
    lr: float | None = None,
    seed: int = 0,
    device: str = "auto",
    protocol: str | None = None,
    num_heads: int | None = None,
    resident_bytes: int | None = None,
    bootstrap: int = 0,
    suite: str = "custom",
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> Path:
    """Train a `linear` or `attentive` head on the `train` cache, evaluate on `val`; write one result.

    `lr=None`: base lr × batch_size / 256; a given `lr` is used as is. `protocol=None` takes the
    cache's. `bootstrap=N` adds a 95% interval of the last epoch's top-1 from N resamples of the val
    items. `on_epoch(epoch, last_loss, val_top1)` is called after each epoch (progress bars).
    """
    if head not in HEADS:
        raise CacheError(f"--head must be one of {', '.join(HEADS)}, got {head!r}")
    if epochs < 1 or batch_size < 1:
        raise CacheError(f"epochs and batch size must be >= 1, got {epochs} and {batch_size}")
    train_fs = load_features(cache_dir_for(features_dir, model, dataset, "train"))
    val_fs = load_features(cache_dir_for(features_dir, model, dataset, "val"))
    proto = as_protocol(protocol or cache_protocol(train_fs))
    dev = resolve_device(device)
    num_classes = int(max(train_fs.labels.max(), val_fs.labels.max())) + 1
    missing = sorted(set(range(num_classes)) - set(train_fs.labels.unique().tolist()))
    if missing:
        raise CacheError(f"{train_fs.cache_dir}: no training item of class {missing[0]}")
    if head == "attentive" and proto is Protocol.STUDY and len(val_fs) < 2:
        raise CacheError(f"{val_fs.cache_dir}: one val item; batch-statistic evaluation (study) needs two")
    base_lr = BASE_LR[head] if lr is None else lr
    scaled_lr = base_lr * batch_size / 256 if lr is None else lr

    with measure_run() as stats:
        resident = True
        if head == "attentive":
            need = sum(fs.tokens.size * 2 for fs in (train_fs, val_fs) if fs.tokens is not None)
            resident = need <= (resident_bytes if resident_bytes is not None else _resident_budget(dev))
        train_src = _source(train_fs, head, dev, resident)
        val_src = _source(val_fs, head, dev, resident)
        dim = int(train_fs.cls_token.shape[1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net: nn.Module
            if head == "linear":
                net = LinearHead(dim, num_classes)
            else:
                heads = num_heads or default_num_heads(dim)
                net = AttentiveHead(dim, num_classes, heads, bn_batch_stats_at_eval=proto is Protocol.STUDY)
        net = net.to(dev)
        y_train, y_val = train_fs.labels.to(dev), val_fs.labels.to(dev)
        eval_bs = STUDY_EVAL_BATCH if head == "attentive" and proto is Protocol.STUDY else 4096
        fit = fit_probe(
            net,
            train_src,
            y_train,
            val_src,
            y_val,
            epochs=epochs,
            batch_size=batch_size,
            lr=scaled_lr,
            seed=seed,
            eval_batch_size=eval_bs,
            min_batch=2 if head == "attentive" else 1,
            on_epoch=on_epoch,
        )
        curve, pred = fit.curve, fit.pred
    best_epoch = int(np.argmax(curve))
    metrics: dict[str, Any] = {
        "top1": 100.0 * curve[-1],
        "top1_best": 100.0 * curve[best_epoch],
        "top1_per_epoch": [round(100.0 * a, 4) for a in curve],
    }
    if bootstrap > 0:  # resample the val items' last-epoch correctness
        correct = (pred == y_val).double().cpu().numpy()
        metrics["ci95"] = {"top1": [100.0 * v for v in bootstrap_ci(correct, n=bootstrap, seed=seed)]}
    config = {
        "task": "classify",
        "dataset": dataset,
        "model": model,
        "feature": "cls_token" if head == "linear" else "tokens",
        "probe": head,
        "protocol": str(proto),
        "suite": suite,
        "epochs": epochs,
        "best_epoch": best_epoch + 1,
        "batch_size": batch_size,
        "base_lr": base_lr,
        "lr": scaled_lr,
        "schedule": "cosine per epoch, no warmup",
        "optimizer": "SGD momentum 0.9, weight decay 0",
        "seed": seed,
        "bootstrap": bootstrap,
        "num_classes": num_classes,
        "n_train": len(train_fs),
        "n_val": len(val_fs),
        "num_heads": getattr(net, "num_heads", None),
        "bn_at_eval": None if head == "linear" else ("batch" if proto is Protocol.STUDY else "running"),
        "eval_batch_size": eval_bs,
        "tokens_resident": resident,
    }
    prov = provenance(
        stats,
        cache_key=train_fs.cache_key,
        val_cache_key=val_fs.cache_key,
        checkpoint_sha256=manifest_value(train_fs.manifest, "checkpoint_sha256"),
        cache_protocol=cache_protocol(train_fs),
    )
    path = result_path(Path(results_dir), "classify", dataset, model, head)
    return write_result(path, metrics, config, prov)
