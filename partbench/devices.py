"""Which device and compute dtype a stage runs on: one rule for extract, probes and layer caches."""

from __future__ import annotations

import torch

from partbench.errors import PartbenchError


def resolve_device(device: str) -> torch.device:
    """`auto` → CUDA when present, else CPU; an explicit CUDA device on a machine without one is a
    one-line error instead of a crash deep inside torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PartbenchError(f"--device {device}: CUDA is not available on this machine")
    return torch.device(device)


def resolve_dtype(dtype: str, device_type: str) -> str:
    """`auto` → bf16 on CUDA, fp32 elsewhere; anything else as given."""
    if dtype == "auto":
        return "bf16" if device_type == "cuda" else "fp32"
    return dtype
