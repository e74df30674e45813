"""Bit-sliced weights (Spec.cell_bits, weight_slices): the digits against the quantized
weight, the exact ideal limit, each slice's quantization errors against theory, the
slices through the circuit, and hardware-aware training through the same read."""

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import xbar
from devices import presets
from mapping.layout import decode_columns
from mapping.slicing import combine_slices, slice_weights


def randn(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def quantized(w: torch.Tensor, unit: torch.Tensor, top: int) -> torch.Tensor:
    """``w`` rounded to multiples of ``unit`` (per output), at most ``top`` of them: written
    here without digits."""
    return torch.round(w / unit).clamp(-top, top) * unit


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), slices=st.integers(1, 4), bits=st.integers(1, 3),
       scale=st.sampled_from(["layer", "column"]))
def test_the_slices_are_the_digits_of_the_quantized_weight(seed, slices, bits, scale):
    w = randn(seed, 23, 7)
    b = 2**bits
    s = slice_weights(w, slices, b, scale)
    top = b**slices - 1
    w_max = w.abs().max() if scale == "layer" else w.abs().amax(0)
    torch.testing.assert_close(s.unit, (w_max / top).expand(7), rtol=1e-15, atol=0)
    digits = s.matrix.unflatten(1, (slices, 7)) / (s.unit * b ** torch.arange(slices, dtype=w.dtype)[:, None])
    torch.testing.assert_close(digits, digits.round(), rtol=0, atol=1e-9)  # whole digits
    digits = digits.round()
    assert float(digits.abs().max()) <= b - 1
    assert bool(((digits == 0) | (torch.sign(digits) == torch.sign(w).unsqueeze(1))).all())  # the weight's sign
    torch.testing.assert_close(s.quantized, quantized(w, s.unit, top), rtol=0, atol=1e-14)
    # a digit of b - 1 is each column's full scale
    torch.testing.assert_close(s.column_max, ((b - 1) * s.unit * b ** torch.arange(slices, dtype=w.dtype)[:, None])
                               .reshape(-1), rtol=1e-15, atol=0)


@pytest.mark.parametrize("slices, bits", [(1, 3), (2, 2), (4, 1)])
def test_the_weights_quantization_error_is_a_unit_squared_over_twelve(slices, bits):
    """Weights spread over many units: the rounding error is uniform, variance unit^2 / 12."""
    w = torch.rand(400, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    s = slice_weights(w, slices, 2**bits)
    ratio = float((s.quantized - w).var() / (s.unit[0] ** 2 / 12))
    assert abs(ratio - 1) < 0.02, ratio


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n_in=st.integers(1, 70), n_out=st.integers(1, 30),
       tile=st.tuples(st.integers(2, 24), st.integers(2, 24)), slices=st.integers(1, 4), bits=st.integers(1, 3),
       scale=st.sampled_from(["layer", "column"]))
def test_ideal_sliced_layers_read_the_quantized_weights_product(seed, n_in, n_out, tile, slices, bits, scale):
    lin = nn.Linear(n_in, n_out).double()
    with torch.no_grad():
        lin.weight.copy_(randn(seed, n_out, n_in))
    spec = xbar.Spec.ideal(tile=tile, cell_bits=bits, weight_slices=slices, weight_scale=scale, calibration=None)
    layer = xbar.AnalogLinear(lin, spec, trials=2)
    x = randn(seed + 1, 6, n_in).abs()
    w_q = slice_weights(lin.weight.detach().t(), slices, 2**bits, scale).quantized
    with torch.no_grad():
        torch.testing.assert_close(layer(x), x @ w_q + lin.bias, rtol=1e-9, atol=1e-9)


def test_ideal_sliced_conv_reads_the_quantized_weights_convolution():
    conv = nn.Conv2d(3, 5, 3, padding=1).double()
    with torch.no_grad():
        conv.weight.copy_(randn(0, *conv.weight.shape))
    layer = xbar.AnalogConv2d(conv, xbar.Spec.ideal(tile=(16, 12), cell_bits=2, weight_slices=3, calibration=None), trials=1)
    w_q = slice_weights(conv.weight.detach().reshape(5, -1).t(), 3, 4).quantized.t().reshape(conv.weight.shape)
    x = randn(1, 2, 3, 9, 8).abs()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), nn.functional.conv2d(x, w_q, conv.bias, padding=1), rtol=1e-9, atol=1e-9)
        assert float((layer(x) - conv(x)).abs().max()) > 1e-3  # and the quantization shows


