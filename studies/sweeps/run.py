"""Device-parameter sweeps: every point of a grid, Monte Carlo over programmings, on a local
pool or a Dask cluster, into a resumable Zarr store (:mod:`studies.sweeps.store`).

One point is one task (:func:`run_point`): program ``trials`` copies of the network from
the point's seed, simulate them timestep by timestep against the ideal network, and, with a
stopping rule (``ci_width``), add blocks of ``trials`` more until the 95% confidence
interval of the final accuracy is at most ``ci_width`` percentage points wide (or the
store's trial capacity is full).  Block ``b`` is programmed from ``block_seed(point seed,
b)``, so a point's first trials are the same whether or not more are added.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import io
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

import xbar
from studies.sweeps import store
from studies.ann_to_snn import ConversionConfig, load_or_convert
from studies.data import calibrated, load_dataset, test_batches
from studies.stats import t_quantile
from studies.sweeps.config import Point, SweepConfig, block_seed, build_recipe, build_spec
from studies.train import TrainConfig, load_or_train
from xbar.network import crossbar_layers


@dataclass(frozen=True)
class PointTask:
    """Everything a worker needs for one point, but the model (sent once per model)."""

    index: tuple[int, ...]
    seed: int
    spec: xbar.Spec
    timesteps: int
    trials: int
    capacity: int
    max_timesteps: int
    ci_width: float | None
    dataset: str
    n_test: int | None
    batch_size: int
    model_key: str


def tasks(config: SweepConfig, points: list[Point]) -> list[PointTask]:
    s, d = config.sweep, config.data
    return [PointTask(p.index, p.seed, p.spec, p.timesteps, s["trials"], config.trial_capacity,
                      config.max_timesteps, s["ci_width"], d["dataset"], d["n_test"], d["batch_size"],
                      p.model_key) for p in points]


# --- in the worker ------------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def _batches(dataset: str, n_test: int | None, batch_size: int) -> list[tuple]:
    return test_batches(load_dataset(dataset), n_test, batch_size)


def _calibrated(hw, model, dataset: str, timesteps: int):
    return calibrated(hw, model, load_dataset(dataset), timesteps)


@functools.lru_cache(maxsize=4)
def _model(blob_hash: str, blob: bytes) -> nn.Module:
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False)


def ci_width_points(acc: np.ndarray, n_images: int) -> float:
    """Full width of the 95% Student-t confidence interval of the mean of ``acc`` (a
    fraction per trial, over ``n_images`` test images), in percentage points; inf with
    fewer than two trials.  An accuracy moves in steps of one image, so a spread below one
    step is not resolved: the standard deviation counts as at least that of a uniform
    rounding to the step, ``1 / (n_images sqrt(12))``.  Trials that agree exactly (a
    calibrated chip on an easy set) then give an interval of the resolution, never the
    zero width that would meet any target."""
    n = len(acc)
    if n < 2:
        return float("inf")
    sd = max(float(np.std(acc, ddof=1)), 1 / (n_images * 12**0.5))
    return 200 * float(t_quantile(n)) * sd / n**0.5


@functools.lru_cache(maxsize=1)
def _undo_fixed_malloc_trim() -> bool:
    """Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which fixes glibc's
    mmap threshold at 128 KiB: every tensor above that is mapped and unmapped anew, and a
    point ran 2.3x slower (benchmarks/bench_sweep.py).  Give such a worker glibc's dynamic
    ceilings back (mmap threshold 32 MiB, trim threshold 64 MiB).  Other processes untouched."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 64 << 20))


# Names a file: every point but the grid's first waits until it exists (the tests use it to
# interrupt a sweep with one point done and the others running, whatever the speed).
HOLD_ENV = "XBAR_SWEEP_HOLD_UNTIL"


def _hold(task: PointTask) -> None:
    gate = os.environ.get(HOLD_ENV)
    if gate and any(task.index):
        while not os.path.exists(gate):
            time.sleep(0.05)


