"""The ``xbar`` command line."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from devices import presets
from mapping.layout import SCHEMES
from studies.data import EMBEDDED
from studies.models import ARCHITECTURES
from studies.timesteps import TIMESTEP_ARCHITECTURES
from studies.stats import mean_ci
from xbar.aware import INGREDIENTS
from xbar.memory import MEMORY_GB
from xbar.spec import R_WIRE_AIHWKIT

console = Console()


@click.group()
@click.version_option(package_name="xbar")
def main() -> None:
    """xbar: spiking neural networks on non-ideal memristive crossbars."""


def data_options(command):
    """``--dataset`` (embedded) and ``--data FOLDER`` (local, torchvision's layout)."""
    command = click.option("--data", type=click.Path(path_type=Path), default=None,
                           help="A local folder in torchvision's layout (MNIST/raw, FashionMNIST/raw "
                                "or cifar-10-batches-py) instead of --dataset.")(command)
    return click.option("--dataset", type=click.Choice(EMBEDDED), default="mnist5k", show_default=True,
                        help="An embedded dataset.")(command)


def _pct(value) -> str:
    """A fraction as a percentage, or "-" where it is unknown (a spread from one trial)."""
    value = float(value)
    return "-" if np.isnan(value) else f"{100 * value:.2f}"


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
                    _pct(mean.sel(timestep=t)), _pct(half.sel(timestep=t)), _pct(sd.sel(timestep=t)))
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


def chip_options(fn):
    """The chip options of ``xbar study`` and ``xbar timesteps``
    (:class:`studies.hardware.ChipOptions`), handed to the command as one ``chip`` dict of
    ChipOptions fields."""
    from studies.hardware import ChipOptions
    from xbar.spec import INPUT_SCHEMES, NEURONS

    d = ChipOptions()
    options = [
        click.option("--adc-percentile", type=float, default=d.adc_percentile, show_default=True,
                     help="ADC ranges set at calibration at this percentile of the column currents the "
                          "calibration reads draw; 0: the worst case (every driven row at full input)."),
        click.option("--adc-range-scope", type=click.Choice(["auto", "tile", "column"]), default="auto",
                     show_default=True, help="One ADC range per output column, or per tile; auto: per "
                                             "column with the differential mapping, per tile with offset."),
        click.option("--subtraction", type=click.Choice(["auto", "analog", "digital"]), default="auto",
                     show_default=True, help="A differential pair subtracted on the chip before one signed "
                                             "ADC (analog), or two ADCs and digital subtraction; auto: "
                                             "analog for the differential mapping."),
        click.option("--weight-scale", type=click.Choice(["layer", "column"]), default=d.weight_scale,
                     show_default=True, help="One weight scale per layer, or one per output column (each "
                                             "output's largest weight at the full conductance window, "
                                             "undone digitally)."),
        click.option("--cell-bits", type=click.IntRange(min=1), default=None,
                     help="Bit-sliced weights: cells of this many bits (2**bits levels), each weight's "
                          "magnitude in --weight-slices digits, each on its own differential pair and ADC, "
                          "shifted and added; default: one pair per weight at the device's levels."),
        click.option("--weight-slices", type=click.IntRange(min=1), default=d.weight_slices, show_default=True,
                     help="Cells (differential pairs) per weight, with --cell-bits."),
        click.option("--dac-bits", type=click.IntRange(min=0), default=0, show_default=True,
                     help="The rows' DAC for non-binary inputs (the first layer's pixels); 0: ideal."),
        click.option("--input-scheme", type=click.Choice(INPUT_SCHEMES), default=d.input_scheme,
                     show_default=True, help="A non-binary input as one read at its DAC code's voltage "
                                             "(amplitude), or one binary read per bit of the code, each "
                                             "digitized, shifted and added (bit_serial), or their charges "
                                             "integrated before one conversion (bit_integrated); both "
                                             "need --dac-bits."),
        click.option("--neuron", type=click.Choice(NEURONS), default=d.neuron, show_default=True,
                     help="digital: each column's ADC at every step, the neuron integrating codes; analog: "
                          "each output's current on its membrane capacitor, a comparator's spike out, no "
                          "ADC (needs --adc-bits 0)."),
        click.option("--neuron-gain-sigma", type=float, default=d.neuron_gain_sigma, show_default=True,
                     help="Analog neurons: relative spread of the membrane capacitors."),
        click.option("--neuron-threshold-sigma", type=float, default=d.neuron_threshold_sigma, show_default=True,
                     help="Analog neurons: relative spread of the firing thresholds (comparator offsets)."),
        click.option("--neuron-leakage", type=float, default=d.neuron_leakage, show_default=True,
                     help="Analog neurons: share of the membrane lost per step to the capacitor's leakage."),
        click.option("--t-inference", type=float, default=d.t_inference, show_default=True,
                     help="Seconds between programming and inference (drift, relaxation)."),
        click.option("--t-calibration", type=float, default=None,
                     help="Seconds between programming and calibration (0: at programming), the chip "
                          "then aging to --t-inference; default: calibrated at --t-inference."),
        click.option("--drift-compensation", type=click.Choice(["none", "global"]), default="none",
                     show_default=True, help="global: each layer's outputs rescaled at inference by a "
                                             "reference batch read at calibration and now (needs "
                                             "--t-calibration)."),
        click.option("--array", type=click.Choice(["connected", "gated"]), default=d.array, show_default=True,
                     help="connected: every device on its lines, rows without a spike at 0 V; gated: a 1T1R "
                          "array with the spikes on the transistors' gates, rows without one disconnected "
                          "(each read's circuit solved exactly)."),
        click.option("--r-access", type=float, default=None,
                     help="The gated array's access transistor on-resistance (ohm); default a quarter of "
                          "the device's lowest resistance (NeuroSim's sizing rule)."),
        click.option("--iv", type=click.Choice(["linear", "device"]), default=d.iv, show_default=True,
                     help="The devices' current-voltage curve: linear (I = G V), or the device's published "
                          "curve (rram_hfo2), each read's non-linear circuit solved (slow: docs/hardware.md)."),
    ]

    @functools.wraps(fn)
    def command(**kwargs):
        return fn(chip=_chip(**{name: kwargs.pop(name) for name in CHIP_PARAMETERS}), **kwargs)

    for option in reversed(options):
        command = option(command)
    return command