@pytest.mark.parametrize("slices, bits, subtraction", [(1, 2, None), (2, 2, None), (3, 2, None), (2, 2, "digital")])
def test_each_slice_is_rounded_by_its_own_adc(slices, bits, subtraction):
    """Ideal devices, a 6-bit ADC at its worst-case range (no calibration), analog inputs:
    each slice's column read is rounded on its own, so the output's error against the
    quantized weights' product has variance sum over slices and tile-rows of lsb^2 / 12
    (each slice's lsb in weight units: its shift included), per ADC conversion (one for a
    pair subtracted in analog, two for digital subtraction)."""
    w = randn(0, 100, 20)
    x = torch.rand(1, 4000, 100, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    spec = xbar.Spec.ideal(cell_bits=bits, weight_slices=slices, calibration=None, adc_bits=6, subtraction=subtraction)
    m = xbar.ProgrammedMatrix(w, spec, trials=1, program_seed=0, read_seed=1)
    with torch.no_grad():
        err = (m(x) - x @ slice_weights(w, slices, 2**bits).quantized)[0]
    lsb = m.out_fs[0, :, 0]  # (tile-rows, slices * out): weight units per code
    conversions = 1 if spec.analog_subtraction else 2
    theory = combine_slices(lsb**2, slices).sum(0) * conversions / 12
    ratio = err.var(0) / theory
    assert abs(float(ratio.mean()) - 1) < 0.03 and float((ratio - 1).abs().max()) < 0.12, ratio
    # against one ADC for the whole weight: slicing rounds each slice on a finer lsb
    assert combine_slices(lsb, slices)[0].shape == (20,)


def test_sliced_layers_read_each_slice_through_the_circuit():
    """Wires, drivers and sense amplifiers: the sliced layer reads, for each slice's tiles,
    what the solved circuit gives, shifted and added."""
    lin = nn.Linear(40, 6, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(randn(5, 6, 40))
    r = dict(r_wire_row=2.0, r_wire_col=2.0, r_source=5.0, r_sink=5.0)
    sliced = dict(cell_bits=2, weight_slices=3, tile=(16, 16))
    layer = xbar.AnalogLinear(lin, xbar.Spec(calibration=None, **sliced, **r))
    ideal_wires = xbar.AnalogLinear(lin, xbar.Spec.ideal(calibration=None, **sliced)).matrix
    g = ideal_wires.conductances()[0]  # (n_r, n_c, R, C): 3 tile-rows, the 18 slice columns on 2 tiles
    x = torch.rand(6, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v = torch.nn.functional.pad(x, (0, 48 - 40)).view(6, 3, 1, 16) * 0.2
    i = xbar.solve_crossbar(g, v, **r)  # (6, n_r, n_c, C)
    per_column = decode_columns(i, "differential", 8).sum(1).reshape(6, -1)[:, :18] * ideal_wires.out_scale
    with torch.no_grad():
        out = layer(x)
        torch.testing.assert_close(out, combine_slices(per_column, 3), rtol=1e-9, atol=1e-12)
        ideal = x @ slice_weights(lin.weight.detach().t(), 3, 4).quantized
        assert float((out - ideal).abs().max()) > 1e-3 * float(ideal.abs().max())  # the wires show


def test_training_reads_the_slices_and_passes_the_gradient_straight_through():
    """Hardware-aware training with ideal devices and converters: the forward is the
    quantized weights' product, the gradient the ideal product's, x^T c, exactly (each
    slice takes a 1/slices share of it)."""
    lin = nn.Linear(30, 5).double()
    x = torch.rand(8, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = torch.randn(8, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    spec = xbar.Spec.ideal(tile=(16, 8), cell_bits=1, weight_slices=3, calibration=None)
    hw = xbar.HardwareAware(lin, spec)
    assert hw.active == ("variation",)  # the cells' levels, on an ideal device
    with hw:
        hw.new_batch()
        y = lin(x)
    w_q = slice_weights(lin.weight.detach().t(), 3, 2).quantized
    torch.testing.assert_close(y.detach(), x @ w_q + lin.bias.detach(), rtol=1e-10, atol=1e-10)
    (y * c).sum().backward()
    torch.testing.assert_close(lin.weight.grad, c.t() @ x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("changes, field, says", [
    (dict(weight_slices=2), "weight_slices", "set cell_bits"),
    (dict(cell_bits=0), "cell_bits", "integer >= 1"),
    (dict(cell_bits=2, weight_slices=0), "weight_slices", "integer >= 1"),
    (dict(cell_bits=2, mapping="offset"), "cell_bits", "mapping='differential'"),
    (dict(cell_bits=2, device=presets["ideal"].replace(levels=8)), "cell_bits", "dividing 7"),
    (dict(cell_bits=4, weight_slices=5), "weight_slices", "at most 16"),
    (dict(cell_bits=2, ir_drop_compensation=0.5), "ir_drop_compensation", "between the 4 levels"),
])
def test_bad_slicing_is_refused_with_the_field(changes, field, says):
    with pytest.raises(ValueError, match=rf"Spec\.{field} = .* not allowed.*{says}"):
        xbar.Spec(**changes)


def test_a_cell_on_the_devices_levels_is_allowed_and_slicing_is_not_ideal():
    spec = xbar.Spec.ideal(cell_bits=1, weight_slices=2, device=presets["ideal"].replace(levels=4))
    assert spec.sliced and not spec.is_ideal


def test_a_tile_of_zero_weights_gets_an_adc_sized_for_the_window():
    """A bit slice's high digits are often all zero on a tile (here a whole tile-row of
    zero weights): its pairs draw no worst-case current of their own, so its ADCs are
    sized for the conductance window, as a tile whose every weight is at full scale
    (the first tile-row, all weights +w_max): equal full scales, and with RRAM variation
    and wires every read is finite (a full scale sized for what the wires leave of zero,
    as before, overflowed the per-read noise)."""
    w = torch.zeros(128, 20, dtype=torch.float64)
    w[:64] = 1.0
    spec = xbar.Spec.ideal(tile=(64, 64), adc_bits=6, calibration=None)
    m = xbar.ProgrammedMatrix(w, spec, trials=1, program_seed=0, read_seed=1)
    torch.testing.assert_close(m.out_fs[0, 1], m.out_fs[0, 0], rtol=1e-12, atol=0)
    lin = nn.Linear(128, 20, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(randn(0, 20, 128) * (torch.arange(128) < 40))  # the last 88 inputs' weights zero
    layer = xbar.AnalogLinear(lin, xbar.Spec(cell_bits=2, weight_slices=4, device=presets["rram_hfo2"],
                                             adc_bits=6, calibration=None), trials=2)
    for name in ("g_read", "s2_read", "out_fs"):
        assert bool(torch.isfinite(getattr(layer.matrix, name)).all()), name
    with torch.no_grad():
        assert bool(torch.isfinite(layer(torch.rand(4, 128, dtype=torch.float64))).all())
