"""Encoder zoo: tiny encoders saved in each family's official layout, loaded strictly through
`load_encoder`, and checked against an INDEPENDENT forward written here from the official key names
(manual LayerNorm, einsum attention with q/v biases, layer-scale, BEiT relative-position bias indexed
by hand, and each projection head's math). The converters are never called by the reference.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from partbench.encoders import default_seg_layers, get_encoder_spec, list_encoders, load_encoder, parse_arch
from partbench.encoders.synthetic import (
    SYNTHETIC_NAMES,
    TINY_ARCH,
    official_checkpoint,
    write_official_checkpoint,
)
from partbench.errors import PartbenchError

HEADS = TINY_ARCH["num_heads"]
ATOL = 1e-4  # timm uses fused SDPA; manual attention differs by ~1e-6 in fp32


# ---- the independent reference -----------------------------------------------------------------
def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def beit_relative_index(rows: int, cols: int) -> torch.Tensor:
    """BEiT's relative_position_index written out: offsets (dr, dc) -> row of the table; cls rows last."""
    span_c = 2 * cols - 1
    num_rel = (2 * rows - 1) * span_c + 3
    pos = [(r, c) for r in range(rows) for c in range(cols)]
    n = len(pos) + 1
    index = torch.empty(n, n, dtype=torch.long)
    for i, (ri, ci) in enumerate(pos, start=1):
        for j, (rj, cj) in enumerate(pos, start=1):
            index[i, j] = (ri - rj + rows - 1) * span_c + (ci - cj + cols - 1)
    index[0, :] = num_rel - 3
    index[:, 0] = num_rel - 2
    index[0, 0] = num_rel - 1
    return index


