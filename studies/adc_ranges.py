"""How to set the ADC ranges: the measurement behind ``Spec``'s default.

One crossbar layer (``--inputs`` x ``--outputs`` Gaussian weights, as a trained layer's
are) is programmed on each device and tile size, calibrated on spike vectors of a given
rate (the calibration reads), and read on fresh vectors of the same rate; its error is
the RMS of the calibrated read against the ideal product, relative to the RMS of that
product, averaged over ``--trials`` programmings.  Each way of setting the ranges is
read on the same devices (paired draws), so the table compares ranges, not chips:

- ``worst``: the worst case, every driven row at full input (``adc_percentile=None``);
- ``p99`` .. ``max``: the range at that percentile of the column currents the
  calibration reads drew (``max``: their largest), one per tile or one per column;

each with digital subtraction (two unipolar ADCs per pair) and analog subtraction (one
signed ADC per pair).  ``python -m studies.adc_ranges`` prints the table and writes it as
netCDF (``--out``); docs/hardware.md#adc-ranges gives the run behind the default.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import click
import numpy as np
import torch
import xarray as xr
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

import xbar
from devices import presets

# name: (adc_percentile, adc_range_scope)
RANGES = {"worst": (None, "tile"), **{f"{name} {scope}": (p, scope) for scope in ("tile", "column")
                                      for name, p in (("p99", 99.0), ("p99.9", 99.9), ("p99.99", 99.99),
                                                      ("max", 100.0))}}


def spikes(n: int, rows: int, rate: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, rows, generator=gen) < rate).float()


def read_error(spec: xbar.Spec, w: torch.Tensor, rate: float, trials: int, seed: int,
               n_cal: int = 256, n_eval: int = 512) -> float:
    """The calibrated layer's relative RMS read error on fresh spike vectors."""
    gen = torch.Generator().manual_seed(seed)
    cal = spikes(n_cal, w.shape[0], rate, gen)
    x = spikes(n_eval, w.shape[0], rate, gen)
    m = xbar.ProgrammedMatrix(w, spec, trials=trials, program_seed=seed, read_seed=seed + 1)
    if m.awaits_data:
        m.fit_calibration(cal.expand(trials, *cal.shape))
    with torch.no_grad():
        y = m(x.expand(trials, *x.shape))
    ideal = x @ w
    return float(((y - ideal).pow(2).mean((1, 2)) / ideal.pow(2).mean()).sqrt().mean())


def measure(devices, tiles, bits, rates, inputs, outputs, trials, seed, progress=True) -> xr.DataArray:
    w = torch.randn(inputs, outputs, generator=torch.Generator().manual_seed(seed)) * 0.1
    dims = {"device": list(devices), "tile": list(tiles), "adc_bits": list(bits), "rate": list(rates),
            "range": list(RANGES), "subtraction": ["digital", "analog"]}
    out = xr.DataArray(np.full([len(v) for v in dims.values()], np.nan), coords=dims, dims=list(dims),
                       name="read_error", attrs={"long_name": "calibrated read error (relative RMS)", "units": "1",
                                                 "inputs": inputs, "outputs": outputs, "trials": trials,
                                                 "seed": seed})
    points = list(itertools.product(*dims.values()))
    for dev, tile, b, rate, rng, sub in tqdm(points, disable=not progress, desc="adc ranges"):
        percentile, scope = RANGES[rng]
        spec = xbar.Spec(device=presets[dev], tile=(tile, tile), adc_bits=b, adc_percentile=percentile,
                         adc_range_scope=scope, subtraction=sub, adc_signed=sub == "analog")
        out.loc[dev, tile, b, rate, rng, sub] = read_error(spec, w, rate, trials, seed)
    return out


@click.command()
@click.option("--devices", default="rram_hfo2,pcm", show_default=True)
@click.option("--tiles", default="32,64,128", show_default=True)
@click.option("--bits", default="4,6,8", show_default=True)
@click.option("--rates", default="0.02,0.12,0.4", show_default=True, help="Spike rates of the inputs.")
@click.option("--inputs", default=256, show_default=True)
@click.option("--outputs", default=128, show_default=True)
@click.option("--trials", default=4, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the table as netCDF.")
def main(devices, tiles, bits, rates, inputs, outputs, trials, seed, out) -> None:
    """Measure the calibrated read error of every way of setting the ADC ranges."""
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    da = measure(devices.split(","), ints(tiles), ints(bits), [float(v) for v in rates.split(",")],
                 inputs, outputs, trials, seed)
    console = Console()
    for sub in ("digital", "analog"):
        table = Table(title=f"calibrated read error, {sub} subtraction, {inputs}x{outputs} layer, {trials} "
                            "trials: mean over tiles and spike rates (best per row in bold)")
        table.add_column("device, ADC bits")
        for r in RANGES:
            table.add_column(r, justify="right")
        for dev, b in itertools.product(da.device.values, da.adc_bits.values):
            row = [float(da.sel(device=dev, adc_bits=b, range=r, subtraction=sub).mean()) for r in RANGES]
            best = min(row)
            table.add_row(f"{dev}, {b}", *[f"[bold]{v:.3f}[/bold]" if v == best else f"{v:.3f}" for v in row])
        console.print(table)
    if out is not None:
        da.to_netcdf(out)
        console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
