"""Sweep files: a TOML file that names a model, a dataset, a base hardware spec and the axes
to sweep; read, checked in full and resolved here before any work starts.

A sweep file (``xbar sweep --example`` prints an annotated one)::

    [sweep]            seed, trials; optional ci_width (percentage points), max_trials
    [data]             dataset (an embedded name or a folder), n_test, batch_size
    [model]            method = "surrogate" (TrainConfig fields) or "converted"
                       (ConversionConfig fields), or file = a whole nn.Module saved with
                       torch.save
    [device]           preset (a name in devices.presets), then any DeviceModel field
    [spec]             any xbar.Spec field but device; r_wire sets r_wire_row and r_wire_col;
                       adc_bits = 0 / dac_bits = 0 mean an ideal converter, cell_bits = 0
                       one pair per weight (no bit slicing),
                       calibration = "none" the raw hardware
    [simulation]       timesteps
    [axes]             "section.field" = [values, ...], e.g. "device.read_sigma_rel" = [0, 0.02]

Every point of the grid (the product of the axes) gets its own seed from the sweep seed and
the point's coordinates (:func:`point_seed`), so its result does not depend on which worker
runs it or when.  The resolved configuration (every default filled in, :meth:`SweepConfig.
as_dict`) is what a store records and what a resumed sweep must match.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sys
import zlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

import xbar
from devices import DeviceModel, presets
from studies.ann_to_snn import ConversionConfig, FineTune
from studies.data import EMBEDDED, check_dataset
from studies.train import TrainConfig, config_dict
from xbar.aware import INGREDIENTS, is_ingredient_list

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

METHODS = {"surrogate": TrainConfig, "converted": ConversionConfig}
SECTIONS = ("sweep", "data", "model", "device", "spec", "simulation", "axes")
SWEEP_FIELDS = {"seed": 0, "trials": 8, "ci_width": None, "max_trials": None}
DATA_FIELDS = {"dataset": "mnist5k", "n_test": None, "batch_size": 500}
SIMULATION_FIELDS = {"timesteps": 16}
DEVICE_FIELDS = ["preset"] + [f.name for f in fields(DeviceModel) if f.name not in ("name", "source")]
SPEC_FIELDS = [f.name for f in fields(xbar.Spec) if f.name != "device"] + ["r_wire"]
# Optional integer fields where a sweep file writes 0 for None (ideal converter).
ZERO_IS_NONE = ("adc_bits", "dac_bits", "adc_percentile", "cell_bits")
# Hardware-aware training in a sweep: ``hardware_aware = true`` trains each point's model
# on that point's crossbars (a converted network: fine-tuned there, ``FineTune``'s
# defaults); ``aware`` lists the ingredients it sees.
AWARE_FIELDS = {"hardware_aware": False, "aware": list(INGREDIENTS)}
# Model fields that fix the network's shape or origin: one sweep per value.
MODEL_NOT_SWEEPABLE = ("method", "arch", "file", "dataset")
# Optional model fields where a sweep file writes 0 for None (no weight clipping).
MODEL_ZERO_IS_NONE = ("weight_clip",)


class SweepFileError(ValueError):
    """A sweep file that cannot run; the message names the key and what is allowed."""


def _fail(key: str, value, allowed: str) -> None:
    raise SweepFileError(f"{key} = {value!r} is not allowed: {allowed}")


@dataclass(frozen=True)
class Axis:
    """One swept field: ``key`` is ``"section.field"``, ``dim`` the dataset dimension."""

    key: str
    values: tuple
    dim: str

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def field(self) -> str:
        return self.key.split(".", 1)[1]

    def labels(self) -> list:
        """Coordinate values: numbers as they are, lists as ``"32x32"`` or JSON."""
        return [_label(v) for v in self.values]


def _label(value):
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(x, int) for x in value):
            return "x".join(str(x) for x in value)
        return json.dumps(list(value))
    return value


@dataclass(frozen=True)
class Point:
    """One point of the grid: its position (one index per axis) and settings."""

    index: tuple[int, ...]
    coords: dict
    seed: int
    spec: xbar.Spec
    timesteps: int
    model_key: str


@dataclass(frozen=True)
class SweepConfig:
    """A resolved, checked sweep file (see the module docstring)."""

    path: str
    sweep: dict
    data: dict
    model: dict
    device: dict
    spec: dict
    simulation: dict
    axes: tuple[Axis, ...]

    @property
    def trial_capacity(self) -> int:
        """Trials a point can hold: ``max_trials`` with a stopping rule, else ``trials``."""
        return self.sweep["max_trials"] if self.sweep["ci_width"] else self.sweep["trials"]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a.values) for a in self.axes)

    @property
    def max_timesteps(self) -> int:
        values = [self.simulation["timesteps"]]
        for a in self.axes:
            if a.key == "simulation.timesteps":
                values = list(a.values)
        return max(values)

    def as_dict(self) -> dict:
        """Everything that decides the numbers, JSON-ready: what a store records."""
        names = {self.device["preset"]}
        for a in self.axes:
            if a.key == "device.preset":
                names |= set(a.values)
        return {"sweep": self.sweep, "data": self.data, "model": self.model, "device": self.device,
                "spec": self.spec, "simulation": self.simulation,
                "axes": {a.key: list(a.values) for a in self.axes},
                "presets": {n: _jsonable(asdict(presets[n])) for n in sorted(names)}}

    def settings(self, coords: dict[str, Any]) -> dict[str, dict]:
        """The sections with one point's axis values put in."""
        out = {s: dict(getattr(self, s)) for s in ("model", "device", "spec", "simulation")}
        for key, value in coords.items():
            section, name = key.split(".", 1)
            if key == "spec.r_wire":
                out["spec"].pop("r_wire_row", None), out["spec"].pop("r_wire_col", None)
            elif name in ("r_wire_row", "r_wire_col") and "r_wire" in out["spec"]:
                wire = out["spec"].pop("r_wire")
                out["spec"].update(r_wire_row=wire, r_wire_col=wire)
            out[section][name] = value
        if out["model"].get("hardware_aware"):  # trained on this point's crossbars
            out["model"]["hardware"] = {"device": dict(out["device"]), "spec": dict(out["spec"])}
        return out

    def points(self) -> list[Point]:
        """Every point of the grid, in C order of the axes.  Each point's spec and model recipe
        are built here, so a value out of its field's range, alone or only together with
        another axis, is refused naming the point (:class:`SweepFileError`)."""
        result = []
        for index in itertools.product(*(range(len(a.values)) for a in self.axes)):
            coords = {a.key: a.values[i] for a, i in zip(self.axes, index)}
            s = self.settings(coords)
            where = "axes at " + ", ".join(f"{k} = {v!r}" for k, v in coords.items())
            spec = _check_point(where, lambda: build_spec(s["device"], s["spec"]))
            _check_int(f"{where}: simulation.timesteps", s["simulation"]["timesteps"], 1)
            _check_point(where, lambda: build_recipe(s["model"]))
            result.append(Point(index=tuple(index), coords=coords, seed=point_seed(self.sweep["seed"], coords),
                                spec=spec, timesteps=s["simulation"]["timesteps"],
                                model_key=model_key(s["model"])))
        return result

    def model_recipes(self) -> dict[str, dict]:
        """``{model_key: model section}`` of every distinct model the grid needs (a
        hardware-aware model is one per hardware it is trained on)."""
        out = {}
        for index in itertools.product(*(range(len(a.values)) for a in self.axes)):
            s = self.settings({a.key: a.values[i] for a, i in zip(self.axes, index)})
            out.setdefault(model_key(s["model"]), s["model"])
        return out


