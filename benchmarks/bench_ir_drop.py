"""Effective-matrix setup (exact IR drop) for every tile of the study's conv SNN, against a
plain scipy splu of each tile and against ngspice, all in one run.

    python benchmarks/bench_ir_drop.py [--threads 2] [--sizes 64 128 256 512] [--splu-tiles 4]

For square tiles of each size: the tiles are those of the default study's conv SNN
(studies.models.conv_net on 28x28 inputs, differential mapping, PCM conductances, one
programming).  Tiles per second of

- xbar's batched direct solve, as programming runs it (``effective_conductance``, float64);
- factorising each tile's nodal matrix with ``scipy.sparse.linalg.splu`` and solving its R
  unit inputs, tile by tile (the floor to beat), on the fullest ``--splu-tiles`` tiles
  (a 512x512 tile takes splu tens of seconds);
- ngspice on one tile (64x64 only: its R unit inputs as R operating points of one run).

Circuit: the default 0.35 ohm per cell on both lines, with 10 ohm drivers and sense
amplifiers so that splu's nodal matrix needs no fixed nodes (the cost of the solve does not
depend on the values).  Every method's answer is checked against xbar's.  Nothing is
asserted about speed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import xbar
from devices import presets
from studies.models import conv_net
from xbar import spice
from xbar.circuit import effective_conductance

R_WIRE, R_SOURCE, R_SINK = 0.35, 10.0, 10.0


def study_tiles(n: int) -> torch.Tensor:
    """Programmed conductances of every tile of the study's conv SNN, ``(tiles, n, n)``."""
    torch.manual_seed(0)
    model = conv_net((1, 28, 28), 10)
    hw = xbar.convert(model, xbar.Spec.ideal(tile=(n, n), device=presets["pcm"]), seed=0)
    tiles = [m.matrix.g_tiles.reshape(-1, n, n) for m in hw.modules() if isinstance(m, (xbar.AnalogLinear, xbar.AnalogConv2d))]
    return torch.cat(tiles).double()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--splu-tiles", type=int, default=4, help="tiles solved by splu, per size")
    p.add_argument("--no-ngspice", action="store_true", help="skip ngspice (about 2 minutes)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    spec = xbar.Spec(r_wire_row=R_WIRE, r_wire_col=R_WIRE, r_source=R_SOURCE, r_sink=R_SINK)
    table = Table(title=f"effective-matrix setup of the study's conv SNN, tiles/s ({args.threads} threads, "
                        f"{R_WIRE} ohm/cell, {R_SOURCE:g} ohm drivers and sinks)")
    for col in ("tile", "tiles", "xbar direct (batched)", "scipy splu, tile by tile", "ngspice, one tile",
                "xbar / splu", "xbar / ngspice"):
        table.add_column(col, justify="right")
    for n in args.sizes:
        g = study_tiles(n)
        effective_conductance(g[:2], spec)  # warm-up
        ours, t_ours = timed(lambda: effective_conductance(g, spec))
        kw = dict(r_wire_row=R_WIRE, r_wire_col=R_WIRE, r_source=R_SOURCE, r_sink=R_SINK)
        fullest = (g > 0).sum((1, 2)).argsort(descending=True)[: args.splu_tiles]
        ref, t_ref = timed(lambda: [spice.splu_effective(g[i].numpy(), **kw) for i in fullest])
        err = max(float(np.abs(ours[i].numpy() - r).max() / np.abs(r).max()) for i, r in zip(fullest, ref))
        assert err < 1e-9, err  # same circuit, same answer
        rate, ref_rate = len(g) / t_ours, len(fullest) / t_ref
        spice_rate = spice_ratio = "-"
        if n == 64 and spice.NGSPICE and not args.no_ngspice:
            full = int((g > 0).sum((1, 2)).argmax())  # the fullest tile
            sp_out, t_sp = timed(lambda: spice.run(g[full].numpy(), np.eye(n), **kw))
            assert np.abs(sp_out - ours[full].numpy()).max() < 1e-5 * np.abs(sp_out).max()
            spice_rate, spice_ratio = f"{1 / t_sp:.3f}", f"{rate * t_sp:.0f}x"
        table.add_row(f"{n}x{n}", str(len(g)), f"{rate:.3g}", f"{ref_rate:.3g}", spice_rate,
                      f"{rate / ref_rate:.1f}x", spice_ratio)
    Console().print(table)


if __name__ == "__main__":
    main()
