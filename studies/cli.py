"""The ``xbar`` command line."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from devices import presets
from mapping.layout import SCHEMES
from studies.data import EMBEDDED
from studies.models import ARCHITECTURES
from studies.stats import mean_ci
from xbar.spec import R_WIRE_AIHWKIT

console = Console()


@click.group()
@click.version_option(package_name="xbar")
def main() -> None:
    """xbar: spiking neural networks on non-ideal memristive crossbars."""


def summary_tables(ds) -> list[Table]:
    """Accuracy against timestep, and per-layer errors at the last timestep."""
    mean, sd, half = mean_ci(ds.accuracy)
    k = ds.sizes["trial"]
    acc = Table(title=f"accuracy (%) if read after t steps; {k} trials, 95% CI")
    for col in ("t", "ideal", "crossbar", "± CI", "sd"):
        acc.add_column(col, justify="right")
    steps = sorted({1, 2, 4, 8, 16, 32, int(ds.timestep[-1])} & set(ds.timestep.values.tolist()))
    for t in steps:
        acc.add_row(str(t), f"{100 * float(ds.accuracy_ideal.sel(timestep=t)):.2f}",
                    f"{100 * float(mean.sel(timestep=t)):.2f}", f"{100 * float(half.sel(timestep=t)):.2f}",
                    f"{100 * float(sd.sel(timestep=t)):.2f}")
    first, last = ds.isel(timestep=0).mean("trial"), ds.isel(timestep=-1).mean("trial")
    lay = Table(title=f"per layer, mean over trials (t = 1 -> t = {int(ds.timestep[-1])})")
    variables = ("read_error", "layer_error", "membrane_error", "spike_mismatch", "spike_rate")
    lay.add_column("layer", justify="right")
    for name in ("read error", "accumulated error", "membrane err (thr)", "spike mismatch", "spike rate"):
        lay.add_column(name, justify="right")
    for layer in ds.layer.values:
        cells = []
        for var in variables:
            a, b = float(first[var].sel(layer=layer)), float(last[var].sel(layer=layer))
            cells.append("-" if a != a else f"{a:.3g} -> {b:.3g}")
        lay.add_row(str(layer), *cells)
    return [acc, lay]


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("xbar-results"), show_default=True,
              help="Folder for robustness.nc and robustness.png.")
@click.option("--dataset", type=click.Choice(EMBEDDED), default="mnist5k", show_default=True,
              help="An embedded dataset.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="A local folder in torchvision's layout (MNIST/raw, FashionMNIST/raw or "
                   "cifar-10-batches-py) instead of --dataset.")
@click.option("--arch", type=click.Choice(sorted(ARCHITECTURES)), default="conv", show_default=True)
@click.option("--device", type=click.Choice(sorted(presets)), default="pcm", show_default=True,
              help="Device preset.")
@click.option("--tile", nargs=2, type=int, default=(64, 64), show_default=True, help="ROWS COLS")
@click.option("--mapping", type=click.Choice(SCHEMES), default="differential", show_default=True)
@click.option("--adc-bits", type=int, default=6, show_default=True, help="0 for an ideal ADC.")
@click.option("--trials", type=int, default=5, show_default=True, help="Monte Carlo programmings.")
@click.option("--timesteps", type=int, default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--n-test", type=int, default=None, help="Use the first N test images (default: all).")
@click.option("--r-wire", type=float, default=R_WIRE_AIHWKIT, show_default=True,
              help="Wire resistance per cell (ohm), wordlines and bitlines: exact IR drop; "
                   "0 for ideal wires.  Default: IBM aihwkit's.")
@click.option("--r-source", type=float, default=0.0, show_default=True, help="Driver resistance (ohm).")
@click.option("--r-sink", type=float, default=0.0, show_default=True, help="Sense-amplifier resistance (ohm).")
def study(out, dataset, data, arch, device, tile, mapping, adc_bits, trials, timesteps, seed, n_test,
          r_wire, r_source, r_sink) -> None:
    """Run the default robustness study and write a netCDF file and a figure."""
    from studies.robustness import StudyConfig, check_output_dir, run_study, write_results

    try:
        if data is not None:
            dataset = str(data)
        config = StudyConfig(dataset=dataset, arch=arch, device=device, tile=tuple(tile), mapping=mapping,
                             adc_bits=None if adc_bits == 0 else adc_bits, trials=trials,
                             timesteps=timesteps, seed=seed, n_test=n_test, r_wire=r_wire,
                             r_source=r_source, r_sink=r_sink)
        out = check_output_dir(out)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err
    console.print(f"[bold]xbar study[/]: {arch} SNN on {dataset}, {device} crossbars {tile[0]}x{tile[1]}, "
                  f"ADC {adc_bits or 'ideal'} bits, {trials} trials x {timesteps} timesteps, seed {seed}, "
                  f"wires {'ideal' if r_wire == 0 else f'{r_wire} ohm/cell'}")
    start = time.perf_counter()
    ds = run_study(config, progress=True)
    nc, png = write_results(ds, out)
    for table in summary_tables(ds):
        console.print(table)
    console.print(f"trained model test accuracy (ideal, {ds.attrs['study_train_timesteps']} steps): "
                  f"{100 * ds.attrs['train_test_accuracy']:.2f}%")
    console.print(f"wrote {nc} and {png} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
