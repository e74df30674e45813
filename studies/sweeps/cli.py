"""``xbar sweep`` and ``xbar report``: device-parameter sweeps and what they found."""

from __future__ import annotations

import signal
import sys
from importlib import resources
from pathlib import Path

import click
import numpy as np
from rich.console import Console

console = Console()
SUMMARY_ROWS = 40


def _example() -> str:
    return resources.files("studies.sweeps").joinpath("example.toml").read_text()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@click.command()
@click.argument("sweep_file", required=False, type=click.Path(path_type=Path))
@click.option("--store", type=click.Path(path_type=Path), default=None,
              help="The Zarr store of results (default: SWEEP_FILE's name with .zarr, in the current "
                   "folder).  An existing store of the same sweep is resumed: only missing points run.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes of the local pool (default: one per core).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run on this Dask distributed scheduler (tcp://host:port) instead of a local pool; "
                   "its workers need xbar installed and the dataset at the same path.")
@click.option("--ci-width", type=float, default=None,
              help="Stopping rule: add blocks of `trials` trials to a point until the 95% CI of its "
                   "final accuracy is at most this many percentage points wide (sweep.ci_width).")
@click.option("--max-trials", type=int, default=None,
              help="Most trials per point with --ci-width (sweep.max_trials; default 8 x trials).")
@click.option("--example", is_flag=True, help="Print an annotated example sweep file and exit.")
def sweep(sweep_file, store, workers, scheduler, ci_width, max_trials, example) -> None:
    """Run the grid of SWEEP_FILE (TOML: model, dataset, base spec, axes, trials, seed) on a
    local pool or a Dask cluster, into a resumable Zarr store; then print the main table."""
    from studies.sweeps.run import run_sweep
    from studies.sweeps.config import SweepFileError, read_sweep_file
    from studies.sweeps.pool import make_pool
    from studies.sweeps.report import summary_table
    from studies.sweeps.store import StoreMismatch, done_mask, is_store, open_sweep

    if example:
        click.echo(_example(), nl=False)
        return
    if sweep_file is None:
        raise click.UsageError("give a SWEEP_FILE (`xbar sweep --example > sweep.toml` writes one)")
    overrides = {k: v for k, v in (("sweep.ci_width", ci_width), ("sweep.max_trials", max_trials))
                 if v is not None}
    store = store or Path(sweep_file.stem + ".zarr")
    try:
        config = read_sweep_file(sweep_file, overrides)
    except SweepFileError as err:
        raise click.BadParameter(str(err), param_hint=f"SWEEP_FILE {str(sweep_file)!r}") from None
    axes = " x ".join(f"{a.key} ({len(a.values)})" for a in config.axes)
    n_points = int(np.prod(config.shape))
    console.print(f"[bold]xbar sweep[/] {sweep_file}: {n_points} points = {axes}; "
                  f"{config.sweep['trials']} trials each, seed {config.sweep['seed']}; store {store}")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        run = run_sweep(config, store, lambda: make_pool(workers, scheduler), log=console.print)
    except (StoreMismatch, ConnectionError) as err:
        raise click.ClickException(str(err)) from None
    except KeyboardInterrupt:
        n = int(done_mask(store).sum()) if is_store(store) else 0
        console.print(f"\n[yellow]interrupted[/]: {n} of {n_points} points are in {store}; "
                      "run the same command again to compute the rest")
        sys.exit(130)
    ds = open_sweep(store)
    console.print(summary_table(ds, max_rows=SUMMARY_ROWS))
    did = (f"all {run.points} points were in the store already" if run.computed == 0 else
           f"{run.computed} points computed, {run.already_done} were in the store, on {run.where}, "
           f"in {run.seconds:.0f} s")
    console.print(f"{did}.  Results: {store} (xarray.open_zarr); figures: xbar report {store}")


def _at(values: tuple[str, ...], ds) -> dict:
    """``("adc_bits=6", ...)`` -> ``{"adc_bits": 6}``, matched against the store's coordinates."""
    from studies.sweeps.report import _fmt, axis_dims

    out = {}
    for item in values:
        dim, _, value = item.partition("=")
        if dim not in axis_dims(ds):
            raise click.BadParameter(f"--at {item!r}: {dim!r} is not an axis; the axes are {axis_dims(ds)}")
        match = [v for v in ds[dim].values if _fmt(v) == value or str(v) == value]
        if not match:
            raise click.BadParameter(f"--at {item!r}: {value!r} is not a value of {dim}; its values are "
                                     f"{[_fmt(v) for v in ds[dim].values]}")
        out[dim] = match[0]
    return out


@click.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for the figures and summary.csv (default: STORE's name with -report).")
@click.option("--heatmap", default=None, metavar="X,Y", help="The two axes of the heat map "
              "(default: the first two).")
@click.option("--at", multiple=True, metavar="AXIS=VALUE",
              help="Where to hold an axis that a figure does not show (default: its first value).")
def report(store, out, heatmap, at) -> None:
    """Print the main table of a sweep STORE and write its figures: accuracy against each
    swept axis with 95% confidence intervals, and a heat map over two axes."""
    from studies.results import check_output_dir
    from studies.sweeps.report import axis_dims, summary_table, write_report
    from studies.sweeps.store import StoreMismatch, open_sweep

    try:
        ds = open_sweep(store)
    except (FileNotFoundError, StoreMismatch) as err:
        raise click.BadParameter(str(err), param_hint="STORE") from None
    pair = None
    if heatmap is not None:
        pair = tuple(p.strip() for p in heatmap.split(","))
        if len(pair) != 2 or not set(pair) <= set(axis_dims(ds)) or pair[0] == pair[1]:
            raise click.BadParameter(f"--heatmap {heatmap!r}: give two different axes of "
                                     f"{axis_dims(ds)}, like {','.join(axis_dims(ds)[:2])}")
    out = check_output_dir(out or store.with_name(store.stem + "-report"))
    console.print(summary_table(ds))
    paths = write_report(ds, out, pair, _at(at, ds))
    console.print("wrote " + ", ".join(str(p) for p in paths))
