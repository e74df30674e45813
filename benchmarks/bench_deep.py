"""The literature's networks on crossbars, against the ideal network, in one run.

    python benchmarks/bench_deep.py [--arch vgg9 resnet18] [--images 32] [--trials 2]
                                    [--timesteps 5] [--threads 2]

The case of the crossbar-SNN studies (SpikeSim's VGG9; ResNet-18): 3x32x32 synthetic
images (uniform pixels, nothing downloaded), thresholds set so that every layer spikes
(``studies.models.set_spiking_thresholds``, on images of their own), HfO2 RRAM with its
per-read noise, 64x64 tiles, 4-bit ADCs, exact IR drop at 0.35 ohm/cell, calibrated from
data on 32 further images.  Prints per network, from one run:

- the ideal network (the best of 3 runs, warmed up) and ``xbar.simulate`` on the
  crossbars, in ms per image-step (the analog one per trial), and their ratio;
- the multiply-accumulates of the crossbar products per one of the ideal network's
  (:func:`products_per_ideal`): the floor of that ratio where both multiply at the same
  speed;
- programming, in s per trial;
- calibration by per-layer passes and with ``replay=True`` (each layer read once), in s
  and as a ratio to simulating the calibration images;
- the process's peak resident memory after each network.

``--profile``: then a profile (cProfile) of one ``xbar.simulate`` of the first network,
the 14 functions with the most time of their own: where a read's time goes.

Nothing is asserted.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import pstats
import resource
import time
import warnings

import torch
from rich.console import Console
from rich.table import Table

import xbar
from devices import presets
from studies.models import build, set_spiking_thresholds


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def case(arch: str, images: int, timesteps: int) -> tuple:
    """The benchmark's network, on CPU (made to spike), its test images and labels, its
    calibration images and its chip: ``(model, x, y, cal, spec)``."""
    torch.manual_seed(0)
    model = build(arch, (3, 32, 32), 10).eval()
    set_spiking_thresholds(model, _images(16, 1), timesteps)
    x, cal = _images(images, 2), _images(32, 3)
    y = torch.randint(0, 10, (images,), generator=torch.Generator().manual_seed(4))
    spec = xbar.Spec(tile=(64, 64), device=presets["rram_hfo2"], adc_bits=4, r_wire_row=0.35, r_wire_col=0.35)
    return model, x, y, cal, spec


def _ideal_time(model, x: torch.Tensor, timesteps: int, runs: int = 3) -> float:
    """Seconds for ``timesteps`` steps of the ideal network on ``x``: the best of ``runs``
    after one run that warms it up (its first run allocates and picks its kernels; the
    analog network is timed after calibration has run it)."""
    times = []
    with torch.no_grad():
        for _ in range(runs + 1):
            start = time.perf_counter()
            xbar.reset_state(model)
            for _ in range(timesteps):
                model(x)
            times.append(time.perf_counter() - start)
    return min(times[1:])


def products_per_ideal(hw, model, x: torch.Tensor) -> float:
    """Multiply-accumulates of one step's crossbar products, per multiply-accumulate of
    the ideal network's same layers: each layer's read (its inputs against every read
    column: a differential pair's two columns, each to its ADC), the per-read noise's
    variance product (as many again), and the ideal product of the same input that
    ``read_error`` compares the read with."""
    analog = ideal = 0
    handles = []
    for name, m in xbar.network.analog_layers(hw):
        def count(module, inputs, m=m):
            nonlocal analog, ideal
            reads = m.reads_per_sample(inputs[0])
            n_in, n_out = m.matrix.shape
            per_read = n_in * m.matrix.g_read.shape[-1] * (1 if m.matrix.s2_read is None else 2)
            analog += reads * (per_read + n_in * n_out)
            ideal += reads * n_in * n_out
        handles.append(model.get_submodule(name).register_forward_pre_hook(count))
    try:
        with torch.no_grad():
            xbar.reset_state(model)
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return analog / ideal


def bench(arch: str, images: int, trials: int, timesteps: int, profile: bool = False) -> dict:
    model, x, y, cal, spec = case(arch, images, timesteps)

    ideal = _ideal_time(model, x, timesteps) / (images * timesteps)

    start = time.perf_counter()
    hw = xbar.convert(model, spec, seed=0, trials=trials, progress=False)
    program = (time.perf_counter() - start) / trials
    calibration = {}
    for replay in (False, True):
        h = copy.deepcopy(hw)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random labels: a class warning says nothing here
            xbar.calibrate(h, model, cal, timesteps, replay=replay)
        calibration[replay] = time.perf_counter() - start
    hw = h
    start = time.perf_counter()
    xbar.simulate(hw, model, (cal, torch.zeros(len(cal), dtype=torch.long)), timesteps, progress=False)
    simulate_cal = time.perf_counter() - start
    start = time.perf_counter()
    ds = xbar.simulate(hw, model, (x, y), timesteps, progress=False)
    analog = (time.perf_counter() - start) / (images * timesteps * trials)
    if profile:
        prof = cProfile.Profile()
        prof.runcall(xbar.simulate, hw, model, (x, y), timesteps, progress=False)
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(14)
        print(f"profile of xbar.simulate, {arch}:\n" + out.getvalue())
    return {"arch": arch, "ideal": ideal, "macs": products_per_ideal(hw, model, x), "analog": analog, "program": program,
            "cal_full": calibration[False], "cal_replay": calibration[True], "sim_cal": simulate_cal,
            "peak": _peak_gb(), "rate": float(ds.spike_rate_ideal.mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", nargs="+", default=["vgg9", "resnet18"])
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--timesteps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = [bench(a, args.images, args.trials, args.timesteps, args.profile and i == 0)
            for i, a in enumerate(args.arch)]
    table = Table(title=f"{args.images} images x {args.timesteps} steps, {args.trials} trials, "
                        f"{args.threads} threads: HfO2 RRAM, 64x64 tiles, 4-bit ADC, IR drop 0.35 ohm/cell")
    for col in ("network", "ideal ms/img-step", "analog ms/img-step/trial", "ratio", "products / ideal's", "program s/trial",
                "calibrate per-layer s (x sim)", "calibrate replay s (x sim)", "peak GB", "spike rate"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["arch"], f"{1e3 * r['ideal']:.2f}", f"{1e3 * r['analog']:.1f}",
                      f"{r['analog'] / r['ideal']:.1f}", f"{r['macs']:.2f}", f"{r['program']:.1f}",
                      f"{r['cal_full']:.1f} ({r['cal_full'] / r['sim_cal']:.1f}x)",
                      f"{r['cal_replay']:.1f} ({r['cal_replay'] / r['sim_cal']:.1f}x)",
                      f"{r['peak']:.2f}", f"{r['rate']:.3f}")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
