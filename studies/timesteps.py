"""The timestep study: surrogate-trained against ANN-converted SNNs of one architecture,
on the ideal network and on crossbars of several tile sizes, read after every timestep.

Models (the ``model`` dimension), all of the same architecture (``arch``):

``surrogate T=n``  surrogate-gradient BPTT with ``n`` timesteps, one model for each ``n`` in
                   ``surrogate_timesteps``; each runs for ``max(surrogate_timesteps)`` steps.
``converted``      a ReLU ANN converted to an IF SNN (99.9th-percentile thresholds, initial
                   membrane at half the threshold; :mod:`studies.ann_to_snn`); runs for
                   ``converted_timesteps`` steps.
``qcfs``           (if ``qcfs_levels``) the conversion-aware ANN: QCFS activations with
                   ``qcfs_levels`` levels and ``qcfs_weight_bits``-bit weights (Bu et al.,
                   ICLR 2022), converted; runs for ``qcfs_timesteps`` steps.

With ``hardware_aware`` (:mod:`xbar.aware`), beside those, trained on the crossbars of
``trained_on`` (``aware_tile``, default the largest tile) with the ingredients ``aware``:

``surrogate T=n, aware``   each surrogate network, trained hardware-aware (method
                           ``surrogate-aware``);
``converted, tuned``       the converted network fine-tuned ``fine_tune_epochs`` epochs
                           through ``fine_tune_timesteps`` steps, standard (method
                           ``converted-tuned``: what fine-tuning alone does);
``converted, aware``       the same fine-tuning, hardware-aware (``converted-aware``).

A variant programs the same random draws as its model (paired differences).

Every model is simulated on every tile size with the same device, circuit (IR drop), read
noise and ADC, ``trials`` Monte Carlo programmings each; the ideal network runs in
lockstep (:func:`xbar.simulate`).  Reading the output after ``t`` steps of one run is a run
of ``t`` steps (the neuron state starts from reset), so one run gives every ``t``.

The dataset (:func:`run_timestep_study`) has dims

``model``     the models above; coords ``method`` (surrogate / converted / qcfs),
              ``train_timesteps`` (0 for the converted ones), ``run_timesteps``
``tile``      ``"RxC"``; coords ``tile_rows``, ``tile_cols``
``trial``     Monte Carlo programming, ``0..trials-1``
``timestep``  ``1..`` the longest run; values past a model's ``run_timesteps`` are NaN
``layer``     the crossbar layers in network order, ``0..``; coord ``layer_name``
              (model, layer), ``""`` where a model has fewer layers (values NaN)
``phase``     ``programming`` (including the IR-drop solve) and ``inference``, for ``seconds``

and variables

``accuracy``          (model, tile, trial, timestep) test accuracy reading the output after t steps
``accuracy_ideal``    (model, timestep) the same for the ideal network
``read_error``        (model, tile, trial, timestep, layer) relative RMS error of one read
``layer_error``       (model, tile, trial, timestep, layer) relative RMS error of the layer's
                      output against the ideal network (accumulated)
``membrane_error``    (model, tile, trial, timestep, layer) RMS membrane divergence (threshold units)
``spike_mismatch``    (model, tile, trial, timestep, layer) fraction of spikes that differ
``spike_rate``        (model, tile, trial, timestep, layer) spikes per neuron per step
``spike_rate_ideal``  (model, timestep, layer)
``spikes``            (model, tile, trial, timestep, layer) spikes per image, steps 1..t
``spikes_ideal``      (model, timestep, layer)
``neurons``           (model, layer) neurons fed by the layer, per image
``seconds``           (model, tile, phase) wall time
``seconds_training``  (model) training (or loading from the cache) and conversion

(the variables of :mod:`xbar.simulate`), with the configuration, the spec and the models'
ideal test accuracies in ``attrs``.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

import xbar
from devices import presets
from devices import validation as v
from mapping.layout import SCHEMES
from studies.ann_to_snn import ANN_ARCHITECTURES, ConversionConfig, FineTune, load_or_convert
from studies.data import Dataset, calibrated, check_dataset, load_dataset, test_batches
from studies.hardware import ChipOptions
from studies.models import ARCHITECTURES
from studies.results import config_attrs, write_files
from studies.train import TrainConfig, check_training_options, load_or_train
from xbar.aware import INGREDIENTS
from xbar.network import crossbar_layers

# Architectures both trained and converted (studies.models and studies.ann_to_snn name
# some alike): VGG9, VGG11 and ResNet-18 are surrogate-trained only (xbar study).
TIMESTEP_ARCHITECTURES = tuple(sorted(set(ARCHITECTURES) & set(ANN_ARCHITECTURES)))

RESULTS_FILE = "timesteps.nc"
ACCURACY_FIGURE = "timesteps_accuracy.png"
ERRORS_FIGURE = "timesteps_errors.png"
PHASES = ("programming", "inference")
_CELL = ("model", "tile", "trial", "timestep")
# The dataset's variables and their dims (the module docstring describes each).
VARIABLES = {
    "accuracy": _CELL,
    "accuracy_ideal": ("model", "timestep"),
    **{name: (*_CELL, "layer") for name in ("read_error", "layer_error", "membrane_error",
                                            "spike_mismatch", "spike_rate", "spikes")},
    "spike_rate_ideal": ("model", "timestep", "layer"),
    "spikes_ideal": ("model", "timestep", "layer"),
    "neurons": ("model", "layer"),
    "seconds": ("model", "tile", "phase"),
    "seconds_training": ("model",),
}
DIMS = ("model", "tile", "trial", "timestep", "layer", "phase")

class ModelPlan(NamedTuple):
    """One model of the study: its name, method, training timesteps (0 for the converted
    ones), the steps it runs, and the configuration that trains it."""

    name: str
    method: str
    train_timesteps: int
    run_timesteps: int
    config: TrainConfig | ConversionConfig


@dataclass(frozen=True)
class TimestepStudyConfig(ChipOptions):
    """One timestep study (see the module docstring).

    ``device`` names a preset; ``read_noise``, if given, replaces its read-noise std at
    ``g_max`` (``DeviceModel.read_sigma_rel``; 0 for none), and ``read_noise_static`` the
    static share of its variance (``DeviceModel.read_noise_static``: 0 white, 1 static);
    ``None`` keeps the preset's.  ``calibration`` is the spec's (``"data"``: on the first
    training images; ``None``: raw).  The default, HfO2 RRAM (Milo et al., IRPS 2021; read
    noise 1% of the window per read, Wan et al., Nature 2022) with 2.5 ohm/cell wires, is
    a device whose 225 uS window makes IR drop matter at 128x128.
    ``r_wire`` is the wire resistance per cell of wordlines and bitlines (ohm)."""

    dataset: str = "mnist5k"
    arch: str = "mlp"
    device: str = "rram_hfo2"
    read_noise: float | None = None
    read_noise_static: float | None = None
    calibration: str | None = "data"
    tiles: tuple[tuple[int, int], ...] = ((32, 32), (64, 64), (128, 128))
    mapping: str = "differential"
    adc_bits: int | None = 6
    r_wire: float = 2.5
    trials: int = 5
    seed: int = 0
    surrogate_timesteps: tuple[int, ...] = (2, 4, 8, 16)
    converted_timesteps: int = 128
    qcfs_levels: int | None = 8
    qcfs_weight_bits: int | None = 4
    qcfs_timesteps: int = 32
    n_test: int | None = None
    batch_size: int = 500
    train_epochs: int = 15
    ann_epochs: int = 10
    hardware_aware: bool = False
    aware: tuple[str, ...] = INGREDIENTS
    aware_tile: tuple[int, int] | None = None
    margin: float = 0.0
    weight_clip: float | None = None
    fine_tune_epochs: int = 2
    fine_tune_timesteps: int = 16

    def __post_init__(self) -> None:
        o = "TimestepStudyConfig"
        check_training_options(o, self.hardware_aware, self.aware, self.margin, self.weight_clip)
        if self.aware_tile is not None and tuple(self.aware_tile) not in {tuple(t) for t in self.tiles}:
            v.fail(o, "aware_tile", self.aware_tile, f"must be one of the tiles {self.tiles}, or None (the largest)")
        v.int_at_least(o, "fine_tune_epochs", self.fine_tune_epochs, 1)
        v.int_at_least(o, "fine_tune_timesteps", self.fine_tune_timesteps, 1)
        check_dataset(o, self.dataset)
        v.one_of(o, "arch", self.arch, TIMESTEP_ARCHITECTURES)
        v.one_of(o, "device", self.device, presets)
        if self.read_noise is not None and not (0.0 <= self.read_noise < 1.0):
            v.fail(o, "read_noise", self.read_noise, "must be in [0, 1) (a relative std) or None")
        if self.read_noise_static is not None and not (0.0 <= self.read_noise_static <= 1.0):
            v.fail(o, "read_noise_static", self.read_noise_static, "must be in [0, 1] (a share of "
                   "the variance) or None")
        v.one_of(o, "mapping", self.mapping, SCHEMES)
        if not self.tiles:
            v.fail(o, "tiles", self.tiles, "must name at least one (rows, cols)")
        if len(set(self.tiles)) != len(self.tiles):
            v.fail(o, "tiles", self.tiles, "must not repeat a tile size")
        v.int_at_least(o, "adc_bits", self.adc_bits, 1, optional=True)
        v.int_at_least(o, "trials", self.trials, 1)
        v.int_at_least(o, "seed", self.seed, 0)
        if not self.surrogate_timesteps:
            v.fail(o, "surrogate_timesteps", self.surrogate_timesteps, "must name at least one count")
        for n in self.surrogate_timesteps:
            v.int_at_least(o, "surrogate_timesteps", n, 1)
        if len(set(self.surrogate_timesteps)) != len(self.surrogate_timesteps):
            v.fail(o, "surrogate_timesteps", self.surrogate_timesteps, "must not repeat a count")
        v.int_at_least(o, "converted_timesteps", self.converted_timesteps, 1)
        v.int_at_least(o, "qcfs_levels", self.qcfs_levels, 1, optional=True)
        v.int_at_least(o, "qcfs_weight_bits", self.qcfs_weight_bits, 2, optional=True)
        v.int_at_least(o, "qcfs_timesteps", self.qcfs_timesteps, 1)
        v.int_at_least(o, "n_test", self.n_test, 1, optional=True)
        v.int_at_least(o, "batch_size", self.batch_size, 1)
        v.int_at_least(o, "train_epochs", self.train_epochs, 1)
        v.int_at_least(o, "ann_epochs", self.ann_epochs, 1)
        for tile in self.tiles:
            self.spec(tile)  # validates each tile and the circuit

    def spec(self, tile: tuple[int, int]) -> xbar.Spec:
        if not (isinstance(tile, (tuple, list)) and len(tile) == 2):
            v.fail("TimestepStudyConfig", "tiles", self.tiles, "must be (rows, cols) pairs")
        return xbar.Spec(tile=tuple(tile), device=self.device_model(), mapping=self.mapping,
                         adc_bits=self.adc_bits, r_wire_row=self.r_wire, r_wire_col=self.r_wire,
                         calibration=self.calibration, **self.chip())

    def device_model(self):
        """The preset, with ``read_noise`` and ``read_noise_static`` put in where given."""
        changes = {"read_sigma_rel": self.read_noise, "read_noise_static": self.read_noise_static}
        return presets[self.device].replace(**{k: v for k, v in changes.items() if v is not None})

    @property
    def trained_on(self) -> tuple[int, int]:
        """The tile whose crossbars the hardware-aware models train on."""
        return tuple(self.aware_tile) if self.aware_tile is not None else \
            max((tuple(t) for t in self.tiles), key=lambda t: t[0] * t[1])

    def models(self) -> list[ModelPlan]:
        run = max(self.surrogate_timesteps)
        out = [ModelPlan(f"surrogate T={n}", "surrogate", n, run,
                         TrainConfig(dataset=self.dataset, arch=self.arch, timesteps=n, epochs=self.train_epochs))
               for n in sorted(self.surrogate_timesteps)]
        base = ConversionConfig(dataset=self.dataset, arch=self.arch, epochs=self.ann_epochs)
        out.append(ModelPlan("converted", "converted", 0, self.converted_timesteps, base))
        if self.qcfs_levels is not None:
            out.append(ModelPlan("qcfs", "qcfs", 0, self.qcfs_timesteps,
                                 replace(base, levels=self.qcfs_levels, weight_bits=self.qcfs_weight_bits)))
        if self.hardware_aware:
            out += self._aware_models(base, run)
        return out

    def _aware_models(self, base: ConversionConfig, run: int) -> list[ModelPlan]:
        """Beside the standard models: each surrogate network trained hardware-aware, and
        the converted one fine-tuned, plainly and hardware-aware (on ``trained_on``)."""
        hardware = self.spec(self.trained_on)
        options = dict(aware=xbar.Aware.only(*self.aware), margin=self.margin, weight_clip=self.weight_clip)
        out = [ModelPlan(f"surrogate T={n}, aware", "surrogate-aware", n, run,
                         TrainConfig(dataset=self.dataset, arch=self.arch, timesteps=n, epochs=self.train_epochs,
                                     hardware=hardware, **options))
               for n in sorted(self.surrogate_timesteps)]
        tune = FineTune(epochs=self.fine_tune_epochs, timesteps=self.fine_tune_timesteps)
        out.append(ModelPlan("converted, tuned", "converted-tuned", 0, self.converted_timesteps,
                             replace(base, fine_tune=tune)))
        out.append(ModelPlan("converted, aware", "converted-aware", 0, self.converted_timesteps,
                             replace(base, fine_tune=replace(tune, hardware=hardware, **options))))
        return out


def tile_name(tile: tuple[int, int]) -> str:
    return f"{tile[0]}x{tile[1]}"


def programming_seed(seed: int, model: str, tile: tuple[int, int]) -> int:
    """The seed of one (model, tile) cell, derived from the study seed and the cell's
    names: it does not change when other models or tiles are added."""
    key = zlib.crc32(f"{model}|{tile_name(tile)}".encode())
    return int(np.random.SeedSequence([seed, key]).generate_state(1)[0])


def _load_model(train_config, data: Dataset, progress: bool):
    """The ideal SNN of one model and its info (trained, or from the cache)."""
    if isinstance(train_config, TrainConfig):
        model, info = load_or_train(train_config, progress=progress, data=data)
        return model, {"test_accuracy": info["test_accuracy"]}
    snn, _, info = load_or_convert(train_config, timesteps=None, progress=progress, data=data)
    return snn, {"ann_test_accuracy": info["ann_test_accuracy"]}


def _with_spike_counts(ds: xr.Dataset) -> xr.Dataset:
    """Adds ``spikes`` / ``spikes_ideal``: spikes per image summed over steps 1..t."""
    n = ds.neurons
    ds["spikes"] = (ds.spike_rate * n).cumsum("timestep").where(ds.spike_rate.notnull())
    ds["spikes_ideal"] = (ds.spike_rate_ideal * n).cumsum("timestep").where(ds.spike_rate_ideal.notnull())
    ds.spikes.attrs = {"long_name": "spikes per image in the layer's neurons, steps 1..t", "units": "1"}
    ds.spikes_ideal.attrs = {**ds.spikes.attrs, "long_name": ds.spikes.attrs["long_name"] + " (ideal)"}
    return ds


def _one_cell(model, config: TimestepStudyConfig, name: str, tile, data: Dataset, batches,
              run_timesteps: int, progress: bool) -> tuple[xr.Dataset, float, float]:
    """Program ``trials`` copies of ``model`` on ``tile`` crossbars and simulate them."""
    t0 = time.perf_counter()
    # A model's variants (", aware", ", tuned") draw the same random numbers as the model:
    # their differences are paired.
    hw = xbar.convert(model, config.spec(tile), seed=programming_seed(config.seed, name.split(",")[0], tile),
                      trials=config.trials)
    calibrated(hw, model, data, run_timesteps)
    t1 = time.perf_counter()
    with torch.no_grad():
        ds = xbar.simulate(hw, model, batches, run_timesteps, progress=progress)
    return ds, t1 - t0, time.perf_counter() - t1


def _model_dataset(cells: list[xr.Dataset], n_layers: int, n_steps: int) -> xr.Dataset:
    """One model's cells on common ``layer`` (0..) and ``timestep`` (1..) axes."""
    out = [ds.drop_vars("neuron").assign_coords(layer=np.arange(ds.sizes["layer"]))
           .reindex(layer=np.arange(n_layers), timestep=np.arange(1, n_steps + 1)) for ds in cells]
    ds = xr.concat(out, dim="tile", combine_attrs="drop")
    for var in ("accuracy_ideal", "spike_rate_ideal", "neurons"):
        ds[var] = ds[var].isel(tile=0, drop=True)
    return ds


