"""ADC full scale, calibration: against closed forms and exact limits."""

import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import xbar
from devices import presets
from xbar.tile.matrix import ProgrammedMatrix


def linear(seed, n_in, n_out):
    lin = nn.Linear(n_in, n_out, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n_out, n_in, generator=torch.Generator().manual_seed(seed),
                                     dtype=torch.float64))
    return lin


# The converters these closed forms are written for: two unipolar ADCs per pair with
# worst-case ranges (the defaults, analog subtraction and ranges from the calibration
# reads, have tests of their own here and in test_adc_ranges.py).
DIGITAL = dict(subtraction="digital", adc_percentile=None)


def rand(seed, *shape):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("scheme", ["differential", "offset"])
def test_adc_full_scale_counts_only_the_rows_an_input_drives(scheme):
    """70 inputs on 64-row tiles: the second tile-row drives 6 rows, and its full scale is
    the largest column current of those 6 rows at full scale, not of all 64."""
    lin = linear(0, 70, 20)
    spec = xbar.Spec.ideal(tile=(64, 64), mapping=scheme, adc_bits=6, calibration=None, **DIGITAL)
    m = xbar.AnalogLinear(lin, spec).matrix
    g = m.conductances()[0]  # (n_r, n_c, R, C): ideal device and wires, so as programmed
    expected_last = spec.v_read * g[1, :, :6].sum(-2).amax(-1)
    expected_first = spec.v_read * g[0].sum(-2).amax(-1)
    w_per_a = m.out_scale / 63  # weight units per ampere, per code of a 6-bit unipolar ADC
    assert m.out_fs.shape == (1, 2, 1, 20)
    torch.testing.assert_close(m.out_fs[0, 1, 0, 0], expected_last[0] * w_per_a, rtol=1e-12, atol=0)
    torch.testing.assert_close(m.out_fs[0, 0, 0, 0], expected_first[0] * w_per_a, rtol=1e-12, atol=0)
    assert float(expected_first[0] / expected_last[0]) > 5  # what the old full scale wasted


def test_adc_full_scale_is_the_current_the_wires_let_through():
    """With IR drop the worst-case range is sized for the all-on current the nominal column
    really carries, as a designer sizes it: an independent solve of the nominal tile (the
    targets; iterative, not the effective matrix) with every driven row at v_read gives
    each tile's full scale, below the wire-free one; the programmed devices, which no
    designer knows, draw another current."""
    from mapping.layout import layout_weights
    from xbar.circuit import solve_crossbar

    lin = linear(5, 70, 20)
    dev = presets["rram_hfo2"].replace(read_sigma_rel=0.0)
    spec = xbar.Spec(tile=(64, 64), device=dev, adc_bits=6, r_wire_row=2.5, r_wire_col=2.5,
                     calibration=None, **DIGITAL)
    m = xbar.AnalogLinear(lin, spec).matrix
    wire_free = xbar.AnalogLinear(lin, spec.replace(r_wire_row=0.0, r_wire_col=0.0)).matrix
    g = layout_weights(lin.weight.detach().t(), dev.g_min, dev.g_max, None, spec.tile, spec.mapping).targets
    v = torch.zeros(2, 1, 64, dtype=g.dtype)
    v[0] = spec.v_read
    v[1, :, :6] = spec.v_read  # the second tile-row drives 6 rows
    i_on = solve_crossbar(g, v, r_wire_row=2.5, r_wire_col=2.5, method="pcg", tol=1e-13)
    expected = i_on.amax(-1) * m.out_scale / 63  # one code, in weight units
    torch.testing.assert_close(m.out_fs[0, :, 0, 0], expected[:, 0], rtol=1e-6, atol=0)
    assert float((m.out_fs / wire_free.out_fs).max()) < 0.95  # IR drop lowers the range
    programmed = solve_crossbar(wire_free.conductances()[0], v, r_wire_row=2.5, r_wire_col=2.5, method="pcg",
                                tol=1e-13).amax(-1)  # the programmed devices (no wires in that matrix)
    assert float((programmed / i_on.amax(-1) - 1).abs().max()) > 1e-3  # the chip's own devices differ


def test_an_unresolved_output_takes_its_tiles_gain():
    """A uniformly drifted tile (0.794) where one output's weights are 1000x smaller: its
    products span under one ADC code, so its own slope cannot be fitted, and it takes the
    gain of the tile's other outputs (1/0.794), not 1."""
    lin = linear(6, 40, 8)
    with torch.no_grad():
        lin.weight[3] *= 1e-3
    spec = xbar.Spec.ideal(tile=(64, 64), adc_bits=8, device=uniform_drift(), t_inference=100.0,
                           calibration="vectors", **DIGITAL)
    raw = xbar.AnalogLinear(lin, spec.replace(calibration=None)).matrix
    m = xbar.AnalogLinear(lin, spec).matrix
    gain = (m.out_fs / raw.out_fs)[0, 0, 0]
    torch.testing.assert_close(gain[3], gain[torch.arange(8) != 3].mean(), rtol=0.01, atol=0)
    torch.testing.assert_close(gain[3], torch.tensor(101.0**0.05, dtype=gain.dtype), rtol=0.01, atol=0)


def test_an_unresolved_tile_takes_its_layers_gain():
    """Two tiles side by side (8 outputs each), uniformly drifted (0.794); every weight of
    the second tile 1000x smaller, so neither its outputs nor the tile as a whole span the
    codes a fit needs: they take the gain fitted over the layer, 1/0.794, not 1."""
    lin = linear(7, 40, 16)
    with torch.no_grad():
        lin.weight[8:] *= 1e-3
    spec = xbar.Spec.ideal(tile=(64, 16), adc_bits=8, device=uniform_drift(), t_inference=100.0,
                           calibration="vectors", **DIGITAL)
    raw = xbar.AnalogLinear(lin, spec.replace(calibration=None)).matrix
    m = xbar.AnalogLinear(lin, spec).matrix
    assert m.n_c == 2
    gain = (m.out_fs / raw.out_fs)[0, 0, 0]
    torch.testing.assert_close(gain[8:], torch.full((8,), 101.0**0.05, dtype=gain.dtype), rtol=0.01, atol=0)
    torch.testing.assert_close(gain[:8], torch.full((8,), 101.0**0.05, dtype=gain.dtype), rtol=0.01, atol=0)


@pytest.mark.parametrize("calibration", [None, "vectors"])
def test_adc_rounding_error_is_lsb_squared_over_twelve(calibration):
    """Continuous inputs on an ideal device: each column's rounding error is uniform over one
    code, so a differential output over one tile-row has error variance 2 LSB^2 / 12; a
    calibration of this hardware must not add to it (its gain is 1 up to the rounding)."""
    lin = linear(1, 48, 16)
    spec = xbar.Spec.ideal(tile=(64, 64), adc_bits=7, calibration=calibration, **DIGITAL)
    layer = xbar.AnalogLinear(lin, spec)
    x = rand(2, 20_000, 48)
    with torch.no_grad():
        err = layer(x) - lin(x)
    lsb = layer.matrix.out_fs[0, 0, 0]  # one code in weight units, per output
    ratio = err.var(0) / (2 * lsb**2 / 12)
    assert float((ratio - 1).abs().max()) < 0.08, ratio  # 20,000 reads: 1% sd per output
    assert float(err.mean(0).abs().max() / lsb.max()) < 0.05


