"""Signed weights to conductances in ``[g_min, g_max]`` (S), and back.

``w_max`` is the largest weight magnitude of the whole layer (one scale per layer, so
that the digital side multiplies every column by the same factor).

Differential pair: ``G+ = g_min + (g_max - g_min) * max(w, 0) / w_max`` and
``G- = g_min + (g_max - g_min) * max(-w, 0) / w_max``; ``w = (G+ - G-) * w_max / (g_max - g_min)``.

Offset column: ``G = g_mid + (g_max - g_min) / 2 * w / w_max`` with
``g_mid = (g_min + g_max) / 2``; a reference column of devices at ``g_mid`` is subtracted:
``w = (G - g_ref) * 2 w_max / (g_max - g_min)``.
"""

from __future__ import annotations

import torch


def weight_scale(w: torch.Tensor) -> float:
    """``w_max``: the largest |w| of the layer (1.0 for an all-zero layer)."""
    m = float(w.abs().max()) if w.numel() else 0.0
    return m if m > 0 else 1.0


def encode_differential(w: torch.Tensor, g_min: float, g_max: float, w_max: float | None = None):
    """Returns ``(g_pos, g_neg, w_max)``: two conductance tensors shaped like ``w``."""
    w_max = weight_scale(w) if w_max is None else w_max
    k = (g_max - g_min) / w_max
    return g_min + k * w.clamp_min(0), g_min + k * (-w).clamp_min(0), w_max


def decode_differential(g_pos, g_neg, g_min: float, g_max: float, w_max: float) -> torch.Tensor:
    return (g_pos - g_neg) * (w_max / (g_max - g_min))


def encode_offset(w: torch.Tensor, g_min: float, g_max: float, w_max: float | None = None):
    """Returns ``(g, g_ref, w_max)``; ``g_ref`` is the reference column's conductance."""
    w_max = weight_scale(w) if w_max is None else w_max
    g_mid = 0.5 * (g_min + g_max)
    return g_mid + 0.5 * (g_max - g_min) * (w / w_max), g_mid, w_max


def decode_offset(g, g_ref, g_min: float, g_max: float, w_max: float) -> torch.Tensor:
    return (g - g_ref) * (2.0 * w_max / (g_max - g_min))
