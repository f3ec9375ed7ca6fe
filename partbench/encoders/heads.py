"""Projection heads, built from the checkpoint's tensor shapes (never hard-coded sizes).

- `mlp_from_state`: MoCo v3's projector (`_build_mlp`: Linear/BN/ReLU …, last BN affine=False), used
  in eval mode, i.e. with the stored running statistics.
- `DINOHead`: DINO's head and the cls branch of iBOT's head: MLP (Linear/GELU …), L2 normalisation,
  then the weight-normed last layer, whose weight is folded once at load time (`fold_weight_norm`).
- `linear_from_state`: a plain classifier (vit-in21k's 1000-way logits, the study's "projection").

All heads take the converted keys *below* `projection.` (see `Encoder`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from partbench.encoders.loading import LayoutError


def fold_weight_norm(weight_g: torch.Tensor, weight_v: torch.Tensor) -> torch.Tensor:
    """Effective weight of `weight_norm(dim=0)`: `g * v / ||v||`, the norm taken per output row."""
    return weight_g * weight_v / weight_v.norm(dim=1, keepdim=True)


def mlp_from_state(state: Mapping[str, torch.Tensor], act: type[nn.Module]) -> nn.Sequential:
    """An `nn.Sequential` whose numbered layers match `state` (`0.weight`, `1.running_mean`, …).

    A 2-D `N.weight` is a Linear (bias if `N.bias` exists); `N.running_mean` is a BatchNorm1d (affine
    if `N.weight` exists); an index with no keys is the activation `act`.
    """
    indices = sorted({int(k.split(".", 1)[0]) for k in state if k.split(".", 1)[0].isdigit()})
    if not indices:
        raise LayoutError("projection head has no numbered layers")
    layers: list[nn.Module] = []
    for i in range(indices[-1] + 1):
        if i not in indices:
            layers.append(act())
        elif f"{i}.running_mean" in state:
            layers.append(nn.BatchNorm1d(state[f"{i}.running_mean"].shape[0], affine=f"{i}.weight" in state))
        elif f"{i}.weight" in state and state[f"{i}.weight"].ndim == 2:
            out_dim, in_dim = state[f"{i}.weight"].shape
            layers.append(nn.Linear(in_dim, out_dim, bias=f"{i}.bias" in state))
        else:
            raise LayoutError(f"projection layer {i} is neither a Linear nor a BatchNorm1d")
    return nn.Sequential(*layers)


class DINOHead(nn.Module):
    """`last_layer(normalize(mlp(x)))` with the weight norm already folded into `last_layer`."""

    def __init__(self, mlp: nn.Module, bottleneck_dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = mlp
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)

    @classmethod
    def from_state(cls, state: Mapping[str, torch.Tensor]) -> DINOHead:
        """Build from `mlp.*` and `last_layer.weight` (already folded) shapes."""
        if "last_layer.weight" not in state:
            raise LayoutError("projection head has no last_layer weight")
        out_dim, bottleneck = state["last_layer.weight"].shape
        mlp_state = {k[4:]: v for k, v in state.items() if k.startswith("mlp.")}
        if set(mlp_state) <= {"weight", "bias"} and "weight" in mlp_state:  # nlayers=1: mlp is a Linear
            out, inp = mlp_state["weight"].shape
            mlp: nn.Module = nn.Linear(inp, out, bias="bias" in mlp_state)
        else:
            mlp = mlp_from_state(mlp_state, nn.GELU)
        return cls(mlp, bottleneck, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


def linear_from_state(state: Mapping[str, torch.Tensor]) -> nn.Linear:
    """A Linear classifier from `weight` (C, D) and optional `bias`."""
    if "weight" not in state or state["weight"].ndim != 2:
        raise LayoutError("classifier head has no 2-D weight")
    out_dim, in_dim = state["weight"].shape
    return nn.Linear(in_dim, out_dim, bias="bias" in state)


def build_projector(kind: str, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """The head of `kind` ("mlp_bn", "dino", "linear") sized from `state`, loaded by the caller."""
    if kind == "mlp_bn":
        return mlp_from_state(state, nn.ReLU)
    if kind == "dino":
        return DINOHead.from_state(state)
    if kind == "linear":
        return linear_from_state(state)
    raise ValueError(f"unknown projection head kind {kind!r}")