def adc_error_read(seed=11, **errors):
    """A 48-input layer on one 64x64 tile of ideal devices and wires, 7-bit ADCs with the
    given errors, read on 20,000 continuous inputs: (error, one code per output, matrix)."""
    lin = linear(1, 48, 16)
    spec = xbar.Spec.ideal(tile=(64, 64), adc_bits=7, **{**DIGITAL, **errors})
    layer = xbar.AnalogLinear(lin, spec, seeds=(seed, seed + 1))
    x = rand(2, 20_000, 48)
    with torch.no_grad():
        err = layer(x) - lin(x)
    return err, layer.matrix.out_fs[0, 0, 0], layer.matrix


def test_adc_noise_adds_its_variance_to_the_rounding():
    """Input-referred noise of 0.5 LSB per conversion: each column's error variance is
    (0.5^2 + 1/12) LSB^2 (Gaussian noise of half a code dithers the rounding, which stays
    uniform), a differential output twice that, against 2/12 LSB^2 without noise."""
    err, lsb, _ = adc_error_read(adc_noise=0.5, calibration=None)
    ratio = err.var(0) / (2 * (0.25 + 1 / 12) * lsb**2)
    assert float((ratio - 1).abs().max()) < 0.08, ratio


def test_adc_offsets_bias_each_output_and_calibration_removes_them():
    """Offsets of 3 LSB (std) per column of signed ADCs: each output's mean error is the
    difference of its pair's offsets, as drawn; a calibration (vectors) cancels it, as
    NeuRRAM's does, but for the rounding of the measured offsets (at most half a code per
    column), and the spread comes back near the rounding's 2 LSB^2 / 12.  (A unipolar ADC clips a
    negative offset at zero current, where no read can see it: see Spec.)"""
    err, lsb, m = adc_error_read(adc_offset_error=3.0, adc_signed=True, calibration=None)
    drawn = (m.adc_offset[0, 0, 0, 0::2] - m.adc_offset[0, 0, 0, 1::2]) * 63  # in codes
    assert float(drawn.abs().max()) > 2  # the test can see the offsets
    torch.testing.assert_close(err.mean(0) / lsb, drawn, atol=0.05, rtol=0)
    err, lsb, _ = adc_error_read(adc_offset_error=3.0, adc_signed=True, calibration="vectors")
    # What is left is the rounding of the measured offsets: at most half a code per column,
    # which the gain fit through the origin partly takes up (a spread up to 1.35x).
    assert float((err.mean(0) / lsb).abs().max()) <= 1.0
    assert float((err.mean(0) / lsb).abs().mean()) < float(drawn.abs().mean()) / 4
    ratio = err.var(0) / (2 * lsb**2 / 12)
    assert float(ratio.mean()) < 1.1 and float(ratio.max()) < 1.35, ratio


def test_adc_gain_errors_scale_the_outputs_and_calibration_removes_them():
    """Gain errors of 10% (std) per ADC, each pair subtracted in analog and read by one signed
    ADC: each output is scaled by its ADC's factor (the raw error grows with the products,
    well above the rounding); a calibration per output brings it back to the rounding of
    one signed ADC, LSB^2 / 12, within 20%.  (With digital subtraction the two ADCs of a
    pair differ, and a gain per output cannot undo that: see Spec.)"""
    analog = dict(adc_signed=True, subtraction="analog")
    err, lsb, m = adc_error_read(adc_gain_error=0.1, calibration=None, **analog)
    assert float(m.adc_gain.std()) > 0.06
    assert float((err.var(0) / (lsb**2 / 12)).max()) > 3
    err, lsb, _ = adc_error_read(adc_gain_error=0.1, calibration="vectors", **analog)
    ratio = (err**2).mean(0) / (lsb**2 / 12)
    assert float(ratio.max()) < 1.2, ratio


def test_adc_nonlinearity_bends_each_read_as_its_closed_form():
    """An integral non-linearity n = 0.5 on every ADC (no spread), one signed ADC per pair,
    raw chip: each output reads round(top * u / (1 + n |u|)) codes for its full-scale
    current u, exactly; a calibration's gain takes up the mean slope and leaves less error."""
    lin = linear(3, 48, 16)
    spec = xbar.Spec.ideal(tile=(64, 64), adc_bits=8, adc_nonlinearity=0.5, calibration=None, adc_percentile=None)
    layer = xbar.AnalogLinear(lin, spec)
    m = layer.matrix
    x = rand(4, 1, 2000, 48)
    with torch.no_grad():
        y = m(x)[0]
        u = x[0] @ m.g_read[0, 0][:48]  # each pair's difference current, in units of full scale
    top = 127
    expected = torch.round(top * u / (1 + 0.5 * u.abs())) * m.out_fs[0, 0]
    torch.testing.assert_close(y, expected, rtol=1e-9, atol=1e-12)
    ideal = x[0] @ lin.weight.t()
    raw_err = float((y - ideal).pow(2).mean())
    cal = xbar.AnalogLinear(lin, spec.replace(calibration="vectors"))
    with torch.no_grad():
        cal_err = float((cal.matrix(x)[0] - ideal).pow(2).mean())
    assert cal_err < 0.5 * raw_err, (cal_err, raw_err)


@pytest.mark.parametrize("field", ["adc_noise", "adc_gain_error", "adc_offset_error", "adc_nonlinearity"])
def test_adc_errors_need_an_adc(field):
    with pytest.raises(ValueError, match=f"{field} = 0.1 is not allowed: .*needs adc_bits"):
        xbar.Spec(**{field: 0.1})
    with pytest.raises(ValueError, match=f"{field} = -1 is not allowed: must be >= 0"):
        xbar.Spec(adc_bits=6, **{field: -1})


def uniform_drift(nu=0.05):
    """Every device drifts by the same factor: a uniform attenuation of the whole array."""
    return presets["ideal"].replace(drift_nu_mean=nu, drift_t0=1.0)


