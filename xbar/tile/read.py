"""The read of a tile-row after its product, for evaluation and training alike.

A read's column currents ``u`` come from one product of the inputs with the read
matrices (:func:`xbar.tile.columns.read_matrices`), in units of the ADC's full scale
where there is an ADC (weight units without).  Then, here:

- the per-read noise: ``u + std * eps``, ``std`` the square root of one product of the
  squared inputs with the variances, ``eps`` standard normals, correlated between
  consecutive reads of one inference by an AR(1) process (:func:`ar1`);
- the ADC (:func:`adc_codes`): its non-linearity, gain error, offset and input-referred noise, then the
  clip to its range and the rounding to codes (:func:`xbar.tile.converters.to_codes_`),
  with a straight-through gradient inside the range and none beyond it;
- the decoding of read columns into outputs (:func:`xbar.tile.columns.decode_reads`) and
  the digital scale of codes to weight units, which the callers apply in their layout.
"""

from __future__ import annotations

from typing import Callable

import torch

from xbar.circuit import read_currents
from xbar.spec import Spec
from xbar.tile.columns import decode_reads
from xbar.tile.converters import AdcErrors, adc_input, add_planes, bit_planes, integrated_planes, to_codes_, top_code


def circuit_currents(g: torch.Tensor, x: torch.Tensor, spec: Spec) -> torch.Tensor:
    """What ``x @ g`` is where each read is its own circuit
    (:func:`xbar.circuit.read_currents`); with bits integrated before one conversion
    (``Spec.input_scheme="bit_integrated"``), each bit's binary read solved on its own and
    their currents summed with the bits' weights, as their charges add on the capacitor."""
    planes = integrated_planes(x, spec)
    if planes == 1:
        return read_currents(g, x, spec)
    return add_planes(torch.stack([read_currents(g, p, spec) for p in bit_planes(x, planes, spec)]), spec)


def ar1(prev: torch.Tensor | None, eps: torch.Tensor, rho: float) -> torch.Tensor:
    """The normalised noise of a read, ``e_t = rho e_{t-1} + sqrt(1 - rho^2) xi_t`` for fresh
    standard normals ``eps`` (``xi_t``) and the previous read's ``prev`` (``e_{t-1}``; none,
    or of another shape: a new inference, ``eps`` itself).  Stationary: unit variance
    at every read, correlation ``rho`` between consecutive ones."""
    if not rho or prev is None or prev.shape != eps.shape:
        return eps
    return (prev * rho).add_(eps, alpha=(1 - rho**2) ** 0.5)


class _Quantize(torch.autograd.Function):
    """:func:`xbar.tile.converters.to_codes_` out of place, with a straight-through
    gradient inside the range and none beyond the clip (the mask is kept only if the read
    clipped)."""

    @staticmethod
    def forward(ctx, u, bits: int, signed: bool):
        lo = -1.0 if signed else 0.0
        least, most = torch.aminmax(u)
        inside = None if lo <= float(least) and float(most) <= 1.0 else (u >= lo) & (u <= 1.0)
        ctx.save_for_backward(inside)
        ctx.top = top_code(bits, signed)
        return to_codes_(u.clone(), bits, signed)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        g = grad * ctx.top
        return (g if inside is None else torch.where(inside, g, 0.0)), None, None


def adc_codes(u: torch.Tensor, spec: Spec, errors: AdcErrors = AdcErrors(),
              normal: Callable[[torch.Tensor], torch.Tensor] | None = None, *, inplace: bool = False) -> torch.Tensor:
    """Column currents ``u`` (units of full scale) as ADC codes: the converter's own
    ``errors`` (:class:`xbar.tile.converters.AdcErrors`, broadcast), its noise
    (``normal(like)``: standard normals, drawn where ``Spec.adc_noise > 0``), the clip and
    the rounding.  ``inplace``: ``u`` may be overwritten (a fresh product, no gradient
    needed of it).  Differentiable in ``u``."""
    if errors.any or spec.adc_noise > 0:
        u = adc_input(u, spec, errors, normal, inplace=inplace and not u.requires_grad)
        inplace = True
    if u.requires_grad:
        return _Quantize.apply(u, spec.adc_bits, spec.signed_adc)
    return to_codes_(u if inplace else u.clone(), spec.adc_bits, spec.signed_adc)


def tile_row_read(u: torch.Tensor, std: torch.Tensor | None, eps: torch.Tensor | None, spec: Spec, *,
                  adc: bool, a: torch.Tensor | None, b: torch.Tensor | None, errors: AdcErrors = AdcErrors(),
                  normal: Callable[[torch.Tensor], torch.Tensor] | None = None, inplace: bool = False) -> torch.Tensor:
    """A tile-row's column sums ``u`` ``(..., read columns)`` as decoded outputs ``(...,
    out)``: the per-read noise ``std * eps`` (``std`` ``None``: none), the ADC where
    ``adc`` (:func:`adc_codes`: codes; otherwise ``u`` stays in its units), and the
    decoding of read columns ``a - b`` (:func:`xbar.tile.columns.decode_reads`).
    ``inplace``: ``u`` may be overwritten (a fresh product, no gradient needed of it)."""
    if std is not None:
        u = u.addcmul_(std, eps) if inplace else torch.addcmul(u, std, eps)
        inplace = True
    if adc:
        u = adc_codes(u, spec, errors, normal, inplace=inplace)
    return decode_reads(u, spec.mapping, a, b)
