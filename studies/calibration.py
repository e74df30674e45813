"""How much of the crossbar's error each calibration recovers, layer by layer.

    python -m studies.calibration

For two layers with the inputs they see in a network (the first layer reads MNIST images,
a hidden layer reads binary spikes at a 15% rate), on HfO2 RRAM crossbars (programming
variation, 1% read noise, 6-bit ADCs) of 32x32 to 128x128 tiles with 0.35 to 2.5 ohm per
cell of wire: the relative RMS error of one read (against the ideal product) of the raw
hardware, calibrated on known random vectors, calibrated on other inputs of the same
kind (a calibration batch), and that with IR-drop-aware programming on top (half the
window for the weights, half headroom: ``Spec.ir_drop_compensation = 0.5``).  Weights are
Gaussian; 3 programmings each.
"""

from __future__ import annotations

import itertools
import warnings

import torch
import torch.nn as nn
from rich.console import Console
from rich.table import Table

import xbar
from devices import presets
from studies.data import calibration_inputs, class_round_robin, load_dataset

TILES = (32, 64, 128)
WIRES = (0.35, 1.0, 2.5)
# (calibration, ir_drop_compensation) of each column
COLUMNS = {"raw": (None, None), "vectors": ("vectors", None), "data": ("data", None),
           "data + compensation": ("data", 0.5)}
TRIALS = 3


def _inputs(seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer kind, (calibration inputs, test inputs)."""
    data = load_dataset("mnist5k")
    images = calibration_inputs(data).flatten(1).double()  # training images, every class
    tests = data.x_test[class_round_robin(data.y_test)[:256]].flatten(1).double()
    gen = torch.Generator().manual_seed(seed)
    spikes = (torch.rand(320, 256, generator=gen, dtype=torch.float64) < 0.15).double()
    return {"first layer, images (784 -> 256)": (images, tests),
            "hidden layer, 15% spikes (256 -> 256)": (spikes[:64], spikes[64:])}


def read_error(lin: nn.Linear, spec: xbar.Spec, x_cal: torch.Tensor, x: torch.Tensor, seed: int) -> float:
    """Relative RMS error of one read of ``x`` over :data:`TRIALS` programmings."""
    layer = xbar.AnalogLinear(lin, spec, trials=TRIALS, seeds=(seed, seed + 1))
    if layer.matrix.awaits_data:
        layer.matrix.fit_calibration(x_cal.unsqueeze(0).expand(TRIALS, *x_cal.shape))
    with torch.no_grad():
        ideal = lin(x).repeat(TRIALS, 1)
        err = layer(x.repeat(TRIALS, 1)) - ideal
    return float(err.pow(2).mean().sqrt() / ideal.pow(2).mean().sqrt())


def measure(seed: int = 0) -> list[tuple]:
    rows = []
    for (kind, (x_cal, x)), tile, r in itertools.product(_inputs(seed).items(), TILES, WIRES):
        torch.manual_seed(seed)
        lin = nn.Linear(x.shape[1], 256, bias=False).double()
        base = xbar.Spec(tile=(tile, tile), device=presets["rram_hfo2"], adc_bits=6, r_wire_row=r, r_wire_col=r)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # devices held at g_max: the error column shows it
            errors = [read_error(lin, base.replace(calibration=c, ir_drop_compensation=comp), x_cal, x, seed)
                      for c, comp in COLUMNS.values()]
        rows.append((kind, tile, r, *errors))
    return rows


def main() -> None:
    table = Table(title="relative RMS error of one read (HfO2 RRAM, 1% read noise, 6-bit ADC)")
    for col in ("layer", "tile", "ohm/cell", *COLUMNS):
        table.add_column(col, justify="right")
    for kind, tile, r, *errors in measure():
        table.add_row(kind, f"{tile}x{tile}", f"{r:g}", *(f"{e:.3f}" for e in errors))
    Console().print(table)


if __name__ == "__main__":
    main()
