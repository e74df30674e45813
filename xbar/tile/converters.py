"""The converters: the DAC that drives the rows and the ADC that reads each column, as
pure functions on tensors, for evaluation and hardware-aware training alike.

Unipolar converters of ``b`` bits have the ``2**b`` codes ``0 .. 2**b - 1`` over
``[0, full scale]``; signed ones the ``2**b - 1`` codes ``-(2**(b-1) - 1) .. 2**(b-1) - 1``
over ``[-full scale, full scale]`` (symmetric about 0; a 1-bit signed converter is
taken as ternary, -1/0/+1).  Values beyond full scale saturate.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from xbar.spec import Spec


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


def refuses_negative(spec: Spec) -> bool:
    """An unsigned DAC cannot drive a negative voltage; with ideal converters the read is
    exact for any sign, so only a path with a converter refuses negative inputs."""
    return not spec.dac_signed and (spec.dac_bits is not None or spec.adc_bits is not None)


def check_dac_input(x: torch.Tensor, spec: Spec) -> None:
    """Refuse a negative input where :func:`refuses_negative` (never clip it silently)."""
    if refuses_negative(spec) and float(x.detach().min()) < 0:
        raise ValueError(f"crossbar read: an input of {float(x.detach().min()):.4g} < 0 on an unsigned DAC "
                         f"(Spec.dac_signed=False), which would clip it: scale the inputs to "
                         f"[0, {spec.input_range:g}], or set Spec(dac_signed=True, adc_signed=True)")


def dac(x: torch.Tensor, spec: Spec) -> torch.Tensor:
    """The inputs as the DAC drives them: rounded to its codes (``x`` with an ideal DAC)."""
    if spec.dac_bits is None:
        return x
    return quantize_unit(x / spec.input_range, spec.dac_bits, spec.dac_signed) * spec.input_range


def serial_planes(x: torch.Tensor, spec: Spec) -> int:
    """Reads per input vector: with bit-serial inputs (``Spec.input_scheme`` ``"bit_serial"``
    or ``"bit_integrated"``) the DAC code's magnitude bits, one read each, unless every
    input is binary (0 or ``±input_range``: spikes, one read); otherwise 1."""
    if spec.input_scheme == "amplitude":
        return 1
    binary = bool(((x == 0) | (x.abs() == spec.input_range)).all())
    return 1 if binary else magnitude_bits(spec)


def magnitude_bits(spec: Spec) -> int:
    """The bits of a DAC code's magnitude: ``dac_bits``, or one fewer signed."""
    return top_code(spec.dac_bits, spec.dac_signed).bit_length()


def converted_planes(x: torch.Tensor, spec: Spec) -> int:
    """The bit reads of ``x`` that are each converted on their own (``"bit_serial"``); 1
    otherwise."""
    return serial_planes(x, spec) if spec.input_scheme == "bit_serial" else 1


def integrated_planes(x: torch.Tensor, spec: Spec) -> int:
    """The bit reads of ``x`` whose charges are integrated before one conversion
    (``"bit_integrated"``); 1 otherwise."""
    return serial_planes(x, spec) if spec.input_scheme == "bit_integrated" else 1


def bit_planes(x: torch.Tensor, planes: int, spec: Spec) -> torch.Tensor:
    """DAC-rounded inputs ``x`` (:func:`dac`) as ``planes`` binary reads ``(planes, *x.shape)``,
    least significant first: plane ``j`` drives a row at ``±input_range`` (``v_read``,
    the code's sign) where bit ``j`` of its code's magnitude is set, 0 where not.  One plane:
    ``x`` itself (binary already)."""
    if planes == 1:
        return x.unsqueeze(0)
    top = top_code(spec.dac_bits, spec.dac_signed)
    codes = torch.round(x / spec.input_range * top)
    magnitude, sign = codes.abs(), torch.sign(codes) * spec.input_range
    return torch.stack([torch.div(magnitude, 2**j, rounding_mode="floor") % 2 * sign for j in range(planes)])