def reference_forward(
    sd: dict[str, torch.Tensor],
    images: torch.Tensor,
    *,
    eps: float = 1e-6,
    pos_embed: torch.Tensor | None = None,
    rel_bias: torch.Tensor | None = None,
    permutation: torch.Tensor | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Official-layout ViT forward: (raw block outputs, final-normed tokens)."""
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=16)
    batch, dim = x.shape[0], x.shape[1]
    x = x.flatten(2).transpose(1, 2)
    if permutation is not None:
        x = x[torch.arange(batch)[:, None], permutation]
    prefix = [sd[k].expand(batch, -1, -1) for k in ("cls_token", "dist_token") if k in sd]
    x = torch.cat([*prefix, x], dim=1)
    pos = pos_embed if pos_embed is not None else sd.get("pos_embed")
    if pos is not None:
        x = x + pos
    head_dim = dim // HEADS
    outs = []
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        p = f"blocks.{i}."
        y = layer_norm(x, sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
        if p + "attn.qkv.bias" in sd:
            qkv_bias = sd[p + "attn.qkv.bias"]
        else:
            q_bias = sd[p + "attn.q_bias"]
            qkv_bias = torch.cat([q_bias, torch.zeros_like(q_bias), sd[p + "attn.v_bias"]])
        qkv = (y @ sd[p + "attn.qkv.weight"].T + qkv_bias).reshape(batch, -1, 3, HEADS, head_dim)
        q, k, v = qkv.unbind(2)
        logits = torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(head_dim)
        if rel_bias is not None:
            logits = logits + rel_bias[None]
        attn = torch.einsum("bhnm,bmhd->bnhd", logits.softmax(-1), v).reshape(batch, -1, dim)
        attn = attn @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        x = x + (sd[p + "gamma_1"] * attn if p + "gamma_1" in sd else attn)
        y = layer_norm(x, sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
        y = F.gelu(y @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        y = y @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
        x = x + (sd[p + "gamma_2"] * y if p + "gamma_2" in sd else y)
        outs.append(x)
    return outs, layer_norm(x, sd["norm.weight"], sd["norm.bias"], eps)


def moco_projector(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Linear(no bias) -> BN(eval: running stats, eps 1e-5) -> ReLU, ×2, Linear -> BN(affine=False)."""
    for layer in (0, 3, 6):
        x = x @ sd[f"{layer}.weight"].T
        b = f"{layer + 1}."
        x = (x - sd[b + "running_mean"]) / torch.sqrt(sd[b + "running_var"] + 1e-5)
        if b + "weight" in sd:
            x = x * sd[b + "weight"] + sd[b + "bias"]
        if layer < 6:
            x = x.clamp_min(0)
    return x


def dino_projection(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """mlp (GELU) -> L2 normalise -> weight-normed last layer g * v / ||v||."""
    x = F.gelu(x @ sd["mlp.0.weight"].T + sd["mlp.0.bias"])
    x = F.gelu(x @ sd["mlp.2.weight"].T + sd["mlp.2.bias"])
    x = x @ sd["mlp.4.weight"].T + sd["mlp.4.bias"]
    x = x / x.norm(dim=-1, keepdim=True)
    v = sd["last_layer.weight_v"]
    return x @ (sd["last_layer.weight_g"] * v / v.norm(dim=1, keepdim=True)).T


def strip(sd: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def reference_parts(name: str, ckpt: dict) -> tuple[dict, dict | None]:
    """(backbone state in official names, head state) read straight from the official layout."""
    if name == "mocov3":
        base = strip(ckpt["state_dict"], "module.base_encoder.")
        return {k: v for k, v in base.items() if not k.startswith("head.")}, strip(base, "head.")
    if name in ("dino", "ibot"):
        return strip(ckpt["teacher"], "backbone."), strip(ckpt["teacher"], "head.")
    if name == "cae":
        return strip(ckpt["model"], "encoder."), None
    if name == "vit-in21k":
        return ckpt, strip(ckpt, "head.")
    return ckpt["model"], None


def reference_features(name: str, ckpt: dict, images: torch.Tensor, eps: float = 1e-6, **kw) -> dict:
    sd, head = reference_parts(name, ckpt)
    rel = None
    if "rel_pos_bias.relative_position_bias_table" in sd:
        grid = images.shape[-1] // 16
        index = beit_relative_index(grid, grid)
        assert torch.equal(index, sd["rel_pos_bias.relative_position_index"])  # the file's own buffer
        rel = sd["rel_pos_bias.relative_position_bias_table"][index].permute(2, 0, 1)
    blocks, tokens = reference_forward(sd, images, eps=eps, rel_bias=rel, **kw)
    npfx = 2 if "dist_token" in sd else 1
    out = {
        "embedding": tokens[:, npfx:].mean(1),
        "cls_token": tokens[:, 0],
        "tokens": tokens,
        "blocks": blocks,
    }
    if name == "mocov3":
        out["projection"] = moco_projector(head, tokens[:, 0])
    elif name in ("dino", "ibot"):
        out["projection"] = dino_projection(head, tokens[:, 0])
    elif name == "vit-in21k":
        out["projection"] = tokens[:, 0] @ head["weight"].T + head["bias"]
    return out


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("official")
    out = {n: write_official_checkpoint(n, folder / f"{n}.pth", seed=7, **TINY_ARCH) for n in SYNTHETIC_NAMES}
    for n in ("dino", "ibot"):
        out[n + "-backbone"] = write_official_checkpoint(
            n, folder / f"{n}_backbone.pth", seed=7, backbone_only=True, **TINY_ARCH
        )
    return out


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def load(name: str, path: Path, **kw) -> torch.nn.Module:
    return load_encoder(name, checkpoint=path, **TINY_ARCH, **kw)


# ---- features against the reference ---------------------------------------------------------------
@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_official_layout_features_match_reference(name: str, files: dict, images: torch.Tensor) -> None:
    ckpt = torch.load(files[name], weights_only=False)
    enc = load(name, files[name], protocol="clean")
    got = enc.extract(images, tokens=True)
    eps = 1e-6
    want = reference_features(name, ckpt, images, eps=eps)
    assert set(got) == {"embedding", "cls_token", "tokens"} | (
        {"projection"} if "projection" in want else set()
    )
    for key in got:
        assert got[key].shape == want[key].shape, key
        torch.testing.assert_close(got[key], want[key], atol=ATOL, rtol=1e-4, msg=f"{name} {key}")
    # block outputs in one pass = the reference's raw block outputs
    blocks = enc.block_tokens(images, [0, 1])
    for got_b, want_b in zip(blocks, want["blocks"], strict=True):
        torch.testing.assert_close(got_b, want_b, atol=ATOL, rtol=1e-4)
    assert enc.checkpoint_sha256 is not None and len(enc.checkpoint_sha256) == 64


def test_projection_sizes_are_read_from_the_file(files: dict, images: torch.Tensor) -> None:
    assert load("mocov3", files["mocov3"]).extract(images)["projection"].shape == (2, 32)
    assert load("dino", files["dino"]).extract(images)["projection"].shape == (2, 512)
    assert load("ibot", files["ibot"]).extract(images)["projection"].shape == (2, 256)
    path = write_official_checkpoint("dino", files["dino"].parent / "dino_big.pth", out_dim=96, hidden_dim=48)
    assert load("dino", path).extract(images)["projection"].shape == (2, 96)


@pytest.mark.parametrize("name", ["dino", "ibot"])
def test_teacher_is_used_not_student(name: str, files: dict, images: torch.Tensor) -> None:
    ckpt = torch.load(files[name], weights_only=False)
    teacher, student = strip(ckpt["teacher"], "backbone."), strip(ckpt["student"], "module.backbone.")
    assert not torch.equal(teacher["blocks.0.attn.qkv.weight"], student["blocks.0.attn.qkv.weight"])
    assert not torch.equal(ckpt["student"]["module.head.last_layer.weight_g"], torch.ones(1))
    got = load(name, files[name]).extract(images)
    _, from_student = reference_forward(student, images)
    assert not torch.allclose(got["cls_token"], from_student[:, 0], atol=1e-2)
    torch.testing.assert_close(
        got["cls_token"], reference_forward(teacher, images)[1][:, 0], atol=ATOL, rtol=1e-4
    )


@pytest.mark.parametrize("name", ["dino", "ibot"])
def test_backbone_only_files_load_without_projection(name: str, files: dict, images: torch.Tensor) -> None:
    ckpt = torch.load(files[name + "-backbone"], weights_only=False)
    sd = ckpt["state_dict"] if name == "ibot" else ckpt
    got = load(name, files[name + "-backbone"]).extract(images)
    assert "projection" not in got
    torch.testing.assert_close(got["cls_token"], reference_forward(sd, images)[1][:, 0], atol=ATOL, rtol=1e-4)


def test_matches_timm_forward_features(files: dict, images: torch.Tensor) -> None:
    """Our token pipeline at 224 equals timm's own forward_features (clean protocol)."""
    for name in ("deit-distilled", "beit", "cae"):
        enc = load(name, files[name], protocol="clean")
        want = enc.backbone.forward_features(images)
        torch.testing.assert_close(enc.extract(images, tokens=True)["tokens"], want, atol=1e-5, rtol=1e-5)


# ---- protocol switches -----------------------------------------------------------------------------
def test_mae_study_shuffle_is_seeded_repeatable_and_differs_from_clean(
    files: dict, images: torch.Tensor
) -> None:
    study, clean = load("mae", files["mae"]), load("mae", files["mae"], protocol="clean")
    a, b = study.extract(images), study.extract(images)
    torch.testing.assert_close(a["embedding"], b["embedding"], atol=0, rtol=0)
    assert not torch.allclose(a["embedding"], clean.extract(images)["embedding"], atol=1e-3)
    # the study's random_masking(x, 0): argsort of uniform noise, applied before the position embedding
    noise = torch.rand(2, 196, generator=torch.Generator().manual_seed(0))
    ckpt = torch.load(files["mae"], weights_only=False)
    want = reference_features("mae", ckpt, images, permutation=noise.argsort(dim=1))
    torch.testing.assert_close(a["embedding"], want["embedding"], atol=ATOL, rtol=1e-4)
    # segmentation maps are never shuffled
    for got_map, want_map in zip(
        study.layer_maps(images, (0, 1)), clean.layer_maps(images, (0, 1)), strict=True
    ):
        torch.testing.assert_close(got_map, want_map, atol=0, rtol=0)


def test_cae_layer_norm_eps_by_protocol(files: dict, images: torch.Tensor) -> None:
    ckpt = torch.load(files["cae"], weights_only=False)
    small = images * 1e-3  # tiny activations make eps matter
    for protocol, eps, other in (("study", 1e-5, 1e-6), ("clean", 1e-6, 1e-5)):
        enc = load("cae", files["cae"], protocol=protocol)
        norms = [m for m in enc.backbone.modules() if isinstance(m, torch.nn.LayerNorm)]
        assert norms and all(m.eps == eps for m in norms)
        got = enc.extract(small)["cls_token"]
        want = reference_features("cae", ckpt, small, eps=eps)["cls_token"]
        wrong = reference_features("cae", ckpt, small, eps=other)["cls_token"]
        torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-4)
        assert (got - wrong).abs().max() > 10 * (got - want).abs().max()


def test_normalisation_by_protocol() -> None:
    study = load_encoder("vit-in21k", checkpoint="random", **TINY_ARCH)
    clean = load_encoder("vit-in21k", checkpoint="random", protocol="clean", **TINY_ARCH)
    assert study.mean == (0.485, 0.456, 0.406) and study.std == (0.229, 0.224, 0.225)
    assert clean.mean == (0.5, 0.5, 0.5) and clean.std == (0.5, 0.5, 0.5)
    assert study.protocol == "study" and clean.checkpoint_sha256 is None


# ---- registry and small helpers -----------------------------------------------------------------------
def test_registry_entries() -> None:
    names = [s.name for s in list_encoders()]
    assert sorted(names) == sorted(
        ["deit", "deit-distilled", "vit-in21k", "mocov3", "dino", "beit", "mae", "cae", "ibot"]
    )
    assert get_encoder_spec("deit").files[0].sha256_prefix == "b5f2ef4d"
    assert get_encoder_spec("deit-distilled").files[0].sha256_prefix == "df68dfff"
    assert get_encoder_spec("beit").files[0].kind == "gdrive-folder"
    assert get_encoder_spec("cae").files[0].filename == "cae_base_1600ep.pth"
    assert {s.name for s in list_encoders() if s.has_projection} == {"vit-in21k", "mocov3", "dino", "ibot"}
    assert all(s.files and s.files[0].url.startswith("https://") for s in list_encoders())
    with pytest.raises(PartbenchError, match="unknown encoder 'dinov9'"):
        get_encoder_spec("dinov9")


def test_encoder_is_frozen_and_reports_its_shape() -> None:
    enc = load_encoder("mocov3", checkpoint="random", embed_dim=32, depth=4, num_heads=4)
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training
    assert (enc.embed_dim, enc.num_blocks, enc.patch_size) == (32, 4, 16)
    assert enc.default_seg_layers == (0, 1, 2, 3)
    maps = enc.layer_maps(torch.randn(1, 3, 32, 48))  # default layers: default_seg_layers
    assert [tuple(m.shape) for m in maps] == [(1, 32, 2, 3)] * 4


def test_default_seg_layers() -> None:
    assert default_seg_layers(12) == (3, 5, 7, 11)
    assert default_seg_layers(24) == (7, 11, 15, 23)
    assert default_seg_layers(2) == (0, 0, 0, 1)


def test_parse_arch() -> None:
    assert parse_arch("embed_dim=64,depth=2,num_heads=4") == {"embed_dim": 64, "depth": 2, "num_heads": 4}
    assert parse_arch("mlp_ratio=2.5, qkv_bias=false,global_pool=avg") == {
        "mlp_ratio": 2.5,
        "qkv_bias": False,
        "global_pool": "avg",
    }
    assert parse_arch("") == {}
    with pytest.raises(PartbenchError, match="key=value"):
        parse_arch("depth")


def test_timm_any_model_random_and_from_file(tmp_path: Path, images: torch.Tensor) -> None:
    import timm

    arch = {"embed_dim": 48, "depth": 2, "num_heads": 3}
    enc = load_encoder("timm:vit_small_patch16_224", checkpoint="random", **arch)
    assert enc.extract(images)["embedding"].shape == (2, 48)
    model = timm.create_model("vit_small_patch16_224", num_classes=5, **arch)
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, tmp_path / "m.pth")
    enc = load_encoder("timm:vit_small_patch16_224", checkpoint=tmp_path / "m.pth", **arch)
    torch.testing.assert_close(
        enc.extract(images, tokens=True)["tokens"], model.eval().forward_features(images)
    )
    with pytest.raises(PartbenchError, match="unknown timm model"):
        get_encoder_spec("timm:not_a_model_xyz")


def test_official_checkpoint_layouts_have_the_extra_modules() -> None:
    moco = official_checkpoint("mocov3")["state_dict"]
    assert any(k.startswith("module.momentum_encoder.") for k in moco)
    assert "module.predictor.4.running_var" in moco and "module.predictor.4.weight" not in moco
    assert (
        "module.base_encoder.head.7.running_mean" in moco and "module.base_encoder.head.7.weight" not in moco
    )
    beit = official_checkpoint("beit")
    assert {"model", "optimizer", "epoch", "scaler", "args"} <= set(beit)
    assert {"mask_token", "lm_head.weight", "rel_pos_bias.relative_position_index"} <= set(beit["model"])
    assert "pos_embed" not in beit["model"]
    cae = official_checkpoint("cae")["model"]
    assert "mask_token" in cae and any(
        k.startswith(("regresser.", "decoder.", "teacher_network.")) for k in cae
    )
    mae = official_checkpoint("mae")["model"]
    assert torch.equal(mae["pos_embed"][0, 0], torch.zeros(TINY_ARCH["embed_dim"]))
    dino = official_checkpoint("dino")
    assert torch.equal(dino["teacher"]["head.last_layer.weight_g"], torch.ones(512, 1))


# ---- segmentation feature maps at other input sizes ---------------------------------------------------
def maps_from_tokens(tokens: torch.Tensor, rows: int, cols: int, npfx: int = 1) -> torch.Tensor:
    return tokens[:, npfx:].transpose(1, 2).reshape(tokens.shape[0], -1, rows, cols)


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_layer_maps_at_any_size(name: str, files: dict) -> None:
    enc = load(name, files[name], protocol="clean")
    x = torch.randn(2, 3, 96, 128)
    maps = enc.layer_maps(x, enc.default_seg_layers)
    assert [tuple(m.shape) for m in maps] == [(2, TINY_ARCH["embed_dim"], 6, 8)] * 4
    assert all(torch.isfinite(m).all() for m in maps)
    # the maps are the raw block outputs (checked against the reference above), patch tokens only
    tokens = enc.block_tokens(x, [0, 1])
    for got, block in zip(enc.layer_maps(x, (0, 1)), tokens, strict=True):
        torch.testing.assert_close(got, maps_from_tokens(block, 6, 8, enc.num_prefix_tokens), atol=0, rtol=0)


def test_bicubic_families_resize_without_antialias(files: dict) -> None:
    """MAE/mmseg `interpolate_pos_embed` = timm's resampler with antialias=False (an independent code)."""
    from timm.layers import resample_abs_pos_embed

    sd = torch.load(files["mae"], weights_only=False)["model"]
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    got = load("mae", files["mae"]).layer_maps(x, (1,))[0]
    pos = resample_abs_pos_embed(sd["pos_embed"], new_size=[6, 8], num_prefix_tokens=1, antialias=False)
    want = maps_from_tokens(reference_forward(sd, x, pos_embed=pos)[0][1], 6, 8)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-4)
    pos_aa = resample_abs_pos_embed(sd["pos_embed"], new_size=[6, 8], num_prefix_tokens=1, antialias=True)
    other = maps_from_tokens(reference_forward(sd, x, pos_embed=pos_aa)[0][1], 6, 8)
    assert not torch.allclose(got, other, atol=1e-3)


