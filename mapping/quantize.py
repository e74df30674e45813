"""Quantization of conductances to a device's programmable levels."""

from __future__ import annotations

import torch


def quantize_levels(g: torch.Tensor, g_min: float, g_max: float, levels: int | None) -> torch.Tensor:
    """Round each conductance (S) to the nearest of ``levels`` evenly spaced values in
    ``[g_min, g_max]`` (values outside are first clipped into it).  ``levels=None``:
    a continuous device, ``g`` is returned unchanged."""
    if levels is None:
        return g
    step = (g_max - g_min) / (levels - 1)
    idx = torch.round((g.clamp(g_min, g_max) - g_min) / step)
    return g_min + idx * step
