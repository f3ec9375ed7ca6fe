"""Training loop of the linear segmentation probe: schedule, resumable sampling, checkpoints, DDP.

The study (mmseg v0.x + mmcv 1.3.11) trains the head with AdamW (lr 4e-4, betas (0.9, 0.999),
wd 0.05) for 160k iterations at batch 16, a poly schedule (power 1, min 0) with a linear warm-up
of 1500 iterations from ratio 1e-6, and cross-entropy (ignore 255) averaged over *all* pixels of
the batch (mmseg's `weight_reduce_loss` mean: ignored pixels count in the denominator with loss 0).

Resuming: the learning rate is a pure function of the iteration; the data order is a pure
function of (seed, iteration) (`ResumableBatchSampler`: epoch `e` is `randperm(N)` seeded with
`seed + e`, iteration `i` takes global stream positions `[i·B, (i+1)·B)`, and each rank takes a
strided slice of them, as `DistributedSampler` does; `DistributedSampler` itself cannot restart
mid-epoch, hence this sampler); a sample's augmentation is drawn from (seed, index, stream epoch).
So a run killed at any point and resumed from its last checkpoint ends with the same head as an
uninterrupted run.

Short runs (`--iters` < 160k) scale the warm-up in proportion, `round(1500 · iters / 160k)` (at
least 1), so a 16k-iteration run warms up for 150 iterations, not for a tenth of its length.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from partbench.errors import CacheError, PartbenchError
from partbench.fsutil import atomic_write
from partbench.probes.seg_head import upsample_logits

STUDY_ITERS = 160_000
STUDY_WARMUP_ITERS = 1500
CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class SegTrainConfig:
    """Optimisation settings; defaults are the study's `*_lp_freeze12.py` configs."""

    iters: int = STUDY_ITERS
    batch_size: int = 16  # global batch (study: 2 per GPU × 8 GPUs)
    lr: float = 4e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.05
    warmup_iters: int | None = None  # None: 1500, scaled by iters / 160k for shorter runs
    warmup_ratio: float = 1e-6
    power: float = 1.0
    min_lr: float = 0.0
    seed: int = 0
    ckpt_every: int = 2000
    eval_every: int = 16_000
    ignore_index: int = 255
    # The CAE, BEiT and MAE configs build AdamW with BEiT's LayerDecayOptimizerConstructor, which
    # puts 1-D parameters (the head's bias) in a no-decay group; the other four use mmcv's default.
    bias_weight_decay: bool = True

    def __post_init__(self) -> None:
        if self.iters <= 0 or self.batch_size <= 0:
            raise PartbenchError(
                f"segment: iters and batch size must be positive, got {self.iters}, {self.batch_size}"
            )
        if self.ckpt_every < 0 or self.eval_every < 0:
            raise PartbenchError("segment: --ckpt-every and --eval-every must be >= 0 (0 = only at the end)")

    @property
    def resolved_warmup_iters(self) -> int:
        """The warm-up length: explicit, else 1500 scaled down in proportion for runs under 160k."""
        if self.warmup_iters is not None:
            return self.warmup_iters
        return scaled_warmup_iters(self.iters)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["betas"] = list(self.betas)
        out["warmup_iters"] = self.resolved_warmup_iters
        return out


def scaled_warmup_iters(iters: int) -> int:
    """1500 warm-up iterations at 160k; `round(1500 · iters / 160k)` (at least 1) for shorter runs."""
    if iters >= STUDY_ITERS:
        return STUDY_WARMUP_ITERS
    return max(1, round(STUDY_WARMUP_ITERS * iters / STUDY_ITERS))