def _jsonable(d: dict) -> dict:
    return _lists({k: v for k, v in d.items() if k != "source"})


def _lists(values: dict) -> dict:
    """Tuples as lists: the form TOML reads and JSON writes."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _tuples(values: dict) -> dict:
    """Lists as tuples: the form the config dataclasses take."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def changes_the_draws(axis: str) -> bool:
    """Whether an axis changes what is drawn: the tiles' shapes (``spec.tile``,
    ``spec.mapping``) or the network (``model.*``).  Every other axis (ADC and DAC bits,
    wires, device parameters, timesteps, ...) only changes what is done with the same draws."""
    return axis in ("spec.tile", "spec.mapping") or axis.startswith("model.")


def point_seed(seed: int, coords: dict[str, Any]) -> int:
    """A point's seed from the sweep seed and its coordinates (not its position or the
    order points run in): SeedSequence of the seed and a CRC-32 of each ``key=value`` of
    the axes that change the draws (:func:`changes_the_draws`).  Points that differ only
    in other axes share their seed, so their programmings and read noise are the same
    random numbers (common random numbers): a difference along such an axis is paired,
    free of programming-to-programming variance."""
    keys = [zlib.crc32(f"{k}={json.dumps(v)}".encode()) for k, v in coords.items() if changes_the_draws(k)]
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def block_seed(seed: int, block: int) -> int:
    """The programming seed of the ``block``-th batch of trials of a point."""
    return int(np.random.SeedSequence([seed, block]).generate_state(1, dtype=np.uint64)[0] >> 1)


