"""The per-read noise's numbers and the noisy ADC read, per core, in one run.

    python benchmarks/bench_noise.py [--numbers 4194304] [--repeats 5]

Prints two tables, from one run (best of ``--repeats``, interleaved):

1. standard normals per second per core: torch's ``normal_`` (float32, one thread) and
   xbar's counter-based stream (``xbar.kernels.fill_normal``) on one thread and on all
   of torch's threads;
2. noisy ADC reads per second per core (4-bit signed ADC), from given column sums ``u``
   and noise variances (``sqrt(var)``, a normal per read, ``u + sd * eps``, the clip and
   the rounding): as a read makes them on the CPU, in one native pass
   (``xbar.streams.NoiseStreams.add_noise_``, ``xbar.kernels.noisy_read_``), and in
   torch's passes with the normals from xbar's streams and from torch's generator.

Nothing is asserted.
"""

from __future__ import annotations

import argparse

import numba
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from bench_inference import best_of_interleaved  # this folder is on the path when run as a script
from xbar import kernels
from xbar.streams import NoiseStreams
from xbar.tile.converters import to_codes_


def with_threads(n: int, fn):
    def run():
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(n)
        numba.set_num_threads(n)
        try:
            fn()
        finally:
            torch.set_num_threads(torch_threads)
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--numbers", type=int, default=1 << 22)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    n, threads = args.numbers, torch.get_num_threads()
    out = torch.empty(1, n)
    gen = torch.Generator().manual_seed(0)
    keys, offsets = np.array([12345], np.uint64), np.zeros(1, np.uint64)
    draws = best_of_interleaved({
        "torch normal_ (float32), 1 thread": with_threads(1, lambda: out.normal_(generator=gen)),
        "xbar counter-based, 1 thread": with_threads(1, lambda: kernels.fill_normal(out.numpy(), keys, offsets)),
        f"xbar counter-based, {threads} threads": with_threads(
            threads, lambda: kernels.fill_normal(out.numpy(), keys, offsets)),
    }, args.repeats)
    console = Console(width=160)
    table = Table(title=f"standard normals, {n / 1e6:.1f} M per call (best of {args.repeats})")
    for col in ("generator", "ns per number", "M numbers/s per core"):
        table.add_column(col, justify="right")
    for name, t in draws.items():
        cores = threads if name.endswith(f"{threads} threads") else 1
        table.add_row(name, f"{1e9 * t / n:.2f}", f"{n / t / cores / 1e6:.0f}")
    console.print(table)

    var = torch.full((1, n), 1e-4)
    u0 = torch.rand(1, n, generator=gen) * 1.8 - 0.9
    streams = NoiseStreams(0, 1)

    def read(normal):
        return lambda: to_codes_(torch.addcmul(u0, var.sqrt(), normal()), 4, True)

    u = u0.clone()
    reads = best_of_interleaved({
        "one native pass (xbar's read)": lambda: streams.add_noise_(u.copy_(u0), var, range(1), (-1.0, 7)),
        "torch passes, xbar's normals": read(lambda: streams.normal(u0, range(1))),
        "torch passes, torch normal_": read(lambda: torch.empty_like(u0).normal_(generator=gen)),
    }, args.repeats)
    table = Table(title=f"noisy 4-bit ADC reads, {n / 1e6:.1f} M per call, {threads} threads "
                        f"(best of {args.repeats}; the native pass's time includes copying u back)")
    for col in ("read", "ns per read", "M reads/s per core"):
        table.add_column(col, justify="right")
    for name, t in reads.items():
        table.add_row(name, f"{1e9 * t / n:.2f}", f"{n / t / threads / 1e6:.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
