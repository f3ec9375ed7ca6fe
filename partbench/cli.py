"""The `partbench` command line: thin Typer commands, each calling one function of a stage module.

Commands are grouped in sections below, one per stage module; the logic lives in those modules.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from partbench.errors import PartbenchError

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


# --- section: models (partbench.encoders) ----------------------------------------------------


# --- section: datasets, synth (partbench.datasets) -------------------------------------------


# --- section: fetch (partbench.fetch) --------------------------------------------------------


# --- section: extract (partbench.features) ---------------------------------------------------


# --- section: probe retrieval / classify (partbench.probes) ----------------------------------


# --- section: probe segment (partbench.probes.segment) ---------------------------------------


# --- section: probe layers (partbench.probes.layers) -----------------------------------------


# --- section: report, run (partbench.report, partbench.pipeline) -----------------------------


def main() -> None:
    """Console entry point: run the app; a `PartbenchError` becomes one red line and exit code 1."""
    try:
        app()
    except PartbenchError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