def model_key(model: dict) -> str:
    return hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()[:16]


def build_device(device: dict) -> DeviceModel:
    return presets[device["preset"]].replace(**_tuples({k: v for k, v in device.items() if k != "preset"}))


def build_spec(device: dict, spec: dict) -> xbar.Spec:
    s = {k: v for k, v in spec.items() if k != "r_wire"}
    if "r_wire" in spec:
        s["r_wire_row"] = s["r_wire_col"] = spec["r_wire"]
    for name in ZERO_IS_NONE:
        if s.get(name) == 0:
            s[name] = None
    for name in ("calibration", "drift_compensation"):
        if s.get(name) == "none":
            s[name] = None
    s["tile"] = tuple(s["tile"]) if isinstance(s.get("tile"), list) else s.get("tile")
    return xbar.Spec(device=build_device(device), **s)


def build_recipe(model: dict):
    """The TrainConfig or ConversionConfig of a model section (None for a model file); a
    hardware-aware one trains on the crossbars of the point (``model["hardware"]``)."""
    if "file" in model:
        return None
    fields_ = _model_nones({k: v for k, v in model.items()
                            if k != "method" and k not in AWARE_FIELDS and k != "hardware"})
    if model.get("hardware_aware"):
        hw = model["hardware"]
        options = {"hardware": build_spec(hw["device"], hw["spec"]),
                   "aware": xbar.Aware.only(*model.get("aware", INGREDIENTS))}
        if model["method"] == "surrogate":
            fields_.update(options)
        else:  # a converted network: fine-tuned on the point's crossbars (FineTune's defaults)
            fields_["fine_tune"] = FineTune(**options)
    return METHODS[model["method"]](**fields_)


# --- reading and checking -----------------------------------------------------------------

def read_sweep_file(path: Path | str, overrides: dict | None = None) -> SweepConfig:
    """Read, check and resolve a sweep file.  ``overrides``: ``{"sweep.ci_width": 1.0, ...}``
    from the command line, applied before the checks.  Raises :class:`SweepFileError`
    naming the key, the value and what is allowed."""
    path = Path(path)
    if not path.is_file():
        raise SweepFileError(f"sweep file = {str(path)!r} is not allowed: no such file")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SweepFileError(f"sweep file {str(path)!r} is not valid TOML: {err}") from None
    for key in raw:
        if key not in SECTIONS or not isinstance(raw[key], dict):
            _fail(key, raw[key] if not isinstance(raw[key], dict) else "[table]",
                  f"the sections of a sweep file are {list(SECTIONS)}")
    for key, value in (overrides or {}).items():
        section, name = key.split(".", 1)
        raw.setdefault(section, {})[name] = value
    base = path.resolve().parent
    sweep = _section(raw, "sweep", SWEEP_FIELDS)
    data = _section(raw, "data", DATA_FIELDS)
    simulation = _section(raw, "simulation", SIMULATION_FIELDS)
    _check_sweep(sweep)
    _check_data(data, base)
    _check_int("simulation.timesteps", simulation["timesteps"], 1)
    model = _model_section(raw.get("model", {}), data["dataset"], base)
    device = _device_section(raw.get("device", {}))
    spec = _spec_section(raw.get("spec", {}))
    _check_point("base settings", lambda: build_spec(device, spec))
    axes = _axes(raw.get("axes", {}), model)
    _check_aware(model, axes)
    config = SweepConfig(str(path), sweep, data, model, device, spec, simulation, axes)
    config.points()  # every point's spec and recipe, checked before any work
    return config


def _section(raw: dict, name: str, defaults: dict) -> dict:
    given = raw.get(name, {})
    for key in given:
        if key not in defaults:
            _fail(f"{name}.{key}", given[key], f"the fields of [{name}] are {list(defaults)}")
    return {**defaults, **given}