def test_dino_uses_runtime_interpolation_with_the_scale_factor_trick(files: dict) -> None:
    sd = strip(torch.load(files["dino"], weights_only=False)["teacher"], "backbone.")
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(4))
    got = load("dino", files["dino"]).layer_maps(x, (1,))[0]
    grid = sd["pos_embed"][:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=(6.1 / 14, 8.1 / 14), mode="bicubic")  # DINO: (h0+0.1)/sqrt(N)
    pos = torch.cat([sd["pos_embed"][:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
    want = maps_from_tokens(reference_forward(sd, x, pos_embed=pos)[0][1], 6, 8)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-4)
    mmseg = F.interpolate(
        sd["pos_embed"][:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2), size=(6, 8), mode="bicubic"
    )
    pos_mmseg = torch.cat([sd["pos_embed"][:, :1], mmseg.flatten(2).transpose(1, 2)], dim=1)
    other = maps_from_tokens(reference_forward(sd, x, pos_embed=pos_mmseg)[0][1], 6, 8)
    assert not torch.allclose(got, other, atol=1e-3)


def test_beit_smaller_window_uses_the_trained_offsets(files: dict) -> None:
    """A 6x8 window only needs offsets the 14x14 model was trained with: the bias is the trained table
    indexed at those offsets (rows (dr+13)*27 + (dc+13), cls rows unchanged)."""
    sd = torch.load(files["beit"], weights_only=False)["model"]
    table = sd["rel_pos_bias.relative_position_bias_table"]
    small = beit_relative_index(6, 8)  # indexes a (11*15 + 3)-row table
    dr, dc = small // 15 - 5, small % 15 - 7
    index = (dr + 13) * 27 + (dc + 13)
    index[0, :], index[:, 0], index[0, 0] = 27 * 27, 27 * 27 + 1, 27 * 27 + 2
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(5))
    got = load("beit", files["beit"]).layer_maps(x, (1,))[0]
    want = maps_from_tokens(reference_forward(sd, x, rel_bias=table[index].permute(2, 0, 1))[0][1], 6, 8)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-4)


