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
