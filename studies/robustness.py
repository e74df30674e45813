"""The default robustness study: a trained SNN on non-ideal crossbars, Monte Carlo over
programmings, error accumulation over timesteps."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import xarray as xr

import xbar
from devices import presets
from devices import validation as v
from mapping.layout import SCHEMES
from studies.data import calibrated, check_dataset, load_dataset, test_batches
from studies.hardware import ChipOptions
from studies.models import ARCHITECTURES
from studies.plots import robustness_figure
from studies.results import config_attrs, write_files
from studies.train import TrainConfig, check_training_options, load_or_train, load_weights
from xbar.aware import INGREDIENTS
from xbar.memory import MEMORY_GB, check_memory, programmed_bytes_per_trial, trials_per_part

RESULTS_FILE = "robustness.nc"
FIGURE_FILE = "robustness.png"


@dataclass(frozen=True)
class StudyConfig(ChipOptions):
    """One robustness study.  ``timesteps`` is the longest run: the accuracy and errors
    after every ``t <= timesteps`` steps come from the same run (neuron state is reset
    between samples, so the first ``t`` steps of a long run are a run of ``t`` steps)."""

    dataset: str = "mnist5k"
    arch: str = "conv"
    device: str = "pcm"
    tile: tuple[int, int] = (64, 64)
    mapping: str = "differential"
    adc_bits: int | None = 6
    trials: int = 5
    timesteps: int = 16
    seed: int = 0
    n_test: int | None = None
    batch_size: int = 200
    train_epochs: int = 15
    train_timesteps: int = 6
    r_wire: float = xbar.spec.R_WIRE_AIHWKIT
    r_source: float = 0.0
    r_sink: float = 0.0
    calibration: str | None = "data"
    hardware_aware: bool = False
    aware: tuple[str, ...] = INGREDIENTS
    margin: float = 0.0
    weight_clip: float | None = None
    weights: str | None = None  # a trained state_dict file: nothing trained
    converted: bool = False  # the weights are a ReLU ANN's (studies.ann_to_snn.build_ann), converted
    memory_gb: float = MEMORY_GB  # what the study may take (xbar.memory): sizes its parts and chunks

    def __post_init__(self) -> None:
        o = "StudyConfig"
        if self.weights is not None and self.hardware_aware:
            raise ValueError("StudyConfig: weights and hardware_aware cannot go together: the weights file "
                             "is the trained model (train it hardware-aware where you trained it)")
        if self.converted and self.weights is None:
            raise ValueError("StudyConfig.converted = True is not allowed without weights: it says the weights "
                             "file holds a trained ReLU ANN (studies.ann_to_snn.build_ann's layout) to convert")
        check_training_options(o, self.hardware_aware, self.aware, self.margin, self.weight_clip)
        check_dataset(o, self.dataset)
        v.one_of(o, "arch", self.arch, ARCHITECTURES)
        v.one_of(o, "device", self.device, presets)
        v.one_of(o, "mapping", self.mapping, SCHEMES)
        v.int_at_least(o, "adc_bits", self.adc_bits, 1, optional=True)
        v.int_at_least(o, "trials", self.trials, 1)
        v.int_at_least(o, "timesteps", self.timesteps, 1)
        v.int_at_least(o, "seed", self.seed, 0)
        v.int_at_least(o, "n_test", self.n_test, 1, optional=True)
        v.int_at_least(o, "batch_size", self.batch_size, 1)
        v.int_at_least(o, "train_epochs", self.train_epochs, 1)
        v.int_at_least(o, "train_timesteps", self.train_timesteps, 1)
        check_memory(o, self.memory_gb)
        self.spec()  # validates the tile

    def spec(self) -> xbar.Spec:
        return xbar.Spec(tile=tuple(self.tile), device=presets[self.device], mapping=self.mapping,
                         adc_bits=self.adc_bits, r_wire_row=self.r_wire, r_wire_col=self.r_wire,
                         r_source=self.r_source, r_sink=self.r_sink, calibration=self.calibration,
                         **self.chip())

    def train_config(self) -> TrainConfig:
        """The model's training: on this study's crossbars with ``hardware_aware``."""
        return TrainConfig(dataset=self.dataset, arch=self.arch, timesteps=self.train_timesteps,
                           epochs=self.train_epochs, hardware=self.spec() if self.hardware_aware else None,
                           aware=xbar.Aware.only(*self.aware), margin=self.margin, weight_clip=self.weight_clip)


def run_study(config: StudyConfig, progress: bool = True, scheduler: str | None = None) -> xr.Dataset:
    """Train (or reuse) the model, program ``trials`` crossbar copies, calibrate, simulate.
    ``scheduler``: a Dask scheduler's address; the trials are split over its workers, each
    programming, calibrating and reading its own part from the same seeds
    (:func:`xbar.convert`'s ``only``), and the parts joined: the same dataset as a local run."""
    data = load_dataset(config.dataset)
    if config.weights is not None:
        model, info = load_weights(config.arch, config.weights, data, config.train_timesteps, config.converted)
    else:
        model, info = load_or_train(config.train_config(), progress=progress, data=data)
    attrs = config_attrs(config)
    attrs["train_config"] = json.dumps(info["config"])
    attrs["train_test_accuracy"] = float(info["test_accuracy"])
    if scheduler is None:
        return _in_parts(config, model, attrs, progress, data)
    return _on_cluster(config, model, attrs, scheduler, progress)


def _in_parts(config: StudyConfig, model: torch.nn.Module, attrs: dict, progress: bool, data) -> xr.Dataset:
    """The trials in consecutive parts whose programmed tiles fit ``memory_gb``
    (:func:`xbar.memory.trials_per_part`), one after the other: memory does not grow with
    the trials, and the parts joined are the whole run (:func:`xbar.convert`'s ``only``)."""
    size = trials_per_part(programmed_bytes_per_trial(model, config.tile), config.trials, config.memory_gb)
    parts = split_trials(config.trials, -(-config.trials // size))
    return join_trials([run_trials(config, model, part, attrs, progress, data) for part in parts])


def join_trials(parts: list[xr.Dataset]) -> xr.Dataset:
    """Parts of a study's trials, in order, as one dataset (what does not depend on the
    trial, the ideal network's metrics and the attributes, from the first)."""
    if len(parts) == 1:
        return parts[0]
    return xr.concat(parts, "trial", data_vars="minimal", coords="minimal", compat="override",
                     combine_attrs="override")


def run_trials(config: StudyConfig, model: torch.nn.Module | bytes, only: range, attrs: dict,
               progress: bool = False, data=None) -> xr.Dataset:
    """Trials ``only`` of the study of ``model`` (or its bytes, ``torch.save``'d, as the
    workers of a cluster receive it): programmed, calibrated and read as the whole study
    does them.  ``data``: the study's dataset (loaded here where not given, on a worker)."""
    if isinstance(model, bytes):
        model = torch.load(io.BytesIO(model), map_location="cpu", weights_only=False)
    data = load_dataset(config.dataset) if data is None else data
    hw = xbar.convert(model, config.spec(), seed=config.seed, trials=config.trials, progress=progress,
                      only=only)
    hw = calibrated(hw, model, data, config.timesteps, progress=progress, memory_gb=config.memory_gb)
    batches = test_batches(data, config.n_test, config.batch_size)
    with torch.no_grad():
        return xbar.simulate(hw, model, batches, config.timesteps, progress=progress, attrs=attrs,
                             memory_gb=config.memory_gb)


def _run_part(config: StudyConfig, model: bytes, only: range, attrs: dict) -> xr.Dataset:
    """:func:`run_trials` on a Dask worker, with as many torch threads as the worker has
    (``dask worker --nthreads N``; one task runs on it at a time): torch takes its own
    count in a worker's thread, not the worker's, and two workers of a machine would
    otherwise each run on all its cores."""
    from distributed import get_worker

    threads = torch.get_num_threads()
    torch.set_num_threads(get_worker().state.nthreads)
    try:
        return run_trials(config, model, only, attrs)
    finally:
        torch.set_num_threads(threads)


def split_trials(trials: int, parts: int) -> list[range]:
    """``range(trials)`` in at most ``parts`` consecutive parts of sizes differing by one at most."""
    parts = max(1, min(parts, trials))
    bounds = [round(i * trials / parts) for i in range(parts + 1)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def _on_cluster(config: StudyConfig, model: torch.nn.Module, attrs: dict, scheduler: str,
                progress: bool) -> xr.Dataset:
    """The trials split over the workers of the Dask cluster at ``scheduler``, joined in order."""
    from tqdm.auto import tqdm

    from studies.sweeps.pool import DaskPool
    from studies.sweeps.run import model_blob

    pool = DaskPool(scheduler)
    futures: list = []
    try:
        shared = pool.share(model_blob(model))
        futures = [pool.submit(_run_part, config, shared, part, attrs, key=f"xbar-study-trials-{part.start}")
                   for part in split_trials(config.trials, pool.workers())]
        results, left = {}, set(futures)
        with tqdm(total=config.trials, desc=f"trials on {pool.describe()}", unit="trial",
                  disable=not progress, leave=False) as bar:
            while left:
                done, left = pool.wait_some(left, timeout=1.0)
                for f in done:
                    results[f] = f.result()  # a worker's error is raised here
                    bar.update(results[f].sizes["trial"])
        parts = [results[f] for f in futures]
    except BaseException:
        pool.close(cancel=True, futures=futures)
        raise
    pool.close()
    return join_trials(parts)


def write_results(ds: xr.Dataset, out: Path) -> tuple[Path, Path]:
    """netCDF and PNG into ``out`` (see :func:`studies.results.write_files`)."""
    nc, png = write_files(out, {RESULTS_FILE: ds.to_netcdf, FIGURE_FILE: lambda p: robustness_figure(ds, p)})
    return nc, png
