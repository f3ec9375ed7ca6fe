"""Reading checkpoint files safely, recognising their layout, and strict loading with clear errors.

Every failure becomes one `CheckpointError` line that names the file: truncated or not a PyTorch file,
a pickle that needs more than tensors (refused: `weights_only=True`, only `argparse.Namespace` is
allowed), another family's layout (with the family it looks like), or missing/unexpected keys.
"""

from __future__ import annotations

import argparse
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from partbench.errors import CheckpointError

#: How many key names an error message lists before "…".
MAX_KEYS_SHOWN = 4


class LayoutError(ValueError):
    """Raised by a converter when a checkpoint is not in its family's official layout.

    `load_encoder` turns it into a `CheckpointError` naming the file and the family it looks like.
    """


def read_checkpoint(path: str | Path) -> Any:
    """`torch.load(path, weights_only=True)` with `argparse.Namespace` allowed; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty (truncated download?)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = found.group(1) if found else "an object that is not a tensor"
            raise CheckpointError(
                f"{path}: refused to unpickle {what} (weights_only=True allows only tensors, "
                "containers and argparse.Namespace)"
            ) from None
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_first_line(exc)})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: truncated or not a PyTorch checkpoint ({_first_line(exc) or type(exc).__name__})"
        ) from None


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch's zip errors run on for lines)."""
    text = str(exc).strip().splitlines()
    if not text:
        return ""
    first = text[0].split(". ")[0].rstrip(".")
    return first if len(first) <= 160 else first[:157] + "..."


def guess_layout(obj: Any) -> str | None:
    """Which registry entry's official layout `obj` (a loaded checkpoint) looks like, or None."""
    if not isinstance(obj, Mapping):
        return None
    if "teacher" in obj and "student" in obj:
        teacher = obj["teacher"] if isinstance(obj["teacher"], Mapping) else {}
        if "ibot_loss" in obj or any("last_layer2" in str(k) for k in teacher):
            return "ibot"
        return "dino"
    inner = obj.get("state_dict")
    if isinstance(inner, Mapping):
        if any(str(k).startswith("module.base_encoder.") for k in inner):
            return "mocov3"
        if "cls_token" in inner:
            return "ibot"
    inner = obj.get("model")
    if isinstance(inner, Mapping):
        keys = [str(k) for k in inner]
        if any(k.startswith("encoder.") for k in keys):
            return "cae"
        if any("relative_position_bias_table" in k for k in keys) or "lm_head.weight" in inner:
            return "beit"
        if "dist_token" in inner:
            return "deit-distilled"
        if "head.weight" in inner:
            return "deit"
        if "cls_token" in inner:
            return "mae"
    if "cls_token" in obj:
        return "vit-in21k" if "head.weight" in obj else "dino"
    return None


def require_mapping(obj: Any, key: str) -> Mapping[str, Any]:
    """`obj[key]` as a mapping, or a `LayoutError` saying which top-level entries exist."""
    if not isinstance(obj, Mapping):
        raise LayoutError(f"top level is a {type(obj).__name__}, not a dict")
    inner = obj.get(key)
    if not isinstance(inner, Mapping):
        have = ", ".join(sorted(map(str, obj))[:8])
        raise LayoutError(f"no '{key}' entry at the top level (found: {have})")
    return inner


def flat_tensors(obj: Any) -> Mapping[str, Any]:
    """A flat state dict (name -> tensor) at the top level, or a `LayoutError`."""
    if not isinstance(obj, Mapping):
        raise LayoutError(f"top level is a {type(obj).__name__}, not a dict")
    for wrapper in ("model", "state_dict", "teacher", "student"):
        if isinstance(obj.get(wrapper), Mapping):
            raise LayoutError(f"expected a flat state dict, found a '{wrapper}' entry")
    return obj


def format_keys(keys: list[str]) -> str:
    """`a, b, c, d, … (+N more)` for error messages."""
    shown = ", ".join(keys[:MAX_KEYS_SHOWN])
    more = len(keys) - MAX_KEYS_SHOWN
    return f"{shown}, … (+{more} more)" if more > 0 else shown


def strict_load(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """`load_state_dict(strict=True)`; a key or shape mismatch raises `LayoutError` listing keys."""
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {format_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {format_keys(unexpected)}")
    if not problems:
        wrong = [
            f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)} expected"
            for k, v in state_dict.items()
            if isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(own[k].shape)
        ]
        if wrong:
            problems.append(f"shape mismatch ({len(wrong)}): {format_keys(wrong)}")
    if problems:
        raise LayoutError(f"{what}: " + "; ".join(problems))
    module.load_state_dict(dict(state_dict), strict=True)


def split_prefix(state_dict: Mapping[str, Any], prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split into (keys under `prefix` with it stripped, all other keys unchanged)."""
    inside, outside = {}, {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            inside[key[len(prefix) :]] = value
        else:
            outside[key] = value
    return inside, outside