def poly_warmup_lr(
    iteration: int,
    base_lr: float,
    total_iters: int,
    warmup_iters: int,
    warmup_ratio: float = 1e-6,
    power: float = 1.0,
    min_lr: float = 0.0,
) -> float:
    """mmcv `PolyLrUpdaterHook` with linear warm-up, for 0-based `iteration` (the lr used by that step).

    regular = (base − min)·(1 − i/T)^power + min; during warm-up (i < W)
    lr = regular · (1 − k) with k = (1 − i/W)·(1 − warmup_ratio).
    """
    regular = (base_lr - min_lr) * (1 - iteration / total_iters) ** power + min_lr
    if warmup_iters > 0 and iteration < warmup_iters:
        k = (1 - iteration / warmup_iters) * (1 - warmup_ratio)
        return regular * (1 - k)
    return regular


# --- data order ---------------------------------------------------------------------------------


class ResumableBatchSampler:
    """Per-rank batches of `(index, draw)` pairs for iterations `[start_iter, total_iters)`.

    `draw` is the position in the global sample stream: a unique, resumable augmentation seed.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int,
        total_iters: int,
        start_iter: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_items <= 0:
            raise PartbenchError("segment: the training split is empty")
        if batch_size % world_size:
            raise PartbenchError(
                f"segment: batch size {batch_size} is not divisible by the {world_size} processes"
            )
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.total_iters, self.start_iter = total_iters, start_iter
        self.rank, self.world_size = rank, world_size
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_items)
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            self._perm = torch.randperm(self.num_items, generator=gen)
            self._perm_epoch = epoch
        return int(self._perm[offset])

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        """This rank's `(index, draw)` pairs of `iteration`."""
        first = iteration * self.batch_size
        positions = range(first + self.rank, first + self.batch_size, self.world_size)
        return [(self._index(p), p) for p in positions]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for iteration in range(self.start_iter, self.total_iters):
            yield self.batch(iteration)

    def __len__(self) -> int:
        return max(0, self.total_iters - self.start_iter)


# --- distributed --------------------------------------------------------------------------------


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def unwrap(head: nn.Module) -> nn.Module:
    """The head inside a DistributedDataParallel wrapper (or the head itself)."""
    return head.module if isinstance(head, nn.parallel.DistributedDataParallel) else head


# --- checkpoints --------------------------------------------------------------------------------


@dataclass
class TrainState:
    """What a checkpoint holds besides the tensors: progress and the evaluation history."""

    iteration: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # {"iteration", metrics...}
    losses: list[float] = field(default_factory=list)  # mean training loss per logged window


def save_checkpoint(
    path: Path,
    head: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    fingerprint: Mapping[str, Any],
) -> None:
    """Write head + optimizer + scheduler position + iteration + RNG state atomically to `path`."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": dict(fingerprint),
        "iteration": state.iteration,
        "scheduler": {"policy": "poly+linear-warmup", "last_iteration": state.iteration},
        "history": state.history,
        "losses": state.losses,
        "head": unwrap(head).state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_write(path) as fh:
        fh.write(buffer.getvalue())


def load_checkpoint(path: Path, fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """Read a run checkpoint; a different fingerprint is an error naming the keys that differ."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file
        raise CacheError(f"{path}: unreadable segmentation checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CacheError(f"{path}: not a partbench segmentation checkpoint")
    saved = payload.get("fingerprint", {})
    differ = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if differ:
        raise CacheError(
            f"{path}: checkpoint belongs to another run (differs in {', '.join(differ)}); "
            "use --no-resume to start over or another --runs-dir"
        )
    return payload


def restore(payload: Mapping[str, Any], head: nn.Module, optimizer: torch.optim.Optimizer) -> TrainState:
    """Load a checkpoint payload into `head` and `optimizer` and the RNG; return the progress."""
    unwrap(head).load_state_dict(payload["head"])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["rng_cpu"])
    if torch.cuda.is_available() and payload["rng_cuda"]:
        torch.cuda.set_rng_state_all(payload["rng_cuda"])
    return TrainState(int(payload["iteration"]), list(payload["history"]), list(payload["losses"]))


# --- the loop -----------------------------------------------------------------------------------


#: Families whose study configs use the layer-decay constructor (no weight decay on 1-D parameters).
NO_BIAS_DECAY_FAMILIES = frozenset({"cae", "beit", "mae"})


