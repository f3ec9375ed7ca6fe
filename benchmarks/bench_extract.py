"""Benchmark `partbench extract` against a naive baseline measured in the same run.

Data: a CUB twin written by `partbench.datasets.synth_parts.write_cub`, upscaled to real CUB image
sizes (~480x400 px, JPEG) with its keypoints scaled alike, so decoding costs what it costs on CUB.
Encoder: a tiny DINO checkpoint in the official layout (embed_dim 64, depth 2, 4 heads) unless
`--arch` says otherwise.

Measured (patches per second):
1. data pipeline, naive: for every patch, decode the full image, crop, resize, ToTensor+Normalize
   one patch at a time (batch 1, no workers);
2. data pipeline, partbench: `PatchImageDataset` (one decode per image, all its parts) in a
   DataLoader with workers, `collate_patch_groups` (and once without workers, to show the
   decode-once gain alone);
3. extraction, naive: (1) followed by `enc.extract` on each patch alone;
4. extraction, partbench: `extract_features` into a fresh cache (shards, finalisation included);
5. a repeated `partbench extract` on the complete cache (whole command, wall clock).

Usage: .venv/bin/python benchmarks/bench_extract.py [--images 120] [--workers 2] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T

from partbench.config import IMAGENET_MEAN, IMAGENET_STD
from partbench.datasets import PatchImageDataset, collate_patch_groups, part_images_dir, part_patches
from partbench.datasets.synth_parts import write_cub
from partbench.encoders import load_encoder, parse_arch
from partbench.encoders.synthetic import write_official_checkpoint
from partbench.features import extract_features

SCALE = 2.5  # synthetic CUB images are 192x160; real CUB images are ~500x375


def write_cub_twin(root: Path, n_images: int) -> Path:
    """A synthetic CUB set with images and keypoints scaled by `SCALE` (real-size JPEGs)."""
    write_cub(root, seed=0, n_images=n_images)
    for path in (root / "images").rglob("*.jpg"):
        img = Image.open(path).convert("RGB")
        img.resize((round(img.width * SCALE), round(img.height * SCALE)), Image.BICUBIC).save(
            path, quality=90
        )
    locs = root / "parts" / "part_locs.txt"
    rows = []
    for line in locs.read_text().splitlines():
        img_id, part, x, y, vis = line.split()
        rows.append(f"{img_id} {part} {float(x) * SCALE:.1f} {float(y) * SCALE:.1f} {vis}")
    locs.write_text("\n".join(rows) + "\n")
    return root


def naive_patches(items: list, images_dir: Path):
    """The baseline: a full decode per patch and batch-1 torchvision preprocessing."""
    tf = T.Compose(
        [
            T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    for it in items:
        img = Image.open(images_dir / it.image).convert("RGB")
        yield tf(img.crop(it.box)).unsqueeze(0)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--arch", default="embed_dim=64,depth=2,num_heads=4")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        tmp = Path(tmp)
        root = write_cub_twin(tmp / "cub", args.images)
        arch = parse_arch(args.arch)
        ckpt = write_official_checkpoint("dino", tmp / "dino.pth", seed=0, **arch)
        items = part_patches("cub-parts", root, split="retrieval")
        images_dir = part_images_dir("cub-parts", root, "retrieval")
        n = len(items)
        print(f"{args.images} images, {n} part patches, encoder dino {args.arch}, {args.workers} workers")

        # 1-2: the data pipeline alone
        t_naive_data, _ = timed(lambda: sum(x.shape[0] for x in naive_patches(items, images_dir)))
        loader = DataLoader(
            PatchImageDataset(items, images_dir),
            batch_size=max(1, args.batch_size // 3),
            num_workers=args.workers,
            collate_fn=collate_patch_groups,
            prefetch_factor=4 if args.workers else None,
        )
        t_ours_data, got = timed(lambda: sum(x.shape[0] for x, _ in loader))
        assert got == n
        dataset = PatchImageDataset(items, images_dir)
        single = DataLoader(dataset, batch_size=1, collate_fn=collate_patch_groups)
        t_ours_data0, _ = timed(lambda: sum(x.shape[0] for x, _ in single))  # decode-once gain alone

        # 3-4: the whole extraction
        enc = load_encoder("dino", checkpoint=ckpt, **arch).to(args.device)

        def naive_extract() -> int:
            for x in naive_patches(items, images_dir):
                enc.extract(x.to(args.device))
            return n

        t_naive_ext, _ = timed(naive_extract)
        common = dict(checkpoint=ckpt, arch=args.arch, data_root=root, device=args.device)
        t_ours_ext, _ = timed(
            lambda: extract_features(
                "dino", "cub-parts", "retrieval", features_dir=tmp / "features", batch_size=args.batch_size,
                num_workers=args.workers, progress=False, **common,
            )
        )  # fmt: skip

        # 5: the cached path, as a user runs it
        cmd = [sys.executable, "-m", "partbench", "extract", "--model", "dino", "--dataset", "cub-parts"]
        cmd += ["--checkpoint", str(ckpt), "--arch", args.arch, "--data-root", str(root)]
        cmd += ["--features-dir", str(tmp / "features"), "--device", args.device]
        walls = []
        for _ in range(3):
            t, out = timed(lambda: subprocess.run(cmd, capture_output=True, text=True, check=True))
            assert out.stdout.startswith("cached"), out.stdout
            walls.append(t)

    rows = [
        ("data, no workers", n / t_naive_data, n / t_ours_data0),
        ("data pipeline", n / t_naive_data, n / t_ours_data),
        ("whole extraction", n / t_naive_ext, n / t_ours_ext),
    ]
    print(f"{'':18s} {'naive p/s':>10s} {'partbench p/s':>14s} {'ratio':>6s}")
    for name, naive, ours in rows:
        print(f"{name:18s} {naive:10.1f} {ours:14.1f} {ours / naive:5.1f}x")
    print(f"cached re-run (whole `partbench extract` command): median {np.median(walls):.2f} s")


if __name__ == "__main__":
    main()
