"""Paired draws: each kind of random draw has its own stream of a fixed shape, so that two
chips that differ in one option (drift on or off, ADC errors on or off, faults on or
off, converter noise on or off) are otherwise the same devices, as sweeps compare them."""

from __future__ import annotations

import torch

import xbar
from devices import presets

W = torch.randn(48, 20, generator=torch.Generator().manual_seed(0)) * 0.3
WIRES = dict(r_wire_row=0.0, r_wire_col=0.0)


def _matrix(spec, trials=2):
    return xbar.ProgrammedMatrix(W, spec, trials=trials, program_seed=3, read_seed=4)


def _rel_rms(a, b):
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt())


def test_time_since_programming_changes_only_the_drift():
    """PCM at t = 0, 1 ms and 2 ms: the same devices, drifted.  Drawing the exponents only
    when time passes shifted the static read noise: 10% RMS between 0 and 1 ms against
    2.5e-6 between 1 and 2 ms.  Now both are the drift of a millisecond (t0 = 20 s):
    |nu| ln(1 + t/t0) ~ 0.06 * 5e-5."""
    g = {t: _matrix(xbar.Spec(device=presets["pcm"], calibration=None, **WIRES).replace(t_inference=t)).g_tiles
         for t in (0.0, 1e-3, 2e-3)}
    first, second = _rel_rms(g[1e-3], g[0.0]), _rel_rms(g[2e-3], g[1e-3])
    assert first < 1e-4 and second < 1e-4, (first, second)
    assert 0.5 < first / second < 2.0  # the same law, a millisecond each


def test_programming_variation_leaves_the_drift_exponents_and_static_noise_alone():
    """A drift law independent of the state: the drift factor of each device (g(t) / g0 with
    the static noise's factor) is the same with and without programming variation."""
    dev = presets["ideal"].replace(drift_nu_mean=0.05, drift_nu_std=0.02, drift_t0=1.0)
    spec = xbar.Spec(device=dev, t_inference=100.0, calibration=None, **WIRES)
    plain, varied = _matrix(spec), _matrix(spec.replace(device=dev.replace(prog_sigma_rel=0.05)))
    programmed = _matrix(spec.replace(t_inference=0.0)), _matrix(spec.replace(
        t_inference=0.0, device=dev.replace(prog_sigma_rel=0.05)))
    ratio_plain = plain.g_tiles / programmed[0].g_tiles
    ratio_varied = varied.g_tiles / programmed[1].g_tiles
    assert not torch.equal(plain.g_tiles, varied.g_tiles)
    torch.testing.assert_close(ratio_plain, ratio_varied, rtol=1e-5, atol=0)


def test_faults_change_only_the_stuck_devices():
    dev = presets["rram_hfo2"]
    spec = xbar.Spec(device=dev, calibration=None, **WIRES)
    healthy = _matrix(spec).g_tiles
    faulty = _matrix(spec.replace(device=dev.replace(p_stuck_low=0.05, p_stuck_high=0.05))).g_tiles
    changed = healthy != faulty
    share = float(changed.double().mean())
    assert 0.07 < share < 0.11, share  # ~10% stuck, minus those already at their level
    stuck = faulty[changed]
    assert bool(((stuck == dev.g_min) | (stuck == dev.g_max)).all())


def test_adc_gain_errors_leave_the_offsets_and_the_calibration_alone():
    """The offsets are the same whether or not gain errors are drawn, and a calibration
    from random vectors draws the same inputs and noise with or without either."""
    base = xbar.Spec(device=presets["rram_hfo2"], adc_bits=6, adc_signed=True, calibration="vectors", **WIRES)
    offsets = _matrix(base.replace(adc_offset_error=0.5))
    both = _matrix(base.replace(adc_offset_error=0.5, adc_gain_error=0.03))
    torch.testing.assert_close(offsets.adc_offset, both.adc_offset, rtol=0, atol=0)
    assert offsets.adc_gain is None and both.adc_gain is not None
    # No errors at all: the calibration (its vectors and their reads' noise) is the same
    # as with errors whose effect is nil: the fitted gains agree to float rounding.
    none = _matrix(base)
    tiny = _matrix(base.replace(adc_offset_error=1e-9, adc_gain_error=1e-9))
    torch.testing.assert_close(none.out_fs, tiny.out_fs, rtol=1e-6, atol=0)


def test_converter_noise_leaves_the_read_noise_alone():
    """The ADCs' conversion noise has streams of its own: a converter noise too small to
    move a code leaves every read as it was without it (the column noise is the same)."""
    dev = presets["rram_hfo2"].replace(read_sigma_rel=0.05)
    spec = xbar.Spec(device=dev, adc_bits=6, calibration=None, **WIRES)
    x = (torch.rand(2, 200, 48, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    quiet, noisy = _matrix(spec), _matrix(spec.replace(adc_noise=1e-7))
    for read in range(3):  # the reads after the first too (a shared stream would shift them)
        a, b = quiet(x), noisy(x)
        assert float((a != b).double().mean()) < 1e-3, read
    assert float((quiet(x) != a).double().mean()) > 0.1  # the read noise itself is drawn anew
