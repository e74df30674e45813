"""ADC ranges set from calibration reads: a calibrated read of a sparse tile reaches the
quantization floor that its range allows."""

from __future__ import annotations

import pytest
import torch

import xbar
from devices import presets

QUIET = presets["ideal"].replace(name="quiet")


@pytest.mark.parametrize("subtraction, scope", [("analog", "tile"), ("analog", "column"), ("digital", "tile"),
                                                ("digital", "column")])
def test_a_calibrated_sparse_read_reaches_its_quantization_floor(subtraction, scope):
    """Exact devices and wires, 6-bit ADCs with ranges at the largest calibration current,
    inputs at 5% spikes: the only error left is the rounding, whose variance is LSB^2 / 12
    per conversion (uniform in one code), summed over the conversions of an output (one per
    tile-row with analog subtraction, two with digital), LSB the calibrated code's weight
    (``out_fs``).  The worst-case range on the same chip rounds at a coarser LSB."""
    analog = subtraction == "analog"
    spec = xbar.Spec(device=QUIET, tile=(64, 64), adc_bits=6, adc_signed=analog, subtraction=subtraction,
                     adc_percentile=100.0, adc_range_scope=scope, r_wire_row=0.0, r_wire_col=0.0)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(256, 32, generator=g, dtype=torch.float64)
    cal = (torch.rand(1, 2048, 256, generator=g, dtype=torch.float64) < 0.05).double()
    x = (torch.rand(1, 4096, 256, generator=g, dtype=torch.float64) < 0.05).double()
    m = xbar.ProgrammedMatrix(w, spec, trials=1, program_seed=1, read_seed=2)
    m.fit_calibration(cal)
    err = (m(x) - x @ w)[0]
    lsb = m.out_fs[0, :, 0]  # (tile-rows, outputs): weight units per code, after calibration
    floor = (1 if analog else 2) * (lsb**2).sum(0) / 12  # per output
    ratio = float(err.pow(2).mean(0).sum() / floor.sum())
    assert 0.85 < ratio < 1.15, ratio
    worst = xbar.ProgrammedMatrix(w, spec.replace(adc_percentile=None, adc_range_scope="tile"), trials=1,
                                  program_seed=1, read_seed=2)
    worst.fit_calibration(cal)
    assert float((worst.out_fs[0, :, 0] / lsb).min()) > 2  # sparse: the worst case wastes codes


def test_a_range_per_column_needs_calibration_reads_and_pairs():
    with pytest.raises(ValueError, match="adc_range_scope.*needs adc_percentile and mapping='differential'"):
        xbar.Spec(adc_bits=6, adc_percentile=None, adc_range_scope="column")
    with pytest.raises(ValueError, match="adc_range_scope"):
        xbar.Spec(adc_bits=6, adc_percentile=99.9, adc_range_scope="column", mapping="offset")
    with pytest.raises(ValueError, match="adc_range_scope = 'row' is not allowed"):
        xbar.Spec(adc_bits=6, adc_percentile=99.9, adc_range_scope="row")


@pytest.mark.parametrize("q", [0.999, 0.99, 0.9, 0.5, 0.0, 1.0])
@pytest.mark.parametrize("shape, dim", [((2, 3, 5000, 16), -2), ((1, 2, 1, 7), -2), ((3, 4097), -1)])
def test_quantile_from_the_top_ranks_is_torchs_bit_for_bit(q, shape, dim):
    from xbar.tile.calibration import quantile

    u = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(len(shape))) ** 3
    assert torch.equal(quantile(u, q, dim), torch.quantile(u, q, dim=dim))
    # Ranked in float32 (ties included: the values are rounded to 2^-8), interpolated in
    # float64: torch's quantile of the widened copy.
    u32 = (u * 256).round().float() / 256
    assert torch.equal(quantile(u32, q, dim, dtype=torch.float64), torch.quantile(u32.double(), q, dim=dim))


@pytest.mark.parametrize("subtraction", ["analog", "digital"])
def test_ranges_from_calibration_do_not_depend_on_the_unit_they_are_set_in(subtraction, monkeypatch):
    """Where calibration sets the ADC ranges, the full scale a read is scaled in until then
    is sized from the nominal tiles without solving their circuit (one solve less per
    programming): the calibrated chip is the one sized through the solved circuit, to
    float64's rounding (the range is a percentile of the same currents in another unit),
    on tiles with IR drop and per-read noise."""
    from xbar.circuit import effective_conductance
    from xbar.tile import matrix as tile_matrix

    spec = xbar.Spec(device=presets["rram_hfo2"], tile=(32, 32), adc_bits=5, subtraction=subtraction,
                     r_wire_row=2.5, r_wire_col=2.5)
    assert spec.ranges_from_calibration
    g = torch.Generator().manual_seed(0)
    w = torch.randn(80, 24, generator=g, dtype=torch.float64)
    cal = (torch.rand(2, 512, 80, generator=g, dtype=torch.float64) < 0.2).double()
    x = (torch.rand(2, 256, 80, generator=g, dtype=torch.float64) < 0.2).double()

    def chip():
        m = xbar.ProgrammedMatrix(w, spec, trials=2, program_seed=1, read_seed=2)
        m.fit_calibration(cal)
        return m

    now = chip()
    solved = tile_matrix.designed_full_scale

    def through_the_circuit(nominal, spec_, circuit, *args):
        return solved(nominal, spec_, lambda t: effective_conductance(t, spec_), *args)

    monkeypatch.setattr(tile_matrix, "designed_full_scale", through_the_circuit)
    before = chip()
    assert not torch.allclose(now._scale, before._scale, rtol=1e-3)  # another unit: the IR drop's
    torch.testing.assert_close(now.out_fs * now.g_read.amax((-2, -1), keepdim=True),
                               before.out_fs * before.g_read.amax((-2, -1), keepdim=True), rtol=1e-12, atol=0)
    torch.testing.assert_close(now(x), before(x), rtol=1e-12, atol=1e-12)  # the same codes, the same noise