def test_beit_larger_window_geometric_progression(files: dict) -> None:
    from partbench.encoders.posembed import _progression_offsets, resize_rel_pos_table

    # BEiT: q solves 1 + q + ... + q^12 = dst//2, the trained offsets spread over the new window
    offsets = _progression_offsets(27, 63)
    assert len(offsets) == 27 and offsets[13] == 0 and abs(offsets[-1] - 31) < 1e-3
    assert all(b - a >= 1 for a, b in itertools.pairwise(offsets))
    table = torch.load(files["beit"], weights_only=False)["model"][
        "rel_pos_bias.relative_position_bias_table"
    ]
    big = resize_rel_pos_table(table, (14, 14), (16, 20))
    assert big.shape == (31 * 39 + 3, HEADS)
    torch.testing.assert_close(big[-3:], table[-3:])  # cls rows kept
    torch.testing.assert_close(big[15 * 39 + 19], table[13 * 27 + 13])  # offset (0, 0) is a knot
    enc = load("beit", files["beit"])
    maps = enc.layer_maps(torch.randn(1, 3, 256, 320), (1,))
    assert maps[0].shape == (1, TINY_ARCH["embed_dim"], 16, 20) and torch.isfinite(maps[0]).all()


def test_resized_tables_are_cached_per_size(files: dict) -> None:
    enc = load("mae", files["mae"])
    x = torch.randn(1, 3, 96, 128)
    first = enc.layer_maps(x, (0,))[0]
    assert len(enc._pos_cache) == 1
    torch.testing.assert_close(enc.layer_maps(x, (0,))[0], first, atol=0, rtol=0)
    enc.layer_maps(torch.randn(1, 3, 64, 64), (0,))
    assert len(enc._pos_cache) == 2


