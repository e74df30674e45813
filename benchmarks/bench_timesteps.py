"""The default timestep study (``xbar timesteps``), end to end, and where its time goes.

    python benchmarks/bench_timesteps.py [--threads 2] [--keep-cache]

Runs ``studies.timesteps.TimestepStudyConfig()`` (the CLI's defaults) with a fresh, empty
model cache (so every model is trained, as on a new machine; ``--keep-cache`` uses
``$XBAR_CACHE`` instead), writes its dataset and figures to a temporary folder, and prints

- the split of the wall time: training and conversion, programming (including the exact
  IR-drop solve of every tile), inference (the analog and the ideal network in lockstep),
  writing the results; and the total against the 10-minute target;
- programming and inference per model and tile size.

Nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from rich.console import Console
from rich.table import Table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep-cache", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.keep_cache:
            os.environ["XBAR_CACHE"] = os.path.join(tmp, "cache")
        from studies.timesteps import TimestepStudyConfig, run_timestep_study, write_timestep_results

        start = time.perf_counter()
        ds = run_timestep_study(TimestepStudyConfig(), progress=True)
        t_run = time.perf_counter() - start
        write_timestep_results(ds, os.path.join(tmp, "out"))
        total = time.perf_counter() - start
    train = float(ds.seconds_training.sum())
    prog = float(ds.seconds.sel(phase="programming").sum())
    inf = float(ds.seconds.sel(phase="inference").sum())
    console = Console()
    split = Table(title=f"default timestep study, {args.threads} threads "
                        f"({'cached models' if args.keep_cache else 'models trained'})")
    for col in ("phase", "seconds", "share"):
        split.add_column(col, justify="right")
    for name, sec in (("training + conversion", train), ("programming (incl. IR drop)", prog),
                      ("inference", inf), ("data loading, bookkeeping", t_run - train - prog - inf),
                      ("writing netCDF + figures", total - t_run), ("total", total)):
        split.add_row(name, f"{sec:.1f}", f"{100 * sec / total:.0f}%")
    console.print(split)
    console.print(f"total {total / 60:.1f} min against a 10 min target: {total / 600:.2f} of it")
    cells = Table(title="per model and tile: programming / inference (s)")
    cells.add_column("model")
    for tile in ds.tile.values:
        cells.add_column(str(tile), justify="right")
    for model in ds.model.values:
        row = ds.seconds.sel(model=model)
        cells.add_row(str(model), *[f"{float(row.sel(tile=t, phase='programming')):.1f} / "
                                    f"{float(row.sel(tile=t, phase='inference')):.1f}" for t in ds.tile.values])
    console.print(cells)


if __name__ == "__main__":
    main()
