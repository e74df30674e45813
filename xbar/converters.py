"""DAC and ADC: pure functions on tensors.

Unipolar converters of ``b`` bits have the ``2**b`` codes ``0 .. 2**b - 1`` over
``[0, full scale]``; signed ones the ``2**b - 1`` codes ``-(2**(b-1) - 1) .. 2**(b-1) - 1``
over ``[-full scale, full scale]`` (symmetric about 0; a 1-bit signed converter is
taken as ternary, -1/0/+1).  Values beyond full scale saturate.
"""

from __future__ import annotations

import torch


def quantize_unit(u: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """Clip ``u`` to ``[0, 1]`` (or ``[-1, 1]``) and round to the converter's codes."""
    if signed:
        q = max(2 ** (bits - 1) - 1, 1)
        return torch.round(u.clamp(-1, 1) * q) / q
    q = 2**bits - 1
    return torch.round(u.clamp(0, 1) * q) / q


def dac(x: torch.Tensor, *, v_read: float, input_range: float, bits: int | None,
        signed: bool) -> torch.Tensor:
    """Inputs to row voltages (V).  ``bits=None``: ideal, ``v = x / input_range * v_read``.
    Otherwise ``x`` is clipped to the range and rounded to the DAC's codes."""
    u = x / input_range
    if bits is not None:
        u = quantize_unit(u, bits, signed)
    return u * v_read


def adc(i: torch.Tensor, i_fs: torch.Tensor, *, bits: int, signed: bool) -> torch.Tensor:
    """Column currents (A) as the ADC reports them (A): clipped to the full scale ``i_fs``
    (broadcast against ``i``) and rounded to the ADC's codes."""
    return quantize_unit(i / i_fs, bits, signed) * i_fs
