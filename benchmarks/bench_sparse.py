"""Binary spike inputs: the dense tile product against a product over the active rows only.

    python benchmarks/bench_sparse.py [--threads 2] [--repeats 3]

A crossbar layer after the first reads binary spikes; each tile-row's column currents
are the sum of the conductance rows its active inputs drive.  For the read shapes of the
default study's conv SNN (conv2: 5 trials x 200 images x 196 pixels, 144 inputs on 64-row
tiles, 64 columns; fc: 1,568 inputs on 256 columns) and of a 784-input layer (batch 256),
at spike rates from 2% to 50%, one run times:

- dense: the batched matrix product a read does today, per tile-row, including the copy
  of the inputs into tile-row blocks;
- active rows: ``torch.nn.functional.embedding_bag`` summing the conductance rows of the
  active inputs of each (trial, sample, tile-row), after finding them (``nonzero``, the
  offsets of each bag).

Both answers are compared (they agree to float rounding).  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table


def dense(x: torch.Tensor, g: torch.Tensor, rows: int) -> torch.Tensor:
    """``(K, N, m)`` inputs on tile-rows of ``rows`` -> ``(K, n_r, N, C)``."""
    k, n, m = x.shape
    full, last = divmod(m, rows)
    out = [torch.matmul(x[..., : full * rows].reshape(k, n, full, rows).transpose(1, 2).contiguous(),
                        g[:, :full])] if full else []
    if last:
        out.append(torch.matmul(x[..., full * rows :].unsqueeze(1), g[:, full:, :last]))
    return out[0] if len(out) == 1 else torch.cat(out, 1)


def active_rows(x: torch.Tensor, g: torch.Tensor, rows: int) -> torch.Tensor:
    """The same product as sums of the conductance rows of the active inputs."""
    k, n, m = x.shape
    n_r = g.shape[1]
    xp = F.pad(x, (0, n_r * rows - m))
    nz = xp.reshape(k * n, n_r * rows).nonzero()
    index = (nz[:, 0] // n) * (n_r * rows) + nz[:, 1]
    counts = xp.reshape(k * n * n_r, rows).ne(0).sum(-1)
    offsets = torch.zeros_like(counts)
    offsets[1:] = counts.cumsum(0)[:-1]
    out = F.embedding_bag(index, g.reshape(-1, g.shape[-1]), offsets, mode="sum")
    return out.reshape(k, n, n_r, -1).transpose(1, 2)


def best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    cases = [("conv2 of the study (K=5)", 5, 200 * 196, 144, 64, 64, (0.02, 0.1, 0.2, 0.4)),
             ("fc of the study (K=5)", 5, 200, 1568, 64, 256, (0.05, 0.2, 0.5)),
             ("784 inputs, batch 256 (K=1)", 1, 256, 784, 64, 128, (0.05, 0.15, 0.3))]
    table = Table(title=f"binary inputs on 64-row tiles, {args.threads} threads (best of {args.repeats})")
    for col in ("read", "spike rate", "dense (ms)", "active rows (ms)", "active / dense", "max |diff|"):
        table.add_column(col, justify="right")
    for name, k, n, m, rows, cols, rates in cases:
        n_r = -(-m // rows)
        g = torch.rand(k, n_r, rows, cols, generator=gen)
        for rate in rates:
            x = (torch.rand(k, n, m, generator=gen) < rate).float()
            t_dense, t_sparse = best(lambda: dense(x, g, rows), args.repeats), best(lambda: active_rows(x, g, rows), args.repeats)
            diff = float((dense(x, g, rows) - active_rows(x, g, rows)).abs().max())
            table.add_row(name, f"{rate:.0%}", f"{1e3 * t_dense:.1f}", f"{1e3 * t_sparse:.1f}",
                          f"{t_sparse / t_dense:.2f}x", f"{diff:.1e}")
    Console().print(table)


if __name__ == "__main__":
    main()
