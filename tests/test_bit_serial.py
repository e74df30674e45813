"""Bit-serial inputs (Spec.input_scheme="bit_serial"): the planes against the DAC code,
the exact ideal limit, the reads and conversions counted, each read's ADC rounding
against theory, calibration on the planes, and hardware-aware training."""

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import xbar
from devices import presets
from xbar.tile.converters import add_planes, bit_planes, dac, serial_planes, top_code


def rand(seed, *shape):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), bits=st.integers(1, 8), signed=st.booleans(),
       input_range=st.sampled_from([1.0, 2.5]))
def test_the_bit_planes_add_back_to_the_dac_code(seed, bits, signed, input_range):
    spec = xbar.Spec.ideal(dac_bits=bits, dac_signed=signed, adc_signed=signed or None, input_scheme="bit_serial",
                           input_range=input_range)
    x = (rand(seed, 30, 7) * 2 - 1 if signed else rand(seed, 30, 7)) * input_range
    x_q = dac(x, spec)
    planes = serial_planes(x_q, spec)
    assert planes == (bits - 1 if signed and bits > 1 else bits)  # the code's magnitude bits
    p = bit_planes(x_q, planes, spec)
    assert p.shape == (planes, 30, 7)
    assert bool(((p == 0) | (p.abs() == input_range)).all())  # every row at 0 or +-v_read
    torch.testing.assert_close(add_planes(p, spec), x_q, rtol=0, atol=1e-12)


def test_binary_inputs_are_read_once():
    spec = xbar.Spec.ideal(dac_bits=6, input_scheme="bit_serial")
    spikes = (rand(0, 10, 20) < 0.3).double()
    assert serial_planes(spikes, spec) == 1
    assert serial_planes(spikes * 0.5, spec) == 6  # not at the input range: a code like any other
    assert serial_planes(rand(1, 10, 20), xbar.Spec.ideal(dac_bits=6)) == 1  # amplitude: one read


