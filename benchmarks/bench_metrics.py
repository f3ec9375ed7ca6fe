"""Time `retrieval_ap` against the study's retrieval AP and a plain per-query sklearn loop.

The study (`pr_patch_retrieval.py`, `calc_acc`) computes cosine similarity by broadcasting
`F.cosine_similarity(x[:, None], feats[None], 2)` over batches of 16 queries, then calls
`sklearn.metrics.average_precision_score` once per query. The plain loop keeps the per-query sklearn
calls but gets the similarities from one matrix product. All three run here, on the same random
features (D=768, 4 classes), and the per-query APs are checked against each other.

    .venv/bin/python benchmarks/bench_metrics.py              # N = 4000 and 8000
    .venv/bin/python benchmarks/bench_metrics.py --sizes 2000 --threads 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from partbench.metrics import retrieval_ap


def study_method(feats: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    """The study's loop: broadcast cosine similarity in batches of 16, one sklearn call per query."""
    sims: list[torch.Tensor] = []
    for x in feats.split(16):
        sims.extend(F.cosine_similarity(x[:, None], feats[None], 2))
    return np.array([average_precision_score(labels == labels[i], s.numpy()) for i, s in enumerate(sims)])


def plain_loop(feats: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    """One matrix product for the similarities, then one sklearn call per query."""
    unit = F.normalize(feats, dim=1)
    sims = (unit @ unit.T).numpy()
    return np.array([average_precision_score(labels == labels[i], sims[i]) for i in range(len(labels))])


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000, 8000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--skip-study", action="store_true", help="skip the (slow) study method")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, D={args.dim}, {args.classes} classes"
    )
    head = ("N", "ours s", "plain s", "study s", "x plain", "x study")
    print(" ".join(f"{h:>8}" for h in head) + f" {'max |dAP|':>10}")
    for n in args.sizes:
        gen = torch.Generator().manual_seed(n)
        feats = torch.randn(n, args.dim, generator=gen)
        labels = torch.randint(0, args.classes, (n,), generator=gen).numpy()
        t_ours, res = timed(retrieval_ap, feats, labels, "study")
        t_plain, ref_plain = timed(plain_loop, feats, labels)
        diff = float(np.abs(res.per_query - ref_plain).max())
        if args.skip_study:
            t_study, x_study = float("nan"), float("nan")
        else:
            t_study, ref_study = timed(study_method, feats, labels)
            diff = max(diff, float(np.abs(res.per_query - ref_study).max()))
            x_study = t_study / t_ours
        print(
            f"{n:>8} {t_ours:>8.2f} {t_plain:>8.2f} {t_study:>8.2f} "
            f"{t_plain / t_ours:>8.1f} {x_study:>8.1f} {diff:>10.1e}"
        )


if __name__ == "__main__":
    main()
