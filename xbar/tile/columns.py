"""How a layer's columns sit on its tiles: the inputs split into tile-rows, the columns
that are read, and the decoding of read columns into outputs.

A layer of ``n_in`` inputs and ``n_out`` outputs occupies a grid of ``n_r x n_c`` tiles of
``R x C`` cells (:func:`mapping.layout.layout_weights`).  Its inputs are split into
``n_r`` tile-rows of ``R`` rows; each tile-row is read on its own (its ADCs), and the
tile-rows' decoded partial sums are added digitally.  A read column is a physical column
that carries an output: the two columns ``(G+, G-)`` of a differential pair, or an
offset mapping's column and its tile's reference column.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mapping.slicing import slice_weights


def crossbar_columns(w: torch.Tensor, spec) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """The matrix whose columns a layer's tiles carry, for its weights ``w`` ``(in, out)``:
    ``(matrix, column_max, slices)``.  ``w`` itself (``None``, 1), or with bit-sliced
    weights (``Spec.cell_bits``) its slices' columns ``(in, slices * out)``, slice-major, in
    weight units, each column's full-scale weight ``column_max``
    (:func:`mapping.slicing.slice_weights`), to be shifted and added after the read
    (:func:`mapping.slicing.combine_slices`).  Without gradient."""
    if not spec.sliced:
        return w.detach(), None, 1
    s = slice_weights(w, spec.weight_slices, 2**spec.cell_bits, spec.weight_scale)
    return s.matrix, s.column_max, s.slices


def side_by_side(t: torch.Tensor) -> torch.Tensor:
    """``(..., n_c, R, C) -> (..., R, n_c * C)``: the tiles of a tile-row side by side."""
    *lead, n_c, r, c = t.shape
    return t.transpose(-3, -2).reshape(*lead, r, n_c * c)


def tile_row_parts(x: torch.Tensor, n_in: int, rows: int) -> list[tuple[torch.Tensor, slice]]:
    """Inputs ``x`` ``(..., N, n_in)`` as ``(inputs (..., k, N, r), tile-rows)`` pairs (views):
    the full tile-rows, then the partial last one with only its used rows, so that no
    product runs over the zero padding (conv1 of a 3x3 kernel uses 9 of 64 rows)."""
    full, last = divmod(n_in, rows)
    parts = []
    if full:
        parts.append((x[..., : full * rows].unflatten(-1, (full, rows)).movedim(-2, -3), slice(0, full)))
    if last:
        parts.append((x[..., full * rows :].unsqueeze(-3), slice(full, full + 1)))
    return parts


def by_tile_row(x: torch.Tensor, n_r: int, rows: int) -> torch.Tensor:
    """Input vectors ``(..., N, in)`` as each tile-row's inputs ``(..., n_r, N, rows)``,
    zero-padded to whole tile-rows (a view where they are whole already)."""
    pad = n_r * rows - x.shape[-1]
    return (F.pad(x, (0, pad)) if pad else x).unflatten(-1, (n_r, rows)).transpose(-2, -3)


def read_columns(scheme: str, n_out: int, n_c: int, cols: int, per_tile: int):
    """Which physical columns (indices into ``n_c * cols``) are read, and for each output
    the positions, among the read columns, of its column ``a`` and of ``b`` with
    ``output = a - b`` (the G- column, or the tile's reference column)."""
    keep, a, b = [], [], []
    for c in range(n_c):
        used = min(per_tile, n_out - c * per_tile)
        base = c * cols
        if scheme == "differential":
            for j in range(used):
                a.append(len(keep))
                keep.append(base + 2 * j)
                b.append(len(keep))
                keep.append(base + 2 * j + 1)
        else:
            ref = len(keep) + used
            for j in range(used):
                a.append(len(keep))
                keep.append(base + j)
                b.append(ref)
            keep.append(base + cols - 1)
    return torch.tensor(keep), torch.tensor(a), torch.tensor(b)


def read_column_tiles(keep: torch.Tensor, cols: int, analog_pairs: bool) -> torch.Tensor:
    """The tile (column block) of each read column, for the physical columns ``keep``
    (:func:`read_columns`); with analog subtraction a pair's two columns are one."""
    return (keep[0::2] if analog_pairs else keep) // cols


def read_matrices(g: torch.Tensor, s2: torch.Tensor | None, scale, keep: torch.Tensor | None,
                  analog_pairs: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Tiles ``(..., n_r, n_c, R, C)`` of effective conductances ``g`` and per-read noise
    variances ``s2`` as the matrices a read multiplies, ``(..., n_r, R, read columns)``:
    scaled by ``scale`` (read units per siemens, broadcast over the tiles), the tiles of a
    tile-row side by side, only the read columns ``keep`` (``None``: all of them).  With
    analog subtraction each pair's two columns are one, ``G+ - G-``, with the variance of
    the difference of two independent noises."""
    g = side_by_side(g * scale)
    s2 = None if s2 is None else side_by_side(s2 * scale**2)
    if keep is not None:
        g = g[..., keep]
        s2 = None if s2 is None else s2[..., keep]
    if analog_pairs:  # read columns are (G+, G-) pairs in output order
        g = g[..., 0::2] - g[..., 1::2]
        s2 = None if s2 is None else s2[..., 0::2] + s2[..., 1::2]
    return g, s2


class _PairDifference(torch.autograd.Function):
    """``u[..., 0::2] - u[..., 1::2]`` (a differential pair's columns, side by side), with
    a backward that writes its gradient in one pass (slicing's backward zero-fills twice)."""

    @staticmethod
    def forward(ctx, u):
        return u[..., 0::2] - u[..., 1::2]

    @staticmethod
    def backward(ctx, grad):
        return torch.stack((grad, -grad), -1).flatten(-2)


def decode_reads(u: torch.Tensor, scheme: str, a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor:
    """Read columns -> outputs: ``u[a] - u[b]`` on the last axis, the pair's difference or
    the difference to the tile's reference column (``a is None``: already outputs)."""
    if a is None:
        return u
    if scheme == "differential":  # read columns are (G+, G-) pairs in output order
        return _PairDifference.apply(u)
    return u[..., a] - u[..., b]
