"""The gated 1T1R array (``Spec(array="gated")``) in the read: each read's circuit solved
exactly, the rows without input disconnected; its limits against the connected array and
the ideal product, and its options' validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import xbar
from devices import presets
from xbar.circuit import solve_gated

RRAM = presets["rram_hfo2"].replace(read_sigma_rel=0.0)  # variation, no read noise
WIRES = dict(r_wire_row=2.5, r_wire_col=2.5)


def _linear(n_in: int, n_out: int) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(n_in, n_out, bias=False)


def _spikes(shape, rate: float, seed: int = 1) -> torch.Tensor:
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < rate).float()


def test_a_gated_layer_reads_each_reads_own_circuit():
    """A 100-input, 20-output layer on 64x64 tiles (two tile-rows, the second with 36 of
    its 64 rows used), HfO2 RRAM with programming variation at 2.5 ohm/cell, raw, no ADC:
    every output is the weight scale times the difference of its pair's currents, each
    tile solved for each read with only its spiking rows connected (the unused rows too
    disconnected, their wires still there) and summed over the tile-rows: to float32's
    rounding.  And it is not the connected array's read."""
    lin = _linear(100, 20)
    x = _spikes((2, 50, 100), 0.15)
    spec = xbar.Spec(tile=(64, 64), device=RRAM, calibration=None, array="gated", **WIRES)
    layer = xbar.AnalogLinear(lin, spec, trials=2, seeds=(1, 2))
    with torch.no_grad():
        y = layer(x).double()
        connected = xbar.AnalogLinear(lin, spec.replace(array="connected", r_access=None), trials=2, seeds=(1, 2))(x)
    m = layer.matrix
    g = m.g_tiles.double()  # the devices in series with their transistors, (K, n_r, n_c, R, C)
    trials, n_r, n_c, rows, cols = g.shape
    xp = nn.functional.pad(x, (0, n_r * rows - 100)).double().unflatten(-1, (n_r, rows))
    want = torch.zeros(2, 50, 20, dtype=torch.float64)
    per_tile = cols // 2
    for k in range(trials):
        for r in range(n_r):
            for c in range(n_c):
                i = solve_gated(g[k, r, c], xp[k, :, r], **WIRES)  # (N, C)
                used = min(per_tile, 20 - c * per_tile)
                want[k, :, c * per_tile : c * per_tile + used] += (i[:, 0 : 2 * used : 2] - i[:, 1 : 2 * used : 2]) * m._w_per_siemens
    scale = float(want.abs().max())
    assert float((y - want).abs().max()) < 1e-6 * scale
    assert float((connected.double() - want).abs().max()) > 0.05 * scale


def test_with_every_row_driven_a_gated_array_is_the_connected_one():
    """Every row of whole tile-rows driven (analog inputs in (0.1, 1.1)) and no transistor
    (``r_access = 0``): the gated circuit is the connected one, read for read."""
    lin = _linear(128, 20)
    x = torch.rand(2, 40, 128, generator=torch.Generator().manual_seed(3)) + 0.1
    spec = xbar.Spec(tile=(64, 64), device=RRAM, calibration=None, **WIRES)
    with torch.no_grad():
        connected = xbar.AnalogLinear(lin, spec, trials=2, seeds=(1, 2))(x)
        gated = xbar.AnalogLinear(lin, spec.replace(array="gated", r_access=0.0), trials=2, seeds=(1, 2))(x)
    torch.testing.assert_close(gated, connected, rtol=0, atol=2e-6 * float(connected.abs().max()))


def test_an_ideal_gated_array_is_the_ideal_layer():
    """No wires, no transistor, ideal devices and converters: the ideal product."""
    lin = _linear(70, 12)
    x = _spikes((1, 30, 70), 0.3)
    spec = xbar.Spec.ideal(tile=(32, 32), array="gated", r_access=0.0)
    assert spec.is_ideal and not xbar.Spec.ideal(array="gated").is_ideal  # the default transistor is not
    with torch.no_grad():
        torch.testing.assert_close(xbar.AnalogLinear(lin, spec, seeds=(1, 2))(x), lin(x), rtol=1e-5, atol=1e-6)


