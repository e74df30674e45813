"""Sweep throughput: points per minute with one worker against two, and the overhead of the
store and of the Dask scheduler per point, measured in one run.

    python benchmarks/bench_sweep.py [--points 12] [--timesteps 32]

A small sweep (digits, the surrogate MLP, ``--points`` points of read noise x ADC bits, 2
trials each) runs four times into fresh stores, after the model is trained once:

- a local pool of 1 worker process, then of 2;
- a Dask cluster on loopback (``distributed.LocalCluster``: a scheduler and 2 single-thread
  worker processes over TCP), given to ``xbar sweep`` by its address like any cluster;

and prints points per minute, the speed-up of two workers over one, and per point:

- compute: the point's own wall time in its worker (``seconds`` in the store);
- overhead: ``(wall time of the run x workers - sum of compute) / points``: what the pool or
  the scheduler, shipping the model and the results, and the main process cost per point;
- store: writing one point into the Zarr store, timed alone over every point.

All four give the same numbers (checked here).  Nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr
from rich.console import Console
from rich.table import Table

SWEEP = """
[sweep]
seed = 0
trials = 2
[data]
dataset = "digits"
[model]
arch = "mlp"
timesteps = 4
epochs = 5
[device]
preset = "rram_hfo2"
[spec]
tile = [32, 32]
r_wire = 1.0
[simulation]
timesteps = {timesteps}
[axes]
"device.read_sigma_rel" = {noise}
"spec.adc_bits" = [4, 6]
"""


def _run(config, store: Path, factory, workers: int) -> dict:
    from studies.sweeps.run import run_sweep
    from studies.sweeps.store import open_sweep

    run = run_sweep(config, store, factory, progress=False, log=lambda s: None)
    ds = open_sweep(store)
    compute = float(ds.seconds.sum())
    return {"wall": run.seconds, "compute": compute, "points": run.computed, "workers": workers,
            "ds": ds.drop_vars("seconds")}


def _store_seconds(config, folder: Path, reference: xr.Dataset) -> float:
    """Mean time to write one point into a fresh store (the point's variables, then done)."""
    from studies.sweeps import store

    path = folder / "store-only.zarr"
    store.create(path, config, [str(x) for x in reference.layer_name.values], {})
    group = store.open_group(path)
    names = [n for n in reference.data_vars if n not in ("done",)]
    points = [p.index for p in config.points()]
    start = time.perf_counter()
    for index in points:
        sel = dict(zip([a.dim for a in config.axes], index))
        result = {n: reference[n].isel(sel).values for n in names}
        result["seconds"] = np.float64(0.0)
        store.write_point(group, index, result)
    return (time.perf_counter() - start) / len(points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=12, help="even; half read-noise values x 2 ADC widths")
    parser.add_argument("--timesteps", type=int, default=32)
    args = parser.parse_args()
    noise = [round(0.01 * i, 3) for i in range(args.points // 2)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["XBAR_CACHE"] = str(tmp / "cache")
        from distributed import LocalCluster

        from studies.sweeps.run import load_models
        from studies.sweeps.config import read_sweep_file
        from studies.sweeps.pool import DaskPool, LocalPool

        path = tmp / "bench.toml"
        path.write_text(SWEEP.format(timesteps=args.timesteps, noise=noise))
        config = read_sweep_file(path)
        load_models(config, progress=False)  # train once, outside the timings
        runs = {"local pool, 1 worker": _run(config, tmp / "one.zarr", lambda: LocalPool(1), 1),
                "local pool, 2 workers": _run(config, tmp / "two.zarr", lambda: LocalPool(2), 2)}
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster:
            address = cluster.scheduler_address
            runs["Dask cluster, 2 workers"] = _run(config, tmp / "dask.zarr", lambda: DaskPool(address), 2)
        reference = runs["local pool, 1 worker"]["ds"]
        same = all(r["ds"].identical(reference) for r in runs.values())
        store_s = _store_seconds(config, tmp, reference)
    table = Table(title=f"sweep of {len(config.points())} points (digits MLP, 2 trials, "
                        f"{args.timesteps} timesteps), one run")
    for col in ("where", "points/min", "speed-up", "compute/point (s)", "overhead/point (s)"):
        table.add_column(col, justify="right")
    base = runs["local pool, 1 worker"]
    for name, r in runs.items():
        per_min = 60 * r["points"] / r["wall"]
        overhead = (r["wall"] * r["workers"] - r["compute"]) / r["points"]
        table.add_row(name, f"{per_min:.1f}", f"{base['wall'] / r['wall']:.2f}x",
                      f"{r['compute'] / r['points']:.2f}", f"{overhead:.2f}")
    console = Console()
    console.print(table)
    console.print(f"store: {1000 * store_s:.1f} ms to write one point (all its variables and its flag)")
    console.print(f"same dataset from all three: {same}")


if __name__ == "__main__":
    main()