def make_optimizer(head: nn.Module, cfg: SegTrainConfig) -> torch.optim.AdamW:
    """AdamW over the head's parameters (the backbone is frozen and not in the optimizer).

    With `cfg.bias_weight_decay=False`, 1-D parameters get weight decay 0 (layer-decay constructor;
    its lr scale for head parameters is decay^0 = 1).
    """
    params = [p for p in head.parameters() if p.requires_grad]
    if cfg.bias_weight_decay:
        groups: list[dict[str, Any]] = [{"params": params}]
    else:
        groups = [
            {"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def segmentation_loss(logits: Tensor, labels: Tensor, ignore_index: int = 255) -> Tensor:
    """Cross-entropy of logits upsampled to the label size, averaged over all pixels (mmseg v0.x).

    Logits are cast to float32 before the upsampling, as mmseg's `@force_fp32` on `losses` does.
    """
    logits = upsample_logits(logits.float(), tuple(labels.shape[-2:]))
    loss = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    return loss / labels.numel()


def train_head(
    head: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[Tensor, Tensor]],
    features_fn: Callable[[Tensor], Tensor],
    cfg: SegTrainConfig,
    state: TrainState,
    run_dir: Path,
    fingerprint: Mapping[str, Any],
    evaluate: Callable[[nn.Module, int], dict[str, Any]] | None = None,
    device: torch.device | str = "cpu",
    on_iteration: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
    loss_fn: Callable[[Tensor, Tensor, int], Tensor] = segmentation_loss,
) -> TrainState:
    """Train from `state.iteration` to `cfg.iters`; `batches` yields this rank's (inputs, labels).

    `features_fn` turns inputs into the concatenated feature maps (the frozen backbone in full mode,
    a device transfer in fast mode). Checkpoints every `cfg.ckpt_every` iterations and at the end
    (rank 0), evaluates (`evaluate(head, iteration)`, on every rank) every `cfg.eval_every` and
    at the end. `on_iteration(i)` runs once `i` iterations are complete (and saved, when `i` is a
    checkpoint iteration): a test hook. `loss_fn(logits, labels, ignore_index)` defaults to
    `segmentation_loss` (per-block heads: `seg_head.BlockSegHeads.loss`).
    """
    rank, _ = dist_rank_world()
    warmup = cfg.resolved_warmup_iters
    amp = torch.device(device).type == "cuda"
    ckpt_path = Path(run_dir) / CHECKPOINT_NAME
    head.train()
    window_loss, window_n = 0.0, 0
    it = state.iteration
    for inputs, labels in batches:
        if it >= cfg.iters:
            break
        lr = poly_warmup_lr(it, cfg.lr, cfg.iters, warmup, cfg.warmup_ratio, cfg.power, cfg.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        feats = features_fn(inputs)
        labels = labels.to(device, non_blocking=True).long()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            logits = head(feats)
        loss = loss_fn(logits, labels, cfg.ignore_index)
        value = loss.item()
        if not math.isfinite(value):
            raise PartbenchError(f"segment: training loss became {value} at iteration {it}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window_loss += value
        window_n += 1
        it += 1
        state.iteration = it
        if progress is not None:
            progress(it)
        last = it == cfg.iters
        if evaluate is not None and (last or (cfg.eval_every and it % cfg.eval_every == 0)):
            head.eval()
            state.history.append({"iteration": it, **evaluate(head, it)})
            head.train()
        if last or (cfg.ckpt_every and it % cfg.ckpt_every == 0):
            state.losses.append(window_loss / max(window_n, 1))
            window_loss, window_n = 0.0, 0
            if rank == 0:
                save_checkpoint(ckpt_path, head, optimizer, state, fingerprint)
            if dist.is_available() and dist.is_initialized():
                dist.barrier()
        if on_iteration is not None:
            on_iteration(it)
    if state.iteration < cfg.iters:
        raise PartbenchError(f"segment: the data stream ended at iteration {state.iteration} of {cfg.iters}")
    return state
