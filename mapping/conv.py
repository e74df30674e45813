"""Convolutions as crossbar matrix products, by unfolding (im2col)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def conv_matrix(weight: torch.Tensor) -> torch.Tensor:
    """Conv weight ``(C_out, C_in/groups, kh, kw)`` -> crossbar matrix ``(C_in*kh*kw, C_out)``."""
    return weight.reshape(weight.shape[0], -1).t()


def input_windows(x: torch.Tensor, kernel_size, dilation, padding, stride) -> torch.Tensor:
    """``(B, C_in, H, W) -> (B, H_out, W_out, C_in, kh, kw)``: each output pixel's window
    of the (zero-padded) input, a strided view (no copy)."""
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = kernel_size, dilation, padding, stride
    xp = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    b, c, h, w = xp.shape
    h_out, w_out = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    sb, sc, sy, sx = xp.stride()
    return xp.as_strided((b, h_out, w_out, c, kh, kw), (sb, sy * sh, sx * sw, sc, sy * dh, sx * dw),
                         xp.storage_offset())


def unfold_input(x: torch.Tensor, kernel_size, dilation, padding, stride) -> torch.Tensor:
    """``(B, C_in, H, W) -> (B, L, C_in*kh*kw)``, contiguous: one crossbar input vector per
    output pixel, as ``F.unfold(...).transpose(1, 2)`` orders it.  One copy from a strided
    view of the (zero-padded) input, where ``F.unfold`` and a transpose take two."""
    windows = input_windows(x, kernel_size, dilation, padding, stride)
    b, h_out, w_out = windows.shape[:3]
    return windows.reshape(b, h_out * w_out, -1).contiguous()


def fold_output(y: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """``(B, L, C_out) -> (B, C_out, H_out, W_out)``."""
    return y.transpose(1, 2).reshape(y.shape[0], y.shape[2], *out_hw)


def conv_output_size(h: int, w: int, kernel_size, dilation, padding, stride) -> tuple[int, int]:
    def one(n, k, d, p, s):
        return (n + 2 * p - d * (k - 1) - 1) // s + 1

    return (one(h, kernel_size[0], dilation[0], padding[0], stride[0]),
            one(w, kernel_size[1], dilation[1], padding[1], stride[1]))
