"""Bit-sliced weights: one weight over several cells of a few levels each.

A weight is quantized to a signed integer of ``slices`` base-``b`` digits (``b`` levels
per cell), sign and magnitude: ``q = round(w / unit)`` in ``[-(b**k - 1), b**k - 1]``
with ``unit = w_max / (b**k - 1)``; its magnitude's digit ``s`` (least significant
first) goes, with the weight's sign, on slice ``s``'s differential pair, at one of the
cell's ``b`` levels.  Each slice is read on its own columns by its own ADCs, and the
digital side shifts and adds the digitized slices: ``sum_s b**s * digit_s * unit``.
This is Sandia CrossSim's balanced bit-sliced core (``BitslicedCore``: sign and
magnitude, one differential pair per slice, an ADC per slice) and the weight layout of
NeuroSim's multi-level cells (``cellBit``, ``synapseBit``).

Here the slices are the columns of one wider crossbar matrix ``(in, slices * out)``,
slice-major (slice ``s`` of output ``o`` at column ``s * out + o``), each column in weight
units with its own full scale ``b**s * (b - 1) * unit``: every later stage (tiles,
programming, wires, noise, ADCs, calibration) treats a slice's columns as any others,
and :func:`combine_slices` is the shift-and-add.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mapping.scale import column_scales, weight_scale


@dataclass(frozen=True)
class SlicedWeights:
    """A layer's weights over ``slices`` cells of ``levels`` levels each.

    ``matrix``: ``(in, slices * out)`` in weight units, slice ``s`` of output ``o`` at column
    ``s * out + o``, each entry ``sign * digit * levels**s * unit``; ``column_max``:
    ``(slices * out,)``, each column's full-scale weight ``levels**s * (levels - 1) * unit``
    (a digit of ``levels - 1`` uses the whole conductance window); ``unit``: the weight of
    the least significant digit, per output ``(out,)``."""

    matrix: torch.Tensor
    column_max: torch.Tensor
    unit: torch.Tensor
    slices: int
    levels: int

    @property
    def quantized(self) -> torch.Tensor:
        """The weights ``(in, out)`` the slices encode: their shift-and-add."""
        return combine_slices(self.matrix, self.slices)


def slice_weights(w: torch.Tensor, slices: int, levels: int, scale: str = "layer") -> SlicedWeights:
    """Slice ``w`` ``(in, out)`` over ``slices`` cells of ``levels`` levels each (see the
    module docstring).  ``scale``: ``"layer"``, one ``w_max`` for the layer (its largest
    |w|), or ``"column"``, one per output (its own largest |w|)."""
    if slices < 1 or levels < 2:
        raise ValueError(f"slice_weights: slices = {slices!r} and levels = {levels!r} are not allowed: "
                         "need slices >= 1 and levels >= 2")
    w = w.detach()
    w_max = weight_scale(w)
    enc = torch.full((w.shape[1],), w_max, dtype=w.dtype, device=w.device)
    if scale == "column":
        enc = enc * column_scales(w, w_max)
    top = levels**slices - 1
    unit = enc / top  # (out,)
    q = torch.round(w / unit).clamp(-top, top)
    magnitude, sign = q.abs(), torch.sign(q)
    digits = torch.stack([torch.div(magnitude, levels**s, rounding_mode="floor") % levels
                          for s in range(slices)])  # (slices, in, out)
    weight = torch.tensor([float(levels**s) for s in range(slices)], dtype=w.dtype, device=w.device)
    matrix = (sign * digits * (weight[:, None, None] * unit)).permute(1, 0, 2).reshape(w.shape[0], -1)
    column_max = ((levels - 1) * weight[:, None] * unit).reshape(-1)
    return SlicedWeights(matrix, column_max, unit, slices, levels)


def combine_slices(y: torch.Tensor, slices: int, dim: int = -1) -> torch.Tensor:
    """The shift-and-add: values of the slices' columns along ``dim`` (``slices * out``,
    slice-major, each already in weight units, so the shift is in them) -> ``out``."""
    if slices == 1:
        return y
    return y.unflatten(dim, (slices, -1)).sum(dim - 1 if dim < 0 else dim)


__all__ = ["SlicedWeights", "slice_weights", "combine_slices"]
