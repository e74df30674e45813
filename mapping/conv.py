"""Convolutions as crossbar matrix products, by unfolding (im2col)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def conv_matrix(weight: torch.Tensor) -> torch.Tensor:
    """Conv weight ``(C_out, C_in/groups, kh, kw)`` -> crossbar matrix ``(C_in*kh*kw, C_out)``."""
    return weight.reshape(weight.shape[0], -1).t()


def unfold_input(x: torch.Tensor, kernel_size, dilation, padding, stride) -> torch.Tensor:
    """``(B, C_in, H, W) -> (B, L, C_in*kh*kw)``: one crossbar input vector per output pixel."""
    return F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride).transpose(1, 2)


def fold_output(y: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """``(B, L, C_out) -> (B, C_out, H_out, W_out)``."""
    return y.transpose(1, 2).reshape(y.shape[0], y.shape[2], *out_hw)


def conv_output_size(h: int, w: int, kernel_size, dilation, padding, stride) -> tuple[int, int]:
    def one(n, k, d, p, s):
        return (n + 2 * p - d * (k - 1) - 1) // s + 1

    return (one(h, kernel_size[0], dilation[0], padding[0], stride[0]),
            one(w, kernel_size[1], dilation[1], padding[1], stride[1]))
