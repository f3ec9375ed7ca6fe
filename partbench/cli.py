"""The `partbench` command line: thin Typer commands, each calling one function of a stage module.

Commands are grouped in sections below, one per stage module; the logic lives in those modules.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from partbench.errors import DatasetError, PartbenchError

app = typer.Typer(
    name="partbench",
    help="What do pretrained vision encoders know about object parts? fetch → extract → probe → report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
probe_app = typer.Typer(
    help="Probe cached features: retrieval, classify, segment, layers.", no_args_is_help=True
)
app.add_typer(probe_app, name="probe")
console = Console(stderr=True)


def _split_names(values: list[str] | None) -> list[str] | None:
    """`--models a,b --models c` -> [a, b, c]; None when not given."""
    if not values:
        return None
    return [name.strip() for v in values for name in v.split(",") if name.strip()]


# --- section: models (partbench.encoders) ----------------------------------------------------
@app.command("models")
def models_command() -> None:
    """List the encoder registry: official files, pinned hashes, and which are in the checkpoint cache."""
    from rich.table import Table

    from partbench.config import checkpoints_dir
    from partbench.encoders.registry import catalog_rows

    rows = catalog_rows()
    table = Table(title=f"encoders (cache: {checkpoints_dir()})")
    for column in ("name", "family", "file", "hash pinned", "present", "projection"):
        table.add_column(column)
    for row in rows:
        present = "[green]yes[/]" if row["present"] == "yes" else "no"
        table.add_row(row["name"], row["family"], row["file"], row["pinned"], present, row["projection"])
    Console().print(table)
    Console().print("also: timm:<model_name> for any timm ViT/BEiT model (e.g. timm:vit_small_patch16_224)")


# --- section: datasets, synth (partbench.datasets) -------------------------------------------


@app.command("datasets")
def datasets_cmd(
    check: Annotated[
        Path | None,
        typer.Option("--check", help="Validate each data set present under ROOT/<name>/: counts, problems."),
    ] = None,
) -> None:
    """The data set registry and what is present under $PARTBENCH_HOME/data; --check ROOT validates."""
    from rich.table import Table

    from partbench.config import data_dir
    from partbench.datasets.registry import dataset_rows

    out = Console(width=160)
    if check is None:
        table = Table(title=f"data sets (present under {data_dir()})")
        for col in ("name", "kind", "splits", "classes", "present", "description"):
            table.add_column(col)
        for info, present in dataset_rows():
            mark = "[green]yes[/]" if present else "[dim]no[/]"
            splits, n = ",".join(info.splits), str(info.num_classes)
            table.add_row(info.name, info.kind, splits, n, mark, info.description)
        out.print(table)
        return
    from partbench.datasets.check import check_all

    with console.status(f"checking the data sets under {check} …"):
        reports = check_all(check)
    if not reports:
        raise DatasetError(f"{check}: no registered data set folder found (expected ROOT/<name>/)")
    n_problems = 0
    for name, (counts, problems) in reports.items():
        out.print(f"[bold]{name}[/] ({check / name})", highlight=False)
        for key, per in counts.items():
            shown = ", ".join(f"{k}={v}" for k, v in list(per.items())[:12])
            more = f", … ({len(per)} in all)" if len(per) > 12 else ""
            out.print(f"  {key}: {shown}{more}", highlight=False)
        for problem in problems:
            out.print(f"  [red]problem:[/] {problem}", highlight=False, soft_wrap=True)
        n_problems += len(problems)
    if n_problems:
        raise DatasetError(f"{check}: {n_problems} problem(s) found in {len(reports)} data set(s)")
    out.print(f"{len(reports)} data set(s) checked, no problems")


@app.command("synth")
def synth_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder to write <dataset-name>/ layouts into.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same bytes).")] = 0,
    scale: Annotated[str, typer.Option("--scale", help="small (seconds) or medium.")] = "small",
) -> None:
    """Write every synthetic data set (each in its real on-disk format) under OUT."""
    from partbench.datasets.synth import write_synthetic

    with console.status(f"writing synthetic data sets ({scale}) to {out} …"):
        written = write_synthetic(out, seed=seed, scale=scale)
    for name, path in written.items():
        typer.echo(f"{name}: {path}")


# --- section: fetch (partbench.fetch) --------------------------------------------------------


@app.command("fetch")
def fetch_cmd(
    models: Annotated[
        list[str] | None, typer.Option("--models", "-m", help="Encoders (repeat or comma-separate; 'all').")
    ] = None,
    datasets: Annotated[
        list[str] | None,
        typer.Option("--datasets", "-d", help="Data sets (repeat or comma-separate; 'all')."),
    ] = None,
    from_path: Annotated[
        Path | None,
        typer.Option("--from", help="Register a file or folder you already have instead of downloading."),
    ] = None,
    dest_root: Annotated[
        Path | None,
        typer.Option(
            "--dest-root", help="Put checkpoints/ and data/ here instead of $PARTBENCH_HOME (DVC: '.')."
        ),
    ] = None,
    copy: Annotated[bool, typer.Option("--copy/--link", help="--from: copy instead of symlinking.")] = False,
    keep_archives: Annotated[
        bool, typer.Option("--keep-archives/--delete-archives", help="Keep archives after extraction.")
    ] = True,
    retries: Annotated[int, typer.Option("--retries", help="Retries per file on 5xx/timeouts/drops.")] = 5,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the server.")] = 60.0,
    backoff: Annotated[float, typer.Option("--backoff", help="First retry wait in seconds (doubles).")] = 1.0,
) -> None:
    """Download and verify encoder checkpoints and data sets (sha256, resume, retry); print a summary."""
    from partbench.fetch import FetchOptions, Status, fetch, summary_table

    options = FetchOptions(
        retries=retries, backoff=backoff, timeout=timeout, keep_archives=keep_archives, link=not copy
    )
    records = fetch(
        _split_names(models) or [],
        _split_names(datasets) or [],
        from_path=from_path,
        dest_root=dest_root,
        options=options,
    )
    Console(width=160).print(summary_table(records))
    failed = sum(r.status is Status.FAILED for r in records)
    if failed:
        console.print(f"[bold red]{failed} of {len(records)} file(s) failed[/]")
        raise typer.Exit(1)


# --- section: extract (partbench.features) ---------------------------------------------------


@app.command("extract")
def extract_cmd(
    model: Annotated[
        str, typer.Option("--model", help="Encoder name (see `partbench models`) or timm:<name>.")
    ],
    dataset: Annotated[
        str, typer.Option("--dataset", help="Part data set (cub-parts, coco-parts) or imagenet.")
    ],
    split: Annotated[
        str | None, typer.Option("--split", help="retrieval/train/val (default: retrieval; imagenet: val).")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Checkpoint file (default: the registry's).")
    ] = None,
    arch: Annotated[
        str | None, typer.Option("--arch", help="timm overrides, e.g. embed_dim=64,depth=2.")
    ] = None,
    protocol: Annotated[str, typer.Option("--protocol", help="study (the paper's code) or clean.")] = "study",
    data_root: Annotated[
        Path | None, typer.Option("--data-root", help="Data folder (default $PARTBENCH_HOME/data/D).")
    ] = None,
    features_dir: Annotated[Path, typer.Option("--features-dir", help="Cache root.")] = Path("features"),
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Patches per forward pass.")] = 256,
    num_workers: Annotated[
        int | None, typer.Option("--num-workers", help="DataLoader workers (default: min(8, CPUs)).")
    ] = None,
    dtype: Annotated[
        str, typer.Option("--dtype", help="auto (CUDA: bf16, else fp32), fp32, bf16, fp16")
    ] = "auto",
    tokens: Annotated[
        bool, typer.Option("--tokens", help="Also store final token grids (tokens.npy).")
    ] = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the encoder.")] = False,
    shard_size: Annotated[
        int | None, typer.Option("--shard-size", help="Items per resumable shard (4096; 512 with --tokens).")
    ] = None,
) -> None:
    """Extract features once into features/<model>/<dataset>/<split>/ (cached, resumable, torchrun-ready)."""
    from partbench.features import default_split, run_extract

    outcome = run_extract(
        model,
        dataset,
        split or default_split(dataset),
        checkpoint=checkpoint,
        arch=arch,
        protocol=protocol,
        data_root=data_root,
        features_dir=features_dir,
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        dtype=dtype,
        tokens=tokens,
        compile=compile,
        progress=True,
        shard_size=shard_size,
    )
    if outcome.rank != 0:
        return
    if outcome.status == "cached":
        typer.echo(f"cached: {outcome.cache_dir} (key {outcome.cache_key[:12]}, up to date)")
    else:
        reused = f", {outcome.shards_reused} shards reused" if outcome.shards_reused else ""
        took = f"{outcome.n_items} items in {outcome.seconds:.1f} s{reused}"
        typer.echo(f"{outcome.status}: {outcome.cache_dir} ({took})")


# --- section: probe retrieval / classify (partbench.probes) ----------------------------------

_rc = typer.Option


@probe_app.command("retrieval")
def probe_retrieval_cmd(
    model: Annotated[str, _rc("--model", help="Encoder name whose features were extracted.")],
    dataset: Annotated[str, _rc("--dataset", help="cub-parts or coco-parts (or any extracted set).")],
    split: Annotated[str, _rc("--split", help="Cached split to retrieve within.")] = "retrieval",
    feature: Annotated[
        list[str] | None, _rc("--feature", help="embedding, cls_token, projection (default: all cached).")
    ] = None,
    features_dir: Annotated[Path, _rc("--features-dir", help="Feature cache root.")] = Path("features"),
    results_dir: Annotated[Path, _rc("--results-dir", help="Result JSON root.")] = Path("results"),
    protocol: Annotated[
        str | None,
        _rc("--protocol", help="study (query in its own ranking) or clean (default: the cache's)."),
    ] = None,
    bootstrap: Annotated[
        int, _rc("--bootstrap", help="Bootstrap resamples of the queries for ci95 (0: none).")
    ] = 0,
    seed: Annotated[int, _rc("--seed", help="Bootstrap seed.")] = 0,
    device: Annotated[str, _rc("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """Part retrieval: cosine similarity on cached features, AP (mean over queries) and mAP."""

    from partbench.probes.retrieval import run_retrieval

    paths = run_retrieval(
        model,
        dataset,
        features_dir=features_dir,
        results_dir=results_dir,
        split=split,
        features=feature or None,
        protocol=protocol,
        bootstrap=bootstrap,
        seed=seed,
        device=device,
        log=lambda msg: console.print(msg, highlight=False),
    )
    for path in paths:
        m = json.loads(path.read_text())["metrics"]
        typer.echo(f"{path}: AP {m['AP']:.2f} mAP {m['mAP']:.2f}")


@probe_app.command("classify")
def probe_classify_cmd(
    model: Annotated[str, _rc("--model", help="Encoder name whose train/val features were extracted.")],
    dataset: Annotated[str, _rc("--dataset", help="cub-parts, coco-parts or imagenet.")],
    head: Annotated[
        str, _rc("--head", help="linear (cls token) or attentive (all tokens; needs --tokens).")
    ] = "linear",
    features_dir: Annotated[Path, _rc("--features-dir", help="Feature cache root.")] = Path("features"),
    results_dir: Annotated[Path, _rc("--results-dir", help="Result JSON root.")] = Path("results"),
    epochs: Annotated[int, _rc("--epochs", help="Training epochs (study: 90).")] = 90,
    batch_size: Annotated[int, _rc("--batch-size", help="Batch size (study: 1024).")] = 1024,
    lr: Annotated[
        float | None, _rc("--lr", help="Learning rate (default: 0.1 linear / 0.01 attentive × bs/256).")
    ] = None,
    seed: Annotated[int, _rc("--seed", help="Head init and shuffling.")] = 0,
    protocol: Annotated[
        str | None, _rc("--protocol", help="study (BN batch stats at eval) or clean (default: the cache's).")
    ] = None,
    bootstrap: Annotated[int, _rc("--bootstrap", help="Bootstrap resamples of the val items for ci95.")] = 0,
    device: Annotated[str, _rc("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """Part classification: train a linear or attentive head on cached train features, top-1 on val."""

    from rich.progress import Progress

    from partbench.probes.classify import run_classify

    with Progress(console=console, disable=not sys.stdout.isatty(), transient=True) as bar:
        task = bar.add_task(f"{head} probe", total=epochs)

        def _advance(epoch: int, loss: float, top1: float) -> None:
            bar.update(
                task, completed=epoch, description=f"{head} probe: loss {loss:.3f}, val {100 * top1:.2f}"
            )

        path = run_classify(
            model,
            dataset,
            head=head,
            features_dir=features_dir,
            results_dir=results_dir,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            protocol=protocol,
            bootstrap=bootstrap,
            on_epoch=_advance,
        )
    m = json.loads(path.read_text())["metrics"]
    typer.echo(f"{path}: top1 {m['top1']:.2f} (best {m['top1_best']:.2f})")


# --- section: probe segment (partbench.probes.segment) ---------------------------------------

_seg = typer.Option


@probe_app.command("segment")
def probe_segment_cmd(
    model: Annotated[str, _seg("--model", help="Encoder name (see `partbench models`) or timm:<name>.")],
    dataset: Annotated[str, _seg("--dataset", help="ade20k-part, pascal-part, lip, ade20k-object, ...")],
    checkpoint: Annotated[
        str | None, _seg("--checkpoint", help="Checkpoint file (default: the registry's).")
    ] = None,
    arch: Annotated[str | None, _seg("--arch", help="timm overrides, e.g. embed_dim=64,depth=4.")] = None,
    data_root: Annotated[
        Path | None, _seg("--data-root", help="Data folder (default $PARTBENCH_HOME/data/D).")
    ] = None,
    iters: Annotated[int, _seg("--iters", help="Training iterations (study: 160000).")] = 160_000,
    batch_size: Annotated[int, _seg("--batch-size", help="Global batch size (study: 16).")] = 16,
    crop: Annotated[
        int | None, _seg("--crop", help="Crop side; scales and slide window scale with it.")
    ] = None,
    mode: Annotated[
        str, _seg("--mode", help="full (study: backbone in the loop) or fast (cached features).")
    ] = "full",
    eval_every: Annotated[
        int, _seg("--eval-every", help="Evaluate every N iterations (0: at the end).")
    ] = 16_000,
    ckpt_every: Annotated[int, _seg("--ckpt-every", help="Checkpoint every N iterations.")] = 2000,
    resume: Annotated[bool, _seg("--resume/--no-resume", help="Resume from the run's checkpoint.")] = True,
    runs_dir: Annotated[Path, _seg("--runs-dir", help="Checkpoints and caches.")] = Path("runs"),
    results_dir: Annotated[Path, _seg("--results-dir", help="Result JSON root.")] = Path("results"),
    protocol: Annotated[str, _seg("--protocol", help="study (the paper's code) or clean.")] = "study",
    device: Annotated[str, _seg("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    num_workers: Annotated[int, _seg("--num-workers", help="DataLoader workers.")] = 4,
    seed: Annotated[int, _seg("--seed", help="Head init and data order.")] = 0,
    bootstrap: Annotated[int, _seg("--bootstrap", help="Bootstrap resamples for ci95 (0: none).")] = 0,
) -> None:
    """Linear segmentation probe on blocks 4/6/8/12 of a frozen encoder (torchrun-ready, resumable)."""

    from partbench.probes.segment import run_segment

    path = run_segment(
        model,
        dataset,
        checkpoint=checkpoint,
        arch=arch,
        data_root=data_root,
        iters=iters,
        batch_size=batch_size,
        crop=crop,
        mode=mode,
        eval_every=eval_every,
        ckpt_every=ckpt_every,
        runs_dir=runs_dir,
        results_dir=results_dir,
        protocol=protocol,
        device=device,
        num_workers=num_workers,
        resume=resume,
        seed=seed,
        bootstrap=bootstrap,
    )
    if path is not None:
        m = json.loads(path.read_text())["metrics"]
        typer.echo(f"{path}: mIoU {m['mIoU']} mAcc {m['mAcc']} aAcc {m['aAcc']} (best mIoU {m['mIoU_best']})")


# --- section: probe layers (partbench.probes.layers) -----------------------------------------

_lo = typer.Option


@probe_app.command("layers")
def probe_layers_cmd(
    model: Annotated[str, _lo("--model", help="Encoder name (see `partbench models`) or timm:<name>.")],
    dataset: Annotated[
        str,
        _lo(
            "--dataset",
            help="cub-parts (part and bird-class levels) or coco-parts; --task segment: a segmentation set.",
        ),
    ],
    task: Annotated[
        str,
        _lo("--task", help="retrieval (AP), classify (linear probe) or segment (linear head), per block."),
    ] = "retrieval",
    feature: Annotated[str, _lo("--feature", help="mean (of patch tokens) or cls, per block.")] = "mean",
    checkpoint: Annotated[
        str | None, _lo("--checkpoint", help="Checkpoint (default: the registry's).")
    ] = None,
    arch: Annotated[str | None, _lo("--arch", help="timm overrides, e.g. embed_dim=64,depth=4.")] = None,
    protocol: Annotated[str, _lo("--protocol", help="study (the paper's code) or clean.")] = "study",
    data_root: Annotated[
        Path | None, _lo("--data-root", help="Data (default $PARTBENCH_HOME/data/D).")
    ] = None,
    features_dir: Annotated[Path, _lo("--features-dir", help="Cache root (layers.safetensors).")] = Path(
        "features"
    ),
    results_dir: Annotated[Path, _lo("--results-dir", help="Result JSON root.")] = Path("results"),
    bootstrap: Annotated[int, _lo("--bootstrap", help="Bootstrap resamples for ci95 (0: none).")] = 200,
    epochs: Annotated[int, _lo("--epochs", help="classify: epochs of each linear probe (study: 90).")] = 90,
    seed: Annotated[int, _lo("--seed", help="Bootstrap and probe seed.")] = 0,
    device: Annotated[str, _lo("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[int, _lo("--batch-size", help="Patches per backbone pass.")] = 256,
    num_workers: Annotated[int | None, _lo("--num-workers", help="DataLoader workers.")] = None,
    iters: Annotated[int, _lo("--iters", help="segment: training iterations (study: 160000).")] = 160_000,
    seg_batch_size: Annotated[int, _lo("--seg-batch-size", help="segment: images per iteration.")] = 16,
    crop: Annotated[int | None, _lo("--crop", help="segment: crop size (default: the set's).")] = None,
    blocks_per_pass: Annotated[
        int | None, _lo("--blocks-per-pass", help="segment: heads trained together (default: all).")
    ] = None,
    runs_dir: Annotated[Path, _lo("--runs-dir", help="segment: run folder (cache, checkpoints).")] = Path(
        "runs"
    ),
) -> None:
    """Part- vs object-level probe on every block (one backbone pass); one result JSON per block."""
    from partbench.probes.layers import run_layers

    seg = dict(
        iters=iters, batch_size=seg_batch_size, crop=crop, blocks_per_pass=blocks_per_pass, runs_dir=runs_dir
    )
    paths = run_layers(
        model,
        dataset,
        task=task,
        feature=feature,
        checkpoint=checkpoint,
        arch=arch,
        protocol=protocol,
        data_root=data_root,
        features_dir=features_dir,
        results_dir=results_dir,
        bootstrap=bootstrap,
        seed=seed,
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        epochs=epochs,
        log=lambda msg: console.print(msg, highlight=False),
        segment=seg if task == "segment" else None,
    )
    typer.echo(f"{len(paths)} results in {paths[0].parent}" if paths else "no results")


# --- section: report, run (partbench.report, partbench.pipeline) -----------------------------


@app.command("report")
def report_cmd(
    results_dir: Annotated[Path, typer.Option("--results-dir", help="Result JSONs.")] = Path("results"),
    reference: Annotated[
        Path | None,
        typer.Option("--reference", help="The paper's CSV (default reports/paper/paper_tables.csv)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("reports"),
    tolerance: Annotated[
        str | None,
        typer.Option("--tolerance", help="Points: '1.5' for every metric, or 'AP=1,top1=1,mIoU=1.5'."),
    ] = None,
    suite: Annotated[str | None, typer.Option("--suite", help="Only this suite's results.")] = None,
    figures: Annotated[
        list[str] | None, typer.Option("--figures", help="Opt-in figures: retrieval-grid (needs caches).")
    ] = None,
    features_dir: Annotated[Path, typer.Option("--features-dir", help="Caches for --figures.")] = Path(
        "features"
    ),
) -> None:
    """Tables beside the paper's (Δ, ✓/✗), claims C1–C11 on our numbers, figures, aggregate.csv/json."""
    from partbench.report import build_report
    from partbench.report.tables import parse_tolerance

    try:
        tol = parse_tolerance(tolerance)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    summary = build_report(
        results_dir, reference, out, tol, suite=suite, figures=figures or (), features_dir=features_dir
    )
    if summary.smoke:
        console.print("[yellow]smoke results: synthetic data and random weights, not the paper's numbers[/]")
    within = f"{summary.n_within}/{summary.n_compared}"
    console.print(f"{summary.n_results} result files; {within} judged cells within tolerance")
    typer.echo(f"report: {summary.report}")