@pytest.mark.parametrize("calibration", ["data", "vectors"])
@pytest.mark.parametrize("scheme", ["differential", "offset"])
def test_calibration_gives_back_a_uniform_attenuation_exactly(scheme, calibration):
    """Drift by a uniform factor (101 s, nu = 0.05: 0.794): the raw crossbar reads 0.794 of
    every product, the calibrated one the ideal products, to float64 round-off."""
    lin = linear(3, 100, 12)
    x = rand(4, 64, 100)
    factor = 101.0 ** -0.05
    raw = xbar.AnalogLinear(lin, xbar.Spec.ideal(tile=(32, 32), mapping=scheme, device=uniform_drift(),
                                                  t_inference=100.0, calibration=None))
    cal = xbar.AnalogLinear(lin, xbar.Spec.ideal(tile=(32, 32), mapping=scheme, device=uniform_drift(),
                                                  t_inference=100.0, calibration=calibration))
    if calibration == "data":
        cal.matrix.fit_calibration(rand(5, 16, 100).unsqueeze(0))
    with torch.no_grad():
        ideal = lin(x)
        torch.testing.assert_close(raw(x), factor * ideal, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(cal(x), ideal, rtol=1e-9, atol=1e-9)


def test_calibration_leaves_an_ideal_crossbar_exact():
    lin = linear(5, 40, 9)
    x = rand(6, 8, 40)
    layer = xbar.AnalogLinear(lin, xbar.Spec.ideal(tile=(16, 16)))
    assert not layer.matrix.calibrated
    with torch.no_grad():
        torch.testing.assert_close(layer(x), lin(x), rtol=1e-12, atol=1e-12)


def relative_rms(layer, lin, x):
    with torch.no_grad():
        ideal = lin(x)
        return float((layer(x) - ideal).pow(2).mean().sqrt() / ideal.pow(2).mean().sqrt())


@pytest.mark.parametrize("tile", [32, 64])
def test_calibration_from_data_recovers_most_of_the_ir_drop_loss(tile):
    """HfO2 RRAM at 2.5 ohm/cell (no noise): IR drop is mostly a systematic loss of current
    per column that a per-tile gain and offset correct; what stays is the part that depends
    on which rows are driven.  Calibrated on other spikes of the same 15% rate, the error
    on the test spikes is below half the raw one; known vectors of every activity do worse
    (their average attenuation is not that of sparse spikes)."""
    lin = linear(7, 2 * tile, 24)
    dev = presets["rram_hfo2"].replace(prog_sigma_poly=(), read_sigma_rel=0.0)
    x = (rand(8, 512, 2 * tile) < 0.15).double()
    x_cal = (rand(9, 256, 2 * tile) < 0.15).double()
    errors = {}
    for cal in (None, "vectors", "data"):
        spec = xbar.Spec(tile=(tile, tile), device=dev, r_wire_row=2.5, r_wire_col=2.5, calibration=cal)
        layer = xbar.AnalogLinear(lin, spec)
        if cal == "data":
            with pytest.raises(RuntimeError, match="waits for its calibration from data"):
                layer(x)
            layer.matrix.fit_calibration(x_cal.unsqueeze(0))
        errors[cal] = relative_rms(layer, lin, x)
    assert errors[None] > 0.05
    assert errors["data"] < errors[None] / 2, errors
    assert errors["data"] < errors["vectors"], errors


@pytest.mark.parametrize("path", ["native", "torch"])
def test_moments_about_the_offset_are_the_moments_of_the_reads_less_it(path):
    """The fit's moments from raw float64 sums taken before the offset is read
    (:func:`read_sums`, :func:`moments_about`) against the moments of the reads less the
    offset, summed in float64, with an offset 50 times the reads' spread (float32 reads, 3
    trials x 2 tile-rows x 500 vectors x 7 outputs): ``t^2``, ``t^4`` and ``t (y - y0)`` to
    float64's rounding (1e-14, 1e-14, 1e-13 relative), ``(y - y0)^2`` to 1e-10, the
    cancellation of ``y^2 - 2 y0 y + y0^2`` at 2,500 times the centred value (measured
    1.5e-11); where every read of an output is at its offset, its ``t (y - y0)`` and
    ``(y - y0)^2`` are exactly 0."""
    from xbar.tile.calibration import moments_about, read_sums

    g = torch.Generator().manual_seed(8)
    t = torch.randn(3, 2, 500, 7, generator=g)
    y0 = 50 + torch.rand(3, 2, 7, generator=g)
    y = (0.8 * t + 0.1 * torch.randn(t.shape, generator=g) + y0.unsqueeze(2)).float()
    y[1, 0, :, 3] = y0[1, 0, 3]  # every read at the offset
    if path == "torch":
        y.requires_grad_()  # the native kernel takes no graph: torch's float64 sums
    sums, n = read_sums(y, t)
    got = moments_about(sums, n, y0)
    y, t, c = y.detach().double(), t.double(), y0.double().unsqueeze(2)
    want = ((t * t).mean(2), (t * (y - c)).mean(2), ((y - c) ** 2).mean(2), (t**4).mean(2))
    for a, b, rtol in zip(got, want, (1e-14, 1e-13, 1e-10, 1e-14)):
        assert a.dtype == torch.float64
        torch.testing.assert_close(a, b, rtol=rtol, atol=0.0)
    assert got[1][1, 0, 3] == 0.0 and got[2][1, 0, 3] == 0.0


def test_calibration_gain_is_the_mean_square_optimum_under_read_noise():
    """Reads with 10% device noise of a uniformly drifted array (0.794): the fitted gain
    of each output is ``sum(t y) / sum(y^2)`` over reads of its products, the closed form
    ``a / (a^2 + var(e) / E t^2)``, estimated here from 4,000 independent raw reads: within
    1% on average (512 calibration vectors), and below the noiseless ``1/a`` by the
    noise's share, so the test can tell the two fits apart."""
    lin = linear(9, 60, 30)
    noisy = uniform_drift().replace(read_sigma_rel=0.1)
    spec = dict(tile=(64, 64), t_inference=100.0, device=noisy)
    x = rand(10, 4000, 60)
    with torch.no_grad():
        raw = xbar.AnalogLinear(lin, xbar.Spec.ideal(calibration=None, **spec), seeds=(3, 4))
        cal = xbar.AnalogLinear(lin, xbar.Spec.ideal(calibration="vectors", **spec), seeds=(3, 4))
        t, y = lin(x), raw(x)  # no bias
        optimum = (t * y).sum(0) / (y * y).sum(0)
    gain = (cal.matrix.g_read / raw.matrix.g_read)[0].nanmean(0)  # the same programming
    assert float((gain / optimum - 1).mean().abs()) < 0.01, (gain, optimum)
    unbiased = 101.0**0.05  # 1/a
    assert float(optimum.mean()) < unbiased * 0.99, optimum  # 1.7% below


def test_spec_refuses_an_unknown_calibration():
    with pytest.raises(ValueError, match="calibration.*'tile'.*'data', 'vectors'.*None"):
        xbar.Spec(calibration="tile")


def test_read_error_is_relative_to_the_product_not_the_digital_bias():
    """The bias is added digitally and carries no error: a first layer with biases of 100
    has the read error of the same layer without them (same input, same programming), not
    one divided by the bias; and the error matches its definition computed by hand."""
    from studies.models import LIF

    errors = {}
    for bias in (0.0, 100.0):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 12), LIF(0.9, threshold=0.5), nn.Linear(12, 4)).double()
        with torch.no_grad():
            model[0].bias.fill_(bias)
        x = rand(1, 40, 16)
        y = torch.zeros(40, dtype=torch.long)
        spec = xbar.Spec(tile=(8, 8), device=presets["rram_hfo2"], adc_bits=5, calibration=None)
        hw = xbar.convert(model, spec, seed=1)
        ds = xbar.simulate(hw, model, (x, y), 1, progress=False)
        errors[bias] = float(ds.read_error.isel(layer=0, timestep=0, trial=0))
        # by hand: one more read of the same programming and read-noise stream
        hw[0].matrix.reset_read_noise()
        with torch.no_grad():
            by_hand = (hw[0](x) - model[0](x)).pow(2).sum() / (x @ model[0].weight.t()).pow(2).sum()
        assert errors[bias] == pytest.approx(float(by_hand.sqrt()), rel=1e-9)
    assert errors[100.0] == pytest.approx(errors[0.0], rel=1e-9) and errors[0.0] > 0.01


