"""A study run locally against the same study split over a Dask cluster, in one run.

    python benchmarks/bench_study_cluster.py [--workers 2] [--trials 4] [--n-test 500]
                                             [--device rram_hfo2]

Starts a Dask cluster of ``--workers`` single-threaded worker processes on loopback,
runs the default study (``xbar study``'s defaults, with ``--device``, ``--trials`` and
``--n-test``; the model cached first) once in this process (all of torch's threads) and
once with ``scheduler=`` the cluster (each worker programming, calibrating and reading its
own trials) twice (the first run includes the workers' start-up: imports, the model's
transfer, the first reads), checks that the datasets are identical, and prints the times
and their ratios.  On one machine the workers share its cores: the ratio is what splitting
costs or wins there; on several machines each worker brings its own.

Nothing is asserted beyond the identity of the datasets.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from studies.robustness import StudyConfig, run_study
from studies.train import load_or_train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--device", default="rram_hfo2")
    args = p.parse_args()
    from distributed import LocalCluster

    config = StudyConfig(device=args.device, trials=args.trials, n_test=args.n_test)
    load_or_train(config.train_config(), progress=False)  # cached: neither run trains
    times = {}
    start = time.perf_counter()
    local = run_study(config, progress=False)
    times["local"] = time.perf_counter() - start
    # The workers run their tasks in threads: MALLOC_ARENA_MAX=1 as docs/studies.md says
    # (xbar.memory); one torch thread each (an env replaces the nanny's OMP_NUM_THREADS=1).
    env = {"MALLOC_ARENA_MAX": "1", "OMP_NUM_THREADS": "1"}
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, env=env) as cluster:
        for run in ("first", "second"):
            start = time.perf_counter()
            split = run_study(config, progress=False, scheduler=cluster.scheduler_address)
            times[run] = time.perf_counter() - start
            same = split.identical(local)
    table = Table(title=f"default study on {args.device}, {args.trials} trials, {args.n_test} test images "
                        f"({torch.get_num_threads()} threads locally; datasets identical: {same})")
    for col in ("run", "s", "local / this"):
        table.add_column(col, justify="right")
    table.add_row("local", f"{times['local']:.1f}", "1.00x")
    for run in ("first", "second"):
        table.add_row(f"Dask, {args.workers} single-threaded workers on loopback, {run} run",
                      f"{times[run]:.1f}", f"{times['local'] / times[run]:.2f}x")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
