"""The hot loop of extraction: the encoder step and the re-batching of patches into shards.

`Forward` runs one batch on the device (channels-last on CUDA, autocast, optional compile).
`ShardRunner` takes the DataLoader's per-image patch groups, cuts them into batches of exactly
`batch_size` that never straddle a shard, scatters each output row to its item, and hands every
finished shard to a writer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from partbench.errors import PartbenchError
from partbench.feature_cache import FEATURE_NAMES

TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class Forward:
    """The encoder on its device: channels-last on CUDA, autocast in `dtype`, optional `torch.compile`."""

    def __init__(self, enc: Any, device: str, dtype: str, tokens: bool, compile: bool) -> None:
        self.enc, self.device, self.tokens = enc, torch.device(device), tokens
        self.amp = TORCH_DTYPES[dtype] if dtype != "fp32" else None
        self.fn = torch.compile(enc.extract) if compile else enc.extract

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """Start the copy of a (pinned) loader batch at once; re-batching then happens on the device."""
        return x.to(self.device, non_blocking=True)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of one batch, left on the device (fp32; tokens fp16)."""
        x = x.to(self.device, non_blocking=True)
        if self.device.type == "cuda":  # channels-last helps the patch-embedding conv on GPUs only
            x = x.contiguous(memory_format=torch.channels_last)
        if self.amp is not None:
            with torch.autocast(self.device.type, dtype=self.amp):
                out = self.fn(x, tokens=self.tokens)
        else:
            out = self.fn(x, tokens=self.tokens)
        result = {k: out[k].float() for k in FEATURE_NAMES if out.get(k) is not None}
        if self.tokens:
            result["tokens"] = out["tokens"].to(torch.float16)
        return result


def one_line_errors(loader: DataLoader) -> Iterator[Any]:
    """Iterate the loader; a `PartbenchError` raised in a worker comes back as its own one line."""
    try:
        yield from loader
    except PartbenchError as exc:
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        if len(lines) > 1:  # DataLoader wraps worker errors with the worker's traceback
            last = lines[-1]
            msg = last.split(": ", 1)[1] if last.startswith(("partbench.", type(exc).__name__)) else last
            raise type(exc)(msg) from None
        raise


class ShardRunner:
    """Stream patches into batches of `batch_size` that never straddle a shard; write each shard whole.

    The batch composition depends only on the shard's own patches, so a resumed run computes every
    shard exactly as an uninterrupted run does (bit-identical output).
    """

    def __init__(
        self,
        forward: Forward,
        ranges: list[tuple[int, int]],
        shard_size: int,
        batch_size: int,
        write: Callable[[int, dict[str, torch.Tensor]], None],
        advance: Callable[[int], None],
    ) -> None:
        self.forward, self.ranges, self.shard_size, self.batch_size = forward, ranges, shard_size, batch_size
        self.write, self.advance = write, advance
        self.shard = -1
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.n_pending = 0
        self.out: dict[str, torch.Tensor] = {}
        self.filled = 0

    def feed(self, x: torch.Tensor, idx: torch.Tensor) -> None:
        """Take one loader batch (patches in shard order) and run every full batch it completes."""
        x = self.forward.to_device(x)
        sid = idx // self.shard_size
        cuts = (torch.nonzero(sid[1:] != sid[:-1]).flatten() + 1).tolist()
        bounds = [0, *cuts, len(idx)]
        for a, b in itertools.pairwise(bounds):
            s = int(sid[a])
            if s != self.shard:
                self._finish_shard()
                self.shard = s
            self.pending.append((x[a:b], idx[a:b]))
            self.n_pending += b - a
            while self.n_pending >= self.batch_size:
                self._run(self.batch_size)

    def close(self) -> None:
        self._finish_shard()

    def _run(self, n: int) -> None:
        xs, ids = zip(*self.pending, strict=True)
        x, idx = torch.cat(xs), torch.cat(ids)
        rest = (x[n:], idx[n:])
        self.pending = [rest] if len(rest[1]) else []
        self.n_pending = len(rest[1])
        res = self.forward(x[:n])
        start, stop = self.ranges[self.shard]
        local = None
        for name, t in res.items():
            if local is None:
                local = (idx[:n] - start).to(t.device)
            if name not in self.out:  # the shard's rows stay on the device until it is written
                self.out[name] = torch.empty((stop - start, *t.shape[1:]), dtype=t.dtype, device=t.device)
            self.out[name][local] = t
        self.filled += n
        self.advance(n)

    def _finish_shard(self) -> None:
        if self.shard < 0:
            return
        if self.n_pending:
            self._run(self.n_pending)
        start, stop = self.ranges[self.shard]
        if self.filled != stop - start:
            raise PartbenchError(
                f"patch loader gave {self.filled} patches for the {stop - start} items of a shard"
            )
        self.write(self.shard, {name: t.cpu() for name, t in self.out.items()})
        self.shard, self.out, self.filled = -1, {}, 0
