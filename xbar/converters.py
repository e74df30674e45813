"""DAC and ADC: pure functions on tensors.

Unipolar converters of ``b`` bits have the ``2**b`` codes ``0 .. 2**b - 1`` over
``[0, full scale]``; signed ones the ``2**b - 1`` codes ``-(2**(b-1) - 1) .. 2**(b-1) - 1``
over ``[-full scale, full scale]`` (symmetric about 0; a 1-bit signed converter is
taken as ternary, -1/0/+1).  Values beyond full scale saturate.
"""

from __future__ import annotations

import torch


def top_code(bits: int, signed: bool) -> int:
    """The largest code: full scale is ``top_code`` steps from 0."""
    return max(2 ** (bits - 1) - 1, 1) if signed else 2**bits - 1


def to_codes_(u: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """In place: clip ``u`` (in units of full scale) to the range and round it to integer
    codes ``0 .. top_code`` (``-top_code .. top_code`` when signed)."""
    u.clamp_(-1 if signed else 0, 1)
    return u.mul_(top_code(bits, signed)).round_()


def quantize_unit(u: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """Clip ``u`` to ``[0, 1]`` (or ``[-1, 1]``) and round to the converter's codes."""
    return to_codes_(u.clone(), bits, signed) / top_code(bits, signed)


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
