"""Peak memory of the literature's networks run as a study runs them, against images and trials.

    python benchmarks/bench_memory.py [--arch vgg9] [--runs 32x2 128x6] [--per-layer-calibration]

Each run is a process of its own (its peak resident memory is the kernel's count,
its own ``ru_maxrss``): the benchmark's network and chip (``bench_deep.case``:
3x32x32 synthetic images, HfO2 RRAM with its per-read noise, 64x64 tiles, 4-bit ADCs,
exact IR drop at 0.35 ohm/cell, 5 steps), its trials programmed in the consecutive parts
that ``xbar study`` makes (:func:`xbar.memory.trials_per_part` at the default budget,
:data:`xbar.memory.MEMORY_GB`), each part calibrated on 32 images of its own and then
simulated on ``IMAGES`` images.  Prints one row per run: images, trials, parts, the
peak, and the time.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

_CHILD = """
import sys, warnings
sys.path.insert(0, {here!r})
import torch
torch.set_num_threads(2)
import xbar
from xbar.memory import MEMORY_GB, programmed_bytes_per_trial, trials_per_part
from studies.robustness import split_trials
from bench_deep import case
model, x, y, cal, spec = case({arch!r}, {images}, 5)
size = trials_per_part(programmed_bytes_per_trial(model, spec.tile), {trials}, MEMORY_GB)
parts = split_trials({trials}, -(-{trials} // size))
for part in parts:
    hw = xbar.convert(model, spec, seed=0, trials={trials}, only=part, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random labels: a class warning says nothing here
        xbar.calibrate(hw, model, cal, 5, replay={replay})
    xbar.simulate(hw, model, (x, y), 5, progress=False)
    del hw
import resource
print(len(parts), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def run(arch: str, images: int, trials: int, replay: bool) -> dict:
    code = _CHILD.format(here=str(Path(__file__).parent), arch=arch, images=images, trials=trials, replay=replay)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    parts, peak = (int(v) for v in done.stdout.split()[-2:])
    return {"images": images, "trials": trials, "parts": parts, "peak": peak, "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="vgg9")
    p.add_argument("--runs", nargs="+", default=["32x2", "128x6"], help="IMAGESxTRIALS")
    p.add_argument("--per-layer-calibration", action="store_true",
                   help="calibrate by a pass of the network per layer (replay=False), not the default")
    args = p.parse_args()
    replay = not args.per_layer_calibration
    table = Table(title=f"{args.arch}, as xbar study runs it (calibration {'replay' if replay else 'per-layer passes'})")
    for col in ("images", "trials", "parts", "peak resident GB", "peak GiB", "time s"):
        table.add_column(col, justify="right")
    for spec in args.runs:
        images, trials = (int(v) for v in spec.split("x"))
        r = run(args.arch, images, trials, replay)
        table.add_row(str(images), str(trials), str(r["parts"]), f"{r['peak'] / 1e9:.2f}",
                      f"{r['peak'] / 2**30:.2f}", f"{r['seconds']:.0f}")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
