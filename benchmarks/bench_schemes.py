"""What bit-sliced weights, bit-serial inputs and analog neurons cost in reads, in one run.

    python benchmarks/bench_schemes.py [--images 100] [--timesteps 4] [--threads 2]

The default study's conv SNN (``xbar study``'s model: trained once and cached, as the
study does) on its default chip (HfO2 RRAM, 64x64 tiles, 6-bit ADCs, exact IR drop at
0.35 ohm/cell, calibrated from data), then the same chip with each option of how weights
and inputs meet the array.  The first layer's inputs are the images' analog pixels
(direct encoding), so bit-serial inputs read them one bit at a time; the later layers
read spikes, once.  Prints per chip, from one run of ``--images`` test images for
``--timesteps`` steps, one programming:

- the crossbar reads (input vectors) and ADC conversions per image-step, over all layers
  and in the first layer, from each layer's own counters
  (:attr:`xbar.ProgrammedMatrix.counts`, after calibration);
- the devices programmed per trial (every slice's pairs);
- the time of ``xbar.simulate`` against the default chip's, measured in the same run
  (after a run of the default chip that warms up).

Nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

import xbar
from studies.data import calibrated, load_dataset, test_batches
from studies.robustness import StudyConfig
from studies.train import load_or_train

CHIPS = {
    "default (one pair per weight, 6-bit ADC)": {},
    "4-level cells, 1 slice": dict(cell_bits=2),
    "4-level cells, 2 slices": dict(cell_bits=2, weight_slices=2),
    "4-level cells, 4 slices": dict(cell_bits=2, weight_slices=4),
    "8-bit DAC, amplitude": dict(dac_bits=8),
    "8-bit DAC, bit-serial": dict(dac_bits=8, input_scheme="bit_serial"),
    "8-bit DAC, bits integrated": dict(dac_bits=8, input_scheme="bit_integrated"),
    "analog neurons (no ADC)": dict(neuron="analog", adc_bits=None),
}


def measure(model, spec: xbar.Spec, data, images: int, timesteps: int) -> dict:
    hw = xbar.convert(model, spec, seed=0, trials=1)
    hw = calibrated(hw, model, data, timesteps)
    layers = [m for m in hw.modules() if isinstance(m, (xbar.AnalogLinear, xbar.AnalogConv2d))]
    for m in layers:
        m.matrix.reset_counts()
    start = time.perf_counter()
    with torch.no_grad():
        xbar.simulate(hw, model, test_batches(data, images, images), timesteps, progress=False)
    seconds = time.perf_counter() - start
    per = images * timesteps
    total = {k: sum(m.matrix.counts[k] for m in layers) / per for k in ("reads", "conversions")}
    first = {k: layers[0].matrix.counts[k] / per for k in ("reads", "conversions")}
    devices = sum(m.matrix.g_tiles[0].numel() for m in layers)
    return {"total": total, "first": first, "devices": devices, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = StudyConfig(device="rram_hfo2")
    data = load_dataset(config.dataset)
    model, _ = load_or_train(config.train_config(), progress=False, data=data)
    base = config.spec()
    measure(model, base, data, args.images, args.timesteps)  # warm-up: the first run pays for it
    rows, reference = [], None
    for name, changes in CHIPS.items():
        r = measure(model, base.replace(**changes), data, args.images, args.timesteps)
        reference = reference or r
        rows.append((name, r))
    table = Table(title=f"the default conv SNN on HfO2 chips, {args.images} images x {args.timesteps} steps, "
                        f"{args.threads} threads")
    for col in ("chip", "reads / image-step", "first layer", "ADC conversions / image-step", "first layer",
                "devices", "simulate time"):
        table.add_column(col, justify="right")
    for name, r in rows:
        table.add_row(name, f"{r['total']['reads']:,.0f}", f"{r['first']['reads']:,.0f}",
                      f"{r['total']['conversions']:,.0f}", f"{r['first']['conversions']:,.0f}",
                      f"{r['devices']:,}", f"{r['seconds'] / reference['seconds']:.2f}x")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