def test_adc_range_from_the_calibration_batch():
    """At the 100th percentile the full scale is the largest column current the
    calibration inputs drew: those reads never clip, and the code step shrinks by the ratio
    of the worst case to that current.  On sparse spikes (15%) with a 4-bit ADC, a range at
    the 99.9th percentile gives less than half the worst case's error."""
    lin = linear(11, 64, 16)
    dev = presets["rram_hfo2"].replace(prog_sigma_poly=(), read_sigma_rel=0.0)
    x_cal = (rand(12, 256, 64) < 0.15).double()
    x = (rand(13, 512, 64) < 0.15).double()
    base = dict(tile=(64, 64), device=dev, adc_bits=4, calibration="data", subtraction="digital",
                adc_range_scope="tile")
    worst = xbar.AnalogLinear(lin, xbar.Spec.ideal(**base, adc_percentile=None))
    top = xbar.AnalogLinear(lin, xbar.Spec.ideal(**base, adc_percentile=100))
    for layer in (worst, top):
        layer.matrix.fit_calibration(x_cal.unsqueeze(0))
    g = top.matrix.conductances()[0, 0, 0][:, :32]  # the 16 pairs of the only tile
    largest = float((x_cal @ g).max()) * top.matrix.spec.v_read  # A
    worst_fs = float(top.matrix.spec.v_read * g.sum(0).max())
    # out_fs is one code in weight units, gain-corrected: compare the raw scale of the range
    ratio = float((top.matrix.g_read[0, 0] / worst.matrix.g_read[0, 0]).mean())
    assert ratio == pytest.approx(worst_fs / largest, rel=1e-9)
    p999 = xbar.AnalogLinear(lin, xbar.Spec.ideal(**base, adc_percentile=99.9))
    p999.matrix.fit_calibration(x_cal.unsqueeze(0))
    assert relative_rms(p999, lin, x) < relative_rms(worst, lin, x) / 2


def test_the_raw_chip_has_worst_case_ranges():
    """A chip without calibration has no calibration reads to set its ranges from: its reads
    are those of the worst-case range, whatever adc_percentile says; a percentile must lie in
    (0, 100]."""
    lin = linear(11, 64, 16)
    x = (rand(13, 1, 256, 64) < 0.15).double()
    raw = dict(tile=(64, 64), device=presets["rram_hfo2"], adc_bits=4, calibration=None)
    assert not xbar.Spec(**raw).ranges_from_calibration
    reads = [xbar.AnalogLinear(lin, xbar.Spec(**raw, adc_percentile=p), seeds=(1, 2)).matrix(x) for p in (99.9, None)]
    torch.testing.assert_close(reads[0], reads[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"adc_percentile = 0 .*\(0, 100\]"):
        xbar.Spec(adc_bits=6, adc_percentile=0)


def test_analog_subtraction_reads_each_pair_with_one_signed_adc():
    """One signed ADC per pair: its full scale is the largest difference G+ - G- either way
    over the driven rows (closed form), and the rounding error of a continuous input is
    one code's LSB^2 / 12 per output; on RRAM (g_min = 50 uS) the common mode no longer
    eats the range, so the error is smaller than with two unipolar ADCs."""
    lin = linear(14, 40, 12)
    dev = presets["rram_hfo2"].replace(prog_sigma_poly=(), read_sigma_rel=0.0)
    spec = xbar.Spec.ideal(tile=(64, 64), device=dev, adc_bits=6, adc_signed=True,
                           subtraction="analog", calibration=None)
    layer = xbar.AnalogLinear(lin, spec)
    g = layer.matrix.conductances()[0, 0, 0][:40, :24]
    diff = g[:, 0::2] - g[:, 1::2]
    fs = spec.v_read * float(torch.maximum(diff.clamp_min(0).sum(0), (-diff).clamp_min(0).sum(0)).max())
    lsb = fs / 31 * layer.matrix.out_scale  # one code of a 6-bit signed ADC, in weight units
    torch.testing.assert_close(layer.matrix.out_fs[0, 0, 0], torch.full((12,), lsb, dtype=torch.float64),
                               rtol=1e-12, atol=0)
    x = rand(15, 20_000, 40)
    with torch.no_grad():
        err = layer(x) - lin(x)
    ratio = err.var(0) / (lsb**2 / 12)
    assert float((ratio - 1).abs().max()) < 0.08, ratio
    digital = xbar.AnalogLinear(lin, spec.replace(subtraction="digital"))
    assert relative_rms(layer, lin, x) < relative_rms(digital, lin, x) / 2


def test_analog_subtraction_needs_a_signed_adc_and_pairs():
    """By default a differential pair is subtracted in analog by one signed ADC, the offset
    mapping digitally by unipolar ADCs; an explicit choice that cannot be built is refused."""
    assert xbar.Spec(adc_bits=6).analog_subtraction and xbar.Spec(adc_bits=6).signed_adc
    offset = xbar.Spec(adc_bits=6, mapping="offset")
    assert not offset.analog_subtraction and not offset.signed_adc and offset.range_scope == "tile"
    assert not xbar.Spec(adc_bits=6, subtraction="digital").signed_adc
    with pytest.raises(ValueError, match="subtraction = 'analog'.*adc_signed=True"):
        xbar.Spec(adc_bits=6, subtraction="analog", adc_signed=False)
    with pytest.raises(ValueError, match="subtraction = 'analog'.*mapping='differential'"):
        xbar.Spec(adc_bits=6, adc_signed=True, mapping="offset", subtraction="analog")


def test_ir_drop_compensation_programs_the_target_effective_matrix():
    """With headroom (half the window for the weights) an ideal device's pre-distorted
    tile has the target effective matrix to round-off, so the layer computes the ideal
    product although its wires drop 7% RMS; without headroom the devices at g_max cannot
    be compensated, and a warning says how many and by how much the target is missed."""
    lin = linear(16, 64, 16)
    x = rand(17, 128, 64)
    spec = xbar.Spec(tile=(64, 64), r_wire_row=1.0, r_wire_col=1.0, calibration=None)
    raw = xbar.AnalogLinear(lin, spec)
    comp = xbar.AnalogLinear(lin, spec.replace(ir_drop_compensation=0.5))
    assert relative_rms(raw, lin, x) > 0.02
    assert relative_rms(comp, lin, x) < 1e-8
    with pytest.warns(UserWarning, match=r"% of the devices would need more than g_max.*misses its target"):
        xbar.AnalogLinear(lin, spec.replace(ir_drop_compensation=1.0))


def test_ir_drop_compensation_is_refused_with_levels_and_out_of_range():
    with pytest.raises(ValueError, match="ir_drop_compensation = 0.5.*levels"):
        xbar.Spec(device=presets["ideal"].replace(levels=16), ir_drop_compensation=0.5)
    with pytest.raises(ValueError, match=r"ir_drop_compensation = 1.5 .*\(0, 1\]"):
        xbar.Spec(ir_drop_compensation=1.5)


def _small_snn():
    from studies.models import LIF

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 12), LIF(0.9, threshold=0.5), nn.Linear(12, 4)).double()


