"""`partbench run --suite smoke|paper`: every stage in order, for people who do not use DVC.

Stages: `prepare` (smoke: synthetic data sets and tiny encoders in the official checkpoint layouts;
paper: `partbench.fetch`), `extract`, `retrieval`, `classify`, `segment`, `report`. Any stage can
run alone for some encoders and data sets (`run_suite("smoke", stages=["extract"], models=["dino"],
datasets=["cub-parts"])`): the DVC stages in `dvc.yaml` call exactly that, one matrix cell each.

Outputs of a suite live under `<workdir>/<suite.root>/`: `features/`, `results/`, `runs/`,
`reports/` (the smoke suite also keeps its `data/` and `checkpoints/` there; the paper suite's
downloads go to `$PARTBENCH_HOME`, which the DVC stages set to the repository root).
"""

from __future__ import annotations

import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from partbench import __version__
from partbench.config import checkpoints_dir, data_dir
from partbench.fsutil import atomic_write_json
from partbench.suites import PART_DATASETS, SEG_DATASETS, Suite, SuiteError, resolve_suite

STAGES = ("prepare", "extract", "retrieval", "classify", "segment", "report")
TINY_STAMP = ".partbench-smoke.json"

Log = Callable[[str], None]


@dataclass(frozen=True)
class SuitePaths:
    """Where one suite reads and writes."""

    root: Path
    data: Path
    checkpoints: Path
    features: Path
    results: Path
    runs: Path
    reports: Path

    @classmethod
    def of(cls, suite: Suite, workdir: Path) -> SuitePaths:
        root = Path(workdir) / suite.root
        synthetic = suite.data == "synthetic"
        return cls(
            root=root,
            data=root / "data" if synthetic else data_dir(),
            checkpoints=root / "checkpoints" if synthetic else checkpoints_dir(),
            features=root / "features",
            results=root / "results",
            runs=root / "runs",
            reports=root / "reports",
        )


@dataclass
class Step:
    stage: str
    model: str | None
    dataset: str | None
    seconds: float
    outputs: list[Path] = field(default_factory=list)
    cpu_seconds: float = 0.0


@dataclass
class RunSummary:
    """What `run_suite` did."""

    suite: Suite
    source: str  # "params.yaml" path or "built-in"
    paths: SuitePaths
    steps: list[Step] = field(default_factory=list)
    report: Path | None = None
    seconds: float = 0.0

    def describe(self) -> str:
        n_results = sum(len(s.outputs) for s in self.steps if s.stage in ("retrieval", "classify", "segment"))
        return (
            f"suite {self.suite.name} ({self.source}): {len(self.steps)} steps, {n_results} result files "
            f"under {self.paths.results} in {self.seconds:.0f} s"
        )


def tiny_seed(suite: Suite, model: str) -> int:
    """A per-encoder seed (stable across runs) so the tiny encoders differ from one another."""
    return suite.seed * 100_003 + zlib.crc32(model.encode()) % 100_000


def checkpoint_for(suite: Suite, paths: SuitePaths, model: str) -> str | Path | None:
    """Smoke: the tiny checkpoint we wrote ('random' for timm models); paper: the registry's file."""
    if suite.data == "synthetic":
        return "random" if model.startswith("timm:") else paths.checkpoints / f"{model}.pth"
    return None


def _data_root(suite: Suite, paths: SuitePaths, dataset: str) -> Path | None:
    return paths.data / dataset if suite.data == "synthetic" else None


def _stamp_ok(path: Path, expected: dict[str, Any]) -> bool:
    import json

    try:
        return json.loads(path.read_text()) == expected
    except (OSError, ValueError):
        return False


