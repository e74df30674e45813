"""Non-linear devices against linear ones on the same tiles, in one run.

    python benchmarks/bench_nonlinear.py [--tiles 64 128] [--r-wire 0.35 2.5] [--rate 0.12]
                                         [--reads 256] [--threads 2]

HfO2 RRAM (the ``rram_hfo2`` preset's I-V curve, CrossSim 3.2's fit of Milo et al. 2021),
conductances uniform in the 50-225 uS window, each device programmed to its chord at
the 0.2 V read voltage; square tiles, ideal drivers and sense amplifiers.  Inputs: binary
spikes at ``--rate`` (0.2 V), and analog inputs uniform in 0-0.2 V (a first layer's DAC).
Prints, per tile size and wire resistance:

- the column current lost to IR drop (relative RMS against the ideal product of the
  programmed chords, ``v @ g``), with linear devices (``xbar.solve_crossbar``) and with
  the curve (``xbar.circuit.solve_nonlinear``), and the RMS difference of the two reads
  relative to the non-linear read's RMS;
- tile-reads per second of the non-linear solve (spikes) and of a linear read through
  its effective matrix (one product; the matrix solved once per programming, not
  counted).

Nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from devices import presets
from devices.physics import iv_coefficients, low_field
from xbar.circuit import effective_matrix, solve_nonlinear

RRAM = presets["rram_hfo2"]
V_READ = 0.2


def _rms(a: torch.Tensor) -> float:
    return float(a.pow(2).mean().sqrt())


def _losses(g, coef, v, kw) -> tuple[float, float, float]:
    g0, nl2, nl3 = coef
    ideal = (v.unsqueeze(-2) @ g).squeeze(-2)
    linear = (v.unsqueeze(-2) @ effective_matrix(g, **kw)).squeeze(-2)
    curve = solve_nonlinear(g0, v, nl2=nl2, nl3=nl3, chord=g, **kw)
    return _rms(linear - ideal) / _rms(ideal), _rms(curve - ideal) / _rms(ideal), _rms(curve - linear) / _rms(curve)


def case(size: int, r_wire: float, rate: float, reads: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    g = RRAM.g_min + (RRAM.g_max - RRAM.g_min) * torch.rand(4, size, size, generator=gen, dtype=torch.float64)
    coef = iv_coefficients(low_field(g, V_READ, RRAM), RRAM)
    spikes = (torch.rand(reads, 4, size, generator=gen, dtype=torch.float64) < rate).to(torch.float64) * V_READ
    analog = torch.rand(reads, 4, size, generator=gen, dtype=torch.float64) * V_READ
    kw = dict(r_wire_row=r_wire, r_wire_col=r_wire)
    out = dict(zip(("lin_spikes", "nl_spikes", "diff_spikes"), _losses(g, coef, spikes, kw)))
    out.update(zip(("lin_analog", "nl_analog", "diff_analog"), _losses(g, coef, analog, kw)))
    start = time.perf_counter()
    solve_nonlinear(coef[0], spikes, nl2=coef[1], nl3=coef[2], chord=g, **kw)
    out["nl_rate"] = reads * 4 / (time.perf_counter() - start)
    g_eff = effective_matrix(g, **kw)
    start = time.perf_counter()
    (spikes.unsqueeze(-2) @ g_eff).squeeze(-2)
    out["product_rate"] = reads * 4 / (time.perf_counter() - start)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, nargs="+", default=[64, 128])
    p.add_argument("--r-wire", type=float, nargs="+", default=[0.35, 2.5])
    p.add_argument("--rate", type=float, default=0.12)
    p.add_argument("--reads", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    table = Table(title=f"non-linear (rram_hfo2 I-V curve) against linear devices, verified at {V_READ} V, "
                        f"{args.threads} threads")
    for col in ("tile", "ohm/cell", "inputs", "IR loss linear", "IR loss non-linear", "reads differ",
                "non-linear solve, reads/s", "linear product, reads/s"):
        table.add_column(col, justify="right")
    for size in args.tiles:
        for r_wire in args.r_wire:
            c = case(size, r_wire, args.rate, args.reads)
            for kind, label in (("spikes", f"{args.rate:.0%} spikes"), ("analog", "analog 0-0.2 V")):
                rates = (f"{c['nl_rate']:.3g}", f"{c['product_rate']:.3g}") if kind == "spikes" else ("", "")
                table.add_row(f"{size}x{size}", f"{r_wire:g}", label, f"{c['lin_' + kind]:.2%}",
                              f"{c['nl_' + kind]:.2%}", f"{c['diff_' + kind]:.2%}", *rates)
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