def test_a_calibrated_network_with_a_uniform_attenuation_is_the_ideal_network():
    """End to end: every device drifted by the same factor, every layer calibrated from data
    in the order it runs, and the network reads exactly as the ideal one: equal spikes and
    accuracy at every step, read errors at round-off, although raw it loses its spikes."""
    model = _small_snn()
    x, y = rand(20, 64, 16), torch.randint(0, 4, (64,), generator=torch.Generator().manual_seed(21))
    spec = xbar.Spec.ideal(tile=(8, 8), device=uniform_drift(0.2), t_inference=100.0)
    hw = xbar.calibrate(xbar.convert(model, spec, seed=0, trials=2), model, rand(22, 16, 16), timesteps=4)
    ds = xbar.simulate(hw, model, (x, y), 4, progress=False)
    assert float(ds.read_error.max()) < 1e-9
    assert float(ds.spike_mismatch.sel(layer="0").max()) == 0
    assert (ds.accuracy == ds.accuracy_ideal).all()
    raw = xbar.simulate(xbar.convert(model, spec.replace(calibration=None), seed=0, trials=2), model, (x, y), 4,
                        progress=False)
    assert float(raw.read_error.sel(layer="0").min()) > 0.5  # 101 s at nu = 0.2: a factor 0.40


@pytest.mark.parametrize("replay", [True, False])
def test_calibration_in_chunks_of_trials_fits_what_one_chunk_fits(monkeypatch, replay):
    """Calibration runs the trials in chunks, each through every pass and fit before the
    next (bounded memory): with per-read noise (each trial's own streams) and programming
    variation, IR drop and an ADC, chunks of one trial give every trial the gains, offsets
    and ranges that all trials at once give, bit for bit."""
    import sys

    import xbar.tile.matrix

    calibration = sys.modules["xbar.calibrate"]  # the module (xbar.calibrate is its function)
    model = _small_snn()
    spec = xbar.Spec(tile=(8, 8), device=presets["rram_hfo2"].replace(read_sigma_rel=0.05), adc_bits=5,
                     r_wire_row=2.5, r_wire_col=2.5)
    cal = rand(24, 16, 16)  # 16 samples
    chunks = []
    sizes = calibration._sizes
    monkeypatch.setattr(calibration, "_sizes", lambda *a: chunks.append(sizes(*a)) or chunks[-1])

    def fitted(memory_gb, elements=2**25):
        monkeypatch.setattr(xbar.tile.matrix, "CAL_FIT_ELEMENTS", elements)
        hw = xbar.calibrate(xbar.convert(model, spec, seed=1, trials=3), model, cal, timesteps=4,
                            memory_gb=memory_gb, replay=replay, labels=torch.arange(16) % 4)
        return [(m.matrix.out_fs.clone(), m.matrix.cal_bias.clone()) for m in (hw[0], hw[2])]

    whole = fitted(2.0)
    per_sample = xbar.memory.read_bytes_per_sample(xbar.convert(model, spec, seed=1, trials=3), model, cal,
                                                   xbar.stepping.Stepper(model, xbar.reset_state))
    kept = 4 * (12 + 4) * 8 if replay else 0  # every step's outputs of both layers, float64
    one_trial = 1.2 * 16 * (per_sample + kept) / (xbar.memory.READ_SHARE * 2**30)
    chunked = fitted(one_trial, elements=1)  # fits of one trial too
    assert chunks == [(3, 16, replay), (1, 16, replay)]
    for (fs_a, bias_a), (fs_b, bias_b) in zip(whole, chunked):
        assert torch.equal(fs_a, fs_b) and torch.equal(bias_a, bias_b)
    assert not torch.equal(whole[0][0][0], whole[0][0][1])  # the trials differ (not one fit copied)


@pytest.mark.parametrize("adc", [dict(adc_bits=5, adc_noise=0.3, adc_percentile=99.0),
                                 dict(adc_bits=5, adc_noise=0.3, adc_percentile=None), dict(adc_bits=None)],
                         ids=["ranges-from-data", "worst-case-ranges", "no-adc"])
def test_a_fit_in_parts_of_tile_rows_is_the_fit_in_one(monkeypatch, adc):
    """A layer too large for one fit is read and fitted a few tile-rows at a time (bounded
    memory), each part read once and its sums against the ideal products kept until the
    offsets are known: with per-read noise, ADC noise and ranges from the reads, the gains,
    offsets and ranges are those of the fit in one part, bit for bit, and the streams stand
    where that fit leaves them.  The layer has 4 full tile-rows and a partial one (36 inputs, 8x8)."""
    import xbar.tile.matrix

    lin = linear(5, 36, 12)
    dev = presets["rram_hfo2"].replace(read_sigma_rel=0.05)
    spec = xbar.Spec(tile=(8, 8), device=dev, r_wire_row=1.0, r_wire_col=1.0, calibration="data", **adc)
    x = (rand(3, 2, 200, 36) < 0.3).double()

    def fitted():
        layer = xbar.AnalogLinear(lin, spec, trials=2, seeds=(4, 5))
        layer.matrix.fit_calibration(x)
        m = layer.matrix
        after = (m.cal_noise.offsets.copy(), m.cal_adc_noise.offsets.copy())
        return [t.clone() for t in (m.g_read, m.out_fs, m.cal_bias) if t is not None], after, m

    whole, streams_whole, m = fitted()
    assert len(m._fit_parts(x, m._fit_elements(2.0))) == 1
    monkeypatch.setattr(xbar.tile.matrix, "CAL_FIT_ELEMENTS", 1)  # one trial, one tile-row at a time
    parts, streams_parts, m = fitted()
    assert len(m._fit_parts(x[:1], m._fit_elements(2.0))) == m.n_r == 5
    for a, b in zip(whole, parts):
        assert torch.equal(a, b)
    assert all((a == b).all() for a, b in zip(streams_whole, streams_parts))
    assert not torch.equal(whole[0][0], whole[0][1])  # the trials differ (not one fit copied)


