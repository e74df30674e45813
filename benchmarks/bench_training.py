"""Hardware-aware against standard training, time per epoch, in one run.

    python benchmarks/bench_training.py [--batches 30] [--threads 2]

For each network and hardware below, times ``--batches`` training batches (batch 64,
the studies' surrogate-gradient BPTT: forward through the timesteps, backward, Adam) of
the standard network and of the same network trained hardware-aware on those crossbars
(every ingredient on: :mod:`xbar.aware`), interleaved so that a slow spell of the
machine falls on both, and prints the time per epoch of each (the batches of one epoch of
the training split) and their ratio:

- the default study's conv SNN (6 timesteps) on its hardware (PCM, 64x64 tiles, 6-bit
  ADCs, exact IR drop at 0.35 ohm/cell, calibration);
- the conv SNN and the timestep study's MLP (6 timesteps) on the harsh hardware of the
  hardware-aware study in the README (HfO2 RRAM with 5% read noise, 128x128 tiles,
  2.5 ohm/cell, 4-bit ADCs, calibration).

The first batch of each (the IR-drop solve of the hardware-aware model, warm-up) is not
timed; the solve is repeated every ``Aware.ir_refresh`` batches in training, and is
timed here at the batch it falls on.  The last column times the per-batch share alone:
every layer's devices programmed again, forward and backward: a cost per batch, which
does not grow with the timesteps or the batch size.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

import xbar
from devices import presets
from studies.data import load_dataset
from studies.models import build
from studies.train import run_snn
from xbar.aware import _matrix

TIMESTEPS = 6
BATCH = 64


def trainer(arch: str, data, spec: xbar.Spec | None):
    """One training step of a fresh ``arch`` network, standard or hardware-aware."""
    torch.manual_seed(0)
    model = build(arch, data.image_shape, data.n_classes)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    hw = None if spec is None else xbar.HardwareAware(model, spec, seed=0).attach()
    state = {"i": 0}

    def step() -> None:
        i = state["i"] % (len(data.x_train) // BATCH)
        x, y = data.x_train[i * BATCH : (i + 1) * BATCH], data.y_train[i * BATCH : (i + 1) * BATCH]
        if hw is not None:
            hw.new_batch()
        loss = F.cross_entropy(run_snn(model, x, TIMESTEPS) / TIMESTEPS, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        state["i"] += 1

    return step


def programming(arch: str, data, spec: xbar.Spec):
    """The per-batch share of a hardware-aware step alone: every layer's devices programmed
    again (:mod:`xbar.aware`), forward and backward (through a sum of the read matrices)."""
    torch.manual_seed(0)
    model = build(arch, data.image_shape, data.n_classes)
    hw = xbar.HardwareAware(model, spec, seed=0)

    def step() -> None:
        hw.new_batch()
        total = 0.0
        for _, m, layer in hw.layers:
            state = layer._program(_matrix(m))
            total = total + state["g"].sum() + (0.0 if state["s2"] is None else state["s2"].sum())
        total.backward()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist5k")
    default = xbar.Spec(tile=(64, 64), device=presets["pcm"], adc_bits=6)
    harsh = xbar.Spec(tile=(128, 128), device=presets["rram_hfo2"].replace(read_sigma_rel=0.05), adc_bits=4,
                      r_wire_row=2.5, r_wire_col=2.5)
    cases = [("conv", "default study (PCM, 64x64, 6-bit, 0.35 ohm/cell)", default),
             ("conv", "harsh (RRAM 5% noise, 128x128, 4-bit, 2.5 ohm/cell)", harsh),
             ("mlp", "harsh (RRAM 5% noise, 128x128, 4-bit, 2.5 ohm/cell)", harsh)]
    per_epoch = math.ceil(len(data.x_train) / BATCH)
    table = Table(title=f"training, batch {BATCH}, {TIMESTEPS} timesteps, {torch.get_num_threads()} threads, "
                        f"{per_epoch} batches per epoch ({args.batches} timed)")
    for col in ("network", "hardware", "standard (s/epoch)", "hardware-aware (s/epoch)", "ratio",
                "of which programming (s/epoch)"):
        table.add_column(col, justify="left" if col in ("network", "hardware") else "right")
    for arch, name, spec in cases:
        steps = {"standard": trainer(arch, data, None), "aware": trainer(arch, data, spec),
                 "programming": programming(arch, data, spec)}
        for step in steps.values():
            step()  # warm-up; the aware model's first IR-drop solve
        total = {k: 0.0 for k in steps}
        for _ in range(args.batches):
            for k, step in steps.items():
                start = time.perf_counter()
                step()
                total[k] += time.perf_counter() - start
        std, aware, prog = (per_epoch * total[k] / args.batches for k in ("standard", "aware", "programming"))
        table.add_row(arch, name, f"{std:.1f}", f"{aware:.1f}", f"{aware / std:.1f}x", f"{prog:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
