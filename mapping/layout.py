"""A layer's weights to the conductance targets of its tiles, and back.

Physical column order inside a tile of ``cols`` columns:

``differential``
    ``cols // 2`` outputs; output ``k`` uses column ``2k`` (G+) and ``2k + 1`` (G-).  An odd
    last column is unused (devices at ``g_min``).
``offset``
    ``cols - 1`` outputs on columns ``0 .. cols-2``; the last column is the reference
    column, every device at ``g_ref`` (the middle of the window, or with an even number of
    levels the level just below it: see :mod:`mapping.scale`).

Padding devices (rows past ``in_features``, columns past ``out_features``) encode a zero
weight.  Each tile's columns are read by its own ADC; the digital side then subtracts
the pair (or the reference), sums the partial results of the tiles stacked along the
rows, and multiplies by ``w_per_siemens``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mapping.quantize import quantize_levels
from mapping.scale import column_scales, encode_differential, encode_offset, weight_scale
from mapping.tiling import tile_grid, tile_matrix

SCHEMES = ("differential", "offset")
WEIGHT_SCALES = ("layer", "column")


@dataclass(frozen=True)
class TileLayout:
    """Conductance targets of one layer on its tiles.

    ``targets``: ``(n_r, n_c, rows, cols)`` in S.  ``shape``: the crossbar matrix
    ``(in_features, out_features)``.  ``w_per_siemens``: weight units per siemens of
    column-difference conductance, for the layer's scale ``w_max``.  ``column_scale``:
    with per-column scales (``weight_scale="column"``), each output's own ``w_max`` over
    the layer's, ``(out_features,)`` in ``(0, 1]``, a digital factor after the decoding
    (``None``: one scale for the layer).
    """

    targets: torch.Tensor
    scheme: str
    shape: tuple[int, int]
    w_max: float
    w_per_siemens: float
    outputs_per_tile: int
    column_scale: torch.Tensor | None = None

    @property
    def w_per_output(self) -> float | torch.Tensor:
        """Weight units per siemens of each output's column difference: ``w_per_siemens``,
        times ``column_scale`` where each output has its own scale (``(out,)``)."""
        return self.w_per_siemens if self.column_scale is None else self.w_per_siemens * self.column_scale

    @property
    def grid(self) -> tuple[int, int]:
        return self.targets.shape[0], self.targets.shape[1]

    @property
    def tile(self) -> tuple[int, int]:
        return self.targets.shape[2], self.targets.shape[3]


def outputs_per_tile(scheme: str, cols: int) -> int:
    return cols // 2 if scheme == "differential" else cols - 1


def layout_weights(w: torch.Tensor, g_min: float, g_max: float, levels: int | None,
                   tile: tuple[int, int], scheme: str = "differential", scale: str = "layer",
                   column_max: torch.Tensor | None = None) -> TileLayout:
    """Map a crossbar matrix ``w`` ``(in, out)`` to tile conductance targets (S).

    Conductances are quantized to the device's ``levels`` (``None``: continuous).
    ``scale``: ``"layer"``, one weight scale for the layer (its largest |w| uses the
    whole conductance window), or ``"column"``, one per output (each output's largest
    |w| does: :func:`mapping.scale.column_scales`), undone by a digital factor per output.
    ``column_max``: each output's full-scale weight ``(out,)`` given, instead of either
    (a bit-sliced layer's columns, :mod:`mapping.slicing`: a digit's full scale whether
    or not a weight reaches it).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme = {scheme!r} is not allowed: must be one of {list(SCHEMES)}")
    if scale not in WEIGHT_SCALES:
        raise ValueError(f"scale = {scale!r} is not allowed: must be one of {list(WEIGHT_SCALES)}")
    rows, cols = tile
    o = outputs_per_tile(scheme, cols)
    if o < 1:
        raise ValueError(f"tile = {tile!r} is not allowed: the {scheme} scheme needs at least "
                         "2 columns per tile")
    if column_max is not None:
        w_max = float(column_max.max())
        column_scale = column_max / w_max
    else:
        w_max = weight_scale(w)
        column_scale = None if scale == "layer" else column_scales(w, w_max)
    enc = w_max if column_scale is None else w_max * column_scale  # each output's scale
    if scheme == "differential":
        g_pos, g_neg, _ = encode_differential(w, g_min, g_max, enc)
        g_pos = tile_matrix(quantize_levels(g_pos, g_min, g_max, levels), rows, o, g_min)
        g_neg = tile_matrix(quantize_levels(g_neg, g_min, g_max, levels), rows, o, g_min)
        t = torch.stack((g_pos, g_neg), dim=-1).flatten(-2)
        if cols > 2 * o:
            t = torch.nn.functional.pad(t, (0, cols - 2 * o), value=g_min)
        w_per_siemens = w_max / (g_max - g_min)
    else:
        g, g_ref, _, half = encode_offset(w, g_min, g_max, enc, levels)
        t = tile_matrix(quantize_levels(g, g_min, g_max, levels), rows, o, g_ref)
        t = torch.nn.functional.pad(t, (0, 1), value=g_ref)
        w_per_siemens = w_max / half
    return TileLayout(t, scheme, tuple(w.shape), w_max, w_per_siemens, o, column_scale)


def decode_columns(x: torch.Tensor, scheme: str, outputs: int) -> torch.Tensor:
    """Digital combination of column values ``(..., cols)`` -> ``(..., outputs)``:
    the pair difference or the difference to the reference column (same units as ``x``)."""
    if scheme == "differential":
        return x[..., 0 : 2 * outputs : 2] - x[..., 1 : 2 * outputs : 2]
    return x[..., :outputs] - x[..., outputs : outputs + 1]


def unmap_layout(layout: TileLayout, g: torch.Tensor | None = None) -> torch.Tensor:
    """The weights ``(in, out)`` that tile conductances ``g`` (default: the targets) encode."""
    g = layout.targets if g is None else g
    n_r, n_c, rows, cols = g.shape[-4:]
    per_row = decode_columns(g.movedim(-3, -2), layout.scheme, layout.outputs_per_tile)
    w = per_row.reshape(*g.shape[:-4], n_r * rows, n_c * layout.outputs_per_tile)
    return w[..., : layout.shape[0], : layout.shape[1]] * layout.w_per_output


__all__ = ["SCHEMES", "WEIGHT_SCALES", "TileLayout", "layout_weights", "unmap_layout", "decode_columns",
           "outputs_per_tile", "tile_grid"]
