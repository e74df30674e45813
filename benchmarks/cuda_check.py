"""The VGG9 case on a GPU, checked against the CPU in distribution, in one run.

    python benchmarks/cuda_check.py [--images 32] [--trials 4] [--timesteps 5]

What it needs: a CUDA build of torch and a visible GPU (``torch.cuda.is_available()``);
without them it says so and exits with status 2, having checked nothing.

The case of ``benchmarks/bench_deep.py``: SpikeSim's VGG9 on 3x32x32 synthetic images,
thresholds that make every layer spike, HfO2 RRAM with its per-read noise, 64x64 tiles,
4-bit ADCs, exact IR drop at 0.35 ohm/cell, calibrated from data.  The same network and
seeds are programmed, calibrated and simulated once on the CPU and once on the GPU.
The draws are not the same numbers on the two devices (torch's CUDA generators, and on
the CPU xbar's counter-based streams), so the check is in distribution: each layer's
one-read error, averaged over trials and steps, and the spike rates agree within five
standard errors of the trials' spread (plus 2%); the ideal network's spikes, which draw
nothing, agree exactly where float32 sums agree (the share is printed).

Prints the check, then the times per image-step of the ideal network and of the crossbar
network on each device, and their ratios.  Exits 1 if the check fails.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import torch

import xbar
from bench_deep import case  # this folder is on the path when run as a script


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run(device: str, images: int, trials: int, timesteps: int) -> dict:
    model, x, y, cal, spec = case("vgg9", images, timesteps)
    model, x, y, cal = model.to(device), x.to(device), y.to(device), cal.to(device)
    with torch.no_grad():
        _sync(device)
        start = time.perf_counter()
        xbar.reset_state(model)
        for _ in range(timesteps):
            model(x)
        _sync(device)
        ideal = (time.perf_counter() - start) / (images * timesteps)
    hw = xbar.convert(model, spec, seed=0, trials=trials, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random labels: the class-coverage warning says nothing here
        xbar.calibrate(hw, model, cal, timesteps, replay=True)
    _sync(device)
    start = time.perf_counter()
    ds = xbar.simulate(hw, model, (x, y), timesteps, progress=False)
    _sync(device)
    analog = (time.perf_counter() - start) / (images * timesteps * trials)
    return {"ds": ds, "ideal": ideal, "analog": analog}


def agree(cpu, gpu, name: str) -> tuple[bool, str]:
    """Per layer: |mean_gpu - mean_cpu| <= 5 standard errors (over trials) + 2%."""
    a = cpu[name].mean("timestep").values  # (trial, layer)
    b = gpu[name].mean("timestep").values
    diff = np.abs(b.mean(0) - a.mean(0))
    se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
    bound = 5 * se + 0.02 * np.abs(a.mean(0))
    ok = bool(np.all(diff <= bound))
    lines = [f"  {layer}: cpu {x:.4g}, gpu {z:.4g}, |diff| {d:.3g} <= {c:.3g}"
             for layer, x, z, d, c in zip(cpu.layer.values, a.mean(0), b.mean(0), diff, bound)]
    return ok, f"{name}: {'agrees' if ok else 'DISAGREES'}\n" + "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--timesteps", type=int, default=5)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print(f"cuda_check: needs a CUDA build of torch and a visible GPU; this torch ({torch.__version__}) "
              f"sees none (torch.cuda.is_available() is False). Nothing was checked.")
        return 2
    print(f"cuda_check on {torch.cuda.get_device_name()} against {torch.get_num_threads()} CPU threads")
    cpu = run("cpu", args.images, args.trials, args.timesteps)
    gpu = run("cuda", args.images, args.trials, args.timesteps)
    ok = True
    for name in ("read_error", "spike_rate"):
        good, text = agree(cpu["ds"], gpu["ds"], name)
        ok &= good
        print(text)
    same = float((cpu["ds"].spike_rate_ideal.values == gpu["ds"].spike_rate_ideal.values).mean())
    print(f"ideal network: spike rates equal on both devices at {100 * same:.0f}% of (step, layer) cells")
    for dev in ("cpu", "gpu"):
        r = {"cpu": cpu, "gpu": gpu}[dev]
        print(f"{dev}: ideal {1e3 * r['ideal']:.3f} ms/img-step, crossbars {1e3 * r['analog']:.3f} "
              f"ms/img-step/trial, ratio {r['analog'] / r['ideal']:.1f}x")
    print(f"gpu against cpu, crossbars: {cpu['analog'] / gpu['analog']:.1f}x faster")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
