"""DAC and ADC: pure functions on tensors."""

from __future__ import annotations

import torch


def dac(x: torch.Tensor, *, v_read: float, input_range: float, bits: int | None,
        signed: bool) -> torch.Tensor:
    """Inputs to row voltages (V).  ``bits=None``: ideal, ``v = x / input_range * v_read``.
    Otherwise ``x`` is clipped to the range and rounded to the DAC's levels."""
    u = x / input_range
    if bits is not None:
        levels = 2**bits - 1
        if signed:
            half = levels / 2
            u = torch.round(u.clamp(-1, 1) * half) / half
        else:
            u = torch.round(u.clamp(0, 1) * levels) / levels
    return u * v_read


def adc(i: torch.Tensor, i_fs: torch.Tensor, *, bits: int, signed: bool) -> torch.Tensor:
    """Column currents (A) as the ADC reports them (A): clipped to the full scale ``i_fs``
    (broadcast against ``i``) and rounded to the ADC's levels."""
    levels = 2**bits - 1
    u = i / i_fs
    if signed:
        half = levels / 2
        u = torch.round(u.clamp(-1, 1) * half) / half
    else:
        u = torch.round(u.clamp(0, 1) * levels) / levels
    return u * i_fs