def prepare(suite: Suite, paths: SuitePaths, models: Sequence[str], datasets: Sequence[str]) -> list[Path]:
    """Smoke: synthetic data sets + tiny official-layout checkpoints (skipped when already written
    with the same seed, scale, architecture and partbench version). Paper: `partbench.fetch`."""
    if suite.data == "download":
        from partbench.fetch import Status, fetch

        records = fetch([m for m in models if not m.startswith("timm:")], list(datasets))
        failed = [r for r in records if r.status == Status.FAILED]
        if failed:
            raise SuiteError(f"fetch failed for {failed[0].item} ({failed[0].filename}: {failed[0].detail})")
        return [r.path for r in records if r.path is not None]
    from partbench.datasets.synth import write_synthetic
    from partbench.encoders.synthetic import write_official_checkpoint

    outputs: list[Path] = []
    stamp = {"seed": suite.seed, "scale": suite.synthetic_scale, "version": __version__}
    if not _stamp_ok(paths.data / TINY_STAMP, stamp):
        write_synthetic(paths.data, seed=suite.seed, scale=suite.synthetic_scale)
        atomic_write_json(paths.data / TINY_STAMP, stamp)
    outputs.append(paths.data)
    for model in models:
        if model.startswith("timm:"):
            continue
        path = paths.checkpoints / f"{model}.pth"
        expected = {"seed": tiny_seed(suite, model), "arch": suite.arch, "version": __version__}
        stamp_path = path.with_suffix(".json")
        if not (path.is_file() and _stamp_ok(stamp_path, expected)):
            write_official_checkpoint(model, path, seed=expected["seed"], **suite.arch)
            atomic_write_json(stamp_path, expected)
        outputs.append(path)
    return outputs


def extract(
    suite: Suite, paths: SuitePaths, model: str, dataset: str, device: str, progress: bool
) -> list[Path]:
    """Feature caches of a part data set: `retrieval`, and `train`/`val` (with tokens for attentive)."""
    from partbench.features import extract_features

    splits = [("retrieval", False)]
    if suite.classify.heads:
        tokens = "attentive" in suite.classify.heads
        splits += [("train", tokens), ("val", tokens)]
    return [
        extract_features(
            model,
            dataset,
            split,
            checkpoint=checkpoint_for(suite, paths, model),
            arch=suite.arch or None,
            protocol=suite.protocol,
            data_root=_data_root(suite, paths, dataset),
            features_dir=paths.features,
            device=device,
            batch_size=suite.extract.batch_size,
            num_workers=suite.extract.num_workers,
            dtype=suite.extract.dtype,
            tokens=tokens,
            progress=progress,
        )
        for split, tokens in splits
    ]


def retrieval(
    suite: Suite,
    paths: SuitePaths,
    model: str,
    dataset: str,
    device: str,
    features: Sequence[str] | None,
    log: Log | None,
) -> list[Path]:
    from partbench.probes.retrieval import run_retrieval

    return run_retrieval(
        model,
        dataset,
        features_dir=paths.features,
        results_dir=paths.results,
        features=features,
        protocol=suite.protocol,
        bootstrap=suite.retrieval.bootstrap,
        seed=suite.seed,
        device=device,
        suite=suite.name,
        log=log,
    )


def classify(suite: Suite, paths: SuitePaths, model: str, dataset: str, device: str) -> list[Path]:
    from partbench.probes.classify import run_classify

    return [
        run_classify(
            model,
            dataset,
            head=head,
            features_dir=paths.features,
            results_dir=paths.results,
            epochs=suite.classify.epochs,
            batch_size=suite.classify.batch_size,
            seed=suite.seed,
            device=device,
            protocol=suite.protocol,
            suite=suite.name,
        )
        for head in suite.classify.heads
    ]


def segment(
    suite: Suite, paths: SuitePaths, model: str, dataset: str, device: str, progress: bool
) -> list[Path]:
    from partbench.probes.segment import run_segment

    p = suite.segment
    out = run_segment(
        model,
        dataset,
        checkpoint=checkpoint_for(suite, paths, model),
        arch=suite.arch or None,
        data_root=_data_root(suite, paths, dataset),
        iters=p.iters,
        batch_size=p.batch_size,
        crop=p.crop,
        mode=p.mode,
        eval_every=p.eval_every,
        ckpt_every=p.ckpt_every,
        runs_dir=paths.runs,
        results_dir=paths.results,
        protocol=suite.protocol,
        device=device,
        num_workers=p.num_workers,
        seed=suite.seed,
        bootstrap=p.bootstrap,
        suite=suite.name,
        progress=progress,
    )
    return [out] if out is not None else []