CHIP_PARAMETERS = ("adc_percentile", "adc_range_scope", "subtraction", "weight_scale", "cell_bits",
                   "weight_slices", "dac_bits", "input_scheme", "neuron", "neuron_gain_sigma",
                   "neuron_threshold_sigma", "neuron_leakage", "t_inference", "t_calibration", "drift_compensation", "array",
                   "r_access", "iv")


def _chip(adc_percentile, adc_range_scope, subtraction, weight_scale, cell_bits, weight_slices, dac_bits,
          input_scheme, neuron, neuron_gain_sigma, neuron_threshold_sigma, neuron_leakage, t_inference,
          t_calibration,
          drift_compensation, array, r_access, iv) -> dict:
    """The chip options as ChipOptions fields (0 percentile: the worst case; auto: Spec's default)."""
    return dict(adc_percentile=adc_percentile or None,
                adc_range_scope=None if adc_range_scope == "auto" else adc_range_scope,
                subtraction=None if subtraction == "auto" else subtraction, weight_scale=weight_scale,
                cell_bits=cell_bits, weight_slices=weight_slices, dac_bits=dac_bits or None,
                input_scheme=input_scheme, neuron=neuron, neuron_gain_sigma=neuron_gain_sigma,
                neuron_threshold_sigma=neuron_threshold_sigma, neuron_leakage=neuron_leakage, t_inference=t_inference, t_calibration=t_calibration,
                drift_compensation=None if drift_compensation == "none" else drift_compensation,
                array=array, r_access=r_access, iv=iv)