@pytest.mark.parametrize("signed", [False, True])
def test_an_ideal_bit_serial_layer_reads_the_dac_codes_product_and_counts_its_reads(signed):
    """Ideal devices and ADC: the shifted and added reads are the DAC-rounded inputs'
    product exactly; reads = trials x inputs x bits, tile reads = reads x tiles, and with an
    ADC one conversion per read column of each tile-row."""
    w = torch.randn(100, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = rand(1, 2, 50, 100) * 2 - 1 if signed else rand(1, 2, 50, 100)
    spec = xbar.Spec.ideal(dac_bits=5, dac_signed=signed, adc_signed=signed or None, input_scheme="bit_serial",
                           calibration=None)
    m = xbar.ProgrammedMatrix(w, spec, trials=2, program_seed=0, read_seed=1)
    with torch.no_grad():
        torch.testing.assert_close(m(x), dac(x, spec) @ w, rtol=0, atol=1e-12)
    bits = 4 if signed else 5
    assert m.counts == {"reads": 2 * 50 * bits, "tile_reads": 2 * 50 * bits * 2, "conversions": 0}  # 2 tile-rows
    m = xbar.ProgrammedMatrix(w, spec.replace(adc_bits=8), trials=2, program_seed=0, read_seed=1)
    with torch.no_grad():
        m(x)
        m((x > 0.5).double())  # spikes: one read each
    reads = 2 * 50 * bits + 2 * 50
    # analog subtraction: one conversion per pair, 20 pairs on each of the 2 tile-rows
    assert m.counts == {"reads": reads, "tile_reads": reads * 2, "conversions": reads * 2 * 20}


@pytest.mark.parametrize("scheme", ["amplitude", "bit_serial", "bit_integrated"])
def test_each_read_is_rounded_by_the_adc_on_its_own(scheme):
    """Ideal devices, a 6-bit ADC at its worst-case range, inputs on a 6-bit DAC: the error
    against the DAC codes' product has variance sum over tile-rows of lsb^2 / 12 for one
    conversion (amplitude, and the bits' charges integrated before one), and that times
    sum_j (2^j / top)^2 (about a third) for the shifted and added conversions of the bits."""
    w = torch.randn(100, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = rand(1, 1, 4000, 100)
    spec = xbar.Spec.ideal(dac_bits=6, adc_bits=6, input_scheme=scheme, calibration=None)
    m = xbar.ProgrammedMatrix(w, spec, trials=1, program_seed=0, read_seed=1)
    with torch.no_grad():
        err = (m(x) - dac(x, spec) @ w)[0]
    lsb = m.out_fs[0, :, 0]  # (tile-rows, out): weight units per code
    shift = sum(4.0**j for j in range(6)) / top_code(6, False) ** 2 if scheme == "bit_serial" else 1.0
    theory = (lsb**2).sum(0) / 12 * shift
    ratio = err.var(0) / theory
    assert abs(float(ratio.mean()) - 1) < 0.03 and float((ratio - 1).abs().max()) < 0.12, ratio


def test_integrated_bits_read_once_converted_each_with_its_own_noise():
    """Bits integrated before one conversion: the reads of an ideal layer are the DAC
    codes' product, counted one per bit and one conversion per read column; each bit's
    read draws its own noise, so with equal weights (every device's noise alike) the
    output's variance against the amplitude read's is sum_i sum_j (2^j/top)^2 p_ij^2
    over sum_i x_i^2, from the inputs alone."""
    w = torch.full((40, 6), 0.5, dtype=torch.float64)
    x = rand(2, 1, 1, 40).expand(1, 20000, 40)
    spec = xbar.Spec(device=presets["rram_hfo2"].replace(prog_sigma_poly=(), read_noise_static=0.0),
                     r_wire_row=0.0, r_wire_col=0.0, dac_bits=4, calibration=None)
    var = {}
    for scheme in ("amplitude", "bit_integrated"):
        m = xbar.ProgrammedMatrix(w, spec.replace(input_scheme=scheme), trials=1, program_seed=0, read_seed=1)
        with torch.no_grad():
            var[scheme] = float(m(x)[0].var(0).mean())
        assert m.counts["reads"] == 20000 * (4 if scheme == "bit_integrated" else 1)
    x_q = dac(x[0, :1], spec)
    p = bit_planes(x_q, 4, spec)
    theory = float(((2.0 ** torch.arange(4, dtype=torch.float64) / 15) ** 2 @ (p * p).sum(-1).squeeze(-1)) / (x_q * x_q).sum())
    assert abs(var["bit_integrated"] / var["amplitude"] / theory - 1) < 0.05, (var, theory)
    assert theory < 0.8  # the bits' independent noises partly average
    ideal = xbar.ProgrammedMatrix(w, xbar.Spec.ideal(dac_bits=4, adc_bits=8, input_scheme="bit_integrated",
                                                     calibration=None), trials=1, program_seed=0, read_seed=1)
    with torch.no_grad():
        y = ideal(x[:, :50])
    assert ideal.counts["conversions"] == 50 * 6  # one per output (analog pairs), not one per bit
    # one rounding: within half a code of the product (bit by bit, each bit's half code would add up)
    torch.testing.assert_close(y, dac(x[:, :50], spec) @ w, rtol=0, atol=float(ideal.out_fs.max()) / 2 + 1e-12)


def test_integrated_bits_keep_non_linear_devices_at_the_read_voltage():
    """Non-linear devices programmed to their chord at v_read, ideal wires: an analog input
    read at its amplitude meets the curve below v_read and reads off the linear product;
    read bit by bit (integrated or converted each), every device sees v_read or 0 and the
    reads are the linear product of the DAC codes, exactly."""
    device = presets["rram_hfo2"].replace(prog_sigma_poly=(), read_sigma_rel=0.0)
    w = torch.randn(30, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = rand(1, 1, 40, 30)
    base = dict(device=device, iv="device", dac_bits=5, r_wire_row=0.0, r_wire_col=0.0, calibration=None)
    ideal = dac(x, xbar.Spec(**base)) @ w
    out = {}
    for scheme in ("amplitude", "bit_serial", "bit_integrated"):
        m = xbar.ProgrammedMatrix(w, xbar.Spec(**base, input_scheme=scheme), trials=1, program_seed=0, read_seed=1)
        with torch.no_grad():
            out[scheme] = m(x)
    scale = float(ideal.abs().max())
    assert float((out["amplitude"] - ideal).abs().max()) > 1e-3 * scale
    for scheme in ("bit_serial", "bit_integrated"):
        torch.testing.assert_close(out[scheme], ideal, rtol=0, atol=1e-9 * scale)


def _small_snn():
    from studies.models import LIF

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 12), LIF(0.9, threshold=0.5), nn.Linear(12, 4)).double()


def test_calibration_fits_the_bit_planes_it_reads():
    """Every device drifted by the same factor, calibrated from data: the bit-serial chip's
    calibration, fitted on the planes it reads, takes the factor back exactly, so its
    layers read what the amplitude chip's do (the DAC's rounding alone), to round-off."""
    model = _small_snn()
    x, y = rand(20, 64, 16), torch.randint(0, 4, (64,), generator=torch.Generator().manual_seed(21))
    drifting = presets["ideal"].replace(drift_nu_mean=0.2, drift_t0=1.0)  # a uniform attenuation
    spec = xbar.Spec.ideal(tile=(8, 8), device=drifting, t_inference=100.0, dac_bits=4)
    runs = {}
    for scheme in ("amplitude", "bit_serial"):
        s = spec.replace(input_scheme=scheme)
        hw = xbar.calibrate(xbar.convert(model, s, seed=0, trials=2), model, rand(22, 16, 16), timesteps=4,
                            labels=torch.arange(16) % 4)
        first = next(m for m in hw.modules() if isinstance(m, xbar.AnalogLinear))
        first.matrix.reset_counts()
        runs[scheme] = xbar.simulate(hw, model, (x, y), 4, progress=False)
        # 2 trials x 64 samples x 4 steps, one read each or one per bit of the 4-bit codes
        assert first.matrix.counts["reads"] == 2 * 64 * 4 * (4 if scheme == "bit_serial" else 1)
    a, b = runs["amplitude"], runs["bit_serial"]
    assert float(a.read_error.sel(layer="0").max()) > 1e-3  # the DAC's rounding shows
    torch.testing.assert_close(torch.as_tensor(b.read_error.values), torch.as_tensor(a.read_error.values),
                               rtol=1e-9, atol=1e-12)


def test_training_reads_the_bits_and_passes_the_gradient_straight_through():
    """Hardware-aware training, ideal devices and ADC: the forward is the DAC codes'
    product, the gradient to the inputs and weights the ideal product's."""
    lin = nn.Linear(30, 5).double()
    x = rand(0, 8, 30).requires_grad_(True)
    c = torch.randn(8, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    spec = xbar.Spec.ideal(tile=(16, 8), dac_bits=4, input_scheme="bit_serial", calibration=None)
    with xbar.HardwareAware(lin, spec) as hw:
        hw.new_batch()
        out = lin(x)
    torch.testing.assert_close(out.detach(), lin(dac(x.detach(), spec)).detach(), rtol=1e-10, atol=1e-10)
    (out * c).sum().backward()
    torch.testing.assert_close(lin.weight.grad, c.t() @ dac(x.detach(), spec), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x.grad, c @ lin.weight.detach(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("changes, says", [
    (dict(input_scheme="bit_serial"), "set dac_bits"),
    (dict(input_scheme="pwm", dac_bits=4), "must be one of"),
])
def test_bad_input_schemes_are_refused_with_the_field(changes, says):
    with pytest.raises(ValueError, match=rf"Spec\.input_scheme = .* not allowed.*{says}"):
        xbar.Spec(**changes)
