"""Analog against ideal inference of the default conv SNN, in one run.

    python benchmarks/bench_inference.py [--batch 256] [--timesteps 8] [--repeats 5]
                                         [--study-trials 5] [--n-test 1000]

Prints, from one run:

1. the default study (``xbar study``: conv SNN, PCM, 64x64 tiles, 6-bit ADC, exact IR
   drop, calibrated, 16 timesteps) split into programming, calibration and inference,
   in seconds per trial, for ``--study-trials`` trials on ``--n-test`` test images, and
   the process's peak resident memory;
2. a table of times and ratios to the ideal SNN on the same batch and timesteps (one
   trial): the full analog read (programming variation, read noise, 6-bit ADC, 64x64
   tiles), and the same with parts switched off, which says where the time goes; then
   what ``xbar.simulate`` adds to running both networks (lockstep hooks, metrics, input
   checks).  The PCM preset's read noise is static (drawn once per programming, costing
   nothing per read); here it is drawn at every read instead, to time the per-read noise;
3. three spiking layers 784-512-512-10 (HfO2 RRAM with 2% per-read noise, 6-bit ADCs,
   exact IR drop at 0.35 ohm/cell, 64x64 tiles) read on spikes at 15%, batch 256,
   against the same ``nn.Linear`` layers on the same spikes.

Nothing is asserted.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.nn as nn
from rich.console import Console
from rich.table import Table

import xbar
from devices import presets
from xbar.streams import NoiseStreams
from studies.data import calibrated, load_dataset, test_batches
from studies.robustness import StudyConfig
from studies.train import load_or_train, run_snn


def best_of_interleaved(fns: dict, repeats: int) -> dict:
    """Best time of each function over ``repeats`` rounds, each round running every one in
    turn, so that a slow spell of the machine does not fall on one variant only."""
    for fn in fns.values():
        fn()  # warm-up
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--timesteps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--study-trials", type=int, default=5)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--skip", choices=("study", "variants", "mlp"), nargs="*", default=[])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if "study" not in args.skip:
        study(args.study_trials, args.n_test)
    if "variants" not in args.skip:
        variants(args)
    if "mlp" not in args.skip:
        spiking_mlp(args.repeats)


def study(trials: int, n_test: int) -> None:
    """The default study's phases, in seconds per trial, and the peak memory."""
    config = StudyConfig(trials=trials, n_test=n_test)
    data = load_dataset(config.dataset)
    model, _ = load_or_train(config.train_config(), progress=False, data=data)
    phases = {}
    start = time.perf_counter()
    hw = xbar.convert(model, config.spec(), seed=config.seed, trials=trials)
    phases["programming (exact IR drop)"] = time.perf_counter() - start
    start = time.perf_counter()
    calibrated(hw, model, data, config.timesteps)
    phases["calibration (64 images)"] = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        ds = xbar.simulate(hw, model, test_batches(data, n_test, config.batch_size), config.timesteps,
                           progress=False)
    phases[f"inference ({ds.attrs['n_samples']} images, {config.timesteps} steps, metrics)"] = (
        time.perf_counter() - start)
    table = Table(title=f"default study, {trials} trials, {torch.get_num_threads()} threads")
    table.add_column("phase")
    table.add_column("s per trial", justify="right")
    for name, t in phases.items():
        table.add_row(name, f"{t / trials:.2f}")
    table.add_row("total", f"{sum(phases.values()) / trials:.2f}")
    console = Console()
    console.print(table)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux
    console.print(f"peak resident memory of this process so far: {peak_gb:.2f} GB; accuracy after "
                  f"{config.timesteps} steps {100 * float(ds.accuracy.isel(timestep=-1).mean()):.2f}% "
                  f"(ideal {100 * float(ds.accuracy_ideal.isel(timestep=-1)):.2f}%)")