def add_planes(y: torch.Tensor, spec: Spec) -> torch.Tensor:
    """The shift-and-add of bit-serial reads ``y`` ``(planes, ...)`` (:func:`bit_planes`),
    each digitized on its own: ``sum_j 2**j y_j / top_code``, what the DAC's code would
    have read in one (exactly, for a linear read)."""
    if y.shape[0] == 1:
        return y[0]
    return torch.tensordot(_bit_weights(y, spec), y, dims=([0], [0]))


def _bit_weights(y: torch.Tensor, spec: Spec) -> torch.Tensor:
    """Each bit plane's weight in the DAC code's value, ``2**j / top_code``, for planes
    ``y`` ``(planes, ...)`` (in ``y``'s dtype and device)."""
    weights = 2.0 ** torch.arange(y.shape[0], dtype=y.dtype, device=y.device)
    return weights / top_code(spec.dac_bits, spec.dac_signed)


def noise_square(x: torch.Tensor, spec: Spec) -> torch.Tensor:
    """What a read's per-read noise variance is linear in, per row: the squared drive
    ``x * x``; with bits integrated before one conversion (``"bit_integrated"``), each bit's
    read draws its own noise, so the binary-weighted sum of independent reads has
    ``sum_j (2**j / top_code)**2 p_j**2`` (:func:`bit_planes`)."""
    planes = integrated_planes(x, spec)
    if planes == 1:
        return x * x
    p = bit_planes(x, planes, spec)
    return torch.tensordot(_bit_weights(p, spec) ** 2, p * p, dims=([0], [0]))


def full_scale(g0: torch.Tensor, spec: Spec, n_in: int, analog_pairs: bool,
               outputs_per_tile: int, zero_tiles: torch.Tensor | None = None) -> torch.Tensor | None:
    """Each tile's ADC full scale (A), ``(..., n_r, n_c)``, for tiles ``g0`` ``(..., n_r,
    n_c, R, C)`` of a layer of ``n_in`` inputs: ``adc_range`` times the largest column
    current with every row that an input drives at full scale (the rows of the last
    tile-row beyond the layer's inputs are padding, driven by nothing).  ``g0``: the
    effective conductances of the programmed state, IR drop included, so that the current
    is the one the column can draw (superposition: the all-on current is the sum of the
    effective conductances of the driven rows times ``v_read``).  ``zero_tiles`` ``(n_r,
    n_c)``: the tiles that hold only zero weights, whose analog pairs' ADCs are sized for
    the conductance window instead.  ``None`` without an ADC."""
    if spec.adc_bits is None:
        return None
    n_r, rows = g0.shape[-4], g0.shape[-2]
    driven = torch.arange(n_r * rows, device=g0.device).reshape(n_r, rows) < n_in
    g0 = g0 * driven[:, None, :, None]
    if analog_pairs:  # one signed ADC reads G+ - G-: its largest magnitude either way
        diff = g0[..., 0 : 2 * outputs_per_tile : 2] - g0[..., 1 : 2 * outputs_per_tile : 2]
        cols = torch.maximum(diff.clamp_min(0).sum(-2), (-diff).clamp_min(0).sum(-2))
        if zero_tiles is not None:
            # A tile of zero weights (every pair at one target: a pruned block, or a bit
            # slice's high digits) has no worst case of its own, only what the wires and
            # the devices' spread leave: its ADC is sized for the window, the most any
            # pair of its driven rows can draw.
            window = (spec.device.g_max - spec.device.g_min) * driven.sum(-1).to(g0.dtype)[:, None, None]
            cols = torch.where(zero_tiles[..., None], window, cols)
    else:
        cols = g0.sum(-2)
    i_fs = spec.adc_range * spec.v_read * cols.amax(-1)
    return i_fs.clamp_min(torch.finfo(g0.dtype).tiny)