def run_point(task: PointTask, model_blob: bytes) -> dict[str, np.ndarray]:
    """One point's variables (:mod:`studies.sweeps.store`), padded with NaN to the store's
    trial capacity and timesteps.  One torch thread: the pool runs points in parallel."""
    _hold(task)
    start = time.perf_counter()
    _undo_fixed_malloc_trim()
    torch.set_num_threads(1)
    model = _model(hashlib.sha256(model_blob).hexdigest(), model_blob)
    batches = _batches(task.dataset, task.n_test, task.batch_size)
    n_images = sum(len(y) for _, y in batches)
    blocks = []
    while True:
        hw = xbar.convert(model, task.spec, seed=block_seed(task.seed, len(blocks)), trials=task.trials)
        _calibrated(hw, model, task.dataset, task.timesteps)
        with torch.no_grad():
            blocks.append(xbar.simulate(hw, model, batches, task.timesteps, progress=False))
        n = task.trials * len(blocks)
        if task.ci_width is None or n + task.trials > task.capacity:
            break
        final = np.concatenate([b.accuracy.values[:, -1] for b in blocks])
        if ci_width_points(final, n_images) <= task.ci_width:
            break
    return _pad(blocks, task, time.perf_counter() - start)


def _padded(values: np.ndarray, leading: tuple[int, ...]) -> np.ndarray:
    """``values`` in a NaN array whose leading dims are ``leading`` (trials, timesteps)."""
    full = np.full(leading + values.shape[len(leading):], np.nan)
    full[tuple(slice(0, n) for n in values.shape[: len(leading)])] = values
    return full


def _pad(blocks, task: PointTask, seconds: float) -> dict[str, np.ndarray]:
    k, t = task.capacity, task.max_timesteps
    out = {name: _padded(np.concatenate([b[name].values for b in blocks]), (k, t))
           for name in ("accuracy", *store.PER_LAYER)}
    out.update({name: _padded(blocks[0][name].values, (t,)) for name in ("accuracy_ideal", "spike_rate_ideal")})
    out["trials_done"] = np.float64(task.trials * len(blocks))
    out["seconds"] = np.float64(seconds)
    return out


# --- in the main process ------------------------------------------------------------------