def spiking_mlp(repeats: int) -> None:
    """784-512-512-10 on crossbars against nn.Linear, on the same 15% spikes; the same
    crossbars without per-read noise, and the normal draws of the full read timed alone
    (``xbar.streams.NoiseStreams``, as many numbers as the read draws): the floors."""
    gen = torch.Generator().manual_seed(0)
    sizes = (784, 512, 512, 10)
    layers = [nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])]
    rram = presets["rram_hfo2"]
    spec = xbar.Spec(tile=(64, 64), device=rram.replace(read_sigma_rel=0.02), adc_bits=6, calibration=None)
    analog = [xbar.AnalogLinear(layer, spec, seeds=(i, 100 + i)) for i, layer in enumerate(layers)]
    quiet_spec = spec.replace(device=rram.replace(read_sigma_rel=0.0))
    quiet = [xbar.AnalogLinear(layer, quiet_spec, seeds=(i, 100 + i)) for i, layer in enumerate(layers)]
    spikes = [(torch.rand(256, a, generator=gen) < 0.15).float() for a in sizes[:-1]]
    # One draw per column read of every tile-row: (1 trial, tile-rows, samples, read columns).
    draws = [torch.empty(1, m.matrix.n_r, 256, m.matrix.g_read.shape[-1]) for m in analog]
    streams = NoiseStreams(0, 1)
    with torch.no_grad():
        times = best_of_interleaved({
            "nn.Linear (ideal)": lambda: [layer(x) for layer, x in zip(layers, spikes)],
            "crossbar (2% per-read noise, 6-bit ADC, IR drop)": lambda: [
                layer(x) for layer, x in zip(analog, spikes)],
            "crossbar without per-read noise": lambda: [layer(x) for layer, x in zip(quiet, spikes)],
            "its normal draws alone": lambda: [streams.normal(d, range(1)) for d in draws],
        }, repeats)
    base = times["nn.Linear (ideal)"]
    table = Table(title=f"spiking MLP 784-512-512-10, batch 256, 15% spikes, RRAM, 0.35 ohm/cell, "
                        f"{torch.get_num_threads()} threads (best of {repeats}); "
                        f"{sum(d.numel() for d in draws) / 1e6:.2f} M normal numbers per read")
    table.add_column("read of the three layers")
    table.add_column("time (ms)", justify="right")
    table.add_column("ratio to ideal", justify="right")
    for name, t in times.items():
        table.add_row(name, f"{1e3 * t:.2f}", f"{t / base:.1f}x")
    Console().print(table)


def variants(args) -> None:
    model, _ = load_or_train(StudyConfig().train_config(), progress=False)
    data = load_dataset("mnist5k")
    x, y = test_batches(data, args.batch, args.batch)[0]  # every class in turn
    pcm = presets["pcm"].replace(read_noise_static=0.0)  # per-read noise: what a read costs
    ideal_wires = xbar.Spec.ideal(tile=(64, 64))
    full = ideal_wires.replace(device=pcm, adc_bits=6)
    variants = {
        "ideal SNN (torch conv/linear)": None,
        "crossbar: tiles only (no noise, no ADC)": ideal_wires,
        "+ programming variation": ideal_wires.replace(device=pcm.replace(read_sigma_rel=0.0)),
        "+ read noise": ideal_wires.replace(device=pcm),
        "+ 6-bit ADC (full: variation, read noise, ADC)": full,
        "ADC only (no read noise)": full.replace(device=pcm.replace(read_sigma_rel=0.0)),
        "full + exact IR drop (default: 0.35 ohm/cell)": xbar.Spec(tile=(64, 64), device=pcm, adc_bits=6),
        "full + exact IR drop (2.5 ohm/cell, 10 ohm driver/sink)": full.replace(
            r_wire_row=2.5, r_wire_col=2.5, r_source=10.0, r_sink=10.0),
    }
    nets, setup = {}, {}
    with torch.no_grad():
        for name, spec in variants.items():
            start = time.perf_counter()
            if spec is None:
                nets[name] = model
            else:  # programmed, then calibrated on training images as the studies do
                nets[name] = calibrated(xbar.convert(model, spec, seed=0), model, data, args.timesteps)
            setup[name] = time.perf_counter() - start
        runs = {name: lambda net=net: run_snn(net, x, args.timesteps) for name, net in nets.items()}
        full_name = "+ 6-bit ADC (full: variation, read noise, ADC)"
        runs["xbar.simulate of the full crossbar network"] = lambda: xbar.simulate(
            nets[full_name], model, (x, y), args.timesteps, progress=False)
        times = best_of_interleaved(runs, args.repeats)
    sim = times.pop("xbar.simulate of the full crossbar network")
    base = times["ideal SNN (torch conv/linear)"]
    table = Table(title=f"conv SNN, batch {args.batch}, {args.timesteps} timesteps, "
                        f"{torch.get_num_threads()} threads (best of {args.repeats})")
    table.add_column("inference")
    table.add_column("time (ms)", justify="right")
    table.add_column("ratio to ideal", justify="right")
    table.add_column("programming + calibration (s)", justify="right")
    for name, t in times.items():
        table.add_row(name, f"{1e3 * t:.1f}", f"{t / base:.2f}x", f"{setup[name]:.2f}")
    console = Console()
    console.print(table)
    no_ir = times["+ 6-bit ADC (full: variation, read noise, ADC)"]
    for name in [n for n in times if "IR drop" in n]:
        console.print(f"{name}: {times[name] / no_ir:.2f}x the same without IR drop")
    console.print(f"xbar.simulate (both networks in lockstep, metrics, checks): {1e3 * sim:.1f} ms = "
                  f"{sim / (no_ir + base):.2f}x the full crossbar network plus the ideal one run alone")


if __name__ == "__main__":
    main()