def full_scale_units(i_fs: torch.Tensor, spec: Spec) -> torch.Tensor:
    """Read units per siemens, ``(..., n_r, n_c, 1, 1)``: a column's current for inputs in
    input units, in units of its tile's full scale ``i_fs`` ``(..., n_r, n_c)``."""
    return (spec.v_read / spec.input_range) / i_fs[..., None, None]


def code_weight(i_fs: torch.Tensor, output_tiles: torch.Tensor, spec: Spec,
                w_per_siemens: float | torch.Tensor) -> torch.Tensor:
    """The digital side: weight units per ADC code, per tile-row and output ``(..., n_r,
    out)`` (codes -> amperes -> weight units), for full scales ``i_fs`` ``(..., n_r, n_c)``,
    the tile of each output and its weight units per siemens (one for the layer, or one
    per output ``(out,)`` with per-column weight scales)."""
    return (i_fs[..., output_tiles] / top_code(spec.adc_bits, spec.signed_adc)
            * (w_per_siemens * spec.input_range / spec.v_read))


class AdcErrors(NamedTuple):
    """Each ADC's own errors, drawn once per programming, one per tile-row and read column
    (``None`` for an error the spec does not have): ``gain`` (a factor), ``offset`` (in
    units of full scale) and ``nonlinearity`` (the integral non-linearity's ``n`` of
    ``u / (1 + n |u|)``)."""

    gain: torch.Tensor | None = None
    offset: torch.Tensor | None = None
    nonlinearity: torch.Tensor | None = None

    def map(self, fn) -> "AdcErrors":
        """Each error through ``fn`` (a view of some trials or tile-rows)."""
        return AdcErrors(*(None if t is None else fn(t) for t in self))

    @property
    def any(self) -> bool:
        return any(t is not None for t in self)


def draw_adc_errors(spec: Spec, shape: tuple, gen: torch.Generator, like: torch.Tensor) -> AdcErrors:
    """Each ADC's errors (:class:`AdcErrors`) of ``shape`` (one per tile-row and read
    column), drawn once per programming from the ADCs' own generator: the three draws are
    made whenever there is an ADC, so that each error is the same with or without the
    others."""
    if spec.adc_bits is None:
        return AdcErrors()
    gain, offset, nl = (torch.randn(shape, generator=gen, device=like.device, dtype=like.dtype) for _ in range(3))
    top = top_code(spec.adc_bits, spec.signed_adc)
    return AdcErrors(
        1 + gain * spec.adc_gain_error if spec.adc_gain_error > 0 else None,
        offset * (spec.adc_offset_error / top) if spec.adc_offset_error > 0 else None,
        (spec.adc_nonlinearity * (1 + spec.adc_nonlinearity_std * nl).abs() if spec.adc_nonlinearity > 0
         else None))


def adc_input(u: torch.Tensor, spec: Spec, errors: AdcErrors, normal, inplace: bool) -> torch.Tensor:
    """Column currents ``u`` (units of full scale) as the ADC sees them: its integral
    non-linearity ``u / (1 + n |u|)`` (the S-shaped form of IBM aihwkit's
    ``IOParameters.out_nonlinearity``, ``n`` per ADC), its gain error, offset and
    input-referred noise (``normal(u)``: standard normals shaped like ``u``, drawn per
    conversion).  ``inplace``: ``u`` is overwritten (no gradient through it)."""
    if errors.nonlinearity is not None:
        bend = u.abs().mul_(errors.nonlinearity).add_(1)
        u = u.div_(bend) if inplace else u / bend
    if errors.gain is not None:
        u = u.mul_(errors.gain) if inplace else u * errors.gain
    if errors.offset is not None:
        u = u.add_(errors.offset) if inplace else u + errors.offset
    if spec.adc_noise > 0:
        noise = normal(u)
        alpha = spec.adc_noise / top_code(spec.adc_bits, spec.signed_adc)
        u = u.add_(noise, alpha=alpha) if inplace else torch.add(u, noise, alpha=alpha)
    return u