def test_bad_inputs_to_the_forward(files: dict) -> None:
    enc = load("mae", files["mae"])
    with pytest.raises(PartbenchError, match="not divisible by the patch size 16"):
        enc.layer_maps(torch.randn(1, 3, 100, 128))
    with pytest.raises(PartbenchError, match=r"block 5 out of range 0\.\.1"):
        enc.block_tokens(torch.randn(1, 3, 64, 64), [5])


def test_weight_norm_fold_matches_torch_weight_norm(tmp_path: Path, images: torch.Tensor) -> None:
    from partbench.encoders.heads import fold_weight_norm

    layer = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(8, 5, bias=False))
    with torch.no_grad():
        layer.parametrizations.weight.original0.copy_(torch.rand(5, 1) + 0.5)  # weight_g
    g, v = layer.parametrizations.weight.original0, layer.parametrizations.weight.original1
    torch.testing.assert_close(fold_weight_norm(g, v), layer.weight)
    # a teacher whose weight_g is not 1 (norm_last_layer=False) is folded with its g
    ckpt = official_checkpoint("dino", seed=3)
    ckpt["teacher"]["head.last_layer.weight_g"] = torch.rand(512, 1) + 0.5
    torch.save(ckpt, tmp_path / "dino_g.pth")
    got = load("dino", tmp_path / "dino_g.pth").extract(images)["projection"]
    torch.testing.assert_close(
        got, reference_features("dino", ckpt, images)["projection"], atol=ATOL, rtol=1e-4
    )