def training_options(fn):
    """The hardware-aware training options of ``xbar study`` and ``xbar timesteps``."""
    options = [
        click.option("--hardware-aware", is_flag=True, default=False,
                     help="Train the SNN with these crossbars in its forward pass (cached apart from "
                          "the standard model, keyed by the spec)."),
        click.option("--aware", default=",".join(INGREDIENTS), show_default=True,
                     help="With --hardware-aware: the ingredients the training sees, comma-separated "
                          f"among {','.join(INGREDIENTS)} (empty: none, the standard training)."),
        click.option("--margin", type=float, default=0.0, show_default=True,
                     help="Weight of the membrane-margin term (potentials pushed out of 0.1 threshold "
                          "around the threshold); 0: off."),
        click.option("--weight-clip", type=float, default=None,
                     help="Clip each layer's weights to this many standard deviations after every "
                          "step (aihwkit's layer-Gaussian clipping; 2.5 is its default); default: off."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("xbar-results"), show_default=True,
              help="Folder for robustness.nc and robustness.png.")
@data_options
@click.option("--arch", type=click.Choice(sorted(ARCHITECTURES)), default="conv", show_default=True)
@click.option("--device", type=click.Choice(sorted(presets)), default="pcm", show_default=True,
              help="Device preset.")
@click.option("--tile", nargs=2, type=int, default=(64, 64), show_default=True, help="ROWS COLS")
@click.option("--mapping", type=click.Choice(SCHEMES), default="differential", show_default=True)
@click.option("--adc-bits", type=int, default=6, show_default=True, help="0 for an ideal ADC.")
@click.option("--trials", type=int, default=5, show_default=True, help="Monte Carlo programmings.")
@click.option("--timesteps", type=int, default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--n-test", type=int, default=None, help="Use N test images, the classes in turn (default: all).")
@click.option("--r-wire", type=float, default=R_WIRE_AIHWKIT, show_default=True,
              help="Wire resistance per cell (ohm), wordlines and bitlines: exact IR drop; "
                   "0 for ideal wires.  Default: IBM aihwkit's.")
@click.option("--r-source", type=float, default=0.0, show_default=True, help="Driver resistance (ohm).")
@click.option("--r-sink", type=float, default=0.0, show_default=True, help="Sense-amplifier resistance (ohm).")
@click.option("--calibration", type=click.Choice(["data", "vectors", "none"]), default="data", show_default=True,
              help="Per-tile digital gain and offset after programming, fitted to the chip's reads of "
                   "64 training images, every class (data), or of random known vectors; none: the raw hardware.")
@click.option("--weights", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="A trained state_dict of --arch (torch.save) for these images and classes: "
                   "nothing is trained (docs/studies.md#the-literatures-networks-and-your-own-weights).")
@click.option("--converted", is_flag=True,
              help="--weights holds a trained ReLU ANN of --arch (studies.ann_to_snn.build_ann's layout), "
                   "converted here to an integrate-and-fire SNN.")
@click.option("--memory-gb", type=float, default=MEMORY_GB, show_default=True,
              help="GiB the study may take: its Monte Carlo trials are programmed in parts and read in "
                   "chunks, and a batch in parts, that fit (a VGG layer's unfolded input is gigabytes at "
                   "a thousand samples).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="A Dask scheduler (tcp://host:port): the trials are split over its workers, each "
                   "programming and reading its own from the same seeds; the same results as a local "
                   "run. The model goes to the workers; --data must be at the same path there.")
@chip_options
@training_options
def study(out, dataset, data, arch, device, tile, mapping, adc_bits, trials, timesteps, seed, n_test,
          r_wire, r_source, r_sink, calibration, weights, converted, memory_gb, scheduler, chip, hardware_aware, aware,
          margin, weight_clip) -> None:
    """Run the default robustness study and write a netCDF file and a figure."""
    from studies.results import check_output_dir
    from studies.robustness import StudyConfig, run_study, write_results

    try:
        if data is not None:
            dataset = str(data)
        config = StudyConfig(dataset=dataset, arch=arch, device=device, tile=tuple(tile), mapping=mapping,
                             adc_bits=None if adc_bits == 0 else adc_bits, trials=trials,
                             timesteps=timesteps, seed=seed, n_test=n_test, r_wire=r_wire,
                             r_source=r_source, r_sink=r_sink, calibration=_calibration(calibration),
                             hardware_aware=hardware_aware, aware=_names(aware), margin=margin,
                             weight_clip=weight_clip, weights=None if weights is None else str(weights),
                             converted=converted, memory_gb=memory_gb, **chip)
        out = check_output_dir(out)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err
    console.print(f"[bold]xbar study[/]: {arch} SNN on {dataset}, {device} crossbars {tile[0]}x{tile[1]}, "
                  f"ADC {adc_bits or 'ideal'} bits, {trials} trials x {timesteps} timesteps, seed {seed}, "
                  f"wires {'ideal' if r_wire == 0 else f'{r_wire} ohm/cell'}, calibration {calibration}, "
                  f"{_chip_line(config.spec())}")
    if hardware_aware:
        console.print(f"model trained hardware-aware on these crossbars ({', '.join(config.aware) or 'nothing on'})")
    start = time.perf_counter()
    try:
        ds = run_study(config, progress=True, scheduler=scheduler)
    except (ValueError, ConnectionError) as err:  # a weights file that does not fit, a cluster not there
        raise click.ClickException(str(err)) from err
    nc, png = write_results(ds, out)
    for table in summary_tables(ds):
        console.print(table)
    console.print(f"trained model test accuracy (ideal, {ds.attrs['study_train_timesteps']} steps): "
                  f"{100 * ds.attrs['train_test_accuracy']:.2f}%")
    console.print(f"wrote {nc} and {png} in {time.perf_counter() - start:.0f} s")


def _chip_line(spec) -> str:
    """How the spec's ADC ranges are set, its subtraction and time since programming, in words."""
    if spec.neuron == "analog":
        ranges = "analog neurons (no ADC)"
        if spec.neuron_gain_sigma or spec.neuron_threshold_sigma:
            ranges += (f", capacitors spread {100 * spec.neuron_gain_sigma:g}%, thresholds "
                       f"{100 * spec.neuron_threshold_sigma:g}%")
        if spec.neuron_leakage:
            ranges += f", {100 * spec.neuron_leakage:g}% of the membrane leaking per step"
    elif spec.adc_bits is None:
        ranges = "no ADC"
    elif spec.adc_percentile is None or spec.calibration is None:
        ranges = "worst-case ADC ranges"
    else:
        ranges = f"ADC ranges at the {spec.adc_percentile:g}th percentile per {spec.range_scope}"
    sub = "analog" if spec.analog_subtraction else "digital"
    scales = "" if spec.weight_scale == "layer" else ", a weight scale per column"
    if spec.sliced:
        scales += (f", weights in {spec.weight_slices} slice{'s' if spec.weight_slices > 1 else ''} of "
                   f"{spec.cell_bits}-bit cells")
    if spec.dac_bits is not None:
        scales += f", {spec.dac_bits}-bit DAC" + {"amplitude": "", "bit_serial": ", bit-serial inputs",
                                                  "bit_integrated": ", its bits integrated"}[spec.input_scheme]
    if spec.array == "gated":
        scales += f", gated 1T1R array ({spec.access_resistance:.3g} ohm access transistors)"
    if spec.iv == "device":
        scales += f", non-linear devices ({spec.device.name}'s I-V curve, verified at {spec.v_read:g} V)"
    when = f"t = {spec.t_inference:g} s"
    if spec.ages_after_calibration:
        when += f", calibrated at {spec.t_calibration:g} s"
        if spec.drift_compensation is not None:
            when += f", {spec.drift_compensation} drift compensation"
    return f"{ranges}, {sub} subtraction{scales}, {when}"


def _names(value: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in value.split(",") if n.strip())


def _calibration(value: str) -> str | None:
    return None if value == "none" else value


def _tiles(value: str) -> tuple[tuple[int, int], ...]:
    """``"32,64,128x64"`` -> ``((32, 32), (64, 64), (128, 64))``."""
    tiles = []
    for part in value.split(","):
        rows, _, cols = part.strip().partition("x")
        try:
            tiles.append((int(rows), int(cols or rows)))
        except ValueError:
            raise click.BadParameter(f"tiles = {value!r} is not allowed: give sizes like 32,64,128 or "
                                     "128x64 (ROWSxCOLS), separated by commas") from None
    return tuple(tiles)


def _ints(name: str, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{name} = {value!r} is not allowed: give integers separated by "
                                 "commas, like 2,4,8,16") from None


def timestep_tables(ds) -> list[Table]:
    """Accuracy of every model on the ideal network and on each tile size (mean ± 95% CI)
    at the timesteps it is read, and the per-layer errors at the end of each run."""
    k = ds.sizes["trial"]
    acc = Table(title=f"accuracy (%) after t timesteps: ideal, and crossbar mean ± 95% CI over {k} trials")
    for col in ("model", "t", "ideal", *[str(t) for t in ds.tile.values]):
        acc.add_column(col, justify="right")
    for model in ds.model.values:
        one = ds.sel(model=model)
        run = int(one.run_timesteps)
        trained = int(one.train_timesteps)
        steps = [trained] if trained else [t for t in (1, 2, 4, 8, 16, 32, 64, 128, 256, run) if t <= run]
        for t in sorted(set(steps)):
            mean, _, half = mean_ci(one.accuracy.sel(timestep=t))
            acc.add_row(str(model), str(t), f"{100 * float(one.accuracy_ideal.sel(timestep=t)):.2f}",
                        *[f"{_pct(m)} ± {_pct(h)}" for m, h in zip(mean, half)])
    tile = str(ds.tile.values[-1])
    lay = Table(title=f"tile {tile}, mean over trials, t = 1 → end of the run (membrane error in "
                      "threshold units; spikes per image over the run)")
    for col in ("model", "layer", "read error", "accumulated", "membrane", "spikes"):
        lay.add_column(col, justify="right")
    for model in ds.model.values:
        one = ds.sel(model=model, tile=tile).mean("trial")
        run = int(one.run_timesteps)
        for li in one.layer.values:
            name = str(ds.layer_name.sel(model=model, layer=li).values)
            if not name:
                continue
            cells = []
            for var in ("read_error", "layer_error", "membrane_error"):
                a, b = float(one[var].sel(layer=li, timestep=1)), float(one[var].sel(layer=li, timestep=run))
                cells.append("-" if a != a else f"{a:.2g} → {b:.2g}")
            spikes = float(one.spikes.sel(layer=li, timestep=run))
            cells.append("-" if spikes != spikes else f"{spikes:.0f}")
            lay.add_row(str(model), name, *cells)
    return [acc, lay]


def time_table(ds) -> Table:
    table = Table(title="where the time went (s)")
    for col in ("training + conversion", "programming (incl. IR drop)", "inference", "total"):
        table.add_column(col, justify="right")
    train = float(ds.seconds_training.sum())
    prog = float(ds.seconds.sel(phase="programming").sum())
    inf = float(ds.seconds.sel(phase="inference").sum())
    table.add_row(f"{train:.0f}", f"{prog:.0f}", f"{inf:.0f}", f"{train + prog + inf:.0f}")
    return table


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("xbar-timesteps"), show_default=True,
              help="Folder for timesteps.nc and the two figures.")
@data_options
@click.option("--arch", type=click.Choice(TIMESTEP_ARCHITECTURES), default="mlp", show_default=True,
              help="The architecture of both the surrogate-trained and the converted networks.")
@click.option("--device", type=click.Choice(sorted(presets)), default="rram_hfo2", show_default=True,
              help="Device preset.")
@click.option("--read-noise", type=float, default=None,
              help="Read-noise std at g_max relative to g_max, replacing the preset's (0: none).  "
                   "Default: the preset's.")
@click.option("--read-noise-static", type=float, default=None,
              help="Share of the read-noise variance drawn once per programming (1: static, 0: "
                   "white, drawn at every read).  Default: the preset's.")
@click.option("--calibration", type=click.Choice(["data", "vectors", "none"]), default="data", show_default=True,
              help="Per-tile digital gain and offset after programming, fitted to the chip's reads of "
                   "64 training images, every class (data), or of random known vectors; none: the raw hardware.")
@click.option("--tiles", default="32,64,128", show_default=True,
              help="Tile sizes, comma-separated: N for NxN, or ROWSxCOLS.")
@click.option("--mapping", type=click.Choice(SCHEMES), default="differential", show_default=True)
@click.option("--adc-bits", type=int, default=6, show_default=True, help="0 for an ideal ADC.")
@click.option("--r-wire", type=float, default=2.5, show_default=True,
              help="Wire resistance per cell (ohm), wordlines and bitlines; 0 for ideal wires.")
@click.option("--trials", type=int, default=5, show_default=True, help="Monte Carlo programmings.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--surrogate-timesteps", default="2,4,8,16", show_default=True,
              help="A surrogate-gradient network is trained for each count; all run for the largest.")
@click.option("--converted-timesteps", type=int, default=128, show_default=True,
              help="Steps the converted network runs (read after every one).")
@click.option("--qcfs-levels", type=int, default=8, show_default=True,
              help="Levels of the conversion-aware (QCFS, 4-bit weights) network; 0 leaves it out.")
@click.option("--qcfs-timesteps", type=int, default=32, show_default=True,
              help="Steps the conversion-aware network runs.")
@click.option("--n-test", type=int, default=None, help="Use N test images, the classes in turn (default: all).")
@click.option("--train-epochs", type=int, default=15, show_default=True,
              help="Epochs of surrogate-gradient training.")
@click.option("--ann-epochs", type=int, default=10, show_default=True,
              help="Epochs of ANN training (converted networks).")
@chip_options
@training_options
@click.option("--aware-tile", default=None,
              help="With --hardware-aware: the tile (RxC, one of --tiles) whose crossbars the aware models "
                   "train on; default: the largest.")
@click.option("--fine-tune-epochs", type=int, default=2, show_default=True,
              help="With --hardware-aware: epochs of fine-tuning of the converted network (plain and aware).")
@click.option("--fine-tune-timesteps", type=int, default=16, show_default=True,
              help="With --hardware-aware: timesteps of that fine-tuning's BPTT.")
def timesteps(out, dataset, data, arch, device, read_noise, read_noise_static, calibration, tiles, mapping,
              adc_bits, r_wire, trials, seed, surrogate_timesteps, converted_timesteps, qcfs_levels, qcfs_timesteps, n_test,
              train_epochs, ann_epochs, chip, hardware_aware, aware, margin, weight_clip, aware_tile, fine_tune_epochs, fine_tune_timesteps) -> None:
    """Surrogate-trained against ANN-converted SNNs over timesteps, on the ideal network and
    on crossbars of several tile sizes: timesteps.nc and two figures."""
    from studies.results import check_output_dir
    from studies.timesteps import TimestepStudyConfig, run_timestep_study, tile_name, write_timestep_results

    try:
        config = TimestepStudyConfig(
            dataset=str(data) if data is not None else dataset, arch=arch, device=device,
            read_noise=read_noise, read_noise_static=read_noise_static,
            calibration=_calibration(calibration), tiles=_tiles(tiles), mapping=mapping, adc_bits=None if adc_bits == 0 else adc_bits,
            r_wire=r_wire, trials=trials, seed=seed,
            surrogate_timesteps=_ints("surrogate_timesteps", surrogate_timesteps),
            converted_timesteps=converted_timesteps, qcfs_levels=qcfs_levels or None,
            qcfs_timesteps=qcfs_timesteps, n_test=n_test, train_epochs=train_epochs,
            ann_epochs=ann_epochs, hardware_aware=hardware_aware, aware=_names(aware), margin=margin,
            weight_clip=weight_clip, aware_tile=None if aware_tile is None else _tiles(aware_tile)[0],
            fine_tune_epochs=fine_tune_epochs, fine_tune_timesteps=fine_tune_timesteps, **chip)
        out = check_output_dir(out)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err
    dev = config.device_model()
    noise = f"{100 * dev.read_sigma_rel:g}% ({100 * dev.read_noise_static:g}% of it static)"
    console.print(f"[bold]xbar timesteps[/]: {arch} SNNs on {config.dataset}, {device} crossbars "
                  f"{tiles}, read noise {noise}, ADC {adc_bits or 'ideal'} bits, wires {r_wire} ohm/cell, "
                  f"calibration {calibration}, {_chip_line(config.spec(config.tiles[0]))}, {trials} trials, "
                  f"seed {seed}")
    if hardware_aware:
        console.print(f"hardware-aware models beside the standard ones, trained on the "
                      f"{tile_name(config.trained_on)} crossbars ({', '.join(config.aware) or 'nothing on'})")
    start = time.perf_counter()
    ds = run_timestep_study(config, progress=True)
    paths = write_timestep_results(ds, out)
    for table in (*timestep_tables(ds), time_table(ds)):
        console.print(table)
    console.print(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - start:.0f} s")


from studies.sweeps.cli import report, sweep  # noqa: E402

main.add_command(sweep)
main.add_command(report)

if __name__ == "__main__":
    main()