def test_calibration_reads_through_the_gated_circuit():
    """A 4-bit ADC with ranges, gains and offsets fitted from data through the gated reads
    (HfO2, 2.5 ohm/cell, default access transistors; calibrated on 200 sparse inputs, read
    on 200 others of the same kind): the calibrated chip's relative RMS error is under
    half the raw chip's (measured 0.15 against 0.47)."""
    lin = _linear(64, 16)
    x, x_cal = _spikes((2, 200, 64), 0.15, seed=4), _spikes((2, 200, 64), 0.15, seed=5)
    base = xbar.Spec(tile=(64, 64), device=RRAM, adc_bits=4, array="gated", **WIRES)
    errors = {}
    with torch.no_grad():
        t = lin(x)
        for cal in (None, "data"):
            layer = xbar.AnalogLinear(lin, base.replace(calibration=cal), trials=2, seeds=(5, 6))
            if cal == "data":
                layer.matrix.fit_calibration(x_cal)
            y = layer(x)
            errors[cal] = float((y - t).pow(2).mean().sqrt() / t.pow(2).mean().sqrt())
    assert errors["data"] < errors[None] / 2, errors


def test_the_gated_arrays_options_are_checked():
    spec = xbar.Spec(device=RRAM, array="gated")
    assert spec.access_resistance == pytest.approx(0.25 / RRAM.g_max)  # NeuroSim's sizing rule
    assert xbar.Spec(device=RRAM).access_resistance == 0.0
    with pytest.raises(ValueError, match="array"):
        xbar.Spec(array="1t1r")
    with pytest.raises(ValueError, match="r_access.*array='gated'"):
        xbar.Spec(r_access=100.0)
    with pytest.raises(ValueError, match="r_access"):
        xbar.Spec(array="gated", r_access=-1.0)
    with pytest.raises(ValueError, match="ir_drop_model"):
        xbar.Spec(array="gated", ir_drop_model="first_order")
    with pytest.raises(ValueError, match="ir_drop_compensation"):
        xbar.Spec(array="gated", ir_drop_compensation=0.7)


@pytest.mark.parametrize("case", ["gated", "non-linear"])
def test_training_reads_each_circuit_forward_and_takes_the_devices_gradient(case):
    """Hardware-aware training where each read is its own circuit (a gated array with
    wires, non-linear devices with wires): the forward pass is the solved read (its
    equality with evaluation's is in tests/test_read_path.py), the gradient that of the
    devices' product without the wires (straight through the solve): the same weight
    gradient as the spec without wires, to float rounding, while the outputs differ."""
    quiet = (presets["ideal"] if case == "gated" else RRAM.replace(prog_sigma_poly=())).replace(read_sigma_rel=0.0)
    extra = dict(array="gated", r_access=2e3) if case == "gated" else dict(iv="device")
    spec = xbar.Spec(tile=(16, 16), device=quiet, calibration=None, r_wire_row=2.5, r_wire_col=2.5, **extra)
    x = _spikes((32, 40), 0.3, seed=7)
    grads, outs = [], []
    for s in (spec, spec.replace(r_wire_row=0.0, r_wire_col=0.0)):
        layer = _linear(40, 12)
        with xbar.HardwareAware(layer, s, seed=3) as hw:
            hw.new_batch()
            y = layer(x)
            (y * torch.linspace(-1, 1, 12)).sum().backward()
        grads.append(layer.weight.grad.clone())
        outs.append(y.detach())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6 * float(grads[1].abs().max()))
    # the wires move the largest output by 0.9% (gated, 1-100 uS) and 4.7% (HfO2, 50-225 uS)
    assert float((outs[0] - outs[1]).abs().max()) > 0.003 * float(outs[1].abs().max())