def _select(
    given: Sequence[str] | None, default: Sequence[str], known: Sequence[str], what: str
) -> list[str]:
    if given is None:
        return list(default)
    unknown = [g for g in given if g not in known]
    if unknown:
        raise SuiteError(f"unknown {what} {unknown[0]!r} (known: {', '.join(known)})")
    return list(dict.fromkeys(given))


def run_suite(
    suite: str = "smoke",
    models: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    workdir: Path = Path("."),
    params: Path | None = None,
    stages: Sequence[str] | None = None,
    device: str | None = None,
    features: Sequence[str] | None = None,
    heads: Sequence[str] | None = None,
    progress: bool = True,
    log: Log | None = None,
) -> RunSummary:
    """Run the stages of `suite` in order (all by default) for its encoders and data sets.

    `params`: a params.yaml (default `<workdir>/params.yaml` when present, else the built-in suites).
    `models`/`datasets`/`stages` narrow the run, as do `features` (retrieval: embedding, cls_token,
    projection; default every feature the cache has) and `heads` (classify: linear, attentive);
    `device` overrides the suite's.
    """
    from partbench.encoders import get_encoder_spec

    workdir = Path(workdir)
    spec, source = resolve_suite(suite, params, workdir)
    chosen_models = list(dict.fromkeys(models)) if models is not None else list(spec.models)
    for m in chosen_models:
        get_encoder_spec(m)  # unknown names fail here, before any work
    all_sets = (*PART_DATASETS, *SEG_DATASETS)
    chosen_sets = _select(datasets, (*spec.part_datasets, *spec.seg_datasets), all_sets, "data set")
    chosen_stages = _select(stages, STAGES, STAGES, "stage")
    if heads is not None:
        classify_heads = tuple(_select(heads, spec.classify.heads, ("linear", "attentive"), "head"))
        spec = replace(spec, classify=replace(spec.classify, heads=classify_heads))
    if features is not None:
        features = _select(features, (), ("embedding", "cls_token", "projection"), "retrieval feature")
    dev = device or spec.device
    paths = SuitePaths.of(spec, workdir)
    summary = RunSummary(spec, source, paths)
    show = progress and sys.stderr.isatty()
    start = time.perf_counter()
    part_sets = [d for d in chosen_sets if d in PART_DATASETS]
    seg_sets = [d for d in chosen_sets if d in SEG_DATASETS]

    def step(stage: str, model: str | None, dataset: str | None, fn: Callable[[], list[Path]]) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        outputs = fn()
        done = Step(stage, model, dataset, time.perf_counter() - t0, outputs, time.process_time() - c0)
        summary.steps.append(done)
        if log:
            where = "".join(f" {x}" for x in (model, dataset) if x)
            log(f"{stage}{where}: {done.seconds:.1f} s ({done.cpu_seconds:.1f} s CPU)")

    for stage in chosen_stages:
        if stage == "prepare":
            step(stage, None, None, lambda: prepare(spec, paths, chosen_models, chosen_sets))
        elif stage == "report":
            from partbench.report import build_report

            def _report() -> list[Path]:
                return build_report(paths.results, None, paths.reports, suite=spec.name).files

            step(stage, None, None, _report)
            summary.report = paths.reports / "report.md"
        else:
            sets = seg_sets if stage == "segment" else part_sets
            for model in chosen_models:
                for ds in sets:
                    call = _stage_call(stage, spec, paths, model, ds, dev, show, features, log)
                    step(stage, model, ds, call)
    summary.seconds = time.perf_counter() - start
    return summary


def _stage_call(
    stage: str,
    suite: Suite,
    paths: SuitePaths,
    model: str,
    dataset: str,
    device: str,
    show: bool,
    features: Sequence[str] | None,
    log: Log | None,
) -> Callable[[], list[Path]]:
    calls: dict[str, Callable[[], list[Path]]] = {
        "extract": lambda: extract(suite, paths, model, dataset, device, show),
        "retrieval": lambda: retrieval(suite, paths, model, dataset, device, features, log),
        "classify": lambda: classify(suite, paths, model, dataset, device),
        "segment": lambda: segment(suite, paths, model, dataset, device, show),
    }
    return calls[stage]
