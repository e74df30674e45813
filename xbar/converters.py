"""DAC and ADC codes: pure functions on tensors (the tiles of :mod:`xbar.tile` use them).

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