@pytest.mark.parametrize("replay", [True, False])
def test_a_calibration_batch_run_in_parts_fits_what_the_whole_batch_fits(monkeypatch, replay):
    """Where one trial of the calibration batch does not fit the memory budget, the passes
    run it in parts of as many samples as fit (here one): every sample's reads are the same
    (no per-read noise), and with few enough rows that all are kept, each layer records the
    same inputs in another order, so the fits agree to rounding (1e-12); replayed outputs
    are kept per part, the whole batch's within the budget (a read of one sample beside
    them here)."""
    import sys

    calibration = sys.modules["xbar.calibrate"]
    model = _small_snn()
    dev = presets["rram_hfo2"].replace(read_sigma_rel=0.0)
    spec = xbar.Spec(tile=(8, 8), device=dev, adc_bits=5, r_wire_row=2.5, r_wire_col=2.5)
    cal = rand(22, 16, 16)
    sizes, found = calibration._sizes, []
    monkeypatch.setattr(calibration, "_sizes", lambda *a: found.append(sizes(*a)) or found[-1])

    def fitted(memory_gb):
        hw = xbar.convert(model, spec, seed=1, trials=2)
        batches = set()
        hw[0].register_forward_pre_hook(lambda module, inputs: batches.add(len(inputs[0])))
        xbar.calibrate(hw, model, cal, 4, replay=replay, memory_gb=memory_gb, labels=torch.arange(16) % 4)
        return [(m.matrix.out_fs.clone(), m.matrix.cal_bias.clone()) for m in (hw[0], hw[2])], batches

    per_read = xbar.memory.read_bytes_per_sample(xbar.convert(model, spec, seed=1, trials=2), model, cal,
                                                 xbar.stepping.Stepper(model, xbar.reset_state))
    kept = 16 * 4 * (12 + 4) * 8 if replay else 0  # the batch's outputs of both layers at every step, float64
    (whole, whole_batches), (parts, part_batches) = fitted(2.0), fitted((kept + 1.5 * per_read) / (0.3 * 2**30))
    assert found == [(2, 16, replay), (1, 1, replay)]
    assert 32 in whole_batches and part_batches == {1}  # both trials, the whole batch; one sample of one
    for (fs_a, bias_a), (fs_b, bias_b) in zip(whole, parts):
        torch.testing.assert_close(fs_b, fs_a, rtol=1e-12, atol=0)
        torch.testing.assert_close(bias_b, bias_a, rtol=1e-12, atol=1e-15)
    assert not torch.equal(whole[1][0][0], whole[1][0][1])  # the trials differ (not one fit copied)


def test_a_replayed_calibration_without_room_for_its_outputs_runs_full_passes(monkeypatch):
    """Where a trial's replayed outputs would leave no room for a read, the layers are
    calibrated by full passes: with per-read noise, bit for bit ``replay=False``'s fits in
    the same budget (a replay's differ in their digits)."""
    import sys

    calibration = sys.modules["xbar.calibrate"]
    model = _small_snn()
    spec = xbar.Spec(tile=(8, 8), device=presets["rram_hfo2"].replace(read_sigma_rel=0.05), adc_bits=5)
    cal = rand(22, 16, 16)

    def fitted(replay, memory_gb=2.0):
        hw = xbar.calibrate(xbar.convert(model, spec, seed=1, trials=2), model, cal, 4, replay=replay,
                            memory_gb=memory_gb, labels=torch.arange(16) % 4)
        return torch.cat([m.matrix.out_fs.flatten() for m in (hw[0], hw[2])])

    tight = 0.9 * 16 * 4 * (12 + 4) * 8 / (0.3 * 2**30)  # less than one trial's outputs
    assert calibration._sizes(xbar.convert(model, spec, seed=1, trials=2), model, cal, 4, lambda x, t: x,
                              xbar.reset_state, 2, True, tight)[2] is False
    assert torch.equal(fitted(True, tight), fitted(False, tight))
    assert not torch.equal(fitted(True), fitted(False))


def test_simulate_refuses_to_calibrate_on_the_samples_it_evaluates():
    """Uncalibrated crossbars are refused before any work, hw left waiting; with
    calibration_data, simulate calibrates on those samples first, exactly as an explicit
    xbar.calibrate before it does, and refuses a second calibration."""
    model = _small_snn()
    x, y = rand(23, 80, 16), torch.zeros(80, dtype=torch.long)
    cal = rand(24, 16, 16)  # other samples than the evaluated ones
    spec = xbar.Spec(tile=(8, 8), device=presets["rram_hfo2"], adc_bits=6)
    hw = xbar.convert(model, spec, seed=0)
    with pytest.raises(ValueError, match="simulate fits nothing on the samples it evaluates.*xbar.calibrate"):
        xbar.simulate(hw, model, (x, y), 3, progress=False)
    assert all(m.matrix.awaits_data for m in (hw[0], hw[2]))
    first = xbar.simulate(hw, model, (x, y), 3, progress=False, calibration_data=cal)
    assert all(m.matrix.calibrated for m in (hw[0], hw[2]))
    with pytest.raises(ValueError, match="calibration_data given, but no crossbar layer"):
        xbar.simulate(hw, model, (x, y), 3, progress=False, calibration_data=cal)
    explicit = xbar.calibrate(xbar.convert(model, spec, seed=0), model, cal, 3)
    again = xbar.simulate(explicit, model, (x, y), 3, progress=False)
    np.testing.assert_array_equal(first.read_error.values, again.read_error.values)


def test_a_calibration_batch_of_one_class_is_warned_about():
    """A batch on which the model predicts fewer than half of its classes (here: inputs all
    zero, so every sample reads the same bias) is warned about, with the counts; a batch
    spanning the classes is not."""
    import warnings

    model = _small_snn()
    spec = xbar.Spec(tile=(8, 8), device=presets["rram_hfo2"], adc_bits=6, input_range=4.0)
    with pytest.warns(UserWarning, match=r"the model predicts only 1 of the model's 4 classes \(counts"):
        xbar.calibrate(xbar.convert(model, spec, seed=0), model, torch.zeros(16, 16, dtype=torch.double), 3)
    y = torch.zeros(16, dtype=torch.long)  # labels of one class, where the caller has them
    with pytest.warns(UserWarning, match=r"the labels hold only 1 of the model's 4 classes"):
        xbar.calibrate(xbar.convert(model, spec, seed=0), model, rand(25, 16, 16) * 4, 3, labels=y)
    model[1].reset()
    with torch.no_grad():
        model[2].bias.zero_()  # the classes then follow the inputs
        x = rand(24, 64, 16) * 4  # within the DAC's range [0, input_range]
        total = sum(model(x) for _ in range(3))
    assert len(total.argmax(-1).unique()) >= 2  # the premise: this batch spans classes
    model[1].reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xbar.calibrate(xbar.convert(model, spec, seed=0), model, x, 3)


def test_the_studies_calibration_batch_holds_every_class_alike():
    """The training sets are stored by class; the calibration batch takes the classes in
    turn (at most one sample more of one class than of another), distinct training images."""
    from studies.data import calibration_inputs, load_dataset
    from xbar.calibrate import CALIBRATION_SAMPLES

    for name in ("mnist5k", "digits"):
        data = load_dataset(name)
        x = calibration_inputs(data)
        index = [int(((data.x_train - xi).abs().flatten(1).sum(1) == 0).nonzero()[0]) for xi in x]
        counts = np.bincount(data.y_train[index].numpy(), minlength=data.n_classes)
        assert len(set(index)) == len(x) == CALIBRATION_SAMPLES
        assert counts.min() >= CALIBRATION_SAMPLES // data.n_classes and counts.max() - counts.min() <= 1


