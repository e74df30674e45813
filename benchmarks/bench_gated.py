"""The 1T1R array with spikes on the gates against the all-connected array, in one run.

    python benchmarks/bench_gated.py [--tiles 64 128] [--r-wire 0.35 2.5] [--rates 0.05 0.12 0.3]
                                     [--reads 256] [--threads 2]

HfO2 RRAM conductances (uniform in 50-225 uS), square tiles, ideal drivers and sense
amplifiers, binary spike inputs at each rate. Prints, per tile size, wire resistance and
spike rate:

- the column current lost to IR drop, relative RMS against the ideal product of the
  same read, in the all-connected array (every device connected, rows without a spike
  at 0 V: ``xbar.solve_crossbar``) and in the gated one (rows without a spike
  disconnected: ``xbar.circuit.solve_gated``), and the RMS difference between the two
  schemes' reads, relative to the gated read's RMS;
- tile-reads per second of the gated exact solve (its reduced circuit per read), of the
  full circuit solved per read with the rows off removed (the same answer, the naive
  way), and of an all-connected read through its effective matrix (one product; the
  matrix solved once per programming, not counted).

Nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from xbar.circuit import effective_matrix, solve_crossbar, solve_gated


def _rate(fn, reads: int) -> float:
    start = time.perf_counter()
    fn()
    return reads / (time.perf_counter() - start)


def _rms(a: torch.Tensor) -> float:
    return float(a.pow(2).mean().sqrt())


def case(size: int, r_wire: float, rate: float, reads: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    g = 50e-6 + 175e-6 * torch.rand(4, size, size, generator=gen, dtype=torch.float64)
    v = (torch.rand(reads, 4, size, generator=gen, dtype=torch.float64) < rate).to(torch.float64) * 0.2
    kw = dict(r_wire_row=r_wire, r_wire_col=r_wire)
    ideal = (v.unsqueeze(-2) @ g).squeeze(-2)
    gated = solve_gated(g, v, **kw)
    g_eff = effective_matrix(g, **kw)
    passive = (v.unsqueeze(-2) @ g_eff).squeeze(-2)
    naive = max(4, reads // 32)  # the per-read full solve is slow: a sample of the reads
    return {
        "loss_passive": _rms(passive - ideal) / _rms(ideal),
        "loss_gated": _rms(gated - ideal) / _rms(ideal),
        "schemes": _rms(passive - gated) / _rms(gated),
        "gated_rate": _rate(lambda: solve_gated(g, v, **kw), v.shape[0] * 4),
        "naive_rate": _rate(lambda: solve_crossbar(g * (v[:naive] != 0).unsqueeze(-1), v[:naive], **kw), naive * 4),
        "product_rate": _rate(lambda: (v.unsqueeze(-2) @ g_eff).squeeze(-2), v.shape[0] * 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, nargs="+", default=[64, 128])
    p.add_argument("--r-wire", type=float, nargs="+", default=[0.35, 2.5])
    p.add_argument("--rates", type=float, nargs="+", default=[0.05, 0.12, 0.3])
    p.add_argument("--reads", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    table = Table(title=f"gated (1T1R, spikes on the gates) against all-connected arrays, HfO2 RRAM, "
                        f"{args.threads} threads")
    for col in ("tile", "ohm/cell", "spikes", "IR loss all-connected", "IR loss gated", "schemes differ",
                "gated exact, reads/s", "full solve per read, reads/s", "all-connected product, reads/s"):
        table.add_column(col, justify="right")
    for size in args.tiles:
        for r_wire in args.r_wire:
            for rate in args.rates:
                c = case(size, r_wire, rate, args.reads)
                table.add_row(f"{size}x{size}", f"{r_wire:g}", f"{rate:.0%}", f"{c['loss_passive']:.1%}",
                              f"{c['loss_gated']:.1%}", f"{c['schemes']:.1%}", f"{c['gated_rate']:.3g}",
                              f"{c['naive_rate']:.3g}", f"{c['product_rate']:.3g}")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
