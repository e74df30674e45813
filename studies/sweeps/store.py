"""The Zarr store of a sweep: made once, written one point at a time, reopened as xarray.

Layout (Zarr format 2, consolidated metadata): one dimension per axis, then ``trial``,
``timestep`` and ``layer``; every variable is chunked one point per chunk, so that a point
is written by itself.  Each chunk file is written atomically (zarr >= 3.1 writes to a
temporary name and renames), and a point's ``done`` flag is written only after all its
variables: a point cut off half-way has ``done == 0`` and is computed again, overwriting
what it had written.  The store is made in a temporary folder and renamed into place, so
a store either exists whole or not at all.

Variables (``A`` stands for the axis dims):

``accuracy``          (A, trial, timestep) test accuracy reading the output after t steps
``accuracy_ideal``    (A, timestep) the same for the ideal network
``read_error``        (A, trial, timestep, layer) relative RMS error of one read
``layer_error``       (A, trial, timestep, layer) relative RMS error against the ideal network
``membrane_error``    (A, trial, timestep, layer) RMS membrane divergence (threshold units)
``spike_mismatch``    (A, trial, timestep, layer) fraction of spikes that differ
``spike_rate``        (A, trial, timestep, layer) spikes per neuron per step (analog)
``spike_rate_ideal``  (A, timestep, layer)
``trials_done``       (A) Monte Carlo trials computed at the point (the rest of ``trial`` is NaN)
``seconds``           (A) wall time of the point in its worker: the only variable that
                      differs between two runs of the same sweep
``done``              (A) 1 once every variable of the point is written

Values past a point's ``simulation.timesteps`` and past its ``trials_done`` are NaN.
``attrs["sweep_config"]`` holds the resolved sweep file (JSON); ``attrs["axes"]`` the axes.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from studies.sweeps.config import SweepConfig

STORE_FORMAT = "xbar-sweep-1"
PER_LAYER = ("read_error", "layer_error", "membrane_error", "spike_mismatch", "spike_rate")
ATTRS = {
    "accuracy": ("test accuracy reading the output after t steps (analog)", "1"),
    "accuracy_ideal": ("test accuracy reading the output after t steps (ideal)", "1"),
    "read_error": ("error of one read (relative RMS, same input)", "1"),
    "layer_error": ("layer output error against the ideal network (relative RMS)", "1"),
    "membrane_error": ("RMS membrane-potential divergence", "threshold"),
    "spike_mismatch": ("fraction of neurons whose spike differs", "1"),
    "spike_rate": ("spikes per neuron per timestep (analog)", "1"),
    "spike_rate_ideal": ("spikes per neuron per timestep (ideal)", "1"),
    "trials_done": ("Monte Carlo trials computed at the point", "1"),
    "seconds": ("wall time of the point in its worker", "s"),
    "done": ("1 once the point is written in full", "1"),
}


class StoreMismatch(ValueError):
    """A store that belongs to another sweep; the message lists the differences."""


def _variables(config: SweepConfig, n_layers: int) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    axes = tuple(a.dim for a in config.axes)
    k, t = config.trial_capacity, config.max_timesteps
    out = {"accuracy": (("trial", "timestep"), (k, t)), "accuracy_ideal": (("timestep",), (t,))}
    out.update({name: (("trial", "timestep", "layer"), (k, t, n_layers)) for name in PER_LAYER})
    out.update({"spike_rate_ideal": (("timestep", "layer"), (t, n_layers)),
                "trials_done": ((), ()), "seconds": ((), ()), "done": ((), ())})
    return {name: (axes + dims, shape) for name, (dims, shape) in out.items()}


def template(config: SweepConfig, layer_names: list[str], attrs: dict) -> xr.Dataset:
    """The empty dataset of a sweep (lazy dask arrays: nothing is computed or written)."""
    point = config.shape
    data_vars = {}
    for name, (dims, shape) in _variables(config, len(layer_names)).items():
        dtype = "uint8" if name == "done" else "float64"
        fill = 0 if name == "done" else np.nan
        chunks = (1,) * len(point) + shape
        arr = da.full(point + shape, fill, dtype=dtype, chunks=chunks)
        long_name, units = ATTRS[name]
        data_vars[name] = (dims, arr, {"long_name": long_name, "units": units})
    coords = {a.dim: (a.dim, a.labels(), {"sweep_key": a.key}) for a in config.axes}
    coords.update({"trial": np.arange(config.trial_capacity),
                   "timestep": np.arange(1, config.max_timesteps + 1),
                   "layer": np.arange(len(layer_names)), "layer_name": ("layer", list(layer_names))})
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update({
        "store_format": STORE_FORMAT,
        "sweep_config": json.dumps(config.as_dict(), sort_keys=True),
        "axes": json.dumps([{"key": a.key, "dim": a.dim, "values": list(a.values)} for a in config.axes]),
        "readout": "argmax of the summed outputs of steps 1..t",
        **attrs,
    })
    return ds


def create(path: Path, config: SweepConfig, layer_names: list[str], attrs: dict) -> None:
    """Make the store at ``path`` (metadata only), in a temporary folder renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        template(config, layer_names, attrs).to_zarr(tmp, compute=False, mode="w-", zarr_format=2,
                                                     consolidated=True)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def is_store(path: Path) -> bool:
    return (Path(path) / ".zattrs").is_file()


def stored_config(path: Path) -> dict:
    group = zarr.open_group(str(path), mode="r")
    if group.attrs.get("store_format") != STORE_FORMAT:
        raise StoreMismatch(f"store = {str(path)!r} is not allowed: it is not an xbar sweep store")
    return json.loads(group.attrs["sweep_config"])


def check_matches(path: Path, config: SweepConfig) -> None:
    """Refuse a store made by another sweep, listing every difference."""
    stored, now = _flat(stored_config(path)), _flat(json.loads(json.dumps(config.as_dict())))
    diffs = [f"{k}: stored {stored.get(k, '(absent)')!r}, now {now.get(k, '(absent)')!r}"
             for k in sorted(set(stored) | set(now)) if stored.get(k, "(absent)") != now.get(k, "(absent)")]
    if diffs:
        raise StoreMismatch(f"store = {str(path)!r} is not allowed: it belongs to a different sweep "
                            f"(resume with the sweep file it was made with, or give a new --store). "
                            f"Differences: " + "; ".join(diffs))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def done_mask(path: Path) -> np.ndarray:
    """Boolean array over the axes: the points written in full."""
    return zarr.open_group(str(path), mode="r")["done"][...] == 1


def write_point(group: zarr.Group, index: tuple[int, ...], result: dict[str, np.ndarray]) -> None:
    """Every variable of one point, then its ``done`` flag (last: see the module docstring)."""
    for name, values in result.items():
        group[name][index] = values
    group["done"][index] = 1


def open_group(path: Path) -> zarr.Group:
    return zarr.open_group(str(path), mode="r+", zarr_format=2)


def open_sweep(path: Path | str) -> xr.Dataset:
    """The sweep's dataset, loaded (points not yet done are NaN, with ``done == 0``)."""
    path = Path(path)
    if not is_store(path):
        raise FileNotFoundError(f"store = {str(path)!r} is not an xbar sweep store (no such store)")
    stored_config(path)
    with xr.open_zarr(path, consolidated=True) as ds:
        return ds.load()