# Calibrated at programming, read later (Spec.t_calibration, Spec.drift_compensation).

def _reads(spec, w, x, seed=3):
    m = ProgrammedMatrix(w, spec, trials=2, program_seed=seed, read_seed=seed + 1)
    with torch.no_grad():
        return m(x.expand(2, *x.shape)), m


@pytest.mark.parametrize("scheme", ["differential", "offset"])
def test_calibrated_at_programming_reads_the_drift_and_compensation_gives_it_back(scheme):
    """Every device drifts by the same factor f = 101**-0.05 = 0.794 between a calibration
    at programming and a read at 100 s: the calibrated read is f times the read at
    programming (exactly: the wires are ideal, the read is linear in G); with global drift
    compensation it is that read again, to round-off.  Recalibrated at 100 s it is too."""
    w, x = rand(30, 20, 12) - 0.5, (rand(31, 40, 20) < 0.3).double()
    base = xbar.Spec.ideal(tile=(8, 8), device=uniform_drift(0.05), mapping=scheme, calibration="vectors")
    at_programming, _ = _reads(base.replace(t_inference=0.0), w, x)
    f = 101.0 ** -0.05
    later, m = _reads(base.replace(t_inference=100.0, t_calibration=0.0), w, x)
    assert m.aged and m.drift_gain is None
    torch.testing.assert_close(later, f * at_programming, rtol=1e-12, atol=1e-13)
    compensated, m = _reads(base.replace(t_inference=100.0, t_calibration=0.0, drift_compensation="global"), w, x)
    torch.testing.assert_close(m.drift_gain.flatten(), torch.full((2,), 1 / f, dtype=torch.float64), rtol=1e-12,
                               atol=0)
    torch.testing.assert_close(compensated, at_programming, rtol=1e-12, atol=1e-13)
    recalibrated, _ = _reads(base.replace(t_inference=100.0), w, x)
    torch.testing.assert_close(recalibrated, at_programming, rtol=1e-12, atol=1e-13)


def test_calibrated_at_programming_is_the_same_devices_drifted():
    """PCM calibrated at programming and read after a day: its conductances are those of
    the chip recalibrated after a day, bit for bit (the same draws, aged); only the
    calibration differs.  Calibrated at t_inference itself, nothing changes at all."""
    w = rand(32, 40, 12) - 0.5
    spec = xbar.Spec(tile=(16, 16), device=presets["pcm"], adc_bits=6, calibration="vectors", t_inference=86400.0)
    late = ProgrammedMatrix(w, spec.replace(t_calibration=0.0), trials=2, program_seed=5, read_seed=6)
    now = ProgrammedMatrix(w, spec, trials=2, program_seed=5, read_seed=6)
    same = ProgrammedMatrix(w, spec.replace(t_calibration=86400.0), trials=2, program_seed=5, read_seed=6)
    assert torch.equal(late.conductances(), now.conductances())
    assert not torch.equal(late.g_read, now.g_read)  # ranges and gains fitted at programming
    assert torch.equal(same.g_read, now.g_read) and torch.equal(same.out_fs, now.out_fs)


def test_a_device_that_does_not_age_reads_the_same_calibrated_earlier():
    """HfO2 RRAM has no drift or relaxation: calibrated at programming and read after a
    day, it reads exactly as calibrated just before (nothing changed in between)."""
    w, x = rand(33, 40, 12) - 0.5, (rand(34, 30, 40) < 0.2).double()
    spec = xbar.Spec(tile=(16, 16), device=presets["rram_hfo2"], adc_bits=6, calibration="vectors",
                     t_inference=86400.0)
    assert not spec.replace(t_calibration=0.0).ages_after_calibration
    a, _ = _reads(spec.replace(t_calibration=0.0, drift_compensation="global"), w, x)
    b, _ = _reads(spec, w, x)
    assert torch.equal(a, b)


def test_a_network_is_calibrated_layer_by_layer_at_t_calibration_then_aged():
    """xbar.calibrate fits every layer on the inputs the chip gives at its calibration,
    then ages all of them: the second layer's fit is the same whether the chip is then read
    at 1 ms or after a year (were the first layer aged before the second is recorded, its
    drifted outputs would give the second other spikes and another fit)."""
    model = _small_snn()
    spec = xbar.Spec(tile=(8, 8), device=presets["pcm"], adc_bits=6, t_calibration=0.0)

    def calibrated(t):
        hw = xbar.calibrate(xbar.convert(model, spec.replace(t_inference=t), seed=0, trials=2), model,
                            rand(22, 16, 16), timesteps=4)
        assert all(m.matrix.aged for m in (hw[0], hw[2]))
        return hw[2].matrix

    soon, year = calibrated(1e-3), calibrated(3.15e7)
    assert torch.equal(soon.g_factor, year.g_factor) and torch.equal(soon.cal_bias, year.cal_bias)
    assert not torch.equal(soon.conductances(), year.conductances())


@pytest.mark.parametrize("changes, message", [
    (dict(t_calibration=200.0), r"t_calibration = 200.0 is not allowed: must be seconds after programming in \[0, "
                                r"t_inference = 100\]"),
    (dict(t_calibration=0.0, calibration=None), "t_calibration = 0.0 is not allowed: .*needs a calibration"),
    (dict(drift_compensation="global"), "drift_compensation = 'global' is not allowed: .*set t_calibration"),
    (dict(t_calibration=0.0, drift_compensation="local"), "drift_compensation = 'local' is not allowed"),
])
def test_times_of_calibration_are_validated(changes, message):
    with pytest.raises(ValueError, match=message):
        xbar.Spec(device=presets["pcm"], t_inference=100.0, **changes)


def test_training_refuses_a_chip_calibrated_before_its_inference():
    """The training forward fits its calibration on its own read, at t_inference: a chip
    calibrated earlier is refused there, with what to do."""
    spec = xbar.Spec(device=presets["pcm"], t_inference=3600.0, t_calibration=0.0)
    with pytest.raises(ValueError, match="HardwareAware.spec.t_calibration = 0.0 is not allowed: .*evaluated only"):
        xbar.HardwareAware(_small_snn(), spec)


def _calibration_net(seed=0):
    from studies.models import conv_net, set_spiking_thresholds

    torch.manual_seed(seed)
    model = conv_net((1, 12, 12), 4, channels=(6, 8), hidden=16).eval()
    set_spiking_thresholds(model, rand(seed + 1, 8, 1, 12, 12).float(), 3)
    return model


def _calibrated_buffers(model, spec, cal, replay):
    hw = xbar.convert(model, spec, seed=3, trials=2)
    xbar.calibrate(hw, model, cal, 3, replay=replay, labels=torch.arange(len(cal)) % 4)
    return {n: b.clone() for n, b in hw.named_buffers() if b is not None}


