"""One read path: hardware-aware training's forward equals evaluation's read, for every
``Spec`` option, once its random draws are taken out.

Both program through :func:`xbar.tile.programming.program_tiles` from generators seeded
alike (the same programming, drift and static-noise draws, then the same ADC-error
draws), so with no per-read noise (whose draws are laid out differently) and no ADC noise
the two must read the same numbers, up to float rounding; a code that rounds the other
way at a boundary is the one difference allowed, and it is rare.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import xbar
from devices import presets
from xbar.layers import AnalogConv2d, AnalogLinear

RRAM = presets["rram_hfo2"].replace(read_sigma_rel=0.0)  # programming variation, no read noise
QUIET = presets["ideal"].replace(name="quiet")  # no random part at all
PCM = presets["pcm"]  # drift, and 1/f read noise that is all static
CURVE = presets["rram_hfo2"].replace(prog_sigma_poly=(), read_sigma_rel=0.0)  # its I-V curve, no random part

# Every option of Spec, each case a departure from a base chip (64 -> tiles of 16x16).
BASE = dict(tile=(16, 16), adc_bits=5, r_wire_row=0.0, r_wire_col=0.0)
CASES = {
    "ideal converters": dict(adc_bits=None),
    "4-bit ADC": dict(adc_bits=4),
    "adc_range below the worst case (clips)": dict(adc_range=0.3),
    "signed ADC": dict(adc_signed=True),
    "analog subtraction": dict(adc_signed=True, subtraction="analog"),
    "offset mapping": dict(mapping="offset"),
    "offset mapping, ideal ADC": dict(mapping="offset", adc_bits=None),
    "percentile ranges": dict(adc_percentile=99.0),
    "percentile ranges, analog subtraction": dict(adc_percentile=99.9, adc_signed=True, subtraction="analog"),
    "a range per column": dict(adc_percentile=99.0, adc_range_scope="column"),
    "a range per column, analog subtraction": dict(adc_percentile=99.9, adc_range_scope="column",
                                                   adc_signed=True, subtraction="analog"),
    "ADC gain and offset errors": dict(adc_gain_error=0.05, adc_offset_error=0.8, adc_signed=True),
    "ADC integral non-linearity": dict(adc_nonlinearity=0.3, adc_nonlinearity_std=0.5, adc_offset_error=0.5),
    "ADC errors, unsigned": dict(adc_gain_error=0.05, adc_offset_error=0.8),
    "DAC": dict(dac_bits=3),
    "signed DAC": dict(dac_bits=3, dac_signed=True, adc_signed=True),
    "input_range and v_read": dict(input_range=2.0, v_read=0.1),
    "exact IR drop": dict(r_wire_row=2.5, r_wire_col=2.5),
    "exact IR drop with drivers and sense amplifiers": dict(r_wire_row=1.0, r_wire_col=1.0, r_source=5.0,
                                                           r_sink=5.0),
    "IR-drop compensation": dict(r_wire_row=2.5, r_wire_col=2.5, ir_drop_compensation=0.7),
    "gated 1T1R array, ideal wires (access transistors)": dict(array="gated", r_access=2e3),
    "gated 1T1R array with wires": dict(array="gated", r_access=2e3, r_wire_row=2.5, r_wire_col=2.5),
    "non-linear devices with wires": dict(device=CURVE, iv="device", r_wire_row=2.5, r_wire_col=2.5),
    "non-linear devices, analog inputs": dict(device=CURVE, iv="device", dac_bits=4),
    "first-order IR drop, variation": dict(device=RRAM, r_wire_row=2.5, r_wire_col=2.5,
                                           ir_drop_model="first_order"),
    "variation": dict(device=RRAM),
    "device levels, variation": dict(device=RRAM.replace(levels=8)),
    "drift at 1 h and static read noise": dict(device=PCM, t_inference=3600.0),
    "raw chip": dict(calibration=None, adc_offset_error=0.8, adc_signed=True),
    "per-column weight scales": dict(weight_scale="column", device=RRAM),
    "per-column weight scales, ideal ADC": dict(weight_scale="column", device=RRAM, adc_bits=None),
    "per-column weight scales, offset mapping, raw ideal ADC": dict(weight_scale="column", device=RRAM,
                                                                    mapping="offset", adc_bits=None,
                                                                    calibration=None),
    "per-column weight scales, analog subtraction, raw": dict(weight_scale="column", adc_signed=True,
                                                              subtraction="analog", calibration=None),
    "bit-sliced weights, 3 slices of 2-bit cells": dict(cell_bits=2, weight_slices=3, device=RRAM),
    "bit-sliced weights, digital subtraction, wires": dict(cell_bits=1, weight_slices=4, subtraction="digital",
                                                           r_wire_row=2.5, r_wire_col=2.5),
    "bit-sliced weights, per-column scales, ideal ADC": dict(cell_bits=3, weight_slices=2, weight_scale="column",
                                                             adc_bits=None),
    "one 4-level cell per weight": dict(cell_bits=2, device=RRAM),
    "bit-serial inputs": dict(dac_bits=4, input_scheme="bit_serial"),
    "bit-serial signed inputs, digital subtraction": dict(dac_bits=4, dac_signed=True, adc_signed=True,
                                                          input_scheme="bit_serial", subtraction="digital"),
    "bit-serial inputs, non-linear devices with wires": dict(device=CURVE, iv="device", dac_bits=3,
                                                             input_scheme="bit_serial", r_wire_row=2.5,
                                                             r_wire_col=2.5),
    "bit-serial inputs on bit-sliced weights": dict(dac_bits=3, input_scheme="bit_serial", cell_bits=2,
                                                    weight_slices=2, device=RRAM),
    "bits integrated before one conversion": dict(dac_bits=4, input_scheme="bit_integrated", device=PCM),
    "bits integrated, non-linear devices with wires": dict(device=CURVE, iv="device", dac_bits=3,
                                                           input_scheme="bit_integrated", r_wire_row=2.5,
                                                           r_wire_col=2.5),
    "analog neurons, spread capacitors and thresholds": dict(neuron="analog", adc_bits=None, device=RRAM,
                                                             neuron_gain_sigma=0.05, neuron_threshold_sigma=0.1),
    "analog neurons with wires, ideal parts": dict(neuron="analog", adc_bits=None, r_wire_row=2.5, r_wire_col=2.5),
}


def _inputs(spec: xbar.Spec, shape, gen: torch.Generator) -> torch.Tensor:
    x = (torch.rand(shape, generator=gen) < 0.3).float() * spec.input_range
    if spec.dac_bits is not None:  # analog inputs, between the DAC's codes
        x = x * torch.rand(shape, generator=gen)
    if spec.dac_signed:
        x = x * torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0)
    return x


def _seeds(seed: int) -> tuple[int, int]:
    """The programming and read seeds that xbar.HardwareAware derives from ``seed``."""
    programming, reads = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64) >> 1
    return int(programming), int(reads)


def _evaluation(layer: nn.Module, spec: xbar.Spec, x: torch.Tensor, seed: int) -> torch.Tensor:
    """Evaluation's read of ``x`` on ``layer``'s tiles, calibrated on ``x`` itself (the
    training forward fits its calibration on the read it makes)."""
    analog = (AnalogLinear if isinstance(layer, nn.Linear) else AnalogConv2d)(layer, spec, seeds=_seeds(seed))
    m = analog.matrix
    if m.awaits_data:
        m.recording, m.rows_per_read = [], sys.maxsize
        analog(x)
        recorded, m.recording = torch.cat(m.recording, 1), None
        m.fit_calibration(recorded)
    return analog(x)


def _training(layer: nn.Module, spec: xbar.Spec, x: torch.Tensor, seed: int) -> torch.Tensor:
    with xbar.HardwareAware(layer, spec, seed=seed) as hw:
        hw.new_batch()
        return layer(x)


def _layer(kind: str, spec: xbar.Spec, gen: torch.Generator):
    torch.manual_seed(0)
    if kind == "linear":
        return nn.Linear(40, 24, bias=False), _inputs(spec, (64, 40), gen)
    return nn.Conv2d(3, 12, 3, padding=1, bias=False), _inputs(spec, (4, 3, 6, 6), gen)


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("case", list(CASES))
def test_training_forward_reads_what_evaluation_reads(case, kind):
    spec = xbar.Spec(**{"device": QUIET, **BASE, **CASES[case]})
    layer, x = _layer(kind, spec, torch.Generator().manual_seed(1))
    with torch.no_grad():
        ideal = layer(x)
        ev = _evaluation(layer, spec, x, seed=7)
        tr = _training(layer, spec, x, seed=7)
    assert ev.shape == tr.shape == ideal.shape
    scale = float(ideal.abs().max())
    # Float rounding only (measured: at most 6e-7 of the largest output, no code apart).
    assert float((ev - tr).abs().max()) <= 1e-5 * scale, (case, float((ev - tr).abs().max()) / scale)
    # And the case is not trivial: the hardware is visible in the read.
    if not (spec.adc_bits is None and spec.device is QUIET and not spec.has_ir_drop and spec.dac_bits is None):
        assert float((ev - ideal).abs().max()) > 1e-4 * scale


def test_every_spec_option_is_covered():
    """A new Spec field needs a case here, or a test of its own below (``adc_noise``, a draw
    at every conversion).  ``calibration``: ``"data"`` in every case, ``None`` in the raw
    chip; ``"vectors"`` is where evaluation takes its calibration inputs from, while the
    training forward always fits on the read it makes.  ``t_calibration`` and
    ``drift_compensation``: evaluation only, refused by training (tests/test_calibration.py);
    so is a gated array with wires, each read its own circuit (tests/test_gated.py).
    ``neuron_leakage`` acts on the neurons, not on the read (both paths:
    tests/test_membrane.py)."""
    no_case = {"calibration", "adc_noise", "t_calibration", "drift_compensation", "neuron_leakage"}
    fields = set(xbar.Spec.__dataclass_fields__) - no_case
    covered = {name for case in CASES.values() for name in case} | set(BASE)
    assert fields <= covered, fields - covered


@pytest.mark.parametrize("subtraction", ["digital", "analog"])
@pytest.mark.parametrize("path", ["evaluation", "training"])
def test_adc_noise_has_its_variance_in_both_paths(path, subtraction):
    """``adc_noise = s`` LSB at every conversion, each rounded: the variance of an output
    over repeated reads of one input is ``n (s^2 + 1/12)`` codes^2 (Sheppard's correction;
    exact to 1e-9 at s = 2) for its ``n`` conversions (two with digital subtraction, one
    with analog), whichever path reads it.  Signed ADC: no clipping at zero current."""
    spec = xbar.Spec(device=QUIET, tile=(16, 16), adc_bits=8, adc_signed=True, adc_noise=2.0,
                     subtraction=subtraction, calibration=None, r_wire_row=0.0, r_wire_col=0.0)
    torch.manual_seed(0)
    layer = nn.Linear(16, 8, bias=False)
    x = (torch.rand(1, 16, generator=torch.Generator().manual_seed(2)) < 0.5).float().expand(4000, 16)
    with torch.no_grad():
        if path == "evaluation":
            analog = AnalogLinear(layer, spec, seeds=_seeds(3))
            y, lsb = analog(x), analog.matrix.out_fs[0, 0, 0]
        else:
            y = _training(layer, spec, x, seed=3)
            lsb = AnalogLinear(layer, spec, seeds=_seeds(3)).matrix.out_fs[0, 0, 0]
    var = (y / lsb).var(0)  # codes^2, per output
    conversions = 2 if subtraction == "digital" else 1
    assert torch.allclose(var.mean(), torch.tensor(conversions * (4 + 1 / 12)), rtol=0.04), float(var.mean())
