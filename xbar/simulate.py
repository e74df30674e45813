"""The timestep-aware simulator: analog and ideal networks in lockstep.

At every timestep both networks get the same input; forward hooks take, for every
crossbar layer ``l`` (in the order the layers are registered):

``read_error``        error of one read: the analog layer's output against the ideal
                      product *of the same input* (relative RMS over the batch) — the
                      hardware's error, with no history in it.
``layer_error``       the analog layer's output against the ideal network's output of
                      the same layer (relative RMS): read error plus everything that has
                      accumulated upstream and in earlier timesteps.
``membrane_error``    RMS divergence of the membrane potentials of the neurons fed by
                      layer ``l`` (the first neuron module registered after it), in units
                      of their threshold; NaN where no neuron follows.
``spike_mismatch``    fraction of those neurons whose spike differs between the networks.
``spike_rate``        mean spikes per neuron per timestep (analog; ``spike_rate_ideal``).
``neurons``           neurons fed by the layer, per sample (0 where no neuron follows).
``accuracy``          accuracy if the output were read after ``t`` steps: argmax of the
                      sum of the network's outputs over steps ``1..t`` (analog; also
                      ``accuracy_ideal``).

All error variables are pooled over every sample of ``data`` (ratios of sums).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
import xarray as xr
from tqdm.auto import tqdm

from xbar.convert import analog_layers
from xbar.neurons import is_neuron, membrane, reset_state, threshold


@dataclass
class _Acc:
    """Running sums, shapes ``(K, T, L)`` unless noted."""

    k: int
    t: int
    n_layers: int
    sums: dict = field(default_factory=dict)

    def add(self, key: str, index, value) -> None:
        if key not in self.sums:
            self.sums[key] = np.zeros((self.k, self.t, self.n_layers))
        self.sums[key][index] += value


def _per_trial_sum(x: torch.Tensor, k: int) -> np.ndarray:
    return x.reshape(k, -1).sum(1).double().cpu().numpy()


def _first_output(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _neuron_after(hw: nn.Module, layer_names: list[str]) -> dict[str, str | None]:
    """For each crossbar layer, the first neuron module registered after it (and before
    the next crossbar layer)."""
    order = [(n, m) for n, m in hw.named_modules() if n]
    result, current = {}, None
    for name, m in order:
        if name in layer_names:
            current = name
            result[name] = None
        elif current is not None and result[current] is None and is_neuron(m):
            result[current] = name
    return result


def _as_batches(data, batch_size: int = 256) -> Iterable:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return data


def simulate(hw: nn.Module, model: nn.Module, data, timesteps: int, *,
             encoder: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
             reset: Callable[[nn.Module], None] = reset_state,
             progress: bool = True, attrs: dict | None = None) -> xr.Dataset:
    """Run the analog network ``hw`` (from :func:`xbar.convert`) and the ideal ``model``
    in lockstep for ``timesteps`` steps on every batch of ``data``.

    data
        an iterable of ``(x, y)`` batches (a DataLoader), or one ``(x, y)`` pair of tensors.
    encoder
        ``encoder(x, t)`` gives the input of step ``t`` (0-based); default: ``x`` at every
        step (direct encoding).  A stochastic encoder must draw from its own seeded
        generator.
    reset
        clears the neuron state of a network between batches (default:
        :func:`xbar.neurons.reset_state`).

    Returns an ``xarray.Dataset`` with dims ``trial``, ``timestep`` (1..T) and ``layer``
    and the variables listed in this module's docstring; ``attrs`` holds the spec.
    """
    if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 1:
        raise ValueError(f"simulate: timesteps = {timesteps!r} is not allowed: must be an integer >= 1")
    layers = analog_layers(hw)
    if not layers:
        raise ValueError("simulate: hw has no crossbar layer: pass the network returned by xbar.convert")
    names = [n for n, _ in layers]
    ideal_modules = dict(model.named_modules())
    missing = [n for n in names if n not in ideal_modules]
    if missing:
        raise ValueError(f"simulate: model has no layers named {missing}: hw must be converted "
                         "from this model")
    k = getattr(hw, "xbar_trials", 1)
    neurons = _neuron_after(hw, names)
    encoder = encoder or (lambda x, t: x)
    dev = next(iter(hw.buffers())).device
    acc = _Acc(k, timesteps, len(names))
    correct = np.zeros((k, timesteps))
    correct_ideal = np.zeros(timesteps)
    n_samples = 0

    captured: dict = {}

    def keep(tag):
        def hook(module, inputs, output):
            captured[tag] = output
        return hook

    handles = []
    for name in names:
        handles.append(hw.get_submodule(name).register_forward_hook(keep(("a", name))))
        handles.append(ideal_modules[name].register_forward_hook(keep(("i", name))))
        hw.get_submodule(name).record_ideal = True
        nn_name = neurons[name]
        if nn_name is not None:
            handles.append(hw.get_submodule(nn_name).register_forward_hook(keep(("a", nn_name))))
            handles.append(ideal_modules[nn_name].register_forward_hook(keep(("i", nn_name))))
    for _, m in layers:
        m.matrix.reset_read_noise()

    was_training = model.training
    model.eval()
    hw.eval()
    batches = _as_batches(data)
    try:
        with torch.no_grad():
            for x, y in tqdm(batches, desc="simulate", unit="batch", disable=not progress,
                             leave=False, mininterval=1.0):
                x, y = x.to(dev), y.to(dev)
                b = x.shape[0]
                reset(model)
                reset(hw)
                out_sum_i, out_sum_a = 0.0, 0.0
                for t in range(timesteps):
                    xt = encoder(x, t)
                    captured.clear()
                    out_i = _first_output(model(xt))
                    out_a = _first_output(hw(xt.repeat(k, *([1] * (xt.dim() - 1)))))
                    _step_metrics(acc, t, names, neurons, captured, hw, ideal_modules, k)
                    out_sum_i = out_sum_i + out_i
                    out_sum_a = out_sum_a + out_a
                    correct_ideal[t] += float((out_sum_i.argmax(-1) == y).sum())
                    pred_a = out_sum_a.reshape(k, b, -1).argmax(-1)
                    correct[:, t] += (pred_a == y.unsqueeze(0)).sum(1).double().cpu().numpy()
                n_samples += b
    finally:
        for h in handles:
            h.remove()
        for _, m in layers:
            m.record_ideal = False
            m.last_ideal = None
        model.train(was_training)
    if n_samples == 0:
        raise ValueError("simulate: data yielded no samples")
    return _dataset(acc, correct, correct_ideal, n_samples, names, neurons, hw, timesteps, attrs)


def _step_metrics(acc: _Acc, t: int, names, neurons, captured, hw, ideal_modules, k) -> None:
    for li, name in enumerate(names):
        ya = captured[("a", name)]
        yi = captured[("i", name)]
        ref = hw.get_submodule(name).last_ideal
        acc.add("read_num", (slice(None), t, li), _per_trial_sum((ya - ref) ** 2, k))
        acc.add("read_den", (slice(None), t, li), _per_trial_sum(ref**2, k))
        diff = ya.reshape(k, *yi.shape) - yi.unsqueeze(0)
        acc.add("layer_num", (slice(None), t, li), _per_trial_sum(diff**2, k))
        acc.add("layer_den", (slice(None), t, li), float((yi.double() ** 2).sum()) * np.ones(k))
        nn_name = neurons[name]
        if nn_name is None:
            continue
        m_a, m_i = hw.get_submodule(nn_name), ideal_modules[nn_name]
        s_a = captured[("a", nn_name)]
        s_i = captured[("i", nn_name)]
        count = s_i.numel()
        s_a = _first_output(s_a).reshape(k, *_first_output(s_i).shape)
        s_i = _first_output(s_i)
        acc.add("count", (slice(None), t, li), count)
        acc.add("spikes", (slice(None), t, li), _per_trial_sum(s_a, k))
        acc.add("spikes_ideal", (slice(None), t, li), float(s_i.sum()))
        acc.add("mismatch", (slice(None), t, li), _per_trial_sum((s_a != s_i.unsqueeze(0)).float(), k))
        v_a, v_i = membrane(m_a), membrane(m_i)
        if v_a is not None and v_i is not None:
            dv = (v_a.reshape(k, *v_i.shape) - v_i.unsqueeze(0)) / threshold(m_i)
            acc.add("mem_sq", (slice(None), t, li), _per_trial_sum(dv**2, k))


def _ratio(num, den):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.where(num > 0, np.inf, 0.0))


def _dataset(acc, correct, correct_ideal, n, names, neurons, hw, timesteps, attrs) -> xr.Dataset:
    s = acc.sums
    has_neuron = np.array([neurons[nm] is not None for nm in names])
    count = s.get("count", np.zeros((acc.k, timesteps, len(names))))
    safe = np.where(count > 0, count, 1)

    def neuron_var(values):
        return np.where(has_neuron[None, None, :] & (count > 0), values, np.nan)

    dims = ("trial", "timestep", "layer")
    zeros = np.zeros_like(count)
    data_vars = {
        "read_error": (dims, np.sqrt(_ratio(s["read_num"], s["read_den"])),
                       {"long_name": "error of one read (relative RMS, same input)", "units": "1"}),
        "layer_error": (dims, np.sqrt(_ratio(s["layer_num"], s["layer_den"])),
                        {"long_name": "layer output error against the ideal network (relative RMS)",
                         "units": "1"}),
        "membrane_error": (dims, neuron_var(np.sqrt(s.get("mem_sq", zeros) / safe)),
                           {"long_name": "RMS membrane-potential divergence", "units": "threshold"}),
        "spike_mismatch": (dims, neuron_var(s.get("mismatch", zeros) / safe),
                           {"long_name": "fraction of neurons whose spike differs", "units": "1"}),
        "spike_rate": (dims, neuron_var(s.get("spikes", zeros) / safe),
                       {"long_name": "spikes per neuron per timestep (analog)", "units": "1"}),
        "spike_rate_ideal": (("timestep", "layer"), neuron_var(s.get("spikes_ideal", zeros) / safe)[0],
                             {"long_name": "spikes per neuron per timestep (ideal)", "units": "1"}),
        "neurons": (("layer",), count[0, 0] / n,
                    {"long_name": "neurons fed by the layer, per sample", "units": "1"}),
        "accuracy": (("trial", "timestep"), correct / n,
                     {"long_name": "accuracy reading the output after t steps (analog)", "units": "1"}),
        "accuracy_ideal": (("timestep",), correct_ideal / n,
                           {"long_name": "accuracy reading the output after t steps (ideal)",
                            "units": "1"}),
    }
    coords = {"trial": np.arange(acc.k), "timestep": np.arange(1, timesteps + 1), "layer": names,
              "neuron": ("layer", [neurons[nm] or "" for nm in names])}
    ds = xr.Dataset(data_vars, coords=coords)
    spec = getattr(hw, "xbar_spec", None)
    ds.attrs.update({"n_samples": int(n), "timesteps": int(timesteps),
                     "readout": "argmax of the summed outputs of steps 1..t"})
    if spec is not None:
        ds.attrs.update(spec.to_attrs())
    if attrs:
        ds.attrs.update(attrs)
    return ds