def test_one_read_per_layer_calibrates_as_the_per_layer_passes_without_read_noise(monkeypatch):
    """Static programming errors, IR drop and a 4-bit ADC, no per-read noise: the reads are
    deterministic, so replaying the calibrated layers' outputs and ending each step at the
    layer being fitted (the layers after it only draw what their reads would) changes no
    fit: every buffer of the calibrated network bit for bit.  And it reads each layer but
    the last once (3 steps, in the pass after its fit), plus the one step that finds the
    order, where the per-layer passes read every layer in every pass."""
    model = _calibration_net()
    spec = xbar.Spec(tile=(16, 16), device=presets["rram_hfo2"].replace(read_sigma_rel=0.0), adc_bits=4,
                     r_wire_row=1.0, r_wire_col=1.0)
    cal = rand(5, 16, 1, 12, 12).float()
    reads = {"n": 0}
    forward = ProgrammedMatrix.forward

    def counted(self, x):
        reads["n"] += 1
        return forward(self, x)

    monkeypatch.setattr(ProgrammedMatrix, "forward", counted)
    full = _calibrated_buffers(model, spec, cal, replay=False)
    full_reads, reads["n"] = reads["n"], 0
    past = {"n": 0}
    drawing_past = xbar.layers._Analog.ideal_drawing_past

    def after_the_target(self, x):
        past["n"] += 1
        return drawing_past(self, x)

    monkeypatch.setattr(xbar.layers._Analog, "ideal_drawing_past", after_the_target)
    once = _calibrated_buffers(model, spec, cal, replay=True)
    layers, steps = 4, 3
    assert full_reads == layers + layers * layers * steps  # the order's step, then every layer in every pass
    assert reads["n"] == layers + (layers - 1) * steps  # each layer but the last, once, calibrated
    assert past["n"] == 0  # a pass's steps end at the target's record: nothing after it runs
    assert full.keys() == once.keys()
    for name in full:
        assert torch.equal(full[name], once[name]), name


def test_one_read_per_layer_keeps_only_the_outputs_still_read(monkeypatch):
    """A chain of 4 crossbar layers calibrated with replay: in each pass only the layer
    the target reads replays (kept) and the layer just fitted reads and keeps; the others
    before the target give zeros and their outputs are dropped, so at most two layers'
    outputs are held at once, and every buffer is the per-layer passes' (no per-read noise)."""
    module = sys.modules["xbar.calibrate"]
    model = _calibration_net()
    spec = xbar.Spec(tile=(16, 16), device=presets["rram_hfo2"].replace(read_sigma_rel=0.0), adc_bits=4)
    cal = rand(5, 16, 1, 12, 12).float()
    held = []
    arrange = module._Replay.arrange

    def counted(self, target, chunk):
        arrange(self, target, chunk)
        held.append(sorted(i for i, _ in self.kept))

    monkeypatch.setattr(module._Replay, "arrange", counted)
    once = _calibrated_buffers(model, spec, cal, replay=True)
    monkeypatch.undo()
    full = _calibrated_buffers(model, spec, cal, replay=False)
    assert held == [[], [0], [0, 1], [1, 2]]  # per pass: the kept layers, by position
    for name in full:
        assert torch.equal(full[name], once[name]), name


def test_one_read_per_layer_fits_as_well_under_read_noise():
    """With per-read noise the layers before the one being fitted give one noise
    realization to every pass instead of a fresh one each: the calibrated reads are as
    close to the ideal product: each layer's one-read error, paired by trial on 8 trials
    and samples of their own, differs from the per-layer passes' by at most 3% plus three
    standard errors of the paired difference (about 3% for the last layer)."""
    model = _calibration_net(1)
    spec = xbar.Spec(tile=(16, 16), device=presets["rram_hfo2"].replace(read_sigma_rel=0.05), adc_bits=6)
    cal, test = rand(6, 32, 1, 12, 12).float(), rand(9, 32, 1, 12, 12).float()
    trials, errors = 8, []
    for replay in (False, True):
        hw = xbar.convert(model, spec, seed=3, trials=trials)
        xbar.calibrate(hw, model, cal, 3, replay=replay, labels=torch.arange(len(cal)) % 4)
        ds = xbar.simulate(hw, model, (test, torch.zeros(32, dtype=torch.long)), 3, progress=False)
        errors.append(ds.read_error.mean("timestep").values)  # (trial, layer)
    base, diff = errors[0].mean(0), errors[1] - errors[0]
    bound = 0.03 * base + 3 * diff.std(0, ddof=1) / np.sqrt(trials)
    assert np.all(np.abs(diff.mean(0)) <= bound), (diff.mean(0) / base, bound / base)
    assert float(base.min()) > 0.01  # the noise is there to be fitted around


class _Recurrent(nn.Module):
    """A spiking layer with recurrent weights on crossbars: ``rec`` reads last step's spikes."""

    def __init__(self):
        super().__init__()
        from studies.models import LIF

        torch.manual_seed(2)
        self.inp, self.rec, self.out = nn.Linear(8, 12), nn.Linear(12, 12), nn.Linear(12, 3)
        self.lif = LIF(0.9, threshold=0.5)
        self.spikes = None

    def reset(self):
        self.spikes = None

    def forward(self, x):
        prev = torch.zeros(len(x), 12) if self.spikes is None else self.spikes
        self.spikes = self.lif(self.inp(x) + self.rec(prev))
        return self.out(self.spikes)


def test_a_loop_through_the_crossbars_is_calibrated_in_full_passes():
    """The recurrent layer reads its own earlier output: not feed-forward, found on the
    data flow, so replay=True runs the per-layer passes and fits the same, bit for bit,
    read noise and all; the conv net is found feed-forward."""
    import sys

    module = sys.modules["xbar.calibrate"]
    net = _Recurrent().eval()
    spec = xbar.Spec(tile=(16, 16), device=presets["rram_hfo2"], adc_bits=6)
    hw = xbar.convert(net, spec, seed=1)
    x = rand(7, 16, 8).float()
    with torch.no_grad():
        assert module._direct_inputs(net, hw, x, lambda a, t: a, xbar.reset_state) is None
        conv = _calibration_net()
        direct = module._direct_inputs(conv, xbar.convert(conv, xbar.Spec.ideal()), rand(8, 2, 1, 12, 12).float(),
                                       lambda a, t: a, xbar.reset_state)
        assert direct == {"0": set(), "3": {"0"}, "7": {"3"}, "9": {"7"}}  # each conv/fc reads the one before
    results = []
    for replay in (False, True):
        hw = xbar.convert(net, spec, seed=1, trials=2)
        xbar.calibrate(hw, net, x, 3, replay=replay, labels=torch.arange(len(x)) % 3)
        results.append({n: b.clone() for n, b in hw.named_buffers() if b is not None})
    for name in results[0]:
        assert torch.equal(results[0][name], results[1][name]), name
