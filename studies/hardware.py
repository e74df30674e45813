"""The chip options that every study shares, beside its own: how the ADC ranges are set,
how a differential pair is subtracted, one weight scale per layer or per column, bit-sliced
weights, the DAC and how an input meets the rows, digital or analog neurons, the time since programming and since calibration,
the drift compensation, how the inputs meet the array and the devices' I-V curve.  Each defaults to
:class:`xbar.Spec`'s own default (the deployed chip, docs/hardware.md)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import xbar

_SPEC = {f.name: f.default for f in fields(xbar.Spec)}


@dataclass(frozen=True)
class ChipOptions:
    """``adc_percentile``, ``adc_range_scope``, ``subtraction``, ``weight_scale``, ``cell_bits``,
    ``weight_slices``, ``dac_bits``, ``input_scheme``, ``neuron``, ``neuron_gain_sigma``,
    ``neuron_threshold_sigma``, ``neuron_leakage``, ``t_inference``,
    ``t_calibration``, ``drift_compensation``, ``array``, ``r_access`` and ``iv``, as the
    :class:`xbar.Spec` fields of the same names (validated there)."""

    adc_percentile: float | None = _SPEC["adc_percentile"]
    adc_range_scope: str | None = _SPEC["adc_range_scope"]
    subtraction: str | None = _SPEC["subtraction"]
    weight_scale: str = _SPEC["weight_scale"]
    cell_bits: int | None = _SPEC["cell_bits"]
    weight_slices: int = _SPEC["weight_slices"]
    dac_bits: int | None = _SPEC["dac_bits"]
    input_scheme: str = _SPEC["input_scheme"]
    neuron: str = _SPEC["neuron"]
    neuron_gain_sigma: float = _SPEC["neuron_gain_sigma"]
    neuron_threshold_sigma: float = _SPEC["neuron_threshold_sigma"]
    neuron_leakage: float = _SPEC["neuron_leakage"]
    t_inference: float = _SPEC["t_inference"]
    t_calibration: float | None = _SPEC["t_calibration"]
    drift_compensation: str | None = _SPEC["drift_compensation"]
    array: str = _SPEC["array"]
    r_access: float | None = _SPEC["r_access"]
    iv: str = _SPEC["iv"]

    def chip(self) -> dict:
        """These options as :class:`xbar.Spec` keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(ChipOptions)}
