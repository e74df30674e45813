"""Effective-matrix setup (exact IR drop) against a plain scipy splu of each tile, in one run.

    python benchmarks/bench_ir_drop.py [--tiles 8]

For 64x64 and 128x128 tiles: tiles per second of xbar's batched direct solve
(``xbar.effective_matrix``, float64) and of its PCG alternative, against factorising each
tile's nodal matrix with ``scipy.sparse.linalg.splu`` and solving its R unit inputs.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spl
import torch
from rich.console import Console
from rich.table import Table

from xbar.crossbar import effective_matrix

R_WIRE, R_SOURCE, R_SINK = 2.5, 10.0, 10.0


def nodal_matrix(g: np.ndarray) -> sp.csc_matrix:
    """The reference circuit's nodal matrix (wordline nodes, then bitline nodes)."""
    R, C = g.shape
    n = R * C
    wl = np.arange(n).reshape(R, C)
    bl = wl + n
    edges = [(wl.ravel(), bl.ravel(), g.ravel()),
             (wl[:, :-1].ravel(), wl[:, 1:].ravel(), np.full(R * (C - 1), 1 / R_WIRE)),
             (bl[:-1, :].ravel(), bl[1:, :].ravel(), np.full((R - 1) * C, 1 / R_WIRE))]
    rows, cols, vals = [], [], []
    for p, q, c in edges:
        rows += [p, q, p, q]
        cols += [p, q, q, p]
        vals += [c, c, -c, -c]
    rows += [wl[:, 0], bl[-1, :]]
    cols += [wl[:, 0], bl[-1, :]]
    vals += [np.full(R, 1 / R_SOURCE), np.full(C, 1 / R_SINK)]
    return sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(2 * n, 2 * n))


def splu_effective(g: np.ndarray) -> np.ndarray:
    R, C = g.shape
    lu = spl.splu(nodal_matrix(g))
    rhs = np.zeros((2 * R * C, R))
    rhs[np.arange(R) * C, np.arange(R)] = 1 / R_SOURCE
    x = lu.solve(rhs)
    return (x[R * C + (R - 1) * C : R * C + R * C].T) / R_SINK  # current into each sense amp


def rate(fn, tiles: int) -> float:
    fn()
    start = time.perf_counter()
    fn()
    return tiles / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    table = Table(title=f"effective-matrix setup, tiles/s ({args.threads} threads, r_wire {R_WIRE} ohm)")
    for col in ("tile", "xbar direct (batched)", "xbar PCG (batched)", "scipy splu, tile by tile",
                "direct / splu"):
        table.add_column(col, justify="right")
    rng = np.random.default_rng(0)
    for n in (64, 128):
        g = rng.uniform(1e-6, 1e-4, (args.tiles, n, n))
        gt = torch.tensor(g)
        kw = dict(r_wire_row=R_WIRE, r_wire_col=R_WIRE, r_source=R_SOURCE, r_sink=R_SINK)
        direct = rate(lambda: effective_matrix(gt, **kw), args.tiles)
        pcg = rate(lambda: effective_matrix(gt[:2], method="pcg", **kw), 2)
        ref = rate(lambda: [splu_effective(t) for t in g], args.tiles)
        check = np.abs(effective_matrix(gt[:1], **kw)[0].numpy() - splu_effective(g[0])).max()
        assert check < 1e-9 * np.abs(splu_effective(g[0])).max(), check  # same circuit, same answer
        table.add_row(f"{n}x{n}", f"{direct:.1f}", f"{pcg:.1f}", f"{ref:.1f}", f"{direct / ref:.1f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
