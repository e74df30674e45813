"""Tiling of a matrix into fixed-size tiles, and back.

A matrix ``(M, N)`` becomes ``(n_r, n_c, rows, cols)`` tiles with ``n_r = ceil(M / rows)``
and ``n_c = ceil(N / cols)``; the padding is filled with ``pad_value``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def tile_grid(shape: tuple[int, int], rows: int, cols: int) -> tuple[int, int]:
    return math.ceil(shape[0] / rows), math.ceil(shape[1] / cols)


def tile_matrix(m: torch.Tensor, rows: int, cols: int, pad_value: float = 0.0) -> torch.Tensor:
    """``(..., M, N) -> (..., n_r, n_c, rows, cols)``."""
    *lead, M, N = m.shape
    n_r, n_c = tile_grid((M, N), rows, cols)
    padded = F.pad(m, (0, n_c * cols - N, 0, n_r * rows - M), value=pad_value)
    t = padded.reshape(*lead, n_r, rows, n_c, cols)
    return t.movedim(-3, -2)


def untile_matrix(t: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`tile_matrix`: ``(..., n_r, n_c, rows, cols) -> (..., M, N)``."""
    *lead, n_r, n_c, rows, cols = t.shape
    full = t.movedim(-2, -3).reshape(*lead, n_r * rows, n_c * cols)
    return full[..., : shape[0], : shape[1]]
