"""ADC full scale, calibration: against closed forms and exact limits."""

import math

import pytest
import torch
import torch.nn as nn

import xbar
from devices import DeviceModel, presets


def linear(seed, n_in, n_out):
    lin = nn.Linear(n_in, n_out, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n_out, n_in, generator=torch.Generator().manual_seed(seed),
                                     dtype=torch.float64))
    return lin


def rand(seed, *shape):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("scheme", ["differential", "offset"])
def test_adc_full_scale_counts_only_the_rows_an_input_drives(scheme):
    """70 inputs on 64-row tiles: the second tile-row drives 6 rows, and its full scale is
    the largest column current of those 6 rows at full scale, not of all 64."""
    lin = linear(0, 70, 20)
    spec = xbar.Spec.ideal(tile=(64, 64), mapping=scheme, adc_bits=6, calibration=None)
    m = xbar.AnalogLinear(lin, spec).matrix
    g = m.conductances()[0]  # (n_r, n_c, R, C): ideal device and wires, so as programmed
    expected_last = spec.v_read * g[1, :, :6].sum(-2).amax(-1)
    expected_first = spec.v_read * g[0].sum(-2).amax(-1)
    w_per_a = m.out_scale / 63  # weight units per ampere, per code of a 6-bit unipolar ADC
    assert m.out_fs.shape == (1, 2, 1, 20)
    torch.testing.assert_close(m.out_fs[0, 1, 0, 0], expected_last[0] * w_per_a, rtol=1e-12, atol=0)
    torch.testing.assert_close(m.out_fs[0, 0, 0, 0], expected_first[0] * w_per_a, rtol=1e-12, atol=0)
    assert float(expected_first[0] / expected_last[0]) > 5  # what the old full scale wasted


@pytest.mark.parametrize("calibration", [None, "vectors"])
def test_adc_rounding_error_is_lsb_squared_over_twelve(calibration):
    """Continuous inputs on an ideal device: each column's rounding error is uniform over one
    code, so a differential output over one tile-row has error variance 2 LSB^2 / 12; a
    calibration of this hardware must not add to it (its gain is 1 up to the rounding)."""
    lin = linear(1, 48, 16)
    spec = xbar.Spec.ideal(tile=(64, 64), adc_bits=7, calibration=calibration)
    layer = xbar.AnalogLinear(lin, spec)
    x = rand(2, 20_000, 48)
    with torch.no_grad():
        err = layer(x) - lin(x)
    lsb = layer.matrix.out_fs[0, 0, 0]  # one code in weight units, per output
    ratio = err.var(0) / (2 * lsb**2 / 12)
    assert float((ratio - 1).abs().max()) < 0.08, ratio  # 20,000 reads: 1% sd per output
    assert float(err.mean(0).abs().max() / lsb.max()) < 0.05


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
    on the test spikes is below a third of the raw one; known vectors of every activity do
    worse (their average attenuation is not that of sparse spikes)."""
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
    assert errors["data"] < errors[None] / 3, errors
    assert errors["data"] < errors["vectors"], errors


def test_calibration_with_read_noise_keeps_the_gain_unbiased():
    """Reads with 10% noise: the fitted gains are those of the noiseless hardware within
    the fit's statistical error (512 vectors), not shrunk by the noise's share of the
    variance (a regression of the ideal products on the reads would shrink them ~5%)."""
    lin = linear(9, 60, 30)
    drift = uniform_drift()
    noisy = drift.replace(read_sigma_rel=0.1)
    spec = dict(tile=(64, 64), t_inference=100.0, calibration="vectors")
    x = rand(10, 4000, 60)
    with torch.no_grad():
        quiet = xbar.AnalogLinear(lin, xbar.Spec.ideal(device=drift, **spec))
        loud = xbar.AnalogLinear(lin, xbar.Spec.ideal(device=noisy, **spec))
        slope = (loud(x) * lin(x)).sum(0) / (lin(x) ** 2).sum(0)  # mean gain per output
    assert quiet.matrix.calibrated and loud.matrix.calibrated
    assert abs(float(slope.mean()) - 1) < 0.01, slope


def test_spec_refuses_an_unknown_calibration():
    with pytest.raises(ValueError, match="calibration.*'tile'.*'data', 'vectors'.*None"):
        xbar.Spec(calibration="tile")
