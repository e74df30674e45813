"""Non-linear devices (``Spec(iv="device")``): the device's published I-V curve, the
non-linear circuit solved by Newton's method against ngspice with the same device as a
behavioural source, its exact limits, and the read of a layer."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spl
import torch
import torch.nn as nn

import xbar
from devices import presets
from devices.physics import iv_coefficients, low_field
from xbar import spice
from xbar.circuit import solve_crossbar, solve_nonlinear

RRAM = presets["rram_hfo2"].replace(read_sigma_rel=0.0)  # variation, no read noise
WIRES = dict(r_wire_row=2.5, r_wire_col=2.5)


def _devices(shape, v_verify: float, seed: int = 0):
    """HfO2 devices programmed across the window to chords at ``v_verify``: their ``(g0, nl2,
    nl3)`` and the chords."""
    gen = torch.Generator().manual_seed(seed)
    g = RRAM.g_min + (RRAM.g_max - RRAM.g_min) * torch.rand(shape, generator=gen, dtype=torch.float64)
    return iv_coefficients(low_field(g, v_verify, RRAM), RRAM), g


def test_the_curve_is_crosssims_fit_of_milo_2021():
    """The preset's curve at four points against the closed form of CrossSim 3.2's
    ``RRAMMilo.nonlinear_current`` (``numpy.polyval`` of its coefficients in log10 G0): at
    62.5 uS the current at 0.5 V is 84.7% of G0 V, at 225 uS (the fit's linear anchor) 99.6%."""
    g0 = torch.tensor([50e-6, 62.5e-6, 110e-6, 225e-6], dtype=torch.float64)
    _, nl2, nl3 = iv_coefficients(g0, RRAM)
    x = np.log10(g0.numpy())
    torch.testing.assert_close(nl2.numpy(), np.polyval([0.0001388, 0.001541, 0.005711, 0.007063], x), rtol=1e-12, atol=0)
    torch.testing.assert_close(nl3.numpy(), np.polyval([8.8710e-05, 6.7919e-04, 1.2968e-03], x), rtol=1e-12, atol=0)
    ratio = (g0 * 0.5 + nl2 * 0.25 + nl3 * 0.125) / (g0 * 0.5)
    assert abs(float(ratio[1]) - 0.8466) < 1e-3 and abs(float(ratio[3]) - 0.9961) < 1e-3


def test_low_field_inverts_the_chord():
    """``low_field`` gives the G0 whose chord at the verify voltage is the programmed
    conductance, to round-off; a linear device and zero conductance are left as they are."""
    (g0, nl2, nl3), g = _devices((200,), 0.3)
    chord = g0 + nl2 * 0.3 + nl3 * 0.09
    torch.testing.assert_close(chord, g, rtol=1e-13, atol=0)
    assert bool((g0 > g).all())  # the curve bends down: G0 above its chord at 0.3 V
    z = torch.zeros(3, dtype=torch.float64)
    assert bool((low_field(z, 0.3, RRAM) == 0).all())
    assert low_field(g, 0.3, presets["pcm"]) is g


@pytest.mark.skipif(spice.NGSPICE is None, reason="ngspice is not installed (.ci/run installs it)")
@pytest.mark.parametrize("r", [dict(r_wire_row=2.5, r_wire_col=2.5),
                               dict(r_wire_row=5.0, r_wire_col=3.0, r_source=20.0, r_sink=10.0)])
def test_newton_agrees_with_ngspice(r):
    """An 8x6 tile of HfO2 devices, each a behavioural source of its I-V curve in ngspice,
    driven by three random analog vectors up to 0.5 V (the curve's range): the output
    currents agree to 1e-6 of the largest (measured 1.3e-7 / 1.4e-7, ngspice's own
    tolerance), with fixed and with resistive drivers and sense amplifiers."""
    gen = torch.Generator().manual_seed(1)
    (g0, nl2, nl3), _ = _devices((8, 6), 0.5, seed=1)
    v = torch.rand(3, 8, generator=gen, dtype=torch.float64) * 0.5
    out = solve_nonlinear(g0, v, nl2=nl2, nl3=nl3, **r).numpy()
    ref = spice.run(g0.numpy(), v.numpy(), nl2=nl2.numpy(), nl3=nl3.numpy(), **r)
    assert np.abs(out - ref).max() < 1e-6 * np.abs(ref).max()
    # and the curve matters here: the linear circuit of the low-field conductances is off
    lin = solve_crossbar(g0, v, **r).numpy()
    assert np.abs(lin - ref).max() > 1e-2 * np.abs(ref).max()


def test_chord_method_agrees_with_a_sparse_newton_solve():
    """A 32x24 tile at 2.5 ohm/cell with 50 ohm drivers and 20 ohm sense amplifiers, sparse
    spikes at 0.2 V and analog inputs up to 0.5 V: the output currents agree with full
    Newton's method on the nodal matrix assembled and factorised by scipy (``splu`` of
    the Jacobian at each step, to a step of 1e-15 V), to 1e-9 of the largest."""
    r = dict(r_wire_row=2.5, r_wire_col=2.5, r_source=50.0, r_sink=20.0)
    (g0, nl2, nl3), _ = _devices((32, 24), 0.2, seed=4)
    gen = torch.Generator().manual_seed(5)
    v = torch.cat([(torch.rand(3, 32, generator=gen, dtype=torch.float64) < 0.15) * 0.2,
                   torch.rand(2, 32, generator=gen, dtype=torch.float64) * 0.5])
    out = solve_nonlinear(g0, v, nl2=nl2, nl3=nl3, **r).numpy()
    G0, N2, N3 = (x.numpy().ravel() for x in (g0, nl2, nl3))
    n = G0.size
    wires = spice.nodal_matrix(np.zeros((32, 24)), **r)
    for k, drive in enumerate(v.numpy()):
        rhs = np.zeros(2 * n)
        rhs[np.arange(32) * 24] = drive / r["r_source"]
        x = np.zeros(2 * n)
        for _ in range(50):
            d = x[:n] - x[n:]
            i_dev, slope = d * (G0 + d * (N2 + d * N3)), G0 + d * (2 * N2 + 3 * N3 * d)
            f = wires @ x + np.concatenate([i_dev, -i_dev]) - rhs
            step = spl.splu(spice.nodal_matrix(slope.reshape(32, 24), **r).tocsc()).solve(-f)
            x += step
            if np.abs(step).max() < 1e-15:
                break
        want = x[n:].reshape(32, 24)[-1] / r["r_sink"]
        assert np.abs(out[k] - want).max() < 1e-9 * np.abs(want).max()


def test_limits_of_the_nonlinear_circuit():
    """Exact limits: ideal wires give ``sum_i I(g_ij, v_i)`` (three products); linear devices
    (nl2 = nl3 = 0) give :func:`solve_crossbar` to 1e-12; at a small drive the circuit is
    the linear one of the low-field conductances, the relative difference shrinking in
    proportion to the drive (the V^2 term: 1e-3 V gives 1e-3 of 1e-3 of ...)."""
    (g0, nl2, nl3), _ = _devices((16, 12), 0.2, seed=2)
    gen = torch.Generator().manual_seed(3)
    v = torch.rand(5, 16, generator=gen, dtype=torch.float64) * 0.2
    ideal = solve_nonlinear(g0, v, nl2=nl2, nl3=nl3, r_wire_row=0.0, r_wire_col=0.0)
    want = torch.einsum("ni,ij->nj", v, g0) + torch.einsum("ni,ij->nj", v**2, nl2) + torch.einsum("ni,ij->nj", v**3, nl3)
    torch.testing.assert_close(ideal, want, rtol=1e-14, atol=0)
    z = torch.zeros_like(g0)
    lin = solve_crossbar(g0, v, **WIRES)
    torch.testing.assert_close(solve_nonlinear(g0, v, nl2=z, nl3=z, **WIRES), lin, rtol=1e-12, atol=0)
    errors = []
    for scale in (1e-2, 1e-3):
        out = solve_nonlinear(g0, v * scale, nl2=nl2, nl3=nl3, **WIRES)
        errors.append(float(((out - lin * scale) / (lin * scale)).abs().max()))
    assert errors[1] < 1e-3 * 0.2 * 2  # |nl2| / g0 <= 0.74 / V at 50 uS: 0.74 * 2e-4 V
    assert 7 < errors[0] / errors[1] < 13  # first order in the drive


def test_bad_inputs_of_the_nonlinear_circuit_are_named():
    (g0, nl2, nl3), _ = _devices((4, 4), 0.2)
    with pytest.raises(ValueError, match="g0 has 4 rows but v has 3"):
        solve_nonlinear(g0, torch.zeros(3, dtype=torch.float64), nl2=nl2, nl3=nl3, **WIRES)
    with pytest.raises(ValueError, match="must have one shape"):
        solve_nonlinear(g0, torch.zeros(4, dtype=torch.float64), nl2=nl2[:2], nl3=nl3, **WIRES)
    with pytest.raises(ValueError, match="r_wire_col = -1.0"):
        solve_nonlinear(g0, torch.zeros(4, dtype=torch.float64), nl2=nl2, nl3=nl3, r_wire_row=1.0, r_wire_col=-1.0)


def _linear(n_in: int, n_out: int) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(n_in, n_out, bias=False)


def _reference(layer, x: torch.Tensor, wires: dict) -> torch.Tensor:
    """Outputs ``(N, out)`` of one trial's layer: each tile's read solved by
    :func:`solve_nonlinear` at the DAC's voltages from the devices' low-field conductances
    (their chords at ``v_read`` are ``g_tiles``), each output the weight scale times its
    pair's difference of currents, summed over the tile-rows."""
    m, spec = layer.matrix, layer.matrix.spec
    g = m.g_tiles.double()[0]  # (n_r, n_c, R, C)
    n_r, n_c, rows, cols = g.shape
    n_in, n_out = m.shape
    xp = nn.functional.pad(x[0], (0, n_r * rows - n_in)).double().unflatten(-1, (n_r, rows))
    want = torch.zeros(x.shape[1], n_out, dtype=torch.float64)
    for r in range(n_r):
        g0 = low_field(g[r, 0], spec.v_read, RRAM)
        _, nl2, nl3 = iv_coefficients(g0, RRAM)
        i = solve_nonlinear(g0, xp[:, r] * spec.v_read, nl2=nl2, nl3=nl3, **wires) / spec.v_read
        want += (i[:, 0 : 2 * n_out : 2] - i[:, 1 : 2 * n_out : 2]) * m._w_per_siemens
    return want


def test_binary_spikes_on_ideal_wires_read_as_the_linear_device():
    """Each device programmed to its target chord at ``v_read``: binary spikes drive every
    device at ``v_read`` or not at all, so without wires the non-linear read is the linear
    one (to float32's rounding).  Analog inputs of half the range drive the devices at
    0.1 V, where each carries ``I(0.1 V)`` of its curve (:func:`_reference`, to float32's
    rounding), not half its current at ``v_read``: the linear read is off by 1.8% of the
    largest output here."""
    lin = _linear(100, 20)
    spikes = (torch.rand(1, 40, 100, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    spec = xbar.Spec(tile=(64, 64), device=RRAM, calibration=None, r_wire_row=0.0, r_wire_col=0.0)
    with torch.no_grad():
        linear = xbar.AnalogLinear(lin, spec, seeds=(1, 2))
        device = xbar.AnalogLinear(lin, spec.replace(iv="device"), seeds=(1, 2))
        y, want = device(spikes), linear(spikes)
        torch.testing.assert_close(y, want, rtol=0, atol=2e-6 * float(want.abs().max()))
        analog = spikes * 0.5
        y, ref = device(analog).double()[0], _reference(device, analog, dict(r_wire_row=0.0, r_wire_col=0.0))
        scale = float(ref.abs().max())
        assert float((y - ref).abs().max()) < 1e-6 * scale
        assert float((linear(analog).double()[0] - ref).abs().max()) > 0.01 * scale


def test_a_nonlinear_layer_reads_each_reads_own_circuit():
    """A 100-input layer on 64x64 tiles at 2.5 ohm/cell, binary spikes, raw, no ADC: the
    read is :func:`_reference`'s, to float32's rounding; and the curve moves the read by
    more than that (the drop takes each device below its verify voltage): the linear
    read is off by 1.5% of the largest output."""
    lin = _linear(100, 10)
    x = (torch.rand(1, 6, 100, generator=torch.Generator().manual_seed(2)) < 0.2).float()
    spec = xbar.Spec(tile=(64, 64), device=RRAM, calibration=None, iv="device", **WIRES)
    layer = xbar.AnalogLinear(lin, spec, trials=1, seeds=(1, 2))
    with torch.no_grad():
        y = layer(x).double()[0]
        linear = xbar.AnalogLinear(lin, spec.replace(iv="linear"), trials=1, seeds=(1, 2))(x).double()[0]
    want = _reference(layer, x, WIRES)
    scale = float(want.abs().max())
    assert float((y - want).abs().max()) < 1e-6 * scale
    assert float((linear - want).abs().max()) > 5e-3 * scale  # measured 1.5e-2


def test_calibration_reads_through_the_nonlinear_circuit():
    """A 4-bit ADC with ranges, gains and offsets fitted from data through the non-linear
    reads (HfO2, 2.5 ohm/cell; calibrated on 100 sparse inputs, read on 100 others of the
    same kind): the calibrated chip's relative RMS error is under half the raw chip's
    (measured 0.22 against 0.50)."""
    lin = _linear(64, 8)
    gen = torch.Generator().manual_seed(4)
    x, x_cal = ((torch.rand(1, 100, 64, generator=gen) < 0.15).float() for _ in range(2))
    base = xbar.Spec(tile=(64, 64), device=RRAM, adc_bits=4, iv="device", **WIRES)
    errors = {}
    with torch.no_grad():
        t = lin(x)
        for cal in (None, "data"):
            layer = xbar.AnalogLinear(lin, base.replace(calibration=cal), trials=1, seeds=(5, 6))
            if cal == "data":
                layer.matrix.fit_calibration(x_cal)
            errors[cal] = float((layer(x) - t).pow(2).mean().sqrt() / t.pow(2).mean().sqrt())
    assert errors["data"] < errors[None] / 2, errors


def test_an_input_beyond_the_curve_is_refused():
    """An ideal DAC passes inputs beyond ``input_range``; driven past the 0.5 V to which the
    curve was measured, the read refuses with the voltage, not extrapolating the fit."""
    layer = xbar.AnalogLinear(_linear(8, 4), xbar.Spec(tile=(8, 8), device=RRAM, calibration=None, iv="device",
                                                      v_read=0.2), seeds=(1, 2))
    with torch.no_grad():
        layer(torch.full((1, 3, 8), 2.5))  # 0.5 V: at the edge, read
        with pytest.raises(ValueError, match="drives 0.6 V, beyond the 0.5 V"):
            layer(torch.full((1, 3, 8), 3.0))


def test_iv_options_are_validated():
    with pytest.raises(ValueError, match="iv = 'cubic'"):
        xbar.Spec(iv="cubic")
    with pytest.raises(ValueError, match="has no current-voltage curve.*rram_hfo2"):
        xbar.Spec(device=presets["pcm"], iv="device")
    with pytest.raises(ValueError, match="v_read = 0.6.*0.5 V"):
        xbar.Spec(device=RRAM, iv="device", v_read=0.6)
    with pytest.raises(ValueError, match="connected array only"):
        xbar.Spec(device=RRAM, iv="device", array="gated")
    with pytest.raises(ValueError, match="ir_drop_model = 'first_order'"):
        xbar.Spec(device=RRAM, iv="device", ir_drop_model="first_order")
    exact = RRAM.replace(prog_sigma_poly=())  # the curve, nothing else
    assert xbar.Spec.ideal(device=exact).is_ideal and not xbar.Spec.ideal(device=exact, iv="device").is_ideal