def _check_int(key: str, value, low: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        _fail(key, value, f"must be an integer >= {low}")


def _check_sweep(s: dict) -> None:
    _check_int("sweep.seed", s["seed"], 0)
    _check_int("sweep.trials", s["trials"], 1)
    if s["ci_width"] is None or s["ci_width"] == 0:
        s["ci_width"] = None
        if s["max_trials"] is not None:
            _fail("sweep.max_trials", s["max_trials"], "needs sweep.ci_width (the stopping rule)")
        return
    ci = s["ci_width"]
    if not isinstance(ci, (int, float)) or isinstance(ci, bool) or not (0 < ci <= 100) or math.isnan(ci):
        _fail("sweep.ci_width", ci, "must be a width in percentage points in (0, 100], or 0 for none")
    s["ci_width"] = float(ci)
    if s["trials"] < 2:
        _fail("sweep.trials", s["trials"], "must be >= 2 with sweep.ci_width (a confidence interval "
              "needs two trials)")
    if s["max_trials"] is None:
        s["max_trials"] = 8 * s["trials"]
    _check_int("sweep.max_trials", s["max_trials"], s["trials"])
    if s["max_trials"] % s["trials"]:
        _fail("sweep.max_trials", s["max_trials"],
              f"must be a multiple of sweep.trials = {s['trials']} (trials are added in blocks of that many)")


def _check_data(d: dict, base: Path) -> None:
    name = d["dataset"]
    if not isinstance(name, str):
        _fail("data.dataset", name, f"must be one of {list(EMBEDDED)} or a folder")
    if name not in EMBEDDED:
        folder = Path(name) if Path(name).is_absolute() else base / name
        d["dataset"] = str(folder.resolve())
    try:
        check_dataset("data", d["dataset"])
    except ValueError as err:
        raise SweepFileError(str(err)) from None
    _check_int("data.n_test", d["n_test"], 1, optional=True)
    _check_int("data.batch_size", d["batch_size"], 1)


def _model_section(given: dict, dataset: str, base: Path) -> dict:
    if "file" in given:
        extra = [k for k in given if k != "file"]
        if extra:
            _fail(f"model.{extra[0]}", given[extra[0]], "a model file takes no recipe fields: "
                  "give either model.file or a training recipe")
        file = Path(given["file"]) if Path(str(given["file"])).is_absolute() else base / str(given["file"])
        if not file.is_file():
            _fail("model.file", given["file"], "must be an existing file: a whole torch.nn.Module "
                  "saved with torch.save(model, path)")
        return {"file": str(file.resolve()), "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}
    method = given.get("method", "surrogate")
    if method not in METHODS:
        _fail("model.method", method, f"must be one of {list(METHODS)} (or give model.file)")
    cls = METHODS[method]
    allowed = _recipe_fields(method) + list(AWARE_FIELDS)
    for key in given:
        if key not in allowed and key != "method":
            _fail(f"model.{key}", given[key], f"the fields of a {method} recipe are "
                  f"{['method', *allowed]} (or give only model.file)")
    aware = {k: v for k, v in given.items() if k in AWARE_FIELDS}
    if "hardware_aware" in aware and not isinstance(aware["hardware_aware"], bool):
        _fail("model.hardware_aware", aware["hardware_aware"], "must be true or false")
    if "aware" in aware:
        _check_ingredients("model.aware", aware["aware"])
    recipe = _model_nones({k: v for k, v in given.items() if k != "method" and k not in AWARE_FIELDS})
    config = _check_point("model", lambda: cls(dataset=dataset, **_floats(cls, recipe)))
    return {"method": method, **config_dict(config), **aware}


def _model_nones(recipe: dict) -> dict:
    """A model recipe's fields written 0 for None (:data:`MODEL_ZERO_IS_NONE`), as None."""
    return {k: None if k in MODEL_ZERO_IS_NONE and v == 0 and not isinstance(v, bool) else v
            for k, v in recipe.items()}


def _recipe_fields(method: str) -> list[str]:
    """The fields a sweep file can give (and sweep) for a model of ``method``."""
    return [f.name for f in fields(METHODS[method]) if f.name not in ("dataset", "hardware", "aware", "fine_tune")]


def _check_ingredients(key: str, value) -> None:
    if not is_ingredient_list(value):
        _fail(key, value, f"must list ingredients, each once, among {list(INGREDIENTS)} ([] for none)")


def _check_aware(model: dict, axes) -> None:
    """``aware``, in [model] or as an axis, needs ``hardware_aware = true`` somewhere (else
    it would change nothing); as an axis, each value is a list of ingredients."""
    for a in axes:
        if a.key == "model.aware":
            for value in a.values:
                _check_ingredients("axes.model.aware", value)
    given = "aware" in model or any(a.key == "model.aware" for a in axes)
    trains_aware = bool(model.get("hardware_aware")) or any(
        a.key == "model.hardware_aware" and True in a.values for a in axes)
    if given and not trains_aware:
        _fail("model.aware", model.get("aware", "(an axis)"),
              "an option of hardware-aware training: set model.hardware_aware = true (or sweep it)")


def _floats(cls, values: dict) -> dict:
    """TOML integers given for float fields, as floats (so 0 and 0.0 are one value)."""
    defaults = {f.name: f.default for f in fields(cls)}
    return {k: float(v) if isinstance(defaults.get(k), float) and isinstance(v, int)
            and not isinstance(v, bool) else v for k, v in values.items()}


def _device_section(given: dict) -> dict:
    for key in given:
        if key not in DEVICE_FIELDS:
            _fail(f"device.{key}", given[key], f"the fields of [device] are {DEVICE_FIELDS}")
    preset = given.get("preset", "pcm")
    if preset not in presets:
        _fail("device.preset", preset, f"must be one of {sorted(presets)}")
    overrides = {k: v for k, v in given.items() if k != "preset"}
    overrides = _floats(DeviceModel, overrides)
    _check_point("device", lambda: presets[preset].replace(**_tuples(overrides)))
    return {"preset": preset, **overrides}



def _spec_section(given: dict) -> dict:
    for key in given:
        if key not in SPEC_FIELDS:
            _fail(f"spec.{key}", given[key], f"the fields of [spec] are {SPEC_FIELDS}")
    if "r_wire" in given and ({"r_wire_row", "r_wire_col"} & set(given)):
        _fail("spec.r_wire", given["r_wire"], "sets r_wire_row and r_wire_col both: give either "
              "r_wire or those two")
    defaults = {f.name: f.default for f in fields(xbar.Spec) if f.name != "device"}
    out = _lists(defaults)
    out.update(_floats(xbar.Spec, given))
    if "r_wire" in given:
        out["r_wire"] = _floats(xbar.Spec, {"r_wire_row": given["r_wire"]})["r_wire_row"]
        out.pop("r_wire_row"), out.pop("r_wire_col")
    for name in ZERO_IS_NONE:
        out[name] = 0 if out[name] is None else out[name]
    return out


def _axes(given: dict, model: dict) -> tuple[Axis, ...]:
    if not given:
        raise SweepFileError("axes: a sweep file needs at least one axis, e.g. "
                             "[axes] \"device.read_sigma_rel\" = [0.0, 0.02, 0.05]")
    allowed = {"device": DEVICE_FIELDS, "spec": SPEC_FIELDS, "simulation": list(SIMULATION_FIELDS),
               "model": ([k for k in _recipe_fields(model["method"]) + list(AWARE_FIELDS)
                          if k not in MODEL_NOT_SWEEPABLE] if "method" in model else [])}
    axes = []
    for key, values in given.items():
        section, _, name = key.partition(".")
        if section not in allowed or name not in allowed[section]:
            _fail(f"axes.{key}", values, _axis_hint(key, allowed))
        if section == "model" and "file" in model:
            _fail(f"axes.{key}", values, "a model file has no recipe to sweep")
        if key == "spec.r_wire" and any(k in given for k in ("spec.r_wire_row", "spec.r_wire_col")):
            _fail(f"axes.{key}", values, "sets r_wire_row and r_wire_col both: sweep either "
                  "r_wire or those two")
        if not isinstance(values, list) or not values:
            _fail(f"axes.{key}", values, "must be a non-empty list of values")
        canonical = [json.dumps(v, sort_keys=True) for v in values]
        if len(set(canonical)) != len(canonical):
            _fail(f"axes.{key}", values, "must not repeat a value")
        axes.append((key, tuple(_as_float_if(section, name, v) for v in values)))
    names = [k.split(".", 1)[1] for k, _ in axes]
    return tuple(Axis(k, vals, _dim(k, names)) for k, vals in axes)


def _as_float_if(section: str, name: str, value):
    cls = {"device": DeviceModel, "spec": xbar.Spec}.get(section)
    if cls is None:
        return value
    field = "r_wire_row" if name == "r_wire" else name  # r_wire sets that float field
    return _floats(cls, {field: value})[field]


def _dim(key: str, names: list[str]) -> str:
    name = key.split(".", 1)[1]
    if name == "preset":
        return "device"
    return name if names.count(name) == 1 else key.replace(".", "_")


def _axis_hint(key: str, allowed: dict) -> str:
    bare = key.split(".")[-1]
    near = [f"{s}.{f}" for s, fs in allowed.items() for f in fs if f == bare]
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return (f"an axis is \"section.field\" with section one of {list(allowed)} and field one of that "
            f"section's fields{hint}")


def _check_point(where: str, build):
    try:
        return build()
    except (ValueError, TypeError) as err:
        raise SweepFileError(f"{where}: {err}") from None

