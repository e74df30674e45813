"""Signed weights to conductances in ``[g_min, g_max]`` (S), and back.

``w_max`` is the largest weight magnitude of the whole layer (one scale per layer, so
that the digital side multiplies every column by the same factor), or of each output
column (per-column scales, :func:`column_scales`, as IBM aihwkit's
``MappingParameter.weight_scaling_columnwise``: each output uses the whole window, and
the digital side multiplies each by its own factor).  ``w_max`` below may be a tensor
``(out,)`` of per-column scales, broadcast over the last axis of ``w``.

Differential pair: ``G+ = g_min + (g_max - g_min) * max(w, 0) / w_max`` and
``G- = g_min + (g_max - g_min) * max(-w, 0) / w_max``; ``w = (G+ - G-) * w_max / (g_max - g_min)``.

Offset column: ``G = g_ref + h * w / w_max``; a reference column of devices at ``g_ref``
is subtracted: ``w = (G - g_ref) * w_max / h``.  For a continuous device (or an odd number
of levels) ``g_ref`` is the middle of the window and ``h = (g_max - g_min) / 2``.  With an
even number of levels no level sits in the middle: ``g_ref`` is the level just below it and
``h`` the ``levels / 2 - 1`` steps that fit on both sides of it, so that zero is a level and
the levels are symmetric about it (one level at the top goes unused).  A reference off the
levels would bias every weight by half a step, and the bias adds up over a column's inputs.
"""

from __future__ import annotations

import torch


def weight_scale(w: torch.Tensor) -> float:
    """``w_max``: the largest |w| of the layer (1.0 for an all-zero layer)."""
    m = float(w.detach().abs().max()) if w.numel() else 0.0
    return m if m > 0 else 1.0


def column_scales(w: torch.Tensor, w_max: float) -> torch.Tensor:
    """Each output column's largest |w| over the layer's ``w_max``, ``(out,)`` in ``(0, 1]``
    (1 for an all-zero column: any scale encodes it)."""
    m = w.detach().abs().amax(0) / w_max
    return torch.where(m > 0, m, torch.ones_like(m))


def encode_differential(w: torch.Tensor, g_min: float, g_max: float, w_max: float | None = None):
    """Returns ``(g_pos, g_neg, w_max)``: two conductance tensors shaped like ``w``."""
    w_max = weight_scale(w) if w_max is None else w_max
    k = (g_max - g_min) / w_max
    return g_min + k * w.clamp_min(0), g_min + k * (-w).clamp_min(0), w_max


def offset_reference(g_min: float, g_max: float, levels: int | None) -> tuple[float, float]:
    """``(g_ref, h)``: the reference conductance (S), a level when ``levels`` is set, and
    the half-range ``h`` (S) symmetric about it that the weights ``[-w_max, w_max]`` use."""
    if levels is None:
        return 0.5 * (g_min + g_max), 0.5 * (g_max - g_min)
    if levels < 3:
        raise ValueError(f"levels = {levels!r} is not allowed with the offset mapping: it needs "
                         "at least 3 levels (a zero weight and one step each way); use the "
                         "differential mapping for binary devices")
    step = (g_max - g_min) / (levels - 1)
    below = (levels - 1) // 2  # the middle level, or the one just below the middle
    return g_min + below * step, below * step


def encode_offset(w: torch.Tensor, g_min: float, g_max: float, w_max: float | None = None,
                  levels: int | None = None):
    """Returns ``(g, g_ref, w_max, h)``; ``g_ref`` is the reference column's conductance and
    ``w = (g - g_ref) * w_max / h``."""
    w_max = weight_scale(w) if w_max is None else w_max
    g_ref, h = offset_reference(g_min, g_max, levels)
    return g_ref + h * (w / w_max), g_ref, w_max, h
