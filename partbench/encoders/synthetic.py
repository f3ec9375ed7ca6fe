"""Tiny encoders written in each family's EXACT official checkpoint layout (for tests and the smoke suite).

Values are random but non-trivial (LayerNorm weights ≠ 1, q/v biases, layer-scale, relative-position
tables, BN running statistics, a student whose `weight_g` ≠ 1), and every extra module of the real files
is there: MoCo's momentum encoder and predictor, DINO/iBOT's `module.`-prefixed student next to a
teacher with different values, optimizer/epoch/`argparse.Namespace` args, BEiT's mask token, `lm_head`
and `relative_position_index`, CAE's regressor, decoder, mask token and teacher keys, DeiT's heads.

```python
path = write_official_checkpoint("dino", tmp / "dino.pth", seed=0, **TINY_ARCH)
enc = load_encoder("dino", checkpoint=path, **TINY_ARCH)
```
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch
from timm.models.beit import gen_relative_position_index

from partbench.fsutil import atomic_write

#: Architecture overrides that match the files written with the defaults below.
TINY_ARCH: dict[str, int] = {"embed_dim": 64, "depth": 2, "num_heads": 4}

#: Default (small) head sizes per entry; the loader reads them back from the tensor shapes.
TINY_HEADS: dict[str, dict[str, int]] = {
    "deit": {"num_classes": 10},
    "deit-distilled": {"num_classes": 10},
    "vit-in21k": {"num_classes": 10},
    "mocov3": {"hidden_dim": 128, "out_dim": 32},
    "dino": {"hidden_dim": 128, "bottleneck_dim": 32, "out_dim": 512},
    "ibot": {"hidden_dim": 128, "bottleneck_dim": 32, "out_dim": 256},
    "beit": {"vocab_size": 64},
    "mae": {},
    "cae": {},
}
SYNTHETIC_NAMES: tuple[str, ...] = tuple(TINY_HEADS)

Tensors = dict[str, torch.Tensor]


class _Rand:
    """Seeded random tensors of the kinds a trained checkpoint holds."""

    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)

    def normal(self, *shape: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen) * scale + shift

    def weight(self, out_dim: int, *in_shape: int) -> torch.Tensor:
        return self.normal(out_dim, *in_shape, scale=1.0 / math.sqrt(math.prod(in_shape)))

    def positive(self, *shape: int, low: float = 0.5, high: float = 1.5) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=self.gen)


def sincos_pos_embed(dim: int, grid: int, swap_halves: bool = False) -> torch.Tensor:
    """Fixed 2-D sin-cos table (1, 1 + grid², dim) with a zero cls row (MAE's formula; MoCo v3/CAE/BEiT
    use the same with the two halves swapped)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4.0))
    rows, cols = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )

    def one_axis(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega
        return torch.cat([out.sin(), out.cos()], dim=1)

    halves = [one_axis(cols), one_axis(rows)]
    table = torch.cat(halves[::-1] if swap_halves else halves, dim=1).float()
    return torch.cat([torch.zeros(1, dim), table], dim=0).unsqueeze(0)


def _layer_norm(r: _Rand, prefix: str, dim: int) -> Tensors:
    return {prefix + "weight": r.normal(dim, scale=0.1, shift=1.0), prefix + "bias": r.normal(dim, scale=0.1)}


def _linear(r: _Rand, prefix: str, in_dim: int, out_dim: int, bias: bool = True) -> Tensors:
    out = {prefix + "weight": r.weight(out_dim, in_dim)}
    if bias:
        out[prefix + "bias"] = r.normal(out_dim, scale=0.1)
    return out


def _batch_norm(r: _Rand, prefix: str, dim: int, affine: bool = True) -> Tensors:
    out = _layer_norm(r, prefix, dim) if affine else {}
    out[prefix + "running_mean"] = r.normal(dim, scale=0.2)
    out[prefix + "running_var"] = r.positive(dim)
    out[prefix + "num_batches_tracked"] = torch.tensor(1000, dtype=torch.long)
    return out


def vit_backbone(
    r: _Rand,
    dim: int,
    depth: int,
    *,
    grid: int,
    patch: int = 16,
    attention: str = "qkv_bias",
    pos: str | None = "learned",
    dist_token: bool = False,
) -> Tensors:
    """A pre-norm ViT in official key names. `attention`: "qkv_bias" (timm/DINO/MAE/DeiT/MoCo) or
    "qv_bias_gamma" (BEiT/CAE: q_bias, v_bias, no qkv bias, layer-scale gamma_1/gamma_2)."""
    out: Tensors = {"cls_token": r.normal(1, 1, dim, scale=0.5)}
    if dist_token:
        out["dist_token"] = r.normal(1, 1, dim, scale=0.5)
    prefix_rows = 2 if dist_token else 1
    if pos == "learned":
        out["pos_embed"] = r.normal(1, prefix_rows + grid * grid, dim, scale=0.5)
    elif pos in ("sincos", "sincos_swapped"):
        out["pos_embed"] = sincos_pos_embed(dim, grid, swap_halves=pos == "sincos_swapped")
    out["patch_embed.proj.weight"] = r.weight(dim, 3, patch, patch)
    out["patch_embed.proj.bias"] = r.normal(dim, scale=0.1)
    for i in range(depth):
        b = f"blocks.{i}."
        if attention == "qv_bias_gamma":
            out[b + "gamma_1"] = r.positive(dim, low=0.05, high=0.5)
            out[b + "gamma_2"] = r.positive(dim, low=0.05, high=0.5)
        out.update(_layer_norm(r, b + "norm1.", dim))
        if attention == "qv_bias_gamma":
            out[b + "attn.q_bias"] = r.normal(dim, scale=0.2)
            out[b + "attn.v_bias"] = r.normal(dim, scale=0.2)
            out[b + "attn.qkv.weight"] = r.weight(3 * dim, dim)
        else:
            out.update(_linear(r, b + "attn.qkv.", dim, 3 * dim))
        out.update(_linear(r, b + "attn.proj.", dim, dim))
        out.update(_layer_norm(r, b + "norm2.", dim))
        out.update(_linear(r, b + "mlp.fc1.", dim, 4 * dim))
        out.update(_linear(r, b + "mlp.fc2.", 4 * dim, dim))
    out.update(_layer_norm(r, "norm.", dim))
    return out


def moco_mlp(r: _Rand, prefix: str, num_layers: int, in_dim: int, hidden: int, out_dim: int) -> Tensors:
    """MoCo v3 `_build_mlp`: (Linear no bias, BN, ReLU) × (n-1), Linear no bias, BN(affine=False)."""
    out: Tensors = {}
    for layer in range(num_layers):
        d_in = in_dim if layer == 0 else hidden
        d_out = out_dim if layer == num_layers - 1 else hidden
        out.update(_linear(r, f"{prefix}{3 * layer}.", d_in, d_out, bias=False))
        out.update(_batch_norm(r, f"{prefix}{3 * layer + 1}.", d_out, affine=layer < num_layers - 1))
    return out


def dino_head(
    r: _Rand, prefix: str, dim: int, hidden: int, bottleneck: int, out_dim: int, *, unit_g: bool, ibot: bool
) -> Tensors:
    """DINOHead / iBOTHead: mlp.{0,2,4}, weight-normed last_layer (+ iBOT's shared last_layer2)."""
    out: Tensors = {}
    out.update(_linear(r, prefix + "mlp.0.", dim, hidden))
    out.update(_linear(r, prefix + "mlp.2.", hidden, hidden))
    out.update(_linear(r, prefix + "mlp.4.", hidden, bottleneck))
    g = torch.ones(out_dim, 1) if unit_g else r.positive(out_dim, 1)
    out[prefix + "last_layer.weight_g"] = g
    out[prefix + "last_layer.weight_v"] = r.weight(out_dim, bottleneck)
    if ibot:  # shared head: the same module saved twice
        out[prefix + "last_layer2.weight_g"] = out[prefix + "last_layer.weight_g"].clone()
        out[prefix + "last_layer2.weight_v"] = out[prefix + "last_layer.weight_v"].clone()
    return out


def _prefixed(prefix: str, tensors: Tensors) -> Tensors:
    return {prefix + k: v for k, v in tensors.items()}


def _optimizer(r: _Rand, n: int = 3) -> dict[str, Any]:
    state = {
        i: {"step": torch.tensor(10.0), "exp_avg": r.normal(4), "exp_avg_sq": r.positive(4)} for i in range(n)
    }
    return {"state": state, "param_groups": [{"lr": 1e-4, "weight_decay": 0.05, "params": list(range(n))}]}


def official_checkpoint(
    name: str,
    *,
    seed: int = 0,
    embed_dim: int = 64,
    depth: int = 2,
    num_heads: int = 4,
    img_size: int = 224,
    backbone_only: bool = False,
    **head_dims: int,
) -> dict[str, Any]:
    """The checkpoint object (what `torch.load` returns) of a tiny `name` encoder in the official layout.

    `backbone_only` gives DINO's `dino_vitbase16_pretrain.pth` / iBOT's `checkpoint_teacher.pth` layout.
    `num_heads` does not change any tensor shape; it is accepted so `**TINY_ARCH` can be passed.
    """
    if name not in TINY_HEADS:
        raise ValueError(f"no synthetic layout for {name!r}; known: {', '.join(SYNTHETIC_NAMES)}")
    dims = {**TINY_HEADS[name], **head_dims}
    r, dim, grid = _Rand(seed), embed_dim, img_size // 16
    args = argparse.Namespace(arch="vit_base", patch_size=16, epochs=800, lr=1.5e-4, **dims)

    if name in ("deit", "deit-distilled", "vit-in21k"):
        distilled = name == "deit-distilled"
        model = vit_backbone(r, dim, depth, grid=grid, dist_token=distilled)
        model.update(_linear(r, "head.", dim, dims["num_classes"]))
        if distilled:
            model.update(_linear(r, "head_dist.", dim, dims["num_classes"]))
        return model if name == "vit-in21k" else {"model": model}

    if name == "mocov3":
        hidden, out_dim = dims["hidden_dim"], dims["out_dim"]
        state: Tensors = {}
        for part in ("base_encoder", "momentum_encoder"):
            encoder = vit_backbone(r, dim, depth, grid=grid, pos="sincos_swapped")
            encoder.update(moco_mlp(r, "head.", 3, dim, hidden, out_dim))
            state.update(_prefixed(f"module.{part}.", encoder))
        state.update(moco_mlp(r, "module.predictor.", 2, out_dim, hidden, out_dim))
        return {"epoch": 300, "arch": "vit_base", "state_dict": state, "optimizer": _optimizer(r)}

    if name in ("dino", "ibot"):
        ibot = name == "ibot"
        hd = (dims["hidden_dim"], dims["bottleneck_dim"], dims["out_dim"])
        teacher = vit_backbone(r, dim, depth, grid=grid)
        if backbone_only:
            return {"state_dict": teacher} if ibot else teacher
        student = vit_backbone(r, dim, depth, grid=grid)
        if ibot:
            student["masked_embed"] = r.normal(1, dim, scale=0.5)
        ckpt: dict[str, Any] = {
            "student": {
                **_prefixed("module.backbone.", student),
                **dino_head(r, "module.head.", dim, *hd, unit_g=False, ibot=ibot),
            },
            "teacher": {
                **_prefixed("backbone.", teacher),
                **dino_head(r, "head.", dim, *hd, unit_g=True, ibot=ibot),
            },
            "optimizer": _optimizer(r),
            "epoch": 400,
            "args": args,
        }
        if ibot:
            ckpt["ibot_loss"] = {"center": r.normal(1, hd[2]), "center2": r.normal(1, 1, hd[2])}
        else:
            ckpt["dino_loss"] = {"center": r.normal(1, hd[2])}
        return ckpt

    if name == "beit":
        model = vit_backbone(r, dim, depth, grid=grid, attention="qv_bias_gamma", pos=None)
        model["mask_token"] = r.normal(1, 1, dim, scale=0.5)
        rows = (2 * grid - 1) ** 2 + 3
        model["rel_pos_bias.relative_position_bias_table"] = r.normal(rows, num_heads, scale=0.5)
        model["rel_pos_bias.relative_position_index"] = gen_relative_position_index((grid, grid))
        model.update(_linear(r, "lm_head.", dim, dims["vocab_size"]))
        scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000}
        return {"model": model, "optimizer": _optimizer(r), "epoch": 799, "scaler": scaler, "args": args}

    if name == "mae":
        return {"model": vit_backbone(r, dim, depth, grid=grid, pos="sincos")}

    # cae
    encoder = vit_backbone(r, dim, depth, grid=grid, attention="qv_bias_gamma", pos="sincos_swapped")
    model = _prefixed("encoder.", encoder)
    regressor = vit_backbone(r, dim, 1, grid=grid, attention="qv_bias_gamma", pos=None)
    model.update(
        _prefixed("regresser.", {k: v for k, v in regressor.items() if k.startswith(("blocks.", "norm."))})
    )
    decoder = vit_backbone(r, dim, 1, grid=grid, pos=None)
    model.update(_prefixed("decoder.", {k: v for k, v in decoder.items() if k.startswith("blocks.")}))
    model.update(_linear(r, "decoder.head.", dim, 64))
    model["mask_token"] = r.normal(1, 1, dim, scale=0.5)
    model["rd_pos_embed"] = sincos_pos_embed(dim, grid, swap_halves=True)
    teacher = vit_backbone(r, dim, depth, grid=grid, attention="qv_bias_gamma", pos="sincos_swapped")
    model.update(_prefixed("teacher_network.", teacher))
    return {
        "model": model,
        "optimizer": _optimizer(r),
        "epoch": 1599,
        "scaler": {"scale": 1024.0},
        "args": args,
    }


def write_official_checkpoint(
    name: str,
    path: str | Path,
    *,
    seed: int = 0,
    embed_dim: int = 64,
    depth: int = 2,
    num_heads: int = 4,
    **head_dims: Any,
) -> Path:
    """Write `official_checkpoint(...)` to `path` with `torch.save` (atomically); return the path."""
    ckpt = official_checkpoint(
        name, seed=seed, embed_dim=embed_dim, depth=depth, num_heads=num_heads, **head_dims
    )
    path = Path(path)
    with atomic_write(path) as fh:
        torch.save(ckpt, fh)
    return path