def model_blob(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(model, buf)
    return buf.getvalue()


def load_models(config: SweepConfig, progress: bool = True) -> tuple[dict[str, nn.Module], dict]:
    """Every model the grid needs (trained or from the cache, or read from the model file),
    and their ideal test accuracies by model key."""
    recipes = config.model_recipes()
    data = load_dataset(config.data["dataset"])
    models, info = {}, {}
    for key, section in recipes.items():
        recipe = build_recipe(section)
        if recipe is None:
            model = torch.load(section["file"], map_location="cpu", weights_only=False)
            if not isinstance(model, nn.Module):
                raise ValueError(f"model.file = {section['file']!r} is not allowed: it holds a "
                                 f"{type(model).__name__}, not a torch.nn.Module saved with torch.save")
            models[key], info[key] = model.eval(), {}
        elif isinstance(recipe, TrainConfig):
            models[key], meta = load_or_train(recipe, progress=progress, data=data)
            info[key] = {"test_accuracy": meta["test_accuracy"]}
        else:
            assert isinstance(recipe, ConversionConfig)
            models[key], _, meta = load_or_convert(recipe, timesteps=None, progress=progress, data=data)
            info[key] = {"ann_test_accuracy": meta["ann_test_accuracy"]}
    return models, info


def layer_names(models: dict[str, nn.Module]) -> list[str]:
    names = {tuple(n for n, _ in crossbar_layers(m)) for m in models.values()}
    if len(names) != 1:
        raise ValueError(f"the models of one sweep must have the same crossbar layers, got {sorted(names)}")
    return list(names.pop())


def check_store(path: Path, config: SweepConfig) -> None:
    """Before any work: a path that is something else, or a store of another sweep, is refused."""
    path = Path(path)
    if not path.exists():
        return
    if not store.is_store(path):
        raise store.StoreMismatch(f"store = {str(path)!r} is not allowed: it exists and is not an "
                                  "xbar sweep store")
    store.check_matches(path, config)


@dataclass
class SweepRun:
    """What one run of a sweep did."""

    points: int
    already_done: int
    computed: int
    seconds: float
    where: str


def run_sweep(config: SweepConfig, path: Path, pool_factory: Callable, progress: bool = True,
              log: Callable[[str], None] = print) -> SweepRun:
    """Compute every point of ``config`` missing from the store at ``path`` (made if absent).
    ``pool_factory()`` gives a :mod:`studies.sweeps.pool` pool.  Interrupted (Ctrl-C, a lost
    process), the store keeps every finished point and a new run computes the rest."""
    path = Path(path)
    start = time.perf_counter()
    check_store(path, config)
    if store.is_store(path) and store.done_mask(path).all():
        n = int(np.prod(config.shape))
        return SweepRun(n, n, 0, time.perf_counter() - start, "nothing to compute")
    pool = pool_factory()
    futures = {}
    try:
        models, info = load_models(config, progress)
        names = layer_names(models)
        if not store.is_store(path):
            attrs = {"model_info": json.dumps(info), **build_spec(config.device, config.spec).to_attrs()}
            store.create(path, config, names, attrs)
        points = config.points()
        done = store.done_mask(path)
        todo = [t for t in tasks(config, points) if not done[t.index]]
        n_done = len(points) - len(todo)
        where = pool.describe()
        if todo:
            log(f"{len(todo)} of {len(points)} points to compute ({n_done} in the store) on {where}")
            blobs = {key: pool.share(model_blob(models[key])) for key in {t.model_key for t in todo}}
            futures = {pool.submit(run_point, t, blobs[t.model_key], key=_task_key(t)): t for t in todo}
            _collect(config, pool, futures, store.open_group(path), len(points), n_done, progress)
    except BaseException:
        pool.close(cancel=True, futures=list(futures))
        raise
    pool.close()
    return SweepRun(len(points), n_done, len(todo), time.perf_counter() - start, where)


def _task_key(task: PointTask) -> str:
    return f"xbar-point-{'-'.join(map(str, task.index))}-{task.seed}"


# How often the main process looks for a Ctrl-C while it waits for points (seconds).
POLL_SECONDS = 0.2


@contextlib.contextmanager
def _stop_on_signals():
    """An event that Ctrl-C (SIGINT) or SIGTERM sets, in place of raising wherever the main
    thread happens to be: :func:`_collect` checks it between points, so a point being written
    is written whole and the interrupt is never lost inside a library's wait.  Outside the
    main thread (no signals there) the event is never set."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, lambda signum, frame: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _collect(config: SweepConfig, pool, futures: dict, group, total: int, n_done: int,
             progress: bool) -> None:
    """Write each point as it finishes, with a progress bar of points done and left; raises
    KeyboardInterrupt between points after a Ctrl-C or SIGTERM."""
    left = len(futures)
    pending = set(futures)
    bar = tqdm(total=total, initial=n_done, desc="sweep", unit="point", disable=not progress,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} points done"
                          "{postfix} [{elapsed} elapsed, {remaining} left, {rate_fmt}]",
               postfix=f"{left} left", smoothing=0.1)
    with bar, _stop_on_signals() as stop:
        while pending:
            if stop.is_set():
                raise KeyboardInterrupt
            done, pending = pool.wait_some(pending, POLL_SECONDS)
            for future in done:
                task = futures[future]
                try:
                    result = future.result()
                except Exception as err:
                    if stop.is_set():  # a signal to the whole process group also stopped the workers
                        raise KeyboardInterrupt from None
                    coords = {a.key: a.values[i] for a, i in zip(config.axes, task.index)}
                    raise RuntimeError(f"point {coords} failed: {type(err).__name__}: {err}") from err
                store.write_point(group, task.index, result)
                left -= 1
                bar.set_postfix_str(f"{left} left", refresh=False)
                bar.update()