def _layer_names(cells: list[xr.Dataset], n_layers: int) -> list[str]:
    names = [str(x) for x in cells[0].layer.values]
    return names + [""] * (n_layers - len(names))


def run_timestep_study(config: TimestepStudyConfig, progress: bool = True) -> xr.Dataset:
    """Train (or reuse) every model, program ``trials`` crossbar copies per tile size,
    simulate; the dataset of the module docstring."""
    data = load_dataset(config.dataset)
    batches = test_batches(data, config.n_test, config.batch_size)
    plans = config.models()
    n_steps = max(plan.run_timesteps for plan in plans)
    loaded, infos, seconds_training = [], {}, []
    for plan in tqdm(plans, desc="models", unit="model", disable=not progress):
        t0 = time.perf_counter()
        model, infos[plan.name] = _load_model(plan.config, data, progress)
        seconds_training.append(time.perf_counter() - t0)
        loaded.append(model)
    n_layers = max(len(crossbar_layers(m)) for m in loaded)
    per_model, layer_names, seconds = [], [], np.zeros((len(plans), len(config.tiles), len(PHASES)))
    bar = tqdm(total=len(plans) * len(config.tiles), desc="crossbars", unit="cell", disable=not progress)
    for mi, (plan, model) in enumerate(zip(plans, loaded)):
        cells = []
        for ti, tile in enumerate(config.tiles):
            bar.set_postfix_str(f"{plan.name}, {tile_name(tile)}")
            ds, t_prog, t_inf = _one_cell(model, config, plan.name, tile, data, batches, plan.run_timesteps,
                                              progress)
            cells.append(ds)
            seconds[mi, ti] = (t_prog, t_inf)
            bar.update()
        per_model.append(_model_dataset(cells, n_layers, n_steps))
        layer_names.append(_layer_names(cells, n_layers))
    bar.close()
    ds = xr.concat(per_model, dim="model", combine_attrs="drop")
    ds = ds.assign_coords(
        model=[p.name for p in plans], method=("model", [p.method for p in plans]),
        train_timesteps=("model", [p.train_timesteps for p in plans]),
        run_timesteps=("model", [p.run_timesteps for p in plans]),
        layer_name=(("model", "layer"), np.array(layer_names, dtype=object)),
        tile=[tile_name(t) for t in config.tiles],
        tile_rows=("tile", [t[0] for t in config.tiles]), tile_cols=("tile", [t[1] for t in config.tiles]),
        phase=list(PHASES),
    )
    ds = _with_spike_counts(ds)
    ds["seconds"] = (("model", "tile", "phase"), seconds, {"long_name": "wall time", "units": "s"})
    ds["seconds_training"] = (("model",), np.array(seconds_training),
                              {"long_name": "training or loading from the cache, and conversion",
                               "units": "s"})
    spec_attrs = {k: val for k, val in config.spec(config.tiles[0]).to_attrs().items() if k != "spec_tile"}
    ds.attrs = {**spec_attrs, **config_attrs(config), "n_samples": sum(len(b[1]) for b in batches),
                "readout": "argmax of the summed outputs of steps 1..t",
                "models": json.dumps(infos)}
    return ds


def write_timestep_results(ds: xr.Dataset, out: Path) -> list[Path]:
    """``timesteps.nc`` and the two figures into ``out`` (see
    :func:`studies.results.write_files`)."""
    from studies.plots import timestep_accuracy_figure, timestep_error_figure

    return write_files(out, {RESULTS_FILE: ds.to_netcdf,
                             ACCURACY_FIGURE: lambda p: timestep_accuracy_figure(ds, p),
                             ERRORS_FIGURE: lambda p: timestep_error_figure(ds, p)})