@app.command("run")
def run_cmd(
    suite: Annotated[str, typer.Option("--suite", help="smoke (synthetic, CPU minutes) or paper.")] = "smoke",
    models: Annotated[list[str] | None, typer.Option("--models", help="Encoders (comma-separated).")] = None,
    datasets: Annotated[list[str] | None, typer.Option("--datasets", help="Data sets (comma-sep.).")] = None,
    workdir: Annotated[Path, typer.Option("--workdir", help="Root of the suite's outputs.")] = Path("."),
    params: Annotated[Path | None, typer.Option("--params", help="params.yaml with the suites.")] = None,
    stage: Annotated[
        list[str] | None,
        typer.Option(
            "--stage", help="Only these stages: prepare, extract, retrieval, classify, segment, report."
        ),
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, ... (default: suite's).")] = None,
    features: Annotated[
        list[str] | None, typer.Option("--features", help="Retrieval features (default: all cached).")
    ] = None,
    heads: Annotated[
        list[str] | None, typer.Option("--heads", help="Classify heads: linear, attentive.")
    ] = None,
) -> None:
    """Every stage in order: prepare (synth or fetch) → extract → probe → report."""
    from partbench.pipeline import run_suite

    summary = run_suite(
        suite,
        models=_split_names(models),
        datasets=_split_names(datasets),
        workdir=workdir,
        params=params,
        stages=_split_names(stage),
        device=device,
        features=_split_names(features),
        heads=_split_names(heads),
        log=lambda line: console.print(line, highlight=False),
    )
    console.print(summary.describe())
    if summary.report is not None:
        typer.echo(f"report: {summary.report}")


def main() -> None:
    """Console entry point: run the app; a `PartbenchError` becomes one red line and exit code 1."""
    try:
        app()
    except PartbenchError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
